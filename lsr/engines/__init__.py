"""Scale-out: the same quantized sparse vectors in distributed engines, and sharded encoding.

* :mod:`lsr.engines.milvus`: a Milvus collection with a ``SPARSE_FLOAT_VECTOR``
  field (``pymilvus``, imported lazily).
* :mod:`lsr.engines.opensearch`: OpenSearch ``rank_features`` and Elasticsearch
  ``sparse_vector`` mappings, bulk NDJSON files and query bodies.
* :mod:`lsr.engines.shards`: sharded encoding (``lsr encode --shard I/N``) and
  the check that shards' vector directories fit together.

Nothing here imports an engine client; each engine module does so when used.
"""

from __future__ import annotations

from ..errors import InputError
from .report import InsertReport
from .shards import SHARD_HASH, Shard, check_vector_dirs, parse_shard, shard_info, shard_of

__all__ = ["InsertReport", "SHARD_HASH", "Shard", "check_vector_dirs", "is_engine_uri", "open_engine", "parse_shard",
           "shard_info", "shard_of"]


# ----------------------------------------------------------------- retrievers
ENGINE_SCHEMES = ("milvus://", "milvus+http://", "milvus+https://")


def is_engine_uri(spec: str) -> bool:
    """Whether ``spec`` names an engine collection rather than a Lucene index directory."""
    return str(spec).startswith(ENGINE_SCHEMES)


def open_engine(spec: str, **options):
    """A :class:`~lsr.retrieval.Retriever` for an engine URI: ``milvus://HOST:PORT/COLLECTION``.

    (A Lucene index directory is opened with :class:`anserini_bridge.search.ImpactSearcher`.)
    """
    if not is_engine_uri(spec):
        raise InputError(f"{spec!r} is not an engine URI; expected milvus://HOST:PORT/COLLECTION")
    from .milvus import MilvusCollection, parse_milvus_uri

    uri, collection = parse_milvus_uri(spec)
    return MilvusCollection(uri, collection, **options)
