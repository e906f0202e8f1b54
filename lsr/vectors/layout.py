"""The layout of a vector directory: file names, the metadata file and which files hold vectors."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..meta import Meta, meta_field
from ..quantize import Quantizer, quantization_field

META_FILE = "lsr-vectors.json"
REPORT_FILE = "report.jsonl"
OFFSETS_FILE = "offsets.tsv"
PART_PATTERN = "part-{:05d}.jsonl"
MAX_WEIGHT = 2**31 - 1  # a Java int


#: File name endings Anserini's JsonCollection (and so JsonVectorCollection) reads; ``.gz`` files are gunzipped.
VECTOR_SUFFIXES = (".json", ".jsonl", ".gz")
#: Files of the project that are never vector files, although their names end like one.
_NOT_VECTORS = {META_FILE, REPORT_FILE, "lsr-index.json"}


def part_files(vecdir: str | os.PathLike) -> list[Path]:
    """The vector files of a directory.

    A directory written by ``lsr encode`` (it has ``lsr-vectors.json``) holds
    ``part-*.jsonl``. Any other directory is read the way Anserini's
    JsonVectorCollection reads it: every ``*.json``, ``*.jsonl`` and ``*.gz``
    file (gzip-compressed JSON), in subdirectories too; hidden files and the
    project's own ``report.jsonl`` / metadata files are left out.
    """
    vecdir = Path(vecdir)
    if (vecdir / META_FILE).is_file():
        return sorted(vecdir.glob("part-*.jsonl"))
    found = []
    for root, dirs, files in os.walk(vecdir):
        dirs[:] = sorted(x for x in dirs if not x.startswith("."))
        found.extend(Path(root) / f for f in files
                     if f.endswith(VECTOR_SUFFIXES) and not f.startswith(".") and f not in _NOT_VECTORS)
    return sorted(found)


def vector_file_name(vecdir: str | os.PathLike, path: str | os.PathLike) -> str:
    """A flat, unique name for a vector file of ``vecdir`` (``sub/docs.jsonl`` -> ``sub__docs.jsonl``)."""
    return "__".join(Path(path).relative_to(vecdir).parts)


def is_plain_jsonl(path: str | os.PathLike) -> bool:
    """Whether byte offsets into ``path`` find its documents (an uncompressed file of JSON lines)."""
    return not str(path).endswith(".gz")


@dataclass
class VectorDirInfo(Meta, format="lsr-vectors", what="vector directory metadata",
                    remedy="encode the vectors again with `lsr encode`"):
    """The metadata stored in ``lsr-vectors.json``; keys the class does not know are kept in ``extra``."""

    encoder: str | None
    vocab_fingerprint: str | None
    quantization: Quantizer = quantization_field(required=True)
    role: str = "document"
    documents_read: int = 0
    documents_written: int = 0
    documents_reported: int = 0
    truncated: int = 0
    extra: dict = meta_field(default_factory=dict, rest=True)

    @classmethod
    def load(cls, vecdir: str | os.PathLike) -> "VectorDirInfo | None":
        """The metadata of a vector directory, or ``None`` when it has none (vectors from another tool)."""
        path = Path(vecdir) / META_FILE
        return cls.read(path) if path.exists() else None
