"""Readers of M-BEIR queries, candidate pools, task instructions and qrels.

Queries and candidates are read by one reader under one of two rules:

* ``strict=True`` (evaluation, the default): records as the benchmark
  publishes them. An id is ``"<dataset id>:<number>"`` (``"9:12"``), because
  the dataset of a record is read from its id. The modality field
  (``query_modality``, ``modality``) is ``text``, ``image`` or
  ``image,text`` and names exactly the parts the record has; ``task_id`` and
  ``neg_cand_list`` are checked.
* ``strict=False`` (training pairs, :func:`lsr.pairs.read_mbeir_pairs`):
  M-BEIR-style files, e.g. made by hand. An id is any non-empty string, or an
  integer taken as its decimal string; the modality follows from the parts
  the record has (the field is not read); ``task_id`` and ``neg_cand_list``
  are not read.

Under both rules a text field is a string or null (blank text counts as
none); an image path is resolved against the data root (``~`` is expanded)
and must name a file unless ``check_images=False``; a record needs text, an
image or both; ``pos_cand_list`` is a non-empty list of candidate ids; an
``instruction`` string is kept; a qid listed twice is refused, and a did
listed twice is kept once when the content is the same (a local pool read
together with the union pool) and refused otherwise.
"""

from __future__ import annotations

import os
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..errors import InputError
from ..inputs import MODALITIES
from ..io import iter_jsonl
from .tasks import DATASET_IDS, TASKS, _check_modality, dataset_name

# ------------------------------------------------------------------- records
_ID = re.compile(r"^(\d+):(\S+)$")


@dataclass(frozen=True)
class MbeirQuery:
    """One query record; ``image`` is the image path resolved against the data root."""

    qid: str
    text: str | None
    image: str | None
    modality: str
    positives: tuple[str, ...]
    negatives: tuple[str, ...] = ()
    src_content: Any = None
    task_id: int | None = None  # the record's own task_id field, when it has one
    source: str = ""  # "file:line"
    instruction: str | None = None  # the record's own instruction field, when it has one

    @property
    def dataset_id(self) -> int:
        return int(self.qid.split(":", 1)[0])


@dataclass(frozen=True)
class MbeirCandidate:
    """One candidate-pool record; ``image`` is resolved against the data root."""

    did: str
    text: str | None
    image: str | None
    modality: str
    src_content: Any = None
    source: str = ""  # "file:line"

    @property
    def dataset_id(self) -> int:
        return int(self.did.split(":", 1)[0])

    @property
    def file(self) -> str:
        return self.source.rsplit(":", 1)[0]


@dataclass(frozen=True)
class _Kind:
    """Where one kind of record keeps its parts."""

    name: str  # in errors: "query 'x': ..."
    files: str  # what its files are called
    plural: str
    id_key: str
    modality_key: str
    text_key: str
    image_key: str
    repeats: bool  # whether the same record may be listed again (a local pool read with the union pool)


_QUERY = _Kind("query", "query", "queries", "qid", "query_modality", "query_txt", "query_img_path", repeats=False)
_CANDIDATE = _Kind("candidate", "candidate pool", "candidates", "did", "modality", "txt", "img_path", repeats=True)


def _record_id(path, n: int, value: Any, what: str, strict: bool) -> str:
    """An id under the id rule of the module docstring; ``what`` names the field in errors."""
    if strict:
        if isinstance(value, str) and _ID.match(value):
            return value
        raise InputError(f"{path}:{n}: {what}={value!r} is not '<dataset id>:<number>' "
                         "(M-BEIR ids start with the dataset id, e.g. '9:12')")
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str) and value.strip():
        return value
    raise InputError(f"{path}:{n}: {what} must be a non-empty string (or an integer), got {value!r}")


def _optional_text(path, n: int, obj: dict, key: str, rid: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InputError(f"{path}:{n}: record {rid!r}: {key} must be a string or null, got {type(value).__name__}")
    return value if value.strip() else None


def _image_path(path, n: int, obj: dict, key: str, rid: str, root: Path, check: bool, strict: bool) -> str | None:
    value = _optional_text(path, n, obj, key, rid)
    if value is None:
        return None
    p = Path(os.path.expanduser(value))
    resolved = p if p.is_absolute() else root / p
    if check and not resolved.is_file():
        hint = ("pass the M-BEIR data root that holds the images with --data" if strict
                else f"relative paths are resolved against {root}; set image_root")
        raise InputError(f"{path}:{n}: record {rid!r}: image {value!r} not found (looked for {resolved}); "
                         f"{hint}, or fix {key}")
    return str(resolved)


def _check_parts(path, n: int, rid: str, modality: str, text: str | None, image: str | None,
                 text_key: str, image_key: str) -> None:
    wants_text, wants_image = "text" in modality.split(","), "image" in modality.split(",")
    problems = []
    if wants_text and text is None:
        problems.append(f"{text_key} is empty")
    if not wants_text and text is not None:
        problems.append(f"{text_key} is set")
    if wants_image and image is None:
        problems.append(f"{image_key} is empty")
    if not wants_image and image is not None:
        problems.append(f"{image_key} is set")
    if problems:
        raise InputError(f"{path}:{n}: record {rid!r} has modality {modality!r} but {' and '.join(problems)}; "
                         "the modality must name exactly the parts the record has")


def _id_list(path, n: int, obj: dict, key: str, rid: str, required: bool, strict: bool) -> tuple[str, ...]:
    value = obj.get(key)
    if value is None and not required:
        return ()
    if not strict and isinstance(value, list):
        value = [str(d) if isinstance(d, int) and not isinstance(d, bool) else d for d in value]
    if not isinstance(value, list) or not all(
            isinstance(d, str) and d.strip() and not (strict and any(c.isspace() for c in d)) for d in value):
        raise InputError(f"{path}:{n}: query {rid!r}: {key} must be a list of candidate ids (strings)")
    if required and not value:
        raise InputError(f"{path}:{n}: query {rid!r} has an empty {key}; every M-BEIR query needs a positive")
    return tuple(value)


def _jsonl_files(path: str | os.PathLike, what: str) -> list[Path]:
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.jsonl"))
        if not files:
            raise InputError(f"{path}: no *.jsonl {what} files in this directory")
        return files
    if not path.is_file():
        raise InputError(f"{path}: {what} file not found")
    return [path]


def _read_records(kind: _Kind, paths, root: str | os.PathLike, check_images: bool, strict: bool,
                  make: Callable[..., Any]) -> list:
    """The records of one kind in JSONL files (or directories of them), checked as the module docstring says.

    ``make(file, n, obj, rid, text, image, modality, where)`` builds a record
    (and checks the fields only its kind has).
    """
    root = Path(root)
    out: list = []
    seen: dict[str, Any] = {}
    for file in _files(paths, kind.files):
        for n, obj in iter_jsonl(file):
            rid = _record_id(file, n, obj.get(kind.id_key), f"{kind.name} id {kind.id_key}", strict)
            where = f"{file}:{n}: {kind.name} {rid!r}: "
            declared = _check_modality(obj.get(kind.modality_key), kind.modality_key, where) if strict else None
            text = _optional_text(file, n, obj, kind.text_key, rid)
            image = _image_path(file, n, obj, kind.image_key, rid, root, check_images, strict)
            if declared is not None:
                _check_parts(file, n, rid, declared, text, image, kind.text_key, kind.image_key)
            elif text is None and image is None:
                raise InputError(f"{where}the record has neither text nor an image")
            modality = declared or ("image,text" if text is not None and image is not None
                                    else "image" if image is not None else "text")
            record = make(file, n, obj, rid, text, image, modality, where)
            first = seen.get(rid)
            if first is not None:
                if not kind.repeats:
                    raise InputError(f"{where}duplicate {kind.id_key} (first at {first.source}); "
                                     f"{kind.id_key}s must be unique")
                if (first.text, first.image, first.modality) != (text, image, modality):
                    raise InputError(f"{where}listed again with different content (first at {first.source}); "
                                     f"{kind.id_key}s must be unique across the pool files")
                continue
            seen[rid] = record
            out.append(record)
    if not out:
        raise InputError(f"{_describe(paths)}: no {kind.plural} found")
    return out


def read_queries(paths: str | os.PathLike | Sequence[str | os.PathLike], root: str | os.PathLike,
                 check_images: bool = True, strict: bool = True) -> list[MbeirQuery]:
    """Query records from JSONL files (or directories of them); image paths resolve against ``root``.

    Refused with an error naming the file, line and qid: malformed ids, an
    empty ``pos_cand_list``, duplicate qids, missing image files
    (``check_images``) and, with ``strict``, unknown modality strings, a
    modality that does not match the parts present and unknown task ids (see
    the module docstring for the two rules).
    """
    def query(file, n, obj, qid, text, image, modality, where) -> MbeirQuery:
        tid = obj.get("task_id") if strict else None
        if tid is not None and (isinstance(tid, bool) or not isinstance(tid, int) or tid not in TASKS):
            raise InputError(f"{where}task_id {tid!r} is not an M-BEIR task id ({sorted(TASKS)})")
        return MbeirQuery(
            qid, text, image, modality,
            _id_list(file, n, obj, "pos_cand_list", qid, required=True, strict=strict),
            _id_list(file, n, obj, "neg_cand_list", qid, required=False, strict=strict) if strict else (),
            obj.get("query_src_content"), tid, f"{file}:{n}", _optional_text(file, n, obj, "instruction", qid),
        )

    return _read_records(_QUERY, paths, root, check_images, strict, query)


def read_pool(paths: str | os.PathLike | Sequence[str | os.PathLike], root: str | os.PathLike,
              check_images: bool = True, strict: bool = True) -> list[MbeirCandidate]:
    """Candidate records from a pool JSONL file or a directory of them (e.g. ``cand_pool/local``).

    A did listed twice with the same content (a local pool read together with
    the union pool) is kept once; the same did with different content is refused.
    """
    def candidate(file, n, obj, did, text, image, modality, where) -> MbeirCandidate:
        return MbeirCandidate(did, text, image, modality, obj.get("src_content"), f"{file}:{n}")

    return _read_records(_CANDIDATE, paths, root, check_images, strict, candidate)


def _files(paths, what: str) -> list[Path]:
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files: list[Path] = []
    for p in paths:
        files.extend(_jsonl_files(p, what))
    if not files:
        raise InputError(f"no {what} files given")
    return files


def _describe(paths) -> str:
    if isinstance(paths, (str, os.PathLike)):
        return str(paths)
    return ", ".join(str(p) for p in paths)


# -------------------------------------------------------------- instructions
INSTRUCTION_MODES = ("fixed", "random", "none")


@dataclass(frozen=True)
class Instructions:
    """Prompts per ``(dataset id, query modality, candidate modality)``, from the instructions TSV."""

    prompts: Mapping[tuple[int, str, str], tuple[str, ...]]
    path: str = ""

    def choices(self, dataset_id: int, query_modality: str, cand_modality: str, who: str = "") -> tuple[str, ...]:
        key = (dataset_id, query_modality, cand_modality)
        got = self.prompts.get(key)
        if not got:
            raise InputError(f"{who}no instruction for dataset {dataset_id} ({dataset_name(dataset_id)}), "
                             f"{query_modality} -> {cand_modality} in {self.path or 'the instructions'}; add a row "
                             "for it or evaluate without instructions (--instruction-mode none)")
        return got

    def pick(self, dataset_id: int, query_modality: str, cand_modality: str, mode: str = "fixed",
             prompt: int = 1, seed: int = 0, key: str = "", who: str = "") -> str | None:
        """The instruction for one query.

        ``fixed``: prompt number ``prompt`` (1-based; the last one when a row
        has fewer). ``random``: one of the row's prompts, drawn by a generator
        seeded with ``seed`` and ``key`` (the qid), so the choice does not
        depend on the order of the queries. ``none``: no instruction.
        """
        if mode == "none":
            return None
        if mode not in INSTRUCTION_MODES:
            raise InputError(f"instruction mode {mode!r} is not one of {', '.join(INSTRUCTION_MODES)}")
        prompts = self.choices(dataset_id, query_modality, cand_modality, who)
        if mode == "fixed":
            if prompt < 1:
                raise InputError(f"prompt number must be 1 or more, got {prompt}")
            return prompts[min(prompt, len(prompts)) - 1]
        return random.Random(f"{seed}:{key}").choice(prompts)


def _sentence(s: str) -> str:
    s = s.replace("\r", "").strip()
    if s and s[-1] not in ".?!":
        s += "."
    return s


def read_instructions(path: str | os.PathLike) -> Instructions:
    """The instructions TSV: query modality, candidate modality, dataset name, dataset id, prompts.

    The first line is a header when its first cell is not a modality. Each
    prompt is stripped and ends with a full stop (added when missing).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: instructions file not found (M-BEIR ships instructions/query_instructions.tsv)")
    prompts: dict[tuple[int, str, str], tuple[str, ...]] = {}
    lines: dict[tuple[int, str, str], int] = {}
    first = True
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            line = line.rstrip("\n").rstrip("\r")
            if not line.strip():
                continue
            cells = line.split("\t")
            if first:
                first = False
                if cells[0].strip() not in MODALITIES:
                    continue  # the header
            if len(cells) < 5:
                raise InputError(f"{path}:{n}: expected tab-separated query modality, candidate modality, dataset, "
                                 f"dataset id and at least one prompt; got {len(cells)} columns")
            where = f"{path}:{n}: "
            qmod = _check_modality(cells[0].strip(), "query modality", where)
            cmod = _check_modality(cells[1].strip(), "candidate modality", where)
            name, did = cells[2].strip(), cells[3].strip()
            if not did.isdigit():
                raise InputError(f"{where}dataset id {did!r} is not a number (column 4)")
            dataset = int(did)
            if name.lower() in DATASET_IDS and DATASET_IDS[name.lower()] != dataset:
                raise InputError(f"{where}dataset {name!r} has id {DATASET_IDS[name.lower()]} in M-BEIR, not "
                                 f"{dataset}; check the column order")
            row = tuple(_sentence(c) for c in cells[4:] if c.strip())
            if not row:
                raise InputError(f"{where}no prompt for {name} {qmod} -> {cmod}")
            key = (dataset, qmod, cmod)
            if key in lines:
                raise InputError(f"{where}a second row for dataset {dataset} {qmod} -> {cmod} "
                                 f"(first at line {lines[key]})")
            prompts[key], lines[key] = row, n
    if not prompts:
        raise InputError(f"{path}: no instruction rows")
    return Instructions(prompts, str(path))


# -------------------------------------------------------------------- qrels
@dataclass(frozen=True)
class MbeirQrels:
    """Judgements ``{qid: {did: rel}}``, the task id of each qid and where each qid was first seen."""

    judgements: Mapping[str, Mapping[str, int]]
    tasks: Mapping[str, int | None]
    lines: Mapping[str, str]


def read_qrels(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> MbeirQrels:
    """M-BEIR qrels: ``qid 0 did rel task_id`` (whitespace-separated); a file or a directory of ``*.txt``.

    Four-column TREC qrels (no task id) are accepted too; the task is then
    taken from the modalities.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            found = sorted(p.glob("*.txt")) or sorted(x for x in p.iterdir() if x.is_file())
            if not found:
                raise InputError(f"{p}: no qrels files in this directory")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise InputError(f"{p}: qrels file not found")
    judgements: dict[str, dict[str, int]] = {}
    tasks: dict[str, int | None] = {}
    where: dict[str, str] = {}
    for file in files:
        with open(file, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) not in (4, 5):
                    raise InputError(f"{file}:{n}: expected 'qid 0 did rel task_id' (5 columns), got {len(parts)}")
                qid, _, did, rel = parts[:4]
                try:
                    rel_i = int(rel)
                except ValueError:
                    raise InputError(f"{file}:{n}: relevance {rel!r} is not an integer (column 4)") from None
                task = None
                if len(parts) == 5:
                    if not parts[4].isdigit() or int(parts[4]) not in TASKS:
                        raise InputError(f"{file}:{n}: task id {parts[4]!r} is not an M-BEIR task id "
                                         f"({sorted(TASKS)}) (column 5)")
                    task = int(parts[4])
                if qid in tasks and tasks[qid] != task:
                    raise InputError(f"{file}:{n}: qid {qid!r} has task id {task} here but {tasks[qid]} at "
                                     f"{where[qid]}")
                tasks.setdefault(qid, task)
                where.setdefault(qid, f"{file}:{n}")
                judgements.setdefault(qid, {})[did] = rel_i
    if not judgements:
        raise InputError(f"{_describe(paths)}: no judgements found")
    return MbeirQrels(judgements, tasks, where)


def qrels_from_queries(queries: Sequence[MbeirQuery]) -> MbeirQrels:
    """Judgements from the queries' ``pos_cand_list`` (relevance 1), as M-BEIR builds its qrels."""
    return MbeirQrels({q.qid: {d: 1 for d in q.positives} for q in queries},
                      {q.qid: q.task_id for q in queries}, {q.qid: q.source for q in queries})
