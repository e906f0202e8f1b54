"""Where each document of a vector directory lies: the offsets table and lookup by id."""

from __future__ import annotations

import json
import os
from itertools import islice
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from ..errors import InputError
from .layout import OFFSETS_FILE, part_files
from .reader import iter_vector_records, parse_vector


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
    with open(table, "w", encoding="utf-8") as out:
        return _write_lines(out, (f"{rid}\t{part.name}\t{offset}\n" for part in map(Path, parts)
                                  for _, offset, rid, _, _ in iter_vector_records(part)))


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
    done: list[tuple[Path, str]] = []
    with open(table, "w", encoding="utf-8") as tab:
        count = _write_lines(tab, (line for path, name in files
                                   for line in _scan_file(Path(path), name, Path(convert_dir), done)))
    return count, done


def _scan_file(path: Path, name: str, convert_dir: Path, done: list[tuple[Path, str]]) -> Iterator[str]:
    """The table lines of one file of :func:`scan_vector_files`, rewriting it when it must be; at the end the
    ``(path, name)`` to index is appended to ``done``."""
    conv, offset = None, 0
    try:
        for _, off, rid, _, obj in iter_vector_records(path):
            if off is None and conv is None:
                name = name + ".jsonl"
                conv = open(convert_dir / name, "wb")
            if conv is not None:
                raw = (json.dumps(obj, ensure_ascii=False) + "\n").encode("utf-8")
                off, offset = offset, offset + len(raw)
                conv.write(raw)
            yield f"{rid}\t{name}\t{off}\n"
    finally:
        if conv is not None:
            conv.close()
    done.append((convert_dir / name if conv is not None else path, name))


def _write_lines(fh, lines: Iterable[str], block: int = 65536) -> int:
    """Write ``lines`` to ``fh`` joined in blocks (one write a line is slow); returns how many there were."""
    count, it = 0, iter(lines)
    while chunk := list(islice(it, block)):
        fh.write("".join(chunk))
        count += len(chunk)
    return count


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
