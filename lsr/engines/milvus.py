"""Quantized sparse vectors in a Milvus collection (``SPARSE_FLOAT_VECTOR``, inner product).

One collection holds one corpus::

    docid   VARCHAR primary key   the original string document id
    vector  SPARSE_FLOAT_VECTOR   {dimension id: integer impact}, SPARSE_INVERTED_INDEX, metric IP

Its description (and a collection property, ``lsr.meta``) holds the project's metadata as compact JSON (encoder,
vocabulary fingerprint, number of dimensions, quantization), so a search
quantizes float queries the same way and refuses queries from another
vocabulary, exactly as a Lucene impact index does with ``lsr-index.json``.

Dimension ids are the encoder's vocabulary ids when the vocabulary is at hand
(``ids="vocabulary"``). A vector directory only names its encoder and the
vocabulary's fingerprint, so when no vocabulary is given the ids are derived
from the tokens the vectors use (``ids="derived"``: sorted tokens, later ones
appended). Either way the token list is stored in a companion collection
``<name>_lsr_vocab`` (JSON chunks; a collection description is limited to about
1 KB on current Milvus), which makes the collection self-describing: queries
given as ``{token: int}`` dicts are mapped through it, and every exporter
appending to the collection uses the same ids.

Milvus keeps float32 weights and returns float32 inner products, so integer
impacts whose dot products stay below 2**24 score exactly as in the Lucene
index. Ties are broken by docid, as Anserini and
:func:`lsr.exhaustive.exhaustive_search` do.

The same code talks to Milvus Lite started as a local server, a standalone
Milvus or a cluster: only the URI changes (``milvus://HOST:PORT/COLLECTION``
on the command line, ``http://HOST:PORT`` here).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar, Iterable, Iterator, Sequence

import numpy as np
from lsr.progress import tqdm

from ..errors import EnvironmentProblem, IndexMismatchError, InputError, first_line
from ..io import Hit
from ..meta import Meta
from ..quantize import Quantizer, quantization_field
from ..retrieval import SparseRetriever
from ..sparse import SparseBatch
from ..vectors import iter_vectors, part_files
from ..vocab import Vocabulary
from .report import InsertReport

INSTALL_HINT = 'pip install "pymilvus>=2.5,<2.6"  (or pip install -e ".[milvus]")'
META_PROPERTY = "lsr.meta"  # collection property holding the same metadata as the description
ID_FIELD = "docid"
VECTOR_FIELD = "vector"
MAX_ID_BYTES = 512  # VARCHAR max_length of the primary key
VOCAB_SUFFIX = "_lsr_vocab"
MAX_VARCHAR_BYTES = 65_535  # the largest VARCHAR max_length Milvus accepts (and enforces)
VOCAB_CHUNK_BYTES = 60_000  # token-list chunks stay below it
MAX_DESCRIPTION_BYTES = 1024
MAX_TOPK = 16_384  # Milvus' limit on limit + offset
QUERY_BATCH = 256
SEARCH_PARAMS = {"metric_type": "IP", "params": {"drop_ratio_search": 0.0}}  # exact: drop nothing
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _pymilvus():
    try:
        import pymilvus
    except ImportError:
        raise EnvironmentProblem(f"Milvus support needs the pymilvus package: {INSTALL_HINT}") from None
    return pymilvus


def parse_milvus_uri(spec: str) -> tuple[str, str]:
    """``milvus://HOST:PORT/COLLECTION`` -> (``http://HOST:PORT``, ``COLLECTION``).

    ``milvus+https://`` selects TLS; the port defaults to 19530.
    """
    m = re.fullmatch(r"milvus(?:\+(https?))?://([^/\s]+)/([^/\s]+)/?", spec.strip())
    if not m:
        raise InputError(f"{spec!r}: expected milvus://HOST:PORT/COLLECTION (or milvus+https://...)")
    scheme, host, collection = m.group(1) or "http", m.group(2), m.group(3)
    if ":" not in host.rsplit("]", 1)[-1]:
        host += ":19530"
    check_collection_name(collection)
    return f"{scheme}://{host}", collection


def check_collection_name(name: str) -> str:
    if not _NAME.fullmatch(name or "") or len(name) + len(VOCAB_SUFFIX) > 255:
        raise InputError(f"collection name {name!r}: Milvus allows letters, digits and underscores, starting with "
                         f"a letter or underscore, at most {255 - len(VOCAB_SUFFIX)} characters here")
    return name


# ------------------------------------------------------------------- metadata
@dataclass
class CollectionMeta(Meta):
    """What the collection description records about the vectors in it."""

    FORMAT: ClassVar[str] = "lsr-milvus"
    WHAT: ClassVar[str] = "collection metadata"
    REMEDY: ClassVar[str] = "recreate the collection with `lsr export ... --replace`"

    encoder: str | None
    vocab_fingerprint: str | None
    dimension: int | None  # the encoder's vocabulary size, when known
    quantization: Quantizer | None = quantization_field()
    ids: str = "vocabulary"  # "vocabulary": encoder ids; "derived": ids of the stored token list

    @classmethod
    def for_vocabulary(cls, vocab: Vocabulary, quantizer: Quantizer | None, encoder: str | None = None):
        return cls(encoder, vocab.fingerprint, len(vocab), quantizer, "vocabulary")

    def to_description(self) -> str:
        """Compact JSON within Milvus' limit on a description (the start of a long encoder path is cut)."""
        d = self.to_dict()
        text = _compact_json(d)
        if len(text.encode("utf-8")) > MAX_DESCRIPTION_BYTES and self.encoder:
            over = len(text.encode("utf-8")) - MAX_DESCRIPTION_BYTES
            d["encoder"] = "\u2026" + self.encoder[over + 3:]  # keep the end of a long path
            text = _compact_json(d)
        return text

    @classmethod
    def from_description(cls, text: str, source: str = "collection description") -> "CollectionMeta | None":
        """The metadata, or None when the description was not written by this module."""
        try:
            d = json.loads(text or "")
        except json.JSONDecodeError:
            return None
        return cls.from_dict(d, source) if cls.owns(d) else None

    def differences(self, other: "CollectionMeta") -> list[str]:
        """Why vectors described by ``other`` cannot go into a collection described by ``self``."""
        out = []
        if self.vocab_fingerprint != other.vocab_fingerprint:
            out.append(f"model: {self.encoder!r} (vocabulary {self.vocab_fingerprint}) vs {other.encoder!r} "
                       f"(vocabulary {other.vocab_fingerprint})")
        if self.dimension is not None and other.dimension is not None and self.dimension != other.dimension:
            out.append(f"dimension: {self.dimension} vs {other.dimension}")
        if self.quantization != other.quantization:
            out.append(f"quantization: {self.quantization} vs {other.quantization}")
        return out


@contextlib.contextmanager
def _quiet_pymilvus():
    """pymilvus logs every failed call; failures here are caught and reported per document instead."""
    log = logging.getLogger("pymilvus")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(level)


def _first_line(e: BaseException) -> str:
    """pymilvus errors carry their text in ``message``; ``str(e)`` wraps it in the error code."""
    return first_line(getattr(e, "message", None) or e)


# ----------------------------------------------------------------- collection
class MilvusCollection(SparseRetriever):
    """A Milvus collection of quantized sparse vectors: create, bulk insert, search.

    Satisfies :class:`lsr.retrieval.Retriever`.
    """

    _remedy = "Encode queries with the collection's encoder, or export to another collection"

    def __init__(self, uri: str, collection: str, token: str | None = None, timeout: float = 10.0,
                 consistency_level: str | None = None):
        """Connect to Milvus at ``uri`` (``http://HOST:PORT``); ``token`` is ``user:password`` or an API key."""
        pymilvus = _pymilvus()
        self.uri = uri
        self.name = check_collection_name(collection)
        self.vocab_name = collection + VOCAB_SUFFIX
        self.timeout = timeout
        self.consistency_level = consistency_level
        self._MilvusException = pymilvus.MilvusException
        self._DataType = pymilvus.DataType
        try:
            with _quiet_pymilvus():
                self._client = pymilvus.MilvusClient(uri=uri, token=token or "", timeout=timeout)
        except Exception as e:  # noqa: BLE001 - pymilvus raises MilvusException or grpc errors here
            raise EnvironmentProblem(f"cannot reach Milvus at {uri} ({_first_line(e)}); start the server or "
                                     "check the address (milvus://HOST:PORT/COLLECTION)") from None
        self._meta: CollectionMeta | None = None
        self._tokens: list[str] | None = None
        self._token_ids: dict[str, int] | None = None
        self._loaded = False

    # --------------------------------------------------------------- plumbing
    def _call(self, what: str, fn, *args, **kwargs):
        try:
            with _quiet_pymilvus():
                return fn(*args, **kwargs)
        except self._MilvusException as e:
            if self._unreachable():
                raise EnvironmentProblem(f"lost the connection to Milvus at {self.uri} during {what} "
                                         f"({_first_line(e)})") from None
            raise InputError(f"Milvus at {self.uri} refused {what} on collection {self.name!r}: "
                             f"{_first_line(e)}") from None

    def _unreachable(self) -> bool:
        try:
            with _quiet_pymilvus():
                self._client.has_collection(self.name, timeout=min(self.timeout, 5.0))
            return False
        except Exception:  # noqa: BLE001
            return True

    # ------------------------------------------------------------- lifecycle
    @property
    def exists(self) -> bool:
        return bool(self._call("has_collection", self._client.has_collection, self.name))

    @property
    def meta(self) -> CollectionMeta:
        if self._meta is None:
            if not self.exists:
                raise InputError(f"collection {self.name!r} not found at {self.uri}; create it with "
                                 f"`lsr export --to milvus://HOST:PORT/{self.name} --input VECDIR`")
            desc = self._call("describe_collection", self._client.describe_collection, self.name)
            source = f"collection {self.name!r} at {self.uri}"
            try:
                meta = CollectionMeta.from_description(desc.get("description", ""), source) or \
                    CollectionMeta.from_description((desc.get("properties") or {}).get(META_PROPERTY, ""), source)
            except InputError as e:  # a newer format, or damaged: --replace may still drop it
                raise IndexMismatchError(str(e)) from None
            fields = {f["name"]: f["type"] for f in desc.get("fields", [])}
            if meta is None or fields.get(VECTOR_FIELD) != self._DataType.SPARSE_FLOAT_VECTOR \
                    or fields.get(ID_FIELD) != self._DataType.VARCHAR:
                raise IndexMismatchError(f"collection {self.name!r} at {self.uri} was not created by `lsr export` "
                                         f"(no {CollectionMeta.tag()} description with {ID_FIELD!r} and "
                                         f"{VECTOR_FIELD!r} fields); choose another collection, or pass --replace "
                                         "to drop it")
            self._meta = meta
        return self._meta

    def create(self, meta: CollectionMeta, tokens: Sequence[str] | Callable[[], Sequence[str]],
               replace: bool = False) -> str:
        """Make the collection ready for vectors described by ``meta``; returns what was done.

        A new collection is created (``"created"``). An existing one built for
        the same model, dimension and quantization is kept, so several exports
        (e.g. the shards of one corpus) fill one collection (``"appending"``);
        its token list is kept (see :meth:`ensure_tokens`). An existing
        collection for anything else is refused unless ``replace``, which drops
        and recreates it (``"replaced"``). ``tokens`` (or a function returning
        them, called only when a collection is created) is the initial token
        list: the vocabulary for ``ids="vocabulary"``, the tokens in use otherwise.
        """
        action = "created"
        if self.exists:
            problem = None
            try:
                existing = self.meta
                diffs = existing.differences(meta)
                if diffs:
                    problem = (f"collection {self.name!r} at {self.uri} holds other vectors ({'; '.join(diffs)})")
            except IndexMismatchError as e:
                problem = str(e)
            if problem and not replace:
                raise IndexMismatchError(f"{problem}; pass --replace (replace=True) to drop and rebuild it, "
                                         "or export to another collection")
            if not problem and not replace:
                return "appending"
            self.drop()
            action = "replaced"
        tokens = list(tokens() if callable(tokens) else tokens)
        if meta.ids == "vocabulary" and meta.dimension is not None and len(tokens) != meta.dimension:
            raise InputError(f"{len(tokens)} tokens for a vocabulary of {meta.dimension} dimensions")
        self._create(meta, tokens)
        return action

    def _create(self, meta: CollectionMeta, tokens: Sequence[str]) -> None:
        DataType, c = self._DataType, self._client
        schema = c.create_schema(auto_id=False, enable_dynamic_field=False, description=meta.to_description())
        schema.add_field(ID_FIELD, DataType.VARCHAR, is_primary=True, max_length=MAX_ID_BYTES)
        schema.add_field(VECTOR_FIELD, DataType.SPARSE_FLOAT_VECTOR)
        index = c.prepare_index_params()
        index.add_index(field_name=VECTOR_FIELD, index_type="SPARSE_INVERTED_INDEX", metric_type="IP")
        vschema = c.create_schema(auto_id=False, enable_dynamic_field=False,
                                  description=f"token list of collection {self.name}")
        vschema.add_field("chunk", DataType.INT64, is_primary=True)
        vschema.add_field("tokens", DataType.VARCHAR, max_length=MAX_VARCHAR_BYTES)
        vschema.add_field("marker", DataType.SPARSE_FLOAT_VECTOR)  # Milvus requires one vector field
        vindex = c.prepare_index_params()
        vindex.add_index(field_name="marker", index_type="SPARSE_INVERTED_INDEX", metric_type="IP")
        extra = {"consistency_level": self.consistency_level} if self.consistency_level else {}
        self._call("create_collection", c.create_collection, self.vocab_name, schema=vschema, index_params=vindex)
        self._write_tokens(list(tokens), start_chunk=0)
        # the metadata also goes into a collection property: Milvus Lite 3 does not keep schema descriptions
        self._call("create_collection", c.create_collection, self.name, schema=schema, index_params=index,
                   properties={META_PROPERTY: meta.to_description()}, **extra)
        self._meta, self._tokens, self._token_ids, self._loaded = meta, list(tokens), None, True

    def drop(self) -> None:
        """Drop the collection and its token list."""
        for name in (self.name, self.vocab_name):
            if self._call("has_collection", self._client.has_collection, name):
                self._call("drop_collection", self._client.drop_collection, name)
        self._meta, self._tokens, self._token_ids, self._loaded = None, None, None, False

    def _load(self) -> None:
        if not self._loaded:
            self._call("load_collection", self._client.load_collection, self.name)
            self._loaded = True

    def flush(self) -> None:
        """Seal what was inserted, so that every search sees it."""
        self._call("flush", self._client.flush, self.name)

    def count(self) -> int:
        """Number of documents (rows) in the collection."""
        self._load()
        rows = self._call("count", self._client.query, self.name, filter="", output_fields=["count(*)"],
                          consistency_level="Strong")
        return int(rows[0]["count(*)"])

    # ---------------------------------------------------------- token list
    @property
    def tokens(self) -> list[str]:
        """The stored token list: dimension ``i`` is ``tokens[i]``."""
        if self._tokens is None:
            self.meta  # noqa: B018 - raises when the collection is missing or foreign
            if not self._call("has_collection", self._client.has_collection, self.vocab_name):
                raise IndexMismatchError(f"collection {self.name!r} at {self.uri} has lost its token list "
                                         f"({self.vocab_name!r}); rebuild it with `lsr export ... --replace`")
            self._call("load_collection", self._client.load_collection, self.vocab_name)
            rows = self._call("read token list", self._client.query, self.vocab_name, filter="chunk >= 0",
                              output_fields=["chunk", "tokens"], limit=MAX_TOPK, consistency_level="Strong")
            tokens: list[str] = []
            for row in sorted(rows, key=lambda r: r["chunk"]):
                tokens.extend(json.loads(row["tokens"]))
            self._tokens = tokens
        return self._tokens

    def _ids_of(self) -> dict[str, int]:
        if self._token_ids is None:
            ids: dict[str, int] = {}
            for i, t in enumerate(self.tokens):
                ids.setdefault(t, i)
            self._token_ids = ids
        return self._token_ids

    def _write_tokens(self, tokens: list[str], start_chunk: int) -> None:
        # a chunk is a compact JSON list '["a","b"]': 2 bytes of brackets, each token's JSON text and one
        # comma between tokens, counted in UTF-8 bytes (what VARCHAR max_length limits)
        chunks, cur, size = [], [], 2
        for t in tokens:
            n = len(_compact_json(t).encode("utf-8")) + (1 if cur else 0)
            if cur and size + n > VOCAB_CHUNK_BYTES:
                chunks.append(cur)
                cur, size = [], 2
                n -= 1
            cur.append(t)
            size += n
        if cur:
            chunks.append(cur)
        texts = [_compact_json(c) for c in chunks]
        for c, text in zip(chunks, texts):
            size = len(text.encode("utf-8"))
            if size > MAX_VARCHAR_BYTES:  # one token alone longer than a VARCHAR can hold
                raise InputError(f"token {max(c, key=len)[:40]!r}... is too long for a Milvus VARCHAR "
                                 f"({size} bytes > {MAX_VARCHAR_BYTES})")
        rows = [{"chunk": start_chunk + k, "tokens": text,
                 "marker": {start_chunk + k: 1.0}} for k, text in enumerate(texts)]
        if rows:
            self._call("store token list", self._client.insert, self.vocab_name, rows)
            self._call("flush", self._client.flush, self.vocab_name)

    def ensure_tokens(self, tokens: Iterable[str]) -> int:
        """Append the tokens the stored list lacks; returns how many (derived ids only).

        With ``ids="vocabulary"`` the list is the encoder's vocabulary and never
        changes; a token outside it fails the document that uses it.
        """
        if self.meta.ids != "derived":
            return 0
        known = self._ids_of()
        new = [t for t in dict.fromkeys(tokens) if t not in known]
        if not new:
            return 0
        rows = self._call("read token list", self._client.query, self.vocab_name, filter="chunk >= 0",
                          output_fields=["chunk"], limit=MAX_TOPK, consistency_level="Strong")
        self._write_tokens(new, start_chunk=1 + max((r["chunk"] for r in rows), default=-1))
        self._tokens = None
        self._token_ids = None
        if len(self.tokens) != len(known) + len(new):
            raise InputError(f"the token list of collection {self.name!r} changed while it was extended "
                             "(another export appended tokens at the same time); export the shards one after "
                             "another, or pass the encoder (--model) so that ids come from its vocabulary")
        return len(new)

    # ---------------------------------------------------------------- insert
    def insert(self, batch: SparseBatch, batch_size: int = 1000, progress: bool = False) -> InsertReport:
        """Quantize ``batch`` (float weights, ids = docids) with the collection's quantizer and upsert it.

        Every document is either inserted or listed in the report with the
        reason: an empty vector after quantization, an id that is empty or
        longer than the key field allows, or a row Milvus refused.
        """
        if batch.ids is None:
            raise InputError("MilvusCollection.insert needs a SparseBatch with ids (the document ids)")
        meta = self.meta
        self._check_vocab(batch.vocab)
        q = meta.quantization.quantize(batch) if meta.quantization else batch
        if meta.ids == "derived":
            self.ensure_tokens(batch.vocab.tokens[j] for j in np.unique(q.indices))
        remap = self._remap(batch.vocab)

        def rows() -> Iterator[tuple[str, dict[int, float] | str]]:
            for i, docid in enumerate(q.ids):
                idx, val = q.row(i)
                ids = remap[idx] if remap is not None else idx
                yield docid, {int(j): float(v) for j, v in zip(ids.tolist(), val.tolist()) if j >= 0}

        return self._upsert(rows(), len(q), batch_size, progress, "insert")

    def insert_vector_dir(self, vecdir: str | os.PathLike, batch_size: int = 1000, progress: bool = True,
                          extend_tokens: bool = True) -> InsertReport:
        """Upsert every document of a vector directory written by ``lsr encode``.

        Tokens are mapped to dimension ids through the collection's token list.
        With derived ids, tokens it lacks are appended first (``extend_tokens``;
        one extra pass over the files); with vocabulary ids, a token outside the
        vocabulary fails that document.
        """
        vecdir = Path(vecdir)
        parts = part_files(vecdir) if vecdir.is_dir() else []
        if not parts:
            raise InputError(f"{vecdir}: no vector files (part-*.jsonl from `lsr encode`, or the *.json, *.jsonl "
                             "and *.gz files of an Anserini JsonVectorCollection); create them with `lsr encode`")
        if extend_tokens and self.meta.ids == "derived":
            self.ensure_tokens(vector_dir_tokens([vecdir]))
        ids = self._ids_of()

        def rows() -> Iterator[tuple[str, dict[int, float] | str]]:
            for p in parts:
                for docid, vec, _ in iter_vectors(p):
                    missing = [t for t in vec if t not in ids]
                    if missing:
                        yield docid, (f"token(s) {', '.join(map(repr, missing[:5]))} not in the collection's "
                                      f"token list of {len(ids)} tokens (vectors from another vocabulary?)")
                    else:
                        yield docid, {ids[t]: float(w) for t, w in vec.items()}

        total = _count_lines(vecdir)
        return self._upsert(rows(), total, batch_size, progress, f"export {vecdir.name}")

    def _upsert(self, rows: Iterable[tuple[str, dict | str]], total: int | None, batch_size: int,
                progress: bool, desc: str) -> InsertReport:
        self._load()
        report = InsertReport()
        seen: set[str] = set()
        pending: list[dict] = []
        with tqdm(total=total, unit="doc", desc=desc, disable=not progress) as bar:
            for docid, vec in rows:
                bar.update(1)
                reason = _row_problem(docid, vec)
                if reason is None and docid in seen:
                    reason = "duplicate id in this insert"
                if reason is not None:
                    report.failed.append((docid, reason))
                    continue
                seen.add(docid)
                pending.append({ID_FIELD: docid, VECTOR_FIELD: vec})
                if len(pending) >= batch_size:
                    report += self._write_rows(pending)
                    pending = []
            if pending:
                report += self._write_rows(pending)
        return report

    def _write_rows(self, rows: list[dict]) -> InsertReport:
        """Upsert ``rows``; on a refusal, split the batch to find and report the rows Milvus refuses."""
        try:
            with _quiet_pymilvus():
                self._client.upsert(self.name, rows)
            return InsertReport(len(rows))
        except Exception as e:  # noqa: BLE001 - MilvusException, ParamError, DataNotMatchException, ...
            if self._unreachable():
                raise EnvironmentProblem(f"lost the connection to Milvus at {self.uri} while inserting "
                                         f"({_first_line(e)}); documents before this batch were inserted") from None
            if len(rows) == 1:
                return InsertReport(0, [(rows[0][ID_FIELD], f"refused by Milvus: {_first_line(e)}")])
        half = len(rows) // 2
        out = self._write_rows(rows[:half])
        out += self._write_rows(rows[half:])
        return out

    # ------------------------------------------------------------ documents
    def doc_vector(self, docid: str) -> dict[str, int]:
        """The stored vector of ``docid`` as ``{token: int}``."""
        self._load()
        rows = self._call("get", self._client.get, self.name, ids=[docid], output_fields=[VECTOR_FIELD])
        if not rows:
            raise InputError(f"document {docid!r} is not in collection {self.name!r} at {self.uri}")
        tokens = self.tokens
        return {tokens[int(j)]: int(round(float(w))) for j, w in rows[0][VECTOR_FIELD].items()}

    # ---------------------------------------------------------------- search
    @property
    def num_docs(self) -> int:
        return self.count()

    def describe(self) -> str:
        return f"collection {self.name!r} at {self.uri}"

    def _check_k(self, k: int) -> None:
        _check_k(k)

    def _check_vocab(self, vocab: Vocabulary) -> None:
        m = self.meta
        if m.vocab_fingerprint and m.vocab_fingerprint != vocab.fingerprint:
            raise IndexMismatchError(
                f"collection {self.name!r} at {self.uri} holds vectors of {m.encoder!r} (vocabulary "
                f"{m.vocab_fingerprint}); these vectors come from vocabulary {vocab.fingerprint}. Encode with "
                "the collection's encoder, or export to another collection")

    def _remap(self, vocab: Vocabulary) -> np.ndarray | None:
        """Vocabulary id -> collection dimension id (-1: absent), or None when they are the same."""
        m = self.meta
        if m.ids == "vocabulary" and m.dimension == len(vocab):
            return None
        ids = self._ids_of()
        return np.array([ids.get(t, -1) for t in vocab.tokens], dtype=np.int64)

    def _engine_queries(self, queries) -> list[dict[int, float]]:
        """Queries as ``{dimension id: impact}`` in the collection's ids; tokens it lacks match nothing."""
        if isinstance(queries, SparseBatch):
            q = self.query_quantizer(queries).quantize(queries)
            remap = self._remap(queries.vocab)
            out = []
            for i in range(len(q)):
                idx, val = q.row(i)
                ids = remap[idx] if remap is not None else idx
                out.append({int(j): float(v) for j, v in zip(ids.tolist(), val.tolist()) if j >= 0})
            return out
        ids = self._ids_of()
        return [{ids[t]: float(w) for t, w in vec.items() if t in ids} for vec in self.quantized_queries(queries)]

    def _hits(self, raw: list[tuple[str, float]], k: int) -> list[Hit]:
        quant = self.meta.quantization
        ranked = sorted(((docid, int(round(score))) for docid, score in raw), key=lambda h: (-h[1], h[0]))[:k]
        return [Hit(docid, quant.to_float_score(s) if quant else float(s), r, s)
                for r, (docid, s) in enumerate(ranked, 1) if s > 0]

    def _search_vectors(self, qids: Sequence[str], vectors: Sequence[dict[int, float]], k: int,
                        threads: int | None = None) -> list[list[Hit]]:
        """Top ``k`` of each vector, fetching deeper where ties cross the k-th place (ties go by docid); Milvus
        parallelises on its side (``threads`` is not used)."""
        self._load()
        results: list[list[Hit] | None] = [None] * len(vectors)
        todo = [i for i, v in enumerate(vectors) if v]
        for i, v in enumerate(vectors):
            if not v:
                results[i] = []
        limit = min(MAX_TOPK, k + max(10, k // 4))
        while todo:
            retry = []
            for start in range(0, len(todo), QUERY_BATCH):
                chunk = todo[start:start + QUERY_BATCH]
                kwargs = {"consistency_level": self.consistency_level} if self.consistency_level else {}
                found = self._call("search", self._client.search, self.name, data=[vectors[i] for i in chunk],
                                   anns_field=VECTOR_FIELD, limit=limit, search_params=SEARCH_PARAMS,
                                   output_fields=[], **kwargs)
                for i, hits in zip(chunk, found):
                    raw = [(_hit_id(h), float(h["distance"])) for h in hits]
                    scores = sorted((round(s) for _, s in raw), reverse=True)
                    if len(raw) == limit and len(raw) > k and scores[-1] == scores[k - 1] and limit < MAX_TOPK:
                        retry.append(i)  # the k-th score ties with the deepest one fetched: fetch deeper
                    else:
                        results[i] = self._hits(raw, k)
            todo = retry
            limit = min(MAX_TOPK, limit * 4)
        return results  # type: ignore[return-value]

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._client.close()


def _hit_id(hit) -> str:
    """The primary key of a search hit: ``hit["id"]`` on Milvus 2.x servers, the key field's name on Milvus Lite 3."""
    for key in ("id", ID_FIELD):
        try:
            return str(hit[key])
        except (KeyError, TypeError):
            continue
    return str(hit.id)


def _compact_json(value) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _check_k(k: int) -> None:
    if k < 1 or k > MAX_TOPK:
        raise InputError(f"k must lie in 1..{MAX_TOPK} (Milvus' largest top-k), got {k}")


def _row_problem(docid: str, vec: dict | str) -> str | None:
    if isinstance(vec, str):
        return vec
    if not isinstance(docid, str) or not docid:
        return "empty document id"
    try:
        n = len(docid.encode("utf-8"))
    except UnicodeEncodeError:
        n = 0  # not encodable: left to Milvus, which refuses the row and is reported as such
    if n > MAX_ID_BYTES:
        return f"document id is {n} bytes long; the key field holds at most {MAX_ID_BYTES}"
    if not vec:
        return "empty vector after quantization"
    return None


def _count_lines(vecdir: Path) -> int | None:
    try:
        with open(vecdir / "offsets.tsv", "rb") as fh:
            return sum(1 for _ in fh)
    except OSError:
        return None


# --------------------------------------------------------------------- export
def vector_dir_tokens(vecdirs: Sequence[str | os.PathLike]) -> list[str]:
    """The sorted set of tokens used by the vectors of some vector directories."""
    seen: set[str] = set()
    for d in vecdirs:
        for p in part_files(d):
            for _, vec, _ in iter_vectors(p):
                seen.update(vec)
    return sorted(seen)


def export_vector_dirs(
    vecdirs: Sequence[str | os.PathLike],
    uri: str,
    collection: str,
    vocab: Vocabulary | None = None,
    replace: bool = False,
    token: str | None = None,
    batch_size: int = 1000,
    progress: bool = True,
    timeout: float = 10.0,
) -> tuple[str, InsertReport]:
    """Create (or append to) a collection from vector directories; returns (action, report).

    ``vocab`` (the encoder's vocabulary, checked against the directories'
    fingerprint) makes dimension ids the vocabulary ids; without it they are
    derived from the tokens in the vectors and kept in the collection.
    Several directories (the shards of one corpus) must fit together; see
    :func:`lsr.engines.check_vector_dirs`.
    """
    from .shards import check_vector_dirs

    infos = check_vector_dirs(vecdirs)
    info = infos[0]
    if vocab is not None and info is not None and info.vocab_fingerprint \
            and info.vocab_fingerprint != vocab.fingerprint:
        raise IndexMismatchError(f"{vecdirs[0]} was encoded with {info.encoder!r} (vocabulary "
                                 f"{info.vocab_fingerprint}), not with the given vocabulary {vocab.fingerprint}")
    col = MilvusCollection(uri, collection, token=token, timeout=timeout)
    used: list[str] | None = None

    def tokens_in_use() -> list[str]:
        nonlocal used
        if used is None:
            used = vector_dir_tokens(vecdirs)
        return used

    if vocab is not None:
        meta = CollectionMeta(info.encoder if info else None, vocab.fingerprint, len(vocab),
                              info.quantization if info else None, "vocabulary")
        action = col.create(meta, list(vocab.tokens), replace=replace)
    else:
        meta = CollectionMeta(info.encoder if info else None, info.vocab_fingerprint if info else None, None,
                              info.quantization if info else None, "derived")
        action = col.create(meta, tokens_in_use, replace=replace)
    if col.meta.ids == "derived":
        col.ensure_tokens(tokens_in_use())
    report = InsertReport()
    for d in vecdirs:
        report += col.insert_vector_dir(d, batch_size=batch_size, progress=progress, extend_tokens=False)
    col.flush()
    col.close()
    return action, report
