"""Readers and writers for the files users hand us: BEIR JSONL, qrels, TREC runs.

Every reader validates as it goes and raises :class:`~lsr.errors.InputError`
naming the file and line of the first bad record, so nothing is dropped
silently.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple, Sequence

from .errors import InputError


@dataclass(frozen=True)
class Record:
    """One corpus document or query: ``id`` and the text to encode."""

    id: str
    text: str
    line: int = 0  # 1-based line number in the file it came from (0 when built in code)
    image: str | None = None  # image path (absolute, or relative to the working directory), for image models

    @property
    def is_empty(self) -> bool:
        """No text to encode and no image."""
        return self.image is None and not self.text.strip()


#: What a line of a BEIR corpus and of a BEIR queries file looks like (shown when a line is not JSON).
CORPUS_LINE = '{"_id": "doc1", "title": "Wing flutter", "text": "Flutter of a swept wing at transonic speed."}'
QUERY_LINE = '{"_id": "q1", "text": "what causes wing flutter"}'


def _expected_jsonl(line: str, example: str | None) -> str:
    """The hint after a JSON error: the file must be JSON Lines, and what a line looks like."""
    looks = "the line looks tab-separated (TSV); " if "\t" in line and not line.lstrip().startswith("{") else ""
    shown = f", e.g. {example}" if example else ""
    return f"{looks}expected JSONL: one JSON object per line{shown}"


def iter_jsonl(path: str | os.PathLike, example: str | None = None) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, object)`` for each non-blank line; errors name file and line.

    ``example``: a valid line, quoted in the error when a line is not a JSON object.
    """
    for n, _, obj in iter_jsonl_at(path, example):
        yield n, obj


def iter_jsonl_at(path: str | os.PathLike, example: str | None = None) -> Iterator[tuple[int, int, dict]]:
    """Like :func:`iter_jsonl`, with the byte offset where each line starts: ``(line, offset, object)``."""
    path = Path(path)
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, expected a JSONL file") from None
    offset = 0
    with fh:
        for n, raw in enumerate(fh, 1):
            start, offset = offset, offset + len(raw)
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise InputError(
                    f"{path}:{n}: not valid UTF-8 (byte {e.start}); re-encode the file as UTF-8"
                ) from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{path}:{n}: malformed JSON ({e.msg} at column {e.colno}); "
                                 f"{_expected_jsonl(line, example)}") from None
            if not isinstance(obj, dict):
                raise InputError(f"{path}:{n}: expected a JSON object, got {type(obj).__name__}; "
                                 f"{_expected_jsonl(line, example)}")
            yield n, start, obj


def _record_id(path, n: int, obj: dict, key: str = "_id") -> str:
    if key not in obj:
        raise InputError(f"{path}:{n}: missing {key!r} (each line needs a string {key!r})")
    rid = obj[key]
    if not isinstance(rid, str):
        raise InputError(f"{path}:{n}: {key!r} must be a string, got {type(rid).__name__} {rid!r}")
    if not rid or rid != rid.strip() or any(c.isspace() for c in rid):
        raise InputError(f"{path}:{n}: {key!r} {rid!r} is empty or contains whitespace")
    return rid


def _text_field(path, n: int, obj: dict, key: str) -> str:
    value = obj.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InputError(f"{path}:{n}: {key!r} must be a string, got {type(value).__name__}")
    return value


def _image_field(path, n: int, obj: dict) -> str | None:
    """The optional ``image`` path of a record, resolved against the JSONL file's folder."""
    value = obj.get("image")
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{path}:{n}: 'image' must be a path string (relative to {Path(path).parent} or "
                         f"absolute), got {value!r}")
    return str(Path(path).parent / value)


def read_corpus(path: str | os.PathLike) -> list[Record]:
    """A BEIR corpus (``_id``, ``title``, ``text``); the text is ``title + " " + text``.

    An optional ``image`` field names an image file (relative to the corpus
    file's folder, or absolute) for image models: a record may have text, an
    image, or both. Duplicate ids are refused with the ids listed.
    """
    records = []
    for n, obj in iter_jsonl(path, CORPUS_LINE):
        rid = _record_id(path, n, obj)
        title = _text_field(path, n, obj, "title")
        text = _text_field(path, n, obj, "text")
        records.append(Record(rid, f"{title} {text}".strip() if title else text, n, _image_field(path, n, obj)))
    _refuse_duplicates(path, records)
    return records


def read_queries(path: str | os.PathLike) -> list[Record]:
    """BEIR queries (``_id``, ``text``, optionally ``image`` as in :func:`read_corpus`).

    Empty queries (no text, no image) are refused, naming the line.
    """
    records = []
    for n, obj in iter_jsonl(path, QUERY_LINE):
        rid = _record_id(path, n, obj)
        record = Record(rid, _text_field(path, n, obj, "text"), n, _image_field(path, n, obj))
        if record.is_empty:
            raise InputError(f"{path}:{n}: query {rid!r} is empty; remove it or give it text")
        records.append(record)
    _refuse_duplicates(path, records)
    return records


def _refuse_duplicates(path, records: Sequence[Record]) -> None:
    seen: dict[str, int] = {}
    dups = []
    for r in records:
        if r.id in seen:
            dups.append(f"{r.id!r} (lines {seen[r.id]} and {r.line})")
        else:
            seen[r.id] = r.line
    if dups:
        shown = ", ".join(dups[:10]) + (f" and {len(dups) - 10} more" if len(dups) > 10 else "")
        raise InputError(f"{path}: duplicate ids: {shown}; ids must be unique")


# ------------------------------------------------------------------ qrels
def read_qrels(path: str | os.PathLike) -> dict[str, dict[str, int]]:
    """BEIR TSV (``query-id corpus-id score`` with a header) or TREC qrels (``qid 0 docid rel``)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: qrels file not found")
    qrels: dict[str, dict[str, int]] = {}
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            parts = line.split()
            if not parts:
                continue
            if n == 1 and len(parts) == 3 and not _is_int(parts[2]):
                continue  # BEIR header
            if len(parts) == 3:
                qid, docid, rel = parts
            elif len(parts) == 4:
                qid, _, docid, rel = parts
            else:
                raise InputError(f"{path}:{n}: expected 3 (BEIR) or 4 (TREC) columns, got {len(parts)}")
            if not _is_int(rel):
                raise InputError(f"{path}:{n}: relevance {rel!r} is not an integer")
            qrels.setdefault(qid, {})[docid] = int(rel)
    if not qrels:
        raise InputError(f"{path}: no judgements found")
    return qrels


def _is_int(s: str) -> bool:
    try:
        int(s)
        return True
    except ValueError:
        return False


# ------------------------------------------------------------------- runs
class Hit(NamedTuple):
    """One search result (a named tuple: cheap to make by the thousand, immutable, compared by value)."""

    docid: str
    score: float
    rank: int
    impact_score: int | None = None  # the integer score of an impact index, when there is one


def write_run(path: str | os.PathLike, results: dict[str, Sequence[Hit]], tag: str = "lsr") -> None:
    """Write a TREC run: ``qid Q0 docid rank score tag``."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            for qid, hits in results.items():
                for h in hits:
                    fh.write(f"{qid} Q0 {h.docid} {h.rank} {h.score:.6f} {tag}\n")
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise InputError(f"{path}: cannot write the run ({e.strerror})") from None


def read_run(path: str | os.PathLike) -> dict[str, list[Hit]]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: run file not found")
    run: dict[str, list[Hit]] = {}
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 6:
                raise InputError(f"{path}:{n}: a TREC run line has 6 columns (qid Q0 docid rank score tag)")
            try:
                run.setdefault(parts[0], []).append(Hit(parts[2], float(parts[4]), int(parts[3])))
            except ValueError:
                raise InputError(f"{path}:{n}: rank must be an integer and score a number") from None
    return run


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
