"""Learned sparse retrieval: sparse vectors, quantization, fusion, evaluation.

The core is free of Java and model code; encoders live in ``encoders`` and the
Lucene side in ``anserini_bridge``.
"""

from .errors import EnvironmentProblem, IndexMismatchError, InputError, LsrError
from .explain import Contribution, contributions
from .io import Hit, Record, read_corpus, read_qrels, read_queries, read_run, write_run
from .quantize import Quantizer
from .sparse import SparseBatch, flops, max_fuse
from .vocab import Vocabulary

__all__ = [
    "Contribution", "EnvironmentProblem", "Hit", "IndexMismatchError", "InputError", "LsrError", "Quantizer",
    "Record", "SparseBatch", "Vocabulary", "contributions", "flops", "max_fuse", "read_corpus", "read_qrels",
    "read_queries", "read_run", "write_run",
]
__version__ = "0.1.0"
