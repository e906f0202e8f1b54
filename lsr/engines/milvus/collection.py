"""A Milvus collection of quantized sparse vectors: create, insert, search."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
from lsr.progress import tqdm

from ...errors import EnvironmentProblem, IndexMismatchError, InputError
from ...io import Hit
from ...retrieval import SparseRetriever
from ...sparse import SparseBatch
from ...vectors import iter_vectors, part_files
from ...vocab import Vocabulary
from ..report import InsertReport
from .connection import (ID_FIELD, MAX_ID_BYTES, MAX_TOPK, QUERY_BATCH, SEARCH_PARAMS, VECTOR_FIELD, VOCAB_SUFFIX,
                         check_collection_name, error_line, import_pymilvus, quiet_pymilvus)
from .meta import META_PROPERTY, CollectionMeta
from .tokens import TokenList, vector_dir_tokens


class MilvusCollection(TokenList, SparseRetriever):
    """A Milvus collection of quantized sparse vectors: create, bulk insert, search.

    Satisfies :class:`lsr.retrieval.Retriever`.
    """

    _remedy = "Encode queries with the collection's encoder, or export to another collection"

    def __init__(self, uri: str, collection: str, token: str | None = None, timeout: float = 10.0,
                 consistency_level: str | None = None):
        """Connect to Milvus at ``uri`` (``http://HOST:PORT``); ``token`` is ``user:password`` or an API key."""
        pymilvus = import_pymilvus()
        self.uri = uri
        self.name = check_collection_name(collection)
        self.vocab_name = collection + VOCAB_SUFFIX
        self.timeout = timeout
        self.consistency_level = consistency_level
        self._MilvusException = pymilvus.MilvusException
        self._DataType = pymilvus.DataType
        try:
            with quiet_pymilvus():
                self._client = pymilvus.MilvusClient(uri=uri, token=token or "", timeout=timeout)
        except Exception as e:  # noqa: BLE001 - pymilvus raises MilvusException or grpc errors here
            raise EnvironmentProblem(f"cannot reach Milvus at {uri} ({error_line(e)}); start the server or "
                                     "check the address (milvus://HOST:PORT/COLLECTION)") from None
        self._meta: CollectionMeta | None = None
        self._tokens: list[str] | None = None
        self._token_ids: dict[str, int] | None = None
        self._loaded = False

    # --------------------------------------------------------------- plumbing
    def _call(self, what: str, fn, *args, **kwargs):
        try:
            with quiet_pymilvus():
                return fn(*args, **kwargs)
        except self._MilvusException as e:
            if self._unreachable():
                raise EnvironmentProblem(f"lost the connection to Milvus at {self.uri} during {what} "
                                         f"({error_line(e)})") from None
            raise InputError(f"Milvus at {self.uri} refused {what} on collection {self.name!r}: "
                             f"{error_line(e)}") from None

    def _unreachable(self) -> bool:
        try:
            with quiet_pymilvus():
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
        extra = {"consistency_level": self.consistency_level} if self.consistency_level else {}
        self._create_token_list(tokens)
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
            with quiet_pymilvus():
                self._client.upsert(self.name, rows)
            return InsertReport(len(rows))
        except Exception as e:  # noqa: BLE001 - MilvusException, ParamError, DataNotMatchException, ...
            if self._unreachable():
                raise EnvironmentProblem(f"lost the connection to Milvus at {self.uri} while inserting "
                                         f"({error_line(e)}); documents before this batch were inserted") from None
            if len(rows) == 1:
                return InsertReport(0, [(rows[0][ID_FIELD], f"refused by Milvus: {error_line(e)}")])
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
