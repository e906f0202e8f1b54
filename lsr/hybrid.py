"""Hybrid search: a sparse first stage, dense rerankers over its candidates, and fusion.

:class:`HybridSearcher` only composes parts:

* a first stage: anything with ``batch_search(queries, qids, k, threads) ->
  {qid: [Hit]}`` (e.g. :class:`anserini_bridge.search.ImpactSearcher`);
* one or more :class:`Reranker`: a query encoder plus the
  :class:`~lsr.embstore.EmbeddingStore` of document embeddings built with the
  same model (documents are never re-encoded);
* a fusion function from :mod:`lsr.fusion` (``rrf`` or ``interp``; for
  ``interp``, ``alpha`` weighs the sparse run: ``alpha * sparse + (1 - alpha) * dense``).

For each query the first stage returns its top ``k0`` candidates. Optionally
each reranker adds its own top ``dense_candidates`` documents from an
exhaustive search over its store, so relevant documents the sparse stage
missed can still be found. Every candidate is scored by every reranker (dot
product with the stored, normalised embedding); the sparse run and the dense
runs are fused and the top ``k`` kept.

Timings are kept per query in :attr:`HybridSearcher.timings`: sparse query
encoding (when the searcher is given a ``sparse_encoder`` and encodes each
query itself), first stage, dense query encoding (``query_encoding``),
embedding lookup and scoring, exhaustive dense search and fusion. With ``batch_size=1`` (the default) queries are processed one at
a time and each time is that query's own; with larger batches a batch's time
is divided evenly among its queries.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from lsr.progress import tqdm

from .embstore import EmbeddingStore
from .errors import InputError
from .fusion import fusion_function
from .io import Hit

STAGES = ("sparse_encoding", "first_stage", "query_encoding", "lookup", "dense_search", "fusion")


@dataclass
class Reranker:
    """A dense query encoder and the store of document embeddings built with the same model.

    ``missing`` says what happens when a candidate is not in the store:
    ``"error"`` (default) raises, naming the docids; ``"skip"`` leaves the
    document out of this reranker's run (in RRF it gets no contribution, in
    interpolation the run's lowest score).
    """

    encoder: Any
    store: EmbeddingStore
    missing: str = "error"
    name: str = ""

    def __post_init__(self):
        if self.missing not in ("error", "skip"):
            raise InputError(f"missing={self.missing!r}: use 'error' or 'skip'")
        self.store.check_encoder(self.encoder)
        self.name = self.name or str(getattr(self.encoder, "name", "dense"))


@dataclass
class QueryTiming:
    """Seconds spent on one query in each stage."""

    qid: str
    sparse_encoding: float = 0.0
    first_stage: float = 0.0
    query_encoding: float = 0.0
    lookup: float = 0.0
    dense_search: float = 0.0
    fusion: float = 0.0
    candidates: int = 0

    @property
    def total(self) -> float:
        return sum(getattr(self, s) for s in STAGES)


@dataclass
class HybridSearcher:
    """First stage + rerankers + fusion (see the module docstring)."""

    first_stage: Any
    rerankers: Sequence[Reranker]
    fusion: str | Callable[[Sequence[Mapping]], dict[str, list[Hit]]] = "rrf"
    k0: int = 100
    rrf_k: float = 60
    alpha: float = 0.5
    norm: str = "minmax"
    weights: Sequence[float] | None = None  # rrf and sum: one per run, the first stage's first
    dense_candidates: int = 0
    batch_size: int = 1
    progress: bool = False
    sparse_encoder: Any = None
    timings: list[QueryTiming] = field(default_factory=list)

    def __post_init__(self):
        if not hasattr(self.first_stage, "batch_search"):
            raise InputError(f"{type(self.first_stage).__name__} has no batch_search(queries, qids, k, threads)")
        if isinstance(self.rerankers, Reranker):
            self.rerankers = [self.rerankers]
        if not self.rerankers:
            raise InputError("a hybrid searcher needs at least one reranker")
        if self.k0 < 1:
            raise InputError(f"k0 must be at least 1, got {self.k0}")
        if self.dense_candidates < 0:
            raise InputError(f"dense_candidates must be non-negative, got {self.dense_candidates}")
        if self.batch_size < 1:
            raise InputError(f"batch_size must be positive, got {self.batch_size}")
        self._fuse = self.fusion if callable(self.fusion) else fusion_function(
            self.fusion, k=self.rrf_k, alpha=self.alpha, norm=self.norm, weights=self.weights)

    # ---------------------------------------------------------------- search
    def batch_search(self, queries: Any, qids: Sequence[str], inputs: Sequence[Any], k: int = 100,
                     threads: int | None = None) -> dict[str, list[Hit]]:
        """Hybrid results ``{qid: [Hit]}`` (top ``k``) for every query, in input order.

        ``queries`` is what the first stage searches with (a
        :class:`~lsr.sparse.SparseBatch` or a list of ``{token: int}``), or
        ``None``: then :attr:`sparse_encoder` encodes each batch of ``inputs``
        as it is searched (``encode_queries``), and that time is the
        ``sparse_encoding`` stage. ``inputs`` are the same queries for the
        dense encoders (strings or :class:`~lsr.inputs.Input`). Timings
        replace :attr:`timings`.
        """
        qids = [str(q) for q in qids]
        if len(set(qids)) != len(qids):
            raise InputError("query ids must be unique")
        if len(inputs) != len(qids):
            raise InputError(f"{len(inputs)} dense query inputs for {len(qids)} query ids")
        if queries is None:
            if self.sparse_encoder is None:
                raise InputError("no first-stage queries given and no sparse_encoder to encode the inputs")
        elif len(queries) != len(qids):
            raise InputError(f"{len(queries)} first-stage queries for {len(qids)} query ids")
        if k < 1:
            raise InputError(f"k must be at least 1, got {k}")
        results: dict[str, list[Hit]] = {}
        self.timings = []
        bar = tqdm(total=len(qids), unit="query", desc="hybrid search", disable=not self.progress)
        for start in range(0, len(qids), self.batch_size):
            idx = list(range(start, min(start + self.batch_size, len(qids))))
            part = None if queries is None else _select(queries, idx)
            results.update(self._search_batch(part, [qids[i] for i in idx], [inputs[i] for i in idx], k, threads))
            bar.update(len(idx))
        bar.close()
        return results

    def _search_batch(self, queries, qids: list[str], inputs: list[Any], k: int, threads) -> dict[str, list[Hit]]:
        n = len(qids)
        t = {s: 0.0 for s in STAGES}
        if queries is None:
            t0 = time.perf_counter()
            queries = self.sparse_encoder.encode_queries(inputs, ids=qids)
            t["sparse_encoding"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        first = self.first_stage.batch_search(queries, qids, k=self.k0, threads=threads)
        t["first_stage"] = time.perf_counter() - t0

        qvecs = []
        for r in self.rerankers:
            t0 = time.perf_counter()
            qvecs.append(np.asarray(r.encoder.encode_queries(inputs), dtype=np.float32))
            t["query_encoding"] += time.perf_counter() - t0

        candidates = {q: [h.docid for h in first.get(q, [])] for q in qids}
        if self.dense_candidates:
            t0 = time.perf_counter()
            for r, qv in zip(self.rerankers, qvecs):
                for q, found in zip(qids, r.store.search(qv, k=self.dense_candidates)):
                    have = set(candidates[q])
                    candidates[q].extend(d for d, _ in found if d not in have)
            t["dense_search"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        dense_runs: list[dict[str, dict[str, float]]] = []
        for r, qv in zip(self.rerankers, qvecs):
            run = {}
            for j, q in enumerate(qids):
                run[q] = r.store.score(qv[j], candidates[q], missing=r.missing)
            dense_runs.append(run)
        t["lookup"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        sparse_run = {q: first.get(q, []) for q in qids}
        fused = self._fuse([sparse_run, *dense_runs])
        out = {q: fused.get(q, [])[:k] for q in qids}
        t["fusion"] = time.perf_counter() - t0

        for q in qids:
            self.timings.append(QueryTiming(q, **{s: v / n for s, v in t.items()}, candidates=len(candidates[q])))
        return out

    # --------------------------------------------------------------- reports
    def timing_medians(self) -> dict[str, float]:
        """Median seconds per query for each stage and the total, over the last :meth:`batch_search`."""
        if not self.timings:
            return {}
        med = {s: statistics.median(getattr(t, s) for t in self.timings) for s in STAGES}
        med["total"] = statistics.median(t.total for t in self.timings)
        return med


def _select(queries: Any, idx: list[int]):
    if hasattr(queries, "select"):
        return queries.select(idx)
    return [queries[i] for i in idx]
