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
"""

from __future__ import annotations

import inspect
from typing import Mapping, Protocol, Sequence, Union, runtime_checkable

from .errors import IndexMismatchError, InputError
from .io import Hit
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


def signature_problems(retriever: object) -> list[str]:
    """Differences between the methods of ``retriever`` (an object or a class) and :class:`Retriever`'s.

    ``isinstance(x, Retriever)`` only checks that the methods exist; this also
    compares parameter names, order and defaults, which callers such as the
    hybrid reranker pass by keyword. An empty list means it conforms.
    """
    problems = []
    for name in ("search", "batch_search"):
        method = getattr(retriever, name, None)
        if not callable(method):
            owner = retriever.__name__ if isinstance(retriever, type) else type(retriever).__name__
            problems.append(f"{owner} has no method {name}()")
            continue
        want = [(p.name, p.default) for p in list(inspect.signature(getattr(Retriever, name)).parameters.values())[1:]]
        params = list(inspect.signature(method).parameters.values())
        if isinstance(retriever, type):  # a class: drop ``self``
            params = params[1:]
        have = [(p.name, p.default) for p in params]
        if have[:len(want)] != want or any(p.default is inspect.Parameter.empty for p in params[len(want):]):
            owner = retriever.__name__ if isinstance(retriever, type) else type(retriever).__name__
            problems.append(f"{owner}.{name}({', '.join(n for n, _ in have)}) does not match "
                            f"{name}({', '.join(n for n, _ in want)})")
    return problems


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
