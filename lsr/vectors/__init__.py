"""Vector directories: quantized sparse vectors as JsonVectorCollection JSONL.

A vector directory (``VECDIR``) is what ``lsr encode`` writes and ``lsr index``
reads::

    VECDIR/part-00000.jsonl   {"id": str, "contents": str, "vector": {token: positive int}}
    VECDIR/part-00001.jsonl   ... (a new part every ``shard_size`` documents)
    VECDIR/report.jsonl       documents that were read but not written, with the reason
    VECDIR/offsets.tsv        id, part file and byte offset of every written document
    VECDIR/lsr-vectors.json   encoder, vocabulary fingerprint, quantization, counts

The part files are Anserini's JsonVectorCollection, so any Anserini tool can
index them. Writing is streamed (memory does not grow with the corpus) and
a failed write removes what it wrote.

Empty documents: a document whose text is empty or whitespace, or whose vector
is empty after quantization, cannot be a posting list entry. It is *not*
written to a part file; it is listed in ``report.jsonl`` and counted, so that
``documents_read == documents_written + documents_reported`` always holds.

Modules: :mod:`~lsr.vectors.layout` (file names, :class:`VectorDirInfo`, which
files hold vectors), :mod:`~lsr.vectors.writer` (:class:`VectorWriter`),
:mod:`~lsr.vectors.reader` (reading and validating vector files) and
:mod:`~lsr.vectors.offsets` (the offsets table, :class:`VectorStore`).
"""

from __future__ import annotations

from .layout import (MAX_WEIGHT, META_FILE, OFFSETS_FILE, PART_PATTERN, REPORT_FILE, VECTOR_SUFFIXES,
                     VectorDirInfo, is_plain_jsonl, part_files, vector_file_name)
from .offsets import VectorStore, scan_vector_files, write_offsets, write_offsets_table
from .reader import (iter_json_documents, iter_vector_records, iter_vectors, parse_vector,
                     read_query_vectors, read_vector_file)
from .writer import VectorWriter, check_new_output

__all__ = ["MAX_WEIGHT", "META_FILE", "OFFSETS_FILE", "PART_PATTERN", "REPORT_FILE", "VECTOR_SUFFIXES", "VectorDirInfo",
           "VectorStore", "VectorWriter", "check_new_output", "is_plain_jsonl", "iter_json_documents",
           "iter_vector_records", "iter_vectors", "parse_vector", "part_files", "read_query_vectors",
           "read_vector_file", "scan_vector_files", "vector_file_name", "write_offsets", "write_offsets_table"]
