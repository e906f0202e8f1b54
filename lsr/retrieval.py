"""The retriever protocol: what every sparse first stage offers.

The Lucene impact searcher (:class:`anserini_bridge.search.ImpactSearcher`)
and the distributed engines in :mod:`lsr.engines` (Milvus, OpenSearch,
Elasticsearch) all search the same quantized vectors and answer with the same
typed :class:`~lsr.io.Hit` values, so the hybrid layer and the command line
work with any of them.

Queries are either

* a :class:`~lsr.sparse.SparseBatch` of float weights, which the retriever
  quantizes with the :class:`~lsr.quantize.Quantizer` stored with its index or
  collection (and refuses when the vocabulary differs), or
* a list of ``{token: positive int}`` dicts: integer impacts, used as they are.

``batch_search`` returns ``{qid: hits}`` in the input order; a query that is
empty after quantization gets an empty list. ``Hit.score`` is the integer
score divided by ``scale**2`` (an approximation of the float dot product) and
``Hit.impact_score`` the integer score itself.

:class:`SparseRetriever` is the base they share: metadata checks, query
quantization and validation, ``search`` on top of the engine call, and the
context manager. Each engine implements only the engine call.
"""

from __future__ import annotations

from typing import Mapping, Protocol, Sequence, Union, runtime_checkable

from .errors import IndexMismatchError, InputError
from .io import Hit
from .quantize import Quantizer
from .sparse import SparseBatch

Queries = Union[SparseBatch, Sequence[Mapping[str, int]]]
Query = Union[SparseBatch, Mapping[str, int]]


@runtime_checkable
class Retriever(Protocol):
    """Anything that searches quantized sparse vectors and returns typed hits."""

    def search(self, query: Query, k: int = 10) -> list[Hit]:
        """Top ``k`` hits for one query (``{token: int}`` or a one-row float batch)."""
        ...

    def batch_search(
        self, queries: Queries, qids: Sequence[str] | None = None, k: int = 10, threads: int | None = None,
    ) -> dict[str, list[Hit]]:
        """``{qid: top-k hits}`` for many queries, in the input order."""
        ...


class SparseRetriever:
    """Base of the retrievers over quantized sparse vectors (Lucene impact index, Milvus, OpenSearch/Elasticsearch).

    A subclass provides

    * ``meta``: an object with ``encoder``, ``vocab_fingerprint`` and
      ``quantization`` (a :class:`~lsr.quantize.Quantizer` or ``None``), as
      recorded with the index or collection;
    * :meth:`describe`: how messages name it;
    * :meth:`_search_vectors`: the engine call for non-empty queries.

    It may override :meth:`_engine_queries` (the engine's form of the
    queries), :meth:`_search_one` (a faster path for one query),
    :meth:`_check_k` and :meth:`close`.
    """

    #: How a vocabulary mismatch names what the retriever holds, and what to do about it.
    _holds = "holds vectors of"
    _remedy = "Encode queries with the index's encoder or rebuild the index."

    meta: object

    def describe(self) -> str:
        raise NotImplementedError

    # ----------------------------------------------------------------- checks
    def check_encoder(self, encoder_name: str | None, vocab_fingerprint: str | None) -> None:
        """Refuse queries from another vocabulary than the index's, and float queries for an index without a
        quantization spec."""
        m = self.meta
        if m.vocab_fingerprint and vocab_fingerprint and m.vocab_fingerprint != vocab_fingerprint:
            source = (f"{encoder_name!r} (vocabulary {vocab_fingerprint})" if encoder_name
                      else f"vocabulary {vocab_fingerprint}")
            raise IndexMismatchError(f"{self.describe()} {self._holds} {m.encoder!r} (vocabulary "
                                     f"{m.vocab_fingerprint}); the queries come from {source}. {self._remedy}")
        if m.quantization is None:
            raise IndexMismatchError(f"{self.describe()} has no quantization spec (built from foreign vector "
                                     "files); search it with integer query vectors (--query-vectors)")

    def _check_k(self, k: int) -> None:
        if k < 1:
            raise InputError(f"k must be at least 1, got {k}")

    def query_quantizer(self, batch: SparseBatch) -> Quantizer:
        """The quantizer for float queries ``batch``, after checking their vocabulary against the index's."""
        self.check_encoder(None, batch.vocab.fingerprint)
        return self.meta.quantization

    # ---------------------------------------------------------------- queries
    def quantized_queries(self, queries: Queries) -> list[dict[str, int]]:
        """Queries as ``{token: positive int}``: float batches quantized with the index's quantizer, integer
        vectors validated."""
        if isinstance(queries, SparseBatch):
            impacts = self.query_quantizer(queries).impacts(queries.values).tolist()
            tokens, cols, bounds = queries.vocab.tokens, queries.indices.tolist(), queries.indptr.tolist()
            return [{tokens[cols[j]]: impacts[j] for j in range(bounds[i], bounds[i + 1]) if impacts[j] > 0}
                    for i in range(len(bounds) - 1)]
        from .vectors import parse_vector

        out = []
        for i, d in enumerate(queries):
            try:
                out.append(parse_vector("query", i + 1, {"vector": dict(d)}))
            except InputError as e:
                raise InputError(str(e).replace("query:", "query #", 1)) from None
        return out

    def _engine_queries(self, queries: Queries) -> list:
        """The queries in the engine's own form (default: :meth:`quantized_queries`); an empty one matches
        nothing."""
        return self.quantized_queries(queries)

    # ----------------------------------------------------------------- search
    def _search_vectors(self, qids: Sequence[str], vectors: Sequence, k: int,
                        threads: int | None) -> list[list[Hit]]:
        """The engine call: top ``k`` hits of each (non-empty) query vector, in order."""
        raise NotImplementedError

    def _search_one(self, vector, k: int) -> list[Hit]:
        return self._search_vectors(["q"], [vector], k, None)[0]

    def search(self, query: Query, k: int = 10) -> list[Hit]:
        """Top ``k`` hits for one query (``{token: int}`` or a one-row float :class:`~lsr.sparse.SparseBatch`)."""
        self._check_k(k)
        if isinstance(query, SparseBatch):
            if len(query) != 1:
                raise InputError(f"search takes one query; got a batch of {len(query)} (use batch_search)")
            vector = self._engine_queries(query)[0]
        else:
            vector = self._engine_queries([query])[0]
        return self._search_one(vector, k) if vector else []

    def batch_search(
        self, queries: Queries, qids: Sequence[str] | None = None, k: int = 10, threads: int | None = None,
    ) -> dict[str, list[Hit]]:
        """``{qid: top-k hits}`` for many queries, in the input order; an empty query gets an empty list."""
        self._check_k(k)
        qids = query_ids(queries, qids, k)
        vectors = self._engine_queries(queries)
        results: dict[str, list[Hit]] = {qid: [] for qid in qids}
        asked = [(qid, v) for qid, v in zip(qids, vectors) if v]
        if asked:
            found = self._search_vectors([q for q, _ in asked], [v for _, v in asked], k, threads)
            results.update(zip((q for q, _ in asked), found))
        return results

    # -------------------------------------------------------------- lifecycle
    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def query_ids(queries: Queries, qids: Sequence[str] | None, k: int) -> list[str]:
    """Validated arguments of ``batch_search``: ``k >= 1`` and unique string ids.

    Without ``qids`` the ids of a :class:`~lsr.sparse.SparseBatch` are used.
    """
    if k < 1:
        raise InputError(f"k must be at least 1, got {k}")
    if qids is None:
        if isinstance(queries, SparseBatch) and queries.ids is not None:
            qids = queries.ids
        else:
            raise InputError("batch_search needs query ids (qids=...) or a SparseBatch with ids")
    ids = [str(q) for q in qids]
    if len(set(ids)) != len(ids):
        raise InputError("batch_search: query ids must be unique")
    if len(ids) != len(queries):
        raise InputError(f"batch_search: {len(queries)} queries but {len(ids)} ids")
    return ids


def check_query_vectors(index_meta, query_info, index_name: str, queries_name: str) -> None:
    """Refuse integer query vectors made by another vocabulary or quantization than the index's,
    and the vectors of a directory written for documents (its metadata records the role).

    ``index_meta`` and ``query_info`` are any objects with ``encoder``,
    ``vocab_fingerprint`` and ``quantization`` (an index's or collection's
    metadata, a vector directory's); unknown values are not compared.
    """
    if query_info is None:
        return
    role = getattr(query_info, "role", "query")
    if role != "query":
        raise InputError(f"{queries_name} holds {role} vectors (role {role!r} in its lsr-vectors.json), not query "
                         "vectors; encode the queries with `lsr encode --role query --model MODEL --input "
                         "queries.jsonl --output QVEC` and pass --query-vectors QVEC")
    problems = []
    if index_meta.vocab_fingerprint and query_info.vocab_fingerprint and \
            index_meta.vocab_fingerprint != query_info.vocab_fingerprint:
        problems.append(f"the index holds vectors of {index_meta.encoder!r} (vocabulary "
                        f"{index_meta.vocab_fingerprint}), the queries come from {query_info.encoder!r} "
                        f"(vocabulary {query_info.vocab_fingerprint})")
    if index_meta.quantization is not None and query_info.quantization is not None and \
            index_meta.quantization != query_info.quantization:
        problems.append(f"the index was quantized with {index_meta.quantization}, the queries with "
                        f"{query_info.quantization}")
    if problems:
        raise IndexMismatchError(f"{queries_name} do not fit {index_name}: " + "; ".join(problems) +
                                 ". Encode the queries with the index's model and quantization "
                                 "(lsr encode --role query with the same --scale and --max-value)")
