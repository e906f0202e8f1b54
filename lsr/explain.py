"""Readable sparse vectors: which tokens an input activates, and why a document matched.

* :func:`decode` lists the largest weights of a vector as ``(token, weight)``
  pairs, never showing special tokens ([CLS], [SEP], ...).
* :func:`contributions` splits an impact score into per-token products
  ``query_weight * doc_weight``; their sum is exactly the integer score Lucene
  computes for the pair.
* :func:`explain_vectors` packages that split with the score Lucene returned
  into an :class:`Explanation` (integers, plus floats divided back by the
  quantization scale). ``anserini_bridge.explain.explain`` builds one from an
  index and a document id.
* :func:`inspect_input` encodes one text or image with an encoder and decodes it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping, NamedTuple

import numpy as np

from .errors import InputError
from .vocab import Vocabulary


@dataclass(frozen=True)
class Contribution:
    token: str
    query_weight: int
    doc_weight: int

    @property
    def contribution(self) -> int:
        return self.query_weight * self.doc_weight

    @property
    def display(self) -> str:
        return Vocabulary.display(self.token)


def contributions(query: Mapping[str, int], document: Mapping[str, int]) -> list[Contribution]:
    """Tokens present in both integer vectors, largest contribution first.

    Their ``contribution`` values sum to the impact score Lucene computes for
    the pair.
    """
    small, large = (query, document) if len(query) <= len(document) else (document, query)
    shared = [t for t in small if t in large]
    out = [Contribution(t, int(query[t]), int(document[t])) for t in shared]
    out.sort(key=lambda c: (-c.contribution, c.token))
    return out


# ------------------------------------------------------------------ decoding
class TokenWeight(NamedTuple):
    """One dimension of a sparse vector: the raw ``token`` (e.g. ``##ing``) and its weight."""

    token: str
    weight: float

    @property
    def display(self) -> str:
        """The readable form: a word-piece continuation ``##ing`` is shown as ``…ing``."""
        return Vocabulary.display(self.token)


# Tokens that only mark structure: [CLS], [SEP], [PAD], [MASK], [UNK], [unused12],
# <s>, </s>, <pad>, <|endoftext|>, ... (used when a plain dict comes without its vocabulary).
_SPECIAL = re.compile(r"^(\[[A-Za-z_]+[0-9]*\]|\[unused_id_\d+\]|</?[a-z]+>|<\|[A-Za-z_]+\|>)$")


def looks_special(token: str) -> bool:
    """Whether ``token`` is spelled like a special token of a BERT, RoBERTa or CLIP tokenizer."""
    return bool(_SPECIAL.match(token))


def decode(vector: Any, top_k: int | None = 20, vocab: Vocabulary | None = None, row: int = 0) -> list[TokenWeight]:
    """The ``top_k`` largest weights of one vector as ``(token, weight)``, largest first.

    ``vector`` is a :class:`~lsr.sparse.SparseBatch` (row ``row`` is decoded),
    a ``{token: weight}`` mapping, or a dense ``[|V|]`` numpy array / torch
    tensor together with ``vocab``. Zero and negative weights are skipped, and
    so are special tokens: those in ``vocab.special_ids`` and, for mappings,
    any token spelled like one ([CLS], [SEP], <s>, ...). Ties are ordered by
    token. ``top_k=None`` returns every token.
    """
    if top_k is not None and (isinstance(top_k, bool) or int(top_k) != top_k or top_k < 0):
        raise InputError(f"top_k must be a non-negative integer or None, got {top_k!r}")
    pairs: list[tuple[str, float]]
    from .sparse import SparseBatch

    if isinstance(vector, SparseBatch):
        if not 0 <= row < len(vector):
            raise InputError(f"row {row} is outside the batch of {len(vector)} vectors")
        idx, val = vector.row(row)
        special = vector.vocab.special_ids
        toks = vector.vocab.tokens
        pairs = [(toks[i], float(v)) for i, v in zip(idx.tolist(), val.tolist()) if i not in special]
    elif isinstance(vector, Mapping):
        special_tokens = {vocab.tokens[i] for i in vocab.special_ids} if vocab is not None else set()
        pairs = []
        for tok, w in vector.items():
            if not isinstance(tok, str):
                raise InputError(f"vector keys must be token strings, got {type(tok).__name__}")
            if isinstance(w, bool) or not isinstance(w, (int, float, np.integer, np.floating)):
                raise InputError(f"weight of {tok!r} is {w!r}, expected a number")
            if tok in special_tokens or looks_special(tok):
                continue
            pairs.append((tok, float(w)))
    elif hasattr(vector, "detach") or hasattr(vector, "__array__"):
        if vocab is None:
            raise InputError("decoding a dense array needs its vocabulary (vocab=encoder.vocab)")
        arr = vector.detach().float().cpu().numpy() if hasattr(vector, "detach") else np.asarray(vector, np.float64)
        arr = arr.reshape(-1) if arr.ndim == 2 and arr.shape[0] == 1 else arr
        if arr.ndim != 1 or arr.shape[0] != len(vocab):
            raise InputError(f"dense vector of shape {tuple(arr.shape)} does not match the vocabulary of "
                             f"{len(vocab)} tokens")
        nz = np.flatnonzero(arr > 0)
        pairs = [(vocab.tokens[i], float(arr[i])) for i in nz.tolist() if i not in vocab.special_ids]
    else:
        raise InputError(f"cannot decode {type(vector).__name__}; pass a SparseBatch, a {{token: weight}} dict "
                         "or a dense array with vocab=")
    for tok, w in pairs:
        if not np.isfinite(w):
            raise InputError(f"weight of {tok!r} is {w}; weights must be finite")
    pairs = [(t, w) for t, w in pairs if w > 0]
    pairs.sort(key=lambda p: (-p[1], p[0]))
    if top_k is not None:
        pairs = pairs[: int(top_k)]
    return [TokenWeight(t, w) for t, w in pairs]


def inspect_input(encoder, item: Any, top_k: int | None = 20, role: str = "query") -> list[TokenWeight]:
    """Encode one input (a string or :class:`~lsr.inputs.Input`) and decode its ``top_k`` tokens.

    ``role`` picks ``encoder.encode_queries`` or ``encoder.encode_documents``,
    which get the input as an :class:`~lsr.inputs.Input`: a text-only encoder
    encodes its text with the instruction in front and refuses an image.
    """
    return decode(encode_one(encoder, item, role), top_k=top_k)


def encode_one(encoder, item: Any, role: str = "query"):
    """A one-row :class:`~lsr.sparse.SparseBatch` for ``item`` (string or Input); empty inputs are refused."""
    from .inputs import Input

    if role not in ("query", "document"):
        raise InputError(f"role must be 'query' or 'document', not {role!r}")
    if isinstance(item, str):
        if not item.strip():
            raise InputError(f"the {role} is empty; give some text")
        item = Input(text=item)
    if not isinstance(item, Input):
        raise InputError(f"cannot encode {type(item).__name__}; pass a string or lsr.inputs.Input")
    encode = encoder.encode_queries if role == "query" else encoder.encode_documents
    batch = encode([item])
    if len(batch) != 1:
        raise InputError(f"the encoder returned {len(batch)} vectors for one input")
    return batch


# --------------------------------------------------------------- explanation
@dataclass
class Explanation:
    """Why ``docid`` matched a query, in the index's integer impacts.

    ``contributions`` are the shared tokens, largest product first; their sum
    equals ``lucene_score``, the integer score Lucene returned for the document
    (0 and ``rank=None`` when Lucene did not match it). Float views divide by
    ``scale`` (weights) and ``scale**2`` (products and scores).
    """

    docid: str
    query: dict[str, int]
    document: dict[str, int]
    contributions: list[Contribution]
    lucene_score: int
    scale: float
    rank: int | None = None
    query_text: str | None = None
    query_image: Any = None
    doc_text: str | None = None
    float_query: dict[str, float] | None = field(default=None, repr=False)

    @property
    def sum_of_contributions(self) -> int:
        return int(sum(c.contribution for c in self.contributions))

    @property
    def matches_lucene(self) -> bool:
        return self.sum_of_contributions == self.lucene_score

    @property
    def score(self) -> float:
        """Lucene's score as a float (``lucene_score / scale**2``), as in :class:`~lsr.io.Hit`."""
        return self.lucene_score / (self.scale * self.scale)

    def query_only(self, top_k: int | None = None) -> list[TokenWeight]:
        """Query tokens the document lacks, largest first."""
        return decode({t: w for t, w in self.query.items() if t not in self.document}, top_k)

    def to_dict(self, top: int | None = None) -> dict:
        """The JSON form printed by ``lsr explain --json`` (integers, plus ``*_float`` views).

        ``top``: list only the ``top`` largest contributions; ``shared_tokens``
        still counts them all, ``sum_of_contributions`` still adds them all up,
        and ``omitted`` gives the count and total of those left out.
        """
        s2 = self.scale * self.scale
        rows = self.contributions if top is None else self.contributions[:top]
        d = {
            "docid": self.docid,
            "lucene_score": int(self.lucene_score),
            "sum_of_contributions": self.sum_of_contributions,
            "contributions": [
                {"token": c.token, "query_weight": c.query_weight, "doc_weight": c.doc_weight,
                 "contribution": c.contribution, "contribution_float": c.contribution / s2}
                for c in rows
            ],
            "shared_tokens": len(self.contributions),
            "rank": self.rank,
            "score_float": self.score,
            "scale": self.scale,
            "query_terms": len(self.query),
            "doc_terms": len(self.document),
        }
        if len(rows) < len(self.contributions):
            d["omitted"] = {"tokens": len(self.contributions) - len(rows),
                            "contribution": sum(c.contribution for c in self.contributions[len(rows):])}
        return d

    def format_text(self, top: int | None = None) -> str:
        """A plain-text table: one line per shared token, then the total beside Lucene's score."""
        rows = self.contributions if top is None else self.contributions[:top]
        width = max([len(c.display) for c in rows] + [5])
        lines = [f"document {self.docid}" + (f" (rank {self.rank})" if self.rank else " (not matched by Lucene)"),
                 f"  {'token':<{width}}  {'query':>6} x {'doc':>6} = {'contribution':>12}  {'float':>8}"]
        s2 = self.scale * self.scale
        for c in rows:
            lines.append(f"  {c.display:<{width}}  {c.query_weight:>6} x {c.doc_weight:>6} = {c.contribution:>12}"
                         f"  {c.contribution / s2:8.4f}")
        if top is not None and len(self.contributions) > top:
            rest = sum(c.contribution for c in self.contributions[top:])
            lines.append(f"  ... {len(self.contributions) - top} more shared tokens contribute {rest}")
        verdict = "equal" if self.matches_lucene else "DIFFERENT"
        lines.append(f"  sum of contributions {self.sum_of_contributions}, Lucene score {self.lucene_score} "
                     f"({verdict}; float {self.score:.4f})")
        return "\n".join(lines)


def explain_vectors(
    query: Mapping[str, int], document: Mapping[str, int], docid: str, lucene_score: int, scale: float,
    rank: int | None = None, **extra,
) -> Explanation:
    """An :class:`Explanation` from two integer vectors and the score Lucene gave the pair."""
    q = {str(t): int(w) for t, w in query.items()}
    d = {str(t): int(w) for t, w in document.items()}
    return Explanation(str(docid), q, d, contributions(q, d), int(lucene_score), float(scale), rank, **extra)


__all__ = [
    "Contribution", "Explanation", "TokenWeight", "contributions", "decode", "encode_one", "explain_vectors",
    "inspect_input", "looks_special",
]

