"""Quantized sparse vectors in a Milvus collection (``SPARSE_FLOAT_VECTOR``, inner product).

One collection holds one corpus::

    docid   VARCHAR primary key   the original string document id
    vector  SPARSE_FLOAT_VECTOR   {dimension id: integer impact}, SPARSE_INVERTED_INDEX, metric IP

Its description (and a collection property, ``lsr.meta``) holds the project's metadata as compact JSON (encoder,
vocabulary fingerprint, number of dimensions, quantization), so a search
quantizes float queries the same way and refuses queries from another
vocabulary, exactly as a Lucene impact index does with ``lsr-index.json``.

Dimension ids are the encoder's vocabulary ids when the vocabulary is at hand
(``ids="vocabulary"``). A vector directory only names its encoder and the
vocabulary's fingerprint, so when no vocabulary is given the ids are derived
from the tokens the vectors use (``ids="derived"``: sorted tokens, later ones
appended). Either way the token list is stored in a companion collection
``<name>_lsr_vocab`` (JSON chunks; a collection description is limited to about
1 KB on current Milvus), which makes the collection self-describing: queries
given as ``{token: int}`` dicts are mapped through it, and every exporter
appending to the collection uses the same ids.

Milvus keeps float32 weights and returns float32 inner products, so integer
impacts whose dot products stay below 2**24 score exactly as in the Lucene
index. Ties are broken by docid, as Anserini and
:func:`lsr.exhaustive.exhaustive_search` do.

The same code talks to Milvus Lite started as a local server, a standalone
Milvus or a cluster: only the URI changes (``milvus://HOST:PORT/COLLECTION``
on the command line, ``http://HOST:PORT`` here).

Modules: :mod:`~lsr.engines.milvus.connection` (pymilvus, addresses, field
names and limits), :mod:`~lsr.engines.milvus.meta` (:class:`CollectionMeta`),
:mod:`~lsr.engines.milvus.tokens` (the companion token list),
:mod:`~lsr.engines.milvus.collection` (:class:`MilvusCollection`) and
:mod:`~lsr.engines.milvus.export` (:func:`export_vector_dirs`).
"""

from __future__ import annotations

from .collection import MilvusCollection
from .connection import (ID_FIELD, INSTALL_HINT, MAX_ID_BYTES, MAX_TOPK, MAX_VARCHAR_BYTES, QUERY_BATCH, SEARCH_PARAMS,
                         VECTOR_FIELD, VOCAB_CHUNK_BYTES, VOCAB_SUFFIX, check_collection_name, parse_milvus_uri)
from .export import export_vector_dirs
from .meta import MAX_DESCRIPTION_BYTES, META_PROPERTY, CollectionMeta
from .tokens import vector_dir_tokens

__all__ = ["CollectionMeta", "ID_FIELD", "INSTALL_HINT", "MAX_DESCRIPTION_BYTES", "MAX_ID_BYTES", "MAX_TOPK",
           "MAX_VARCHAR_BYTES", "META_PROPERTY", "MilvusCollection", "QUERY_BATCH", "SEARCH_PARAMS", "VECTOR_FIELD",
           "VOCAB_CHUNK_BYTES", "VOCAB_SUFFIX", "check_collection_name", "export_vector_dirs", "parse_milvus_uri",
           "vector_dir_tokens"]
