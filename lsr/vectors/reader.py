"""Reading vector files: JsonVectorCollection documents as Anserini reads them, validated."""

from __future__ import annotations

import gzip
import json
import math
import os
import zlib
from pathlib import Path
from typing import Iterator

from ..errors import InputError
from ..io import iter_jsonl_at
from .layout import MAX_WEIGHT, VectorDirInfo, is_plain_jsonl, part_files


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
