"""Learned sparse retrieval: sparse vectors, quantization, fusion, evaluation.

The core is free of Java and model code (``import lsr`` loads neither torch
nor a JVM); encoders live in ``encoders`` and the Lucene side in
``anserini_bridge``. Names from heavier modules here (inputs, fusion,
retrieval, exhaustive search) are imported on first use.

Example::

    from lsr import Quantizer, SparseBatch, Vocabulary, exhaustive_search

    vocab = Vocabulary(("wing", "flow", "drag"))
    docs = SparseBatch.from_dicts([{"wing": 2.0, "drag": 1.0}, {"flow": 3.0}], vocab, ["d1", "d2"])
    queries = SparseBatch.from_dicts([{"drag": 1.0}], vocab, ["q1"])
    exhaustive_search(queries, docs, k=1)   # {'q1': [Hit(docid='d1', score=1.0, rank=1, ...)]}
    Quantizer(scale=100).quantize(docs)     # integer impacts, as indexes store them
"""

from ._lazy import lazy_exports
from .errors import EnvironmentProblem, IndexMismatchError, InputError, LsrError
from .explain import Contribution, contributions
from .io import Hit, Record, read_corpus, read_qrels, read_queries, read_run, write_run
from .quantize import Quantizer
from .sparse import SparseBatch, flops, max_fuse
from .vocab import Vocabulary

_LAZY = {
    "Input": ".inputs", "as_inputs": ".inputs",
    "rrf": ".fusion", "interpolate": ".fusion",
    "Retriever": ".retrieval", "SparseRetriever": ".retrieval",
    "exhaustive_search": ".exhaustive",
    "Explanation": ".explain", "decode": ".explain",
}
__getattr__, __dir__ = lazy_exports(__name__, _LAZY)

__all__ = [
    "Contribution", "EnvironmentProblem", "Hit", "IndexMismatchError", "InputError", "LsrError", "Quantizer",
    "Record", "SparseBatch", "Vocabulary", "contributions", "flops", "max_fuse", "read_corpus", "read_qrels",
    "read_queries", "read_run", "write_run", *_LAZY,
]
__version__ = "0.1.0"
