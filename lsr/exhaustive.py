"""Exact search by a scipy dot product: the reference every index must agree with."""

from __future__ import annotations

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
