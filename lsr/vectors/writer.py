"""Writing a vector directory: quantized batches streamed into part files, the report, offsets and metadata."""

from __future__ import annotations

import json
import os
import shutil
from json.encoder import encode_basestring as _encode_basestring
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import InputError, option
from ..quantize import Quantizer
from ..sparse import SparseBatch, row_entries
from ..vocab import Vocabulary
from .layout import META_FILE, OFFSETS_FILE, PART_PATTERN, REPORT_FILE, VectorDirInfo


def _json_str(value) -> str:
    """``json.dumps(value, ensure_ascii=False)``, fast for strings."""
    return _encode_basestring(value) if type(value) is str else json.dumps(value, ensure_ascii=False)


# "v, " and "v}}\n" for small integers, the two ways a vector entry ends in a JSONL line
_NUMBERS = np.array([f"{v}, " for v in range(4096)], dtype=object)
_NUMBERS_END = np.array([f"{v}}}}}\n" for v in range(4096)], dtype=object)


def check_new_output(vecdir: Path, overwrite: bool, shard_size: int) -> bool:
    """Refuse a non-empty output directory unless ``overwrite``; returns whether one exists to be replaced."""
    if shard_size < 1:
        raise InputError(f"shard_size must be positive, got {shard_size}")
    if vecdir.exists() and not vecdir.is_dir():
        raise InputError(f"{vecdir}: exists and is not a directory; choose a new output path")
    occupied = vecdir.exists() and any(vecdir.iterdir())
    if occupied and not overwrite:
        raise InputError(f"{vecdir}: output directory exists and is not empty; choose a new path or pass "
                         f"{option('overwrite=True', '--overwrite')}")
    return occupied


class VectorWriter:
    """Streams quantized vectors into a new vector directory.

    Use as a context manager; on an exception the directory is removed.
    """

    def __init__(
        self,
        vecdir: str | os.PathLike,
        quantizer: Quantizer,
        encoder: str | None = None,
        vocab: Vocabulary | None = None,
        role: str = "document",
        shard_size: int = 100_000,
        overwrite: bool = False,
        extra: dict | None = None,
    ):
        self.dir = Path(vecdir)
        if check_new_output(self.dir, overwrite, shard_size):
            shutil.rmtree(self.dir)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InputError(f"{self.dir}: cannot create the output directory ({e.strerror})") from None
        self.quantizer = quantizer
        self.shard_size = shard_size
        self.info = VectorDirInfo(encoder, vocab.fingerprint if vocab else None, quantizer, role,
                                  extra=dict(extra or {}))
        self._part = None
        self._part_count = 0
        self._in_part = 0
        self._report = None
        self._offsets = open(self.dir / OFFSETS_FILE, "w", encoding="utf-8")
        self._closed = False
        self._keys: dict = {}

    # -------------------------------------------------------------- writing
    def _next_part(self):
        if self._part is not None:
            self._part.close()
        name = PART_PATTERN.format(self._part_count)
        self._part = open(self.dir / name, "wb")
        self._part_name = name
        self._part_count += 1
        self._in_part = 0
        self._offset = 0

    def report(self, docid: str, reason: str) -> None:
        """Record a document that was read but is not written."""
        if self._report is None:
            self._report = open(self.dir / REPORT_FILE, "w", encoding="utf-8")
        self._report.write(json.dumps({"id": docid, "reason": reason}, ensure_ascii=False) + "\n")
        self.info.documents_read += 1
        self.info.documents_reported += 1

    def write(self, batch: SparseBatch, contents: Sequence[str] | None = None) -> None:
        """Quantize and write a batch (its ``ids`` are the document ids)."""
        if batch.ids is None:
            raise InputError("VectorWriter.write needs a batch with ids")
        if contents is not None and len(contents) != len(batch):
            raise InputError(f"{len(contents)} contents for {len(batch)} vectors")
        q = self.quantizer.quantize(batch)
        nnz = np.diff(q.indptr)
        for i in np.flatnonzero(nnz == 0).tolist():
            self.report(q.ids[i], "empty vector after quantization")
        keep = np.flatnonzero(nnz > 0)
        lines = self._format(q, keep, contents)
        ids = [q.ids[i] for i in keep.tolist()]
        done = 0
        while done < len(lines):
            if self._part is None or self._in_part >= self.shard_size:
                self._next_part()
            block = lines[done:done + self.shard_size - self._in_part]
            ends = np.cumsum([len(line) for line in block]).tolist()
            starts = [self._offset] + [self._offset + e for e in ends[:-1]]
            self._part.write(b"".join(block))
            name = self._part_name
            self._offsets.write("".join(f"{d}\t{name}\t{o}\n" for d, o in zip(ids[done:done + len(block)], starts)))
            self._offset += ends[-1]
            self._in_part += len(block)
            self.info.documents_read += len(block)
            self.info.documents_written += len(block)
            done += len(block)

    def _format(self, q: SparseBatch, rows: np.ndarray, contents: Sequence[str] | None) -> list[bytes]:
        """JSONL lines of ``rows`` of a quantized batch, byte-identical to ``json.dumps(..., ensure_ascii=False)``.

        Token keys and small integers are formatted once per vocabulary and
        gathered with numpy, so the cost per entry is a few list operations.
        """
        keys = self._keys.get(id(q.vocab))
        if keys is None or keys[0] is not q.vocab:
            keys = (q.vocab, np.array([_json_str(t) + ": " for t in q.vocab.tokens], dtype=object))
            self._keys = {id(q.vocab): keys}
        table = keys[1]
        lengths = np.diff(q.indptr)[rows]
        total = int(lengths.sum())
        if total == 0:
            return []
        if total == q.nnz_total:  # every non-empty row: the entries are all of them, in order
            indices, values = q.indices, q.values.astype(np.int64)
        else:
            src, _ = row_entries(q.indptr, rows)
            indices, values = q.indices[src], q.values[src].astype(np.int64)
        parts = np.empty(2 * total, dtype=object)
        parts[0::2] = table[indices]
        if values.max() < len(_NUMBERS):
            parts[1::2] = _NUMBERS[values]
            last = np.cumsum(lengths) - 1
            parts[2 * last + 1] = _NUMBERS_END[values[last]]
        else:
            parts[1::2] = [f"{v}, " for v in values.tolist()]
            last = np.cumsum(lengths) - 1
            parts[2 * last + 1] = [f"{v}}}}}\n" for v in values[last].tolist()]
        flat = parts.tolist()
        bounds = (2 * np.concatenate([[0], np.cumsum(lengths)])).tolist()
        out = []
        for k, i in enumerate(rows.tolist()):
            text = contents[i] if contents is not None else ""
            head = '{"id": ' + _json_str(q.ids[i]) + ', "contents": ' + _json_str(text) + ', "vector": {'
            out.append((head + "".join(flat[bounds[k]:bounds[k + 1]])).encode("utf-8"))
        return out

    def close(self) -> VectorDirInfo:
        if self._closed:
            return self.info
        for fh in (self._part, self._report, self._offsets):
            if fh is not None:
                fh.close()
        self.info.write(self.dir / META_FILE)
        self._closed = True
        return self.info

    def abort(self) -> None:
        for fh in (self._part, self._report, self._offsets):
            if fh is not None:
                try:
                    fh.close()
                except OSError:
                    pass
        shutil.rmtree(self.dir, ignore_errors=True)
        self._closed = True

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            try:
                self.close()
            except OSError as e:
                self.abort()
                raise InputError(f"{self.dir}: writing failed ({e.strerror}); partial output removed") from None
        else:
            self.abort()
            if isinstance(exc, OSError):
                raise InputError(f"{self.dir}: writing failed ({exc.strerror}); partial output removed") from exc
        return False
