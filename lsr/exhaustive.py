"""Exact search: by a scipy dot product (the reference every index must agree with), and the blocked
dense top-k behind embedding stores and dense evaluation."""

from __future__ import annotations

from typing import Iterable

import numpy as np

from .errors import InputError
from .io import Hit
from .sparse import SparseBatch


def exhaustive_search(queries: SparseBatch, documents: SparseBatch, k: int = 10) -> dict[str, list[Hit]]:
    """Exact top-``k`` by a scipy dot product (the reference the index must agree with).

    Ties are broken by docid, as Anserini does.
    """
    if queries.ids is None or documents.ids is None:
        raise InputError("exhaustive_search needs ids on both batches")
    scores = queries.dot(documents)
    docids = np.array(documents.ids, dtype=object)
    order_by_id = np.argsort(docids)
    out = {}
    for i, qid in enumerate(queries.ids):
        row = scores[i, order_by_id]
        top = order_by_id[np.lexsort((np.arange(len(row)), -row))[:k]]
        out[qid] = [Hit(str(docids[j]), float(scores[i, j]), r + 1) for r, j in enumerate(top) if scores[i, j] > 0]
    return out


def top_k_rows(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Column indices and scores of the top ``k`` per row, best first (ties by column)."""
    k = min(k, scores.shape[1])
    if k == 0:
        return np.zeros((len(scores), 0), np.int64), np.zeros((len(scores), 0), np.float32)
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < scores.shape[1] else \
        np.tile(np.arange(scores.shape[1]), (len(scores), 1))
    vals = np.take_along_axis(scores, part, 1)
    order = np.lexsort((part, -vals), axis=1)
    return np.take_along_axis(part, order, 1), np.take_along_axis(vals, order, 1)


def blocked_top_k(blocks: Iterable[tuple[np.ndarray, np.ndarray]], n_queries: int,
                  k: int) -> tuple[np.ndarray, np.ndarray]:
    """The top ``k`` over blocks of candidates: ``(indices [n_queries, k], scores)``, best first.

    Each block is ``(scores [n_queries, b], indices [b])``; a running top ``k``
    is kept, so memory is bounded by one block. Ties go to the candidate seen
    first (blocks in increasing index order: the lower index).
    """
    best_i = np.zeros((n_queries, 0), np.int64)
    best_s = np.zeros((n_queries, 0), np.float32)
    for scores, idx in blocks:
        cand_i = np.concatenate([best_i, np.broadcast_to(idx, (n_queries, len(idx)))], axis=1)
        top, vals = top_k_rows(np.concatenate([best_s, scores], axis=1), k)
        best_i, best_s = np.take_along_axis(cand_i, top, 1), vals
    return best_i, best_s
