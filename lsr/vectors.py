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
"""

from __future__ import annotations

import gzip
import json
import zlib
from json.encoder import encode_basestring as _encode_basestring
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Iterator, Sequence

import numpy as np

from .errors import InputError, option
from .io import iter_jsonl_at
from .meta import Meta, meta_field
from .quantize import Quantizer, quantization_field
from .sparse import SparseBatch, row_entries
from .vocab import Vocabulary

META_FILE = "lsr-vectors.json"
REPORT_FILE = "report.jsonl"
OFFSETS_FILE = "offsets.tsv"
PART_PATTERN = "part-{:05d}.jsonl"
MAX_WEIGHT = 2**31 - 1  # a Java int


def _json_str(value) -> str:
    """``json.dumps(value, ensure_ascii=False)``, fast for strings."""
    return _encode_basestring(value) if type(value) is str else json.dumps(value, ensure_ascii=False)


# "v, " and "v}}\n" for small integers, the two ways a vector entry ends in a JSONL line
_NUMBERS = np.array([f"{v}, " for v in range(4096)], dtype=object)
_NUMBERS_END = np.array([f"{v}}}}}\n" for v in range(4096)], dtype=object)


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
class VectorDirInfo(Meta):
    """The metadata stored in ``lsr-vectors.json``; keys the class does not know are kept in ``extra``."""

    FORMAT: ClassVar[str] = "lsr-vectors"
    WHAT: ClassVar[str] = "vector directory metadata"
    REMEDY: ClassVar[str] = "encode the vectors again with `lsr encode`"

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


# -------------------------------------------------------------------- reading
def parse_vector(path, n: int, obj: dict) -> dict[str, int]:
    """Validate one ``vector`` object: tokens without whitespace, finite positive integer weights."""
    vec = obj.get("vector")
    if not isinstance(vec, dict):
        raise InputError(f"{path}:{n}: missing 'vector' object ({{token: positive integer}})")
    out = {}
    for tok, w in vec.items():
        if not tok or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in tok):
            raise InputError(f"{path}:{n}: token {tok!r} is empty or contains whitespace/control characters, "
                             "which would corrupt pretokenized postings")
        if isinstance(w, bool) or not isinstance(w, (int, float)):
            raise InputError(f"{path}:{n}: weight of {tok!r} is {w!r}, expected a positive integer")
        if not math.isfinite(w) or w <= 0 or w != int(w):
            raise InputError(f"{path}:{n}: weight of {tok!r} is {w!r}; weights must be positive integers "
                             "(quantize float weights first, e.g. with lsr.Quantizer)")
        if w > MAX_WEIGHT:
            raise InputError(f"{path}:{n}: weight of {tok!r} is {w!r}, above the largest impact Lucene "
                             f"can store ({MAX_WEIGHT}); quantize with a smaller scale")
        out[tok] = int(w)
    return out


def iter_json_documents(path: str | os.PathLike) -> Iterator[tuple[int, int | None, dict]]:
    """``(number, byte offset, object)`` of every document of a JSON collection file, as Anserini reads it.

    A file is JSON lines, or (as Anserini's JsonCollection also accepts) one
    JSON array of objects or objects one after the other, pretty-printed or
    not; a name ending ``.gz`` is gunzipped first. ``number`` is the line of
    a JSON-lines file, else the document's position (from 1); the offset is
    ``None`` when it cannot be used to seek (gzip, arrays, pretty-printed).
    """
    path = Path(path)
    if is_plain_jsonl(path):
        try:
            for n, offset, obj in iter_jsonl_at(path):
                yield n, offset, obj
            return
        except InputError as e:
            if not _whole_document(path, e):
                raise
        yield from _json_values(path, path.read_bytes())
        return
    try:
        with gzip.open(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError, zlib.error) as e:
        raise InputError(f"{path}: not a readable gzip file ({e}); Anserini reads files ending .gz as gzip") from None
    yield from _json_values(path, data, lines=True)


def _whole_document(path: Path, error: InputError) -> bool:
    """Whether a JSON-lines read that failed should be retried as one JSON document (array, pretty objects)."""
    if not str(error).startswith(f"{path}:1: malformed JSON") and "expected a JSON object, got list" not in str(error):
        return False
    with open(path, "rb") as fh:
        head = fh.read(1 << 16).lstrip()
    return head[:1] in (b"[", b"{")


def _json_values(path: Path, data: bytes, lines: bool = False) -> Iterator[tuple[int, None, dict]]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not valid UTF-8 (byte {e.start}); re-encode the file as UTF-8") from None
    if lines and not text.lstrip().startswith("["):
        try:  # JSON lines (the usual case), numbered by line
            out = []
            for n, line in enumerate(text.splitlines(), 1):
                if line.strip():
                    obj = json.loads(line)
                    if not isinstance(obj, dict):
                        raise ValueError
                    out.append((n, None, obj))
            yield from out
            return
        except ValueError:
            pass
    decoder, pos, n = json.JSONDecoder(), 0, 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            return
        try:
            value, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise InputError(f"{path}: malformed JSON at line {e.lineno}, column {e.colno} ({e.msg})") from None
        for obj in (value if isinstance(value, list) else [value]):
            n += 1
            if not isinstance(obj, dict):
                raise InputError(f"{path}: document {n} is a {type(obj).__name__}, expected a JSON object")
            yield n, None, obj


def iter_vector_records(path: str | os.PathLike) -> Iterator[tuple[int, int | None, str, dict[str, int], dict]]:
    """``(line, byte offset, id, {token: int}, the line's object)`` of one JsonVectorCollection file, validated.

    The offset is ``None`` for documents that cannot be found by seeking (see :func:`iter_json_documents`).
    """
    for n, offset, obj in iter_json_documents(path):
        rid = obj.get("id")
        if not isinstance(rid, str) or not rid or any(c.isspace() for c in rid):
            raise InputError(f"{path}:{n}: 'id' must be a non-empty string without whitespace, got {rid!r}")
        yield n, offset, rid, parse_vector(path, n, obj), obj


def iter_vectors(path: str | os.PathLike) -> Iterator[tuple[str, dict[str, int], int]]:
    """Yield ``(id, {token: int}, line)`` from one JsonVectorCollection file, validated."""
    for n, _, rid, vec, _ in iter_vector_records(path):
        yield rid, vec, n


def read_vector_file(path: str | os.PathLike) -> tuple[list[str], list[dict[str, int]]]:
    """All vectors of one JSONL file; duplicate ids are refused."""
    ids, vecs, _ = read_query_vectors(path)
    return ids, vecs


def read_query_vectors(path: str | os.PathLike) -> tuple[list[str], list[dict[str, int]], "VectorDirInfo | None"]:
    """Integer query vectors for ``--query-vectors``: ``(ids, vectors, metadata or None)``.

    ``path`` is a vector directory (``lsr encode --role query``: every part
    file, in order) or one JSONL file. The metadata of the directory, or of
    the directory the file lies in, says which encoder and quantization made
    the vectors, so a mismatch with the index can be caught; a bare file has
    none. Duplicate ids are refused.
    """
    path = Path(path)
    if path.is_dir():
        files = part_files(path)
        info = VectorDirInfo.load(path)
        if not files:
            raise InputError(f"{path}: no vector files (part-*.jsonl, *.json, *.jsonl, *.gz); pass a vector "
                             "directory written by `lsr encode` or a JSONL file of {id, vector} lines")
    elif path.is_file():
        files, info = [path], VectorDirInfo.load(path.parent)
    else:
        raise InputError(f"{path}: query vectors not found")
    ids, vecs, seen = [], [], {}
    for f in files:
        for rid, vec, n in iter_vectors(f):
            if rid in seen:
                raise InputError(f"{f}:{n}: duplicate id {rid!r} (first at {seen[rid]})")
            seen[rid] = f"{f.name}:{n}" if len(files) > 1 else f"line {n}"
            ids.append(rid)
            vecs.append(vec)
    return ids, vecs, info


def write_offsets(vecdir: str | os.PathLike) -> Path:
    """(Re)build ``offsets.tsv`` for a vector directory by scanning its part files (validating them)."""
    out = Path(vecdir) / OFFSETS_FILE
    write_offsets_table(part_files(vecdir), out)
    return out


def write_offsets_table(parts: Sequence[str | os.PathLike], table: str | os.PathLike) -> int:
    """Validate every document of ``parts`` and write ``id, part name, byte offset`` lines to ``table``.

    Returns the number of documents. Errors name the file and line, as
    :func:`iter_vectors` does.
    """
    count = 0
    with open(table, "w", encoding="utf-8") as out:
        for part in map(Path, parts):
            lines = []
            for _, offset, rid, _, _ in iter_vector_records(part):
                lines.append(f"{rid}\t{part.name}\t{offset}\n")
                if len(lines) >= 65536:
                    out.write("".join(lines))
                    count += len(lines)
                    lines = []
            out.write("".join(lines))
            count += len(lines)
    return count


def scan_vector_files(files: Sequence[tuple[str | os.PathLike, str]], table: str | os.PathLike,
                      convert_dir: str | os.PathLike) -> tuple[int, list[tuple[Path, str]]]:
    """Validate vector files from another tool and note where each document lies.

    ``files`` are ``(path, name)`` pairs; ``table`` receives ``id, name,
    byte offset`` lines. A file whose documents cannot be found by offset
    (gzip-compressed, a JSON array, pretty-printed objects) is rewritten as
    JSON lines into ``convert_dir`` under ``name + ".jsonl"``. Returns the
    number of documents and the ``(path, name)`` pairs to index: the original
    file where it is plain JSON lines, the rewritten one otherwise.
    """
    count, out = 0, []
    with open(table, "w", encoding="utf-8") as tab:
        for path, name in files:
            path = Path(path)
            lines, conv, offset = [], None, 0
            for _, off, rid, _, obj in iter_vector_records(path):
                if off is None and conv is None:
                    name = name + ".jsonl"
                    conv = open(Path(convert_dir) / name, "wb")
                if conv is not None:
                    raw = (json.dumps(obj, ensure_ascii=False) + "\n").encode("utf-8")
                    off, offset = offset, offset + len(raw)
                    conv.write(raw)
                lines.append(f"{rid}\t{name}\t{off}\n")
                if len(lines) >= 65536:
                    tab.write("".join(lines))
                    count += len(lines)
                    lines = []
            tab.write("".join(lines))
            count += len(lines)
            if conv is not None:
                conv.close()
                path = Path(convert_dir) / name
            out.append((path, name))
    return count, out


class VectorStore:
    """Random access to the documents of a vector directory by id, through ``offsets.tsv``."""

    def __init__(self, vecdir: str | os.PathLike):
        self.dir = Path(vecdir)
        self._offsets: dict[str, tuple[str, int]] | None = None

    def _load(self) -> dict[str, tuple[str, int]]:
        if self._offsets is None:
            path = self.dir / OFFSETS_FILE
            if not path.is_file():
                raise InputError(f"{self.dir}: no {OFFSETS_FILE}; the vectors cannot be looked up by id")
            table = {}
            with open(path, encoding="utf-8") as fh:
                for line in fh:
                    rid, part, off = line.rstrip("\n").split("\t")
                    table[rid] = (part, int(off))
            self._offsets = table
        return self._offsets

    def __contains__(self, docid: str) -> bool:
        return docid in self._load()

    def __len__(self) -> int:
        return len(self._load())

    def get(self, docid: str) -> dict:
        """The stored JSON object (``id``, ``contents``, ``vector``) of ``docid``."""
        try:
            part, off = self._load()[docid]
        except KeyError:
            raise InputError(f"document {docid!r} is not in {self.dir}") from None
        with open(self.dir / part, "rb") as fh:
            fh.seek(off)
            obj = json.loads(fh.readline())
        if obj.get("id") != docid:
            raise InputError(f"{self.dir}: {OFFSETS_FILE} is out of date (expected {docid!r} at {part}:{off})")
        return obj

    def vector(self, docid: str) -> dict[str, int]:
        return parse_vector(self.dir, 0, self.get(docid))
