"""Lucene through Anserini: impact and BM25 indexes and their search (explanations: ``anserini_bridge.explain``).

Every name here is imported on first use; the JVM starts with the first index
build or search.

Example::

    from anserini_bridge import ImpactSearcher, build_index

    build_index("vec", "idx")                 # a vector directory written by `lsr encode`
    with ImpactSearcher("idx") as searcher:   # the index's quantizer is applied to float queries
        hits = searcher.search({"wing": 120, "drag": 80}, k=10)
"""

from lsr._lazy import lazy_exports

_LAZY = {
    "build_index": ".index", "IndexMeta": ".index",
    "ImpactSearcher": ".search",
    "build_bm25_index": ".bm25", "BM25Searcher": ".bm25",
}
__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
__all__ = list(_LAZY)
