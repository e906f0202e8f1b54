"""Inference-free queries: the query's own word pieces, weighted by their IDF in the index.

For an index whose documents were expanded by a learned sparse encoder (SPLADE
and the like put related word pieces into every document vector), a query
needs no model at all to be useful: OpenSearch's doc-only neural sparse models
encode a query by tokenizing it and giving each of its word pieces a fixed
weight (their IDF). :class:`InferenceFreeEncoder` does the same with the
model's tokenizer alone (no weights are loaded) and document frequencies read
from the index's postings:

    weight(t) = log(1 + (N - df(t) + 0.5) / (df(t) + 0.5))

(the BM25 IDF, always positive) for each distinct word piece ``t`` of the
query, special tokens left out; pieces no document contains are dropped. The
result is a float :class:`~lsr.sparse.SparseBatch` over the model's
vocabulary, quantized by the searcher like any other query.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from lsr.errors import EnvironmentProblem, InputError
from lsr.sparse import SparseBatch

from .registry import resolve
from .splade import _as_texts, vocabulary_of


def load_tokenizer(model: str):
    """The tokenizer of ``model`` (alias, ``hf:`` id or directory) and its vocabulary size, without weights."""
    from transformers import AutoConfig, AutoTokenizer

    loc = resolve(model)
    try:
        tokenizer = AutoTokenizer.from_pretrained(loc.source)
    except OSError as e:
        hint = "" if loc.is_local else " (hub models need network access or a local copy: pass a directory)"
        raise EnvironmentProblem(f"cannot load the tokenizer of {model!r} from {loc.source}: {e}{hint}") from None
    try:
        size = int(AutoConfig.from_pretrained(loc.source).vocab_size)
    except (OSError, ValueError, AttributeError, TypeError):
        size = len(tokenizer.get_vocab())
    return tokenizer, size


class InferenceFreeEncoder:
    """Queries weighted by IDF from the index; no model forward pass (see the module docs).

    ``doc_freqs(tokens) -> [df]`` and ``num_docs`` come from the index (e.g.
    :meth:`anserini_bridge.search.ImpactSearcher.document_frequencies` and
    ``num_docs``); frequencies are kept once looked up.
    """

    kind = "inference-free"
    takes_images = False

    def __init__(self, model: str = "splade-tiny", *, doc_freqs: Callable[[Sequence[str]], Sequence[int]],
                 num_docs: int, max_length: int = 256, tokenizer=None, vocab_size: int | None = None):
        if num_docs < 1:
            raise InputError(f"num_docs must be positive, got {num_docs}")
        if tokenizer is None:
            tokenizer, size = load_tokenizer(model)
            vocab_size = vocab_size or size
        self.name = model
        self.tokenizer = tokenizer
        self.vocab = vocabulary_of(tokenizer, vocab_size)
        self.max_length = min(max_length, getattr(tokenizer, "model_max_length", max_length) or max_length)
        self.num_docs = int(num_docs)
        self._doc_freqs = doc_freqs
        self._idf: dict[int, float] = {}
        self._special = self.vocab.special_ids
        backend = getattr(tokenizer, "backend_tokenizer", None)
        self._fast = None
        if backend is not None:
            import tokenizers

            fast = tokenizers.Tokenizer.from_str(backend.to_str())
            fast.no_padding()
            fast.enable_truncation(self.max_length)
            self._fast = fast

    def idf(self, df: int) -> float:
        n = self.num_docs
        return math.log(1.0 + (n - df + 0.5) / (df + 0.5))

    def _token_ids(self, text: str) -> list[int]:
        if self._fast is not None:
            return self._fast.encode(text).ids
        return self.tokenizer(text, truncation=True, max_length=self.max_length)["input_ids"]

    def _weights(self, token_ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        ids = sorted({i for i in token_ids if i not in self._special and 0 <= i < len(self.vocab)})
        unknown = [i for i in ids if i not in self._idf]
        if unknown:
            tokens = self.vocab.tokens
            for i, df in zip(unknown, self._doc_freqs([tokens[i] for i in unknown])):
                self._idf[i] = self.idf(int(df)) if df > 0 else 0.0
        keep = [i for i in ids if self._idf[i] > 0.0]
        return np.array(keep, np.int32), np.array([self._idf[i] for i in keep], np.float32)

    def encode_query(self, text: str, qid: str | None = None) -> SparseBatch:
        """One text as a one-row batch."""
        if not isinstance(text, str):
            raise InputError(f"expected a text (str), got {type(text).__name__}")
        cols, vals = self._weights(self._token_ids(text)) if text.strip() else (np.zeros(0, np.int32),
                                                                                 np.zeros(0, np.float32))
        return SparseBatch(np.array([0, len(cols)], np.int64), cols, vals, self.vocab,
                           (qid,) if qid is not None else None)

    def encode_queries(self, texts, ids: Sequence[str] | None = None) -> SparseBatch:
        texts = _as_texts(texts)
        if ids is not None and len(ids) != len(texts):
            raise InputError(f"{len(ids)} ids for {len(texts)} texts")
        if not texts:
            return SparseBatch.empty(self.vocab, 0, ids=() if ids is not None else None)
        rows = [self.encode_query(t) for t in texts]
        return SparseBatch.concat(rows) if ids is None else SparseBatch.concat(rows).with_ids(ids)
