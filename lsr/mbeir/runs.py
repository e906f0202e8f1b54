"""Dense retrieval over an M-BEIR set, fusion of runs, and restriction to a pool."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..errors import InputError
from ..exhaustive import blocked_top_k
from ..inputs import Input
from ..io import Hit
from .data import MbeirSet
from .metrics import Runs
from .tasks import SCOPES

# ------------------------------------------------------------ dense retrieval
def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def encode_dense(encoder, inputs: Sequence[Input], role: str, chunk_size: int = 256, progress: bool = False,
                 path: str | os.PathLike | None = None) -> np.ndarray:
    """L2-normalised float32 embeddings ``[n, d]`` from ``encoder.encode_queries`` / ``encode_documents``.

    With ``path`` the matrix is written to that ``.npy`` file and returned memory mapped.
    """
    from lsr.progress import tqdm

    fn = encoder.encode_queries if role == "query" else encoder.encode_documents
    name = getattr(encoder, "name", type(encoder).__name__)
    out = None
    desc = "embed queries" if role == "query" else "embed candidates"
    bar = tqdm(total=len(inputs), unit="input", desc=desc, disable=not progress)
    for s in range(0, len(inputs), chunk_size):
        chunk = list(inputs[s:s + chunk_size])
        vecs = np.asarray(fn(chunk), dtype=np.float32)
        if vecs.ndim != 2 or len(vecs) != len(chunk) or vecs.shape[1] < 1:
            raise InputError(f"{name}: encode_{role}s returned shape {vecs.shape} for {len(chunk)} inputs; "
                             "expected [n, dim]")
        if out is None:
            shape = (len(inputs), vecs.shape[1])
            out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape) if path is not None \
                else np.empty(shape, dtype=np.float32)
        elif vecs.shape[1] != out.shape[1]:
            raise InputError(f"{name}: encode_{role}s returned {vecs.shape[1]} dimensions after {out.shape[1]}")
        out[s:s + len(chunk)] = _normalise(vecs)
        bar.update(len(chunk))
    bar.close()
    return out if out is not None else np.zeros((0, 0), np.float32)


def dense_runs(encoder, mset: MbeirSet, query_inputs: Sequence[Input], depth: int = 50,
               scopes: Iterable[str] = SCOPES, chunk_size: int = 256, block: int = 65536,
               workdir: str | os.PathLike | None = None, progress: bool = False) -> Runs:
    """Exhaustive cosine search with a dense encoder (``encode_*`` return float arrays ``[n, d]``).

    The pool is embedded once (into ``workdir/pool-embeddings.npy``, memory
    mapped, when ``workdir`` is given) and scanned in blocks of ``block``
    rows; the local scope only scans the row's local pool. Ties are broken
    by pool order.
    """
    scopes = tuple(scopes)
    if depth < 1:
        raise InputError(f"depth must be at least 1, got {depth}")
    path = None
    if workdir is not None:
        Path(workdir).mkdir(parents=True, exist_ok=True)
        path = Path(workdir) / "pool-embeddings.npy"
    matrix = encode_dense(encoder, mset.candidate_inputs(), "document", chunk_size, progress, path)
    queries = encode_dense(encoder, list(query_inputs), "query", chunk_size, progress)
    if len(queries) != len(mset.queries):
        raise InputError(f"{len(queries)} query inputs for {len(mset.queries)} queries")
    if queries.shape[1] != matrix.shape[1]:
        raise InputError(f"query embeddings have {queries.shape[1]} dimensions, candidates {matrix.shape[1]}")
    qids = [q.qid for q in mset.queries]
    position = {q: i for i, q in enumerate(qids)}
    dids = [c.did for c in mset.pool]
    out: dict[str, dict[str, list[Hit]]] = {}
    for scope in scopes:
        run: dict[str, list[Hit]] = {}
        if scope == "global":
            groups = [(np.arange(len(qids)), np.arange(len(dids)))]
        else:
            groups = [(np.asarray([position[q] for q in mset.queries_of[row]]), mset.local_pool(row))
                      for row in mset.rows]
        for qrows, cols in groups:
            blocks = ((queries[qrows] @ np.asarray(matrix[idx]).T, idx)
                      for idx in (cols[s:s + block] for s in range(0, len(cols), block)))
            best_i, best_s = blocked_top_k(blocks, len(qrows), depth)
            for r, qi in enumerate(qrows):
                run[qids[qi]] = [Hit(dids[j], float(v), rank) for rank, (j, v) in
                                 enumerate(zip(best_i[r].tolist(), best_s[r].tolist()), 1)]
        out[scope] = run
    return Runs(str(getattr(encoder, "name", type(encoder).__name__)), out, "dense")


def fuse_runs(runs: Sequence[Runs], method: str = "rrf", *, rrf_k: float = 60, alpha: float = 0.5,
              norm: str = "minmax", depth: int | None = None, name: str | None = None,
              weights: Sequence[float] | None = None) -> Runs:
    """Fuse systems scope by scope with :mod:`lsr.fusion` (RRF, or interpolation where ``runs[0]``
    is the sparse run and ``alpha`` its weight)."""
    from ..fusion import describe, fusion_function

    if len(runs) < 2:
        raise InputError(f"fusion needs at least two runs, got {len(runs)}")
    fuse = fusion_function(method, k=rrf_k, alpha=alpha, norm=norm, depth=depth, weights=weights)
    scopes = [s for s in SCOPES if all(s in r.scopes for r in runs)]
    if not scopes:
        raise InputError("the runs to fuse share no scope (local / global)")
    fused = {s: fuse([r.scopes[s] for r in runs]) for s in scopes}
    how = describe(method, k=rrf_k, alpha=alpha, norm=norm, weights=weights)
    return Runs(name or " + ".join(r.name for r in runs), fused, "hybrid", {"fusion": how})


def restrict(hits: Sequence[Hit], allowed: set[str], depth: int) -> list[Hit]:
    """The hits whose docid is in ``allowed``, re-ranked from 1, at most ``depth``."""
    out = []
    for h in sorted(hits, key=lambda h: h.rank):
        if h.docid in allowed:
            out.append(Hit(h.docid, h.score, len(out) + 1, h.impact_score))
            if len(out) >= depth:
                break
    return out
