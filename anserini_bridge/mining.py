"""Hard negatives mined from a Lucene impact index of the current model.

For each training query, the documents that an index of the model's own
document vectors ranks highest but that are not the query's matches: the
wrong images a caption currently retrieves. Fed back into the contrastive loss
(:func:`lsr.training.train` ``negatives=``) they teach the fine distinctions
that random in-batch negatives rarely pose.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Mapping

from lsr.quantize import Quantizer
from lsr.sparse import SparseBatch
from lsr.vectors import VectorWriter

from .index import build_index
from .search import ImpactSearcher


def mine_negatives(documents: SparseBatch, queries: SparseBatch, positives: Mapping[str, set[str]], k: int = 10,
                   quantizer: Quantizer | None = None, workdir: str | os.PathLike | None = None,
                   threads: int | None = None) -> dict[str, list[str]]:
    """``{query id: [doc id, ...]}``: each query's top ``k`` documents that are not among its ``positives``.

    ``documents`` and ``queries`` are float vectors with ids (e.g.
    ``encoder.encode_documents(docs, ids=...)``); they are quantized with
    ``quantizer`` (default :class:`~lsr.quantize.Quantizer`), the documents indexed
    in a temporary Lucene impact index (under ``workdir`` when given), and every
    query searched for ``k`` plus its number of positives hits.
    """
    if documents.ids is None or queries.ids is None:
        raise ValueError("mine_negatives needs document and query vectors with ids")
    quantizer = quantizer or Quantizer()
    with tempfile.TemporaryDirectory(prefix="lsr-mine-", dir=workdir) as tmp:
        vecdir, idx = Path(tmp) / "vectors", Path(tmp) / "index"
        with VectorWriter(vecdir, quantizer, encoder="mining", vocab=documents.vocab) as writer:
            writer.write(documents)
        build_index(vecdir, idx, threads=threads, store_vectors=False, progress=False)
        depth = k + max((len(v) for v in positives.values()), default=0)
        with ImpactSearcher(idx) as searcher:  # queries are quantized with the index's quantizer
            hits = searcher.batch_search(queries, list(queries.ids), k=depth, threads=threads)
    out = {}
    for qid, ranked in hits.items():
        own = positives.get(qid, set())
        out[qid] = [h.docid for h in ranked if h.docid not in own][:k]
    return out


__all__ = ["mine_negatives"]
