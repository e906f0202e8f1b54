"""M-BEIR format: readers, task instructions, per-task pools and the benchmark's Recall@k.

M-BEIR (UniIR, ECCV 2024) mixes eight retrieval tasks over ten datasets. A
task is a pair *query modality -> candidate modality*; modalities are spelled
``"text"``, ``"image"`` and ``"image,text"``. The published files are laid out
as::

    ROOT/query/test/mbeir_<dataset>_task<N>_test.jsonl            queries
    ROOT/cand_pool/local/mbeir_<dataset>_task<N>_cand_pool.jsonl  one pool per (dataset, task)
    ROOT/cand_pool/global/mbeir_union_test_cand_pool.jsonl        the union of the local pools
    ROOT/qrels/test/mbeir_<dataset>_task<N>_test_qrels.txt        "qid 0 did rel task_id"
    ROOT/instructions/query_instructions.tsv                      one row of prompts per task and dataset
    ROOT/mbeir_images/...                                         image files (record paths are relative to ROOT)

A query line holds ``qid``, ``query_txt``, ``query_img_path``,
``query_modality``, ``query_src_content``, ``pos_cand_list`` and
``neg_cand_list`` (and, in some releases, ``task_id``); a candidate line holds
``did``, ``txt``, ``img_path``, ``modality`` and ``src_content``. Ids are
``"<dataset id>:<number>"``. The instructions TSV has a header and the columns
query modality, candidate modality, dataset name, dataset id, ``prompt_1`` ..
``prompt_4``.

Evaluation follows the benchmark: Recall@k is a hit rate (1 when any judged
positive is among the top ``k``, else 0, averaged over a row's queries),
reported at 5, except at 10 for Fashion200K and FashionIQ. Each query is
scored against its *local* pool (the candidates of its dataset and task) and
against the *global* pool (everything loaded). The table has one row per
(task, dataset) and the mean of the rows.

Nothing here touches Java or model code: encoders are duck-typed, and sparse
retrieval through a Lucene index lives in :mod:`lsr.commands.eval_mbeir`.
"""

from __future__ import annotations

import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from .errors import InputError
from .exhaustive import blocked_top_k
from .inputs import MODALITIES, Input
from .io import Hit, iter_jsonl

# --------------------------------------------------------------- the benchmark
#: Dataset ids as M-BEIR numbers them (the prefix of every qid and did).
DATASETS: dict[int, str] = {
    0: "VisualNews", 1: "Fashion200K", 2: "WebQA", 3: "EDIS", 4: "NIGHTS",
    5: "OVEN", 6: "InfoSeek", 7: "FashionIQ", 8: "CIRR", 9: "MSCOCO",
}
DATASET_IDS: dict[str, int] = {name.lower(): i for i, name in DATASETS.items()}


@dataclass(frozen=True)
class Task:
    """One M-BEIR task: a query modality and the modality of the candidates it should retrieve."""

    id: int
    query_modality: str
    cand_modality: str
    in_benchmark: bool = True

    @property
    def name(self) -> str:
        return f"{self.query_modality} -> {self.cand_modality}"


#: Task ids as M-BEIR numbers them. Id 5 (image -> image,text) is reserved and has no benchmark data.
TASKS: dict[int, Task] = {t.id: t for t in (
    Task(0, "text", "image"),
    Task(1, "text", "text"),
    Task(2, "text", "image,text"),
    Task(3, "image", "text"),
    Task(4, "image", "image"),
    Task(5, "image", "image,text", in_benchmark=False),
    Task(6, "image,text", "text"),
    Task(7, "image,text", "image"),
    Task(8, "image,text", "image,text"),
)}
_TASK_OF: dict[tuple[str, str], int] = {(t.query_modality, t.cand_modality): t.id for t in TASKS.values()}

#: The sixteen (task id, dataset id) rows of the benchmark, in the order of the paper's table.
BENCHMARK_ROWS: tuple[tuple[int, int], ...] = (
    (0, 0), (0, 9), (0, 1), (1, 2), (2, 3), (2, 2), (3, 0), (3, 9), (3, 1),
    (4, 4), (6, 5), (6, 6), (7, 7), (7, 8), (8, 5), (8, 6),
)
#: The datasets whose headline metric is Recall@10 (Recall@5 for the others).
RECALL_AT_10 = frozenset({1, 7})
SCOPES = ("local", "global")


def task_id(query_modality: str, cand_modality: str) -> int:
    """The M-BEIR task id of a query modality and a candidate modality."""
    for m in (query_modality, cand_modality):
        _check_modality(m, "modality")
    return _TASK_OF[(query_modality, cand_modality)]


def dataset_name(dataset_id: int) -> str:
    return DATASETS.get(dataset_id, f"dataset {dataset_id}")


def headline_k(dataset_id: int) -> int:
    """The k of the Recall@k that M-BEIR reports for a dataset: 10 for Fashion200K and FashionIQ, else 5."""
    return 10 if dataset_id in RECALL_AT_10 else 5


def recall_ks(dataset_id: int) -> tuple[int, ...]:
    """All cut-offs computed for a dataset (M-BEIR computes 1/5/10, or 10/20/50 for the fashion sets)."""
    return (10, 20, 50) if dataset_id in RECALL_AT_10 else (1, 5, 10)


def file_stem(task: int, dataset: int) -> str:
    """``mbeir_<dataset>_task<N>``: how M-BEIR names the files of one row."""
    return f"mbeir_{dataset_name(dataset).lower().replace(' ', '')}_task{task}"


def _check_modality(value: Any, what: str, where: str = "") -> str:
    if value in MODALITIES:
        return value
    hint = " (M-BEIR spells the pair 'image,text')" if value in ("text,image", "image+text", "text+image") else ""
    raise InputError(f"{where}{what} {value!r} is not one of 'text', 'image', 'image,text'{hint}")


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


def _id_field(path, n: int, obj: dict, key: str, kind: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not _ID.match(value):
        raise InputError(f"{path}:{n}: {kind} id {key}={value!r} is not '<dataset id>:<number>' "
                         "(M-BEIR ids start with the dataset id, e.g. '9:12')")
    return value


def _optional_text(path, n: int, obj: dict, key: str, rid: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InputError(f"{path}:{n}: record {rid!r}: {key} must be a string or null, got {type(value).__name__}")
    return value if value.strip() else None


def _image_path(path, n: int, obj: dict, key: str, rid: str, root: Path, check: bool) -> str | None:
    value = _optional_text(path, n, obj, key, rid)
    if value is None:
        return None
    p = Path(value)
    resolved = p if p.is_absolute() else root / p
    if check and not resolved.is_file():
        raise InputError(f"{path}:{n}: record {rid!r}: image {value!r} not found (looked for {resolved}); "
                         f"pass the M-BEIR data root that holds the images with --data, or fix {key}")
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


def _id_list(path, n: int, obj: dict, key: str, rid: str, required: bool) -> tuple[str, ...]:
    value = obj.get(key)
    if value is None and not required:
        return ()
    if not isinstance(value, list) or not all(isinstance(d, str) and d and not any(c.isspace() for c in d)
                                              for d in value):
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


def read_queries(paths: str | os.PathLike | Sequence[str | os.PathLike], root: str | os.PathLike,
                 check_images: bool = True) -> list[MbeirQuery]:
    """Query records from JSONL files (or directories of them); image paths resolve against ``root``.

    Refused with an error naming the file, line and qid: unknown modality
    strings, a modality that does not match the parts present, missing image
    files (``check_images``), malformed ids, empty ``pos_cand_list`` and
    duplicate qids.
    """
    root = Path(root)
    out: list[MbeirQuery] = []
    seen: dict[str, str] = {}
    for file in _files(paths, "query"):
        for n, obj in iter_jsonl(file):
            qid = _id_field(file, n, obj, "qid", "query")
            where = f"{file}:{n}: query {qid!r}: "
            modality = _check_modality(obj.get("query_modality"), "query_modality", where)
            text = _optional_text(file, n, obj, "query_txt", qid)
            image = _image_path(file, n, obj, "query_img_path", qid, root, check_images)
            _check_parts(file, n, qid, modality, text, image, "query_txt", "query_img_path")
            tid = obj.get("task_id")
            if tid is not None and (isinstance(tid, bool) or not isinstance(tid, int) or tid not in TASKS):
                raise InputError(f"{where}task_id {tid!r} is not an M-BEIR task id ({sorted(TASKS)})")
            if qid in seen:
                raise InputError(f"{where}duplicate qid (first at {seen[qid]}); qids must be unique")
            seen[qid] = f"{file}:{n}"
            out.append(MbeirQuery(
                qid, text, image, modality,
                _id_list(file, n, obj, "pos_cand_list", qid, required=True),
                _id_list(file, n, obj, "neg_cand_list", qid, required=False),
                obj.get("query_src_content"), tid, f"{file}:{n}",
            ))
    if not out:
        raise InputError(f"{_describe(paths)}: no queries found")
    return out


def read_pool(paths: str | os.PathLike | Sequence[str | os.PathLike], root: str | os.PathLike,
              check_images: bool = True) -> list[MbeirCandidate]:
    """Candidate records from a pool JSONL file or a directory of them (e.g. ``cand_pool/local``).

    A did listed twice with the same content (a local pool read together with
    the union pool) is kept once; the same did with different content is refused.
    """
    root = Path(root)
    out: list[MbeirCandidate] = []
    seen: dict[str, MbeirCandidate] = {}
    for file in _files(paths, "candidate pool"):
        for n, obj in iter_jsonl(file):
            did = _id_field(file, n, obj, "did", "candidate")
            where = f"{file}:{n}: candidate {did!r}: "
            modality = _check_modality(obj.get("modality"), "modality", where)
            text = _optional_text(file, n, obj, "txt", did)
            image = _image_path(file, n, obj, "img_path", did, root, check_images)
            _check_parts(file, n, did, modality, text, image, "txt", "img_path")
            cand = MbeirCandidate(did, text, image, modality, obj.get("src_content"), f"{file}:{n}")
            if did in seen:
                first = seen[did]
                if (first.text, first.image, first.modality) != (text, image, modality):
                    raise InputError(f"{where}listed again with different content (first at {first.source}); "
                                     "dids must be unique across the pool files")
                continue
            seen[did] = cand
            out.append(cand)
    if not out:
        raise InputError(f"{_describe(paths)}: no candidates found")
    return out


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


# ------------------------------------------------------------- the whole set
_POOL_FILE = re.compile(r"^mbeir_([a-z0-9]+)_task(\d+)(?:_[a-z]+)?_cand_pool\.jsonl$")


@dataclass
class MbeirSet:
    """Queries, candidate pool and judgements, checked against each other.

    ``task_of[qid]`` is the query's task; ``rows`` are the (task id, dataset
    id) pairs present, in the paper's order. ``local_pool(row)`` gives the
    indices (into ``pool``) of a row's local pool: the candidates read from
    that row's own pool file (``mbeir_<dataset>_task<N>_cand_pool.jsonl``)
    when one was loaded, otherwise the candidates of the row's dataset whose
    modality is the task's candidate modality.
    """

    queries: list[MbeirQuery]
    pool: list[MbeirCandidate]
    qrels: MbeirQrels
    task_of: dict[str, int]
    rows: list[tuple[int, int]]
    queries_of: dict[tuple[int, int], list[str]]
    _cache: dict = field(default_factory=dict, repr=False)

    @classmethod
    def build(cls, queries: Sequence[MbeirQuery], pool: Sequence[MbeirCandidate],
              qrels: MbeirQrels | None = None) -> "MbeirSet":
        """Check ``queries``, ``pool`` and ``qrels`` (default: from ``pos_cand_list``) against each other."""
        queries, pool = list(queries), list(pool)
        by_qid = {q.qid: q for q in queries}
        by_did = {c.did: c for c in pool}
        derived = qrels is None
        qrels = qrels or qrels_from_queries(queries)
        unknown = [q for q in qrels.judgements if q not in by_qid]
        if unknown:
            shown = "; ".join(f"{qrels.lines[q]}: qid {q!r}" for q in unknown[:5])
            more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
            raise InputError(f"qrels name {len(unknown)} qids that are not among the {len(queries)} queries "
                             f"read: {shown}{more}; pass the query files these judgements belong to")
        unjudged = [q for q in queries if not any(r > 0 for r in qrels.judgements.get(q.qid, {}).values())]
        if unjudged:
            shown = "; ".join(f"{q.source}: qid {q.qid!r}" for q in unjudged[:5])
            more = f" and {len(unjudged) - 5} more" if len(unjudged) > 5 else ""
            raise InputError(f"{len(unjudged)} queries have no positive judgement in the qrels: {shown}{more}; "
                             "pass the qrels of these queries")
        task_of: dict[str, int] = {}
        for q in queries:
            task_of[q.qid] = _task_for(q, qrels, by_did, derived)
        in_pool = sum(1 for j in qrels.judgements.values() for d, r in j.items() if r > 0 and d in by_did)
        if in_pool == 0:
            raise InputError(f"none of the judged candidates are in the pool of {len(pool)} candidates; "
                             "pass the pool these queries were judged against")
        queries_of: dict[tuple[int, int], list[str]] = {}
        for q in queries:
            queries_of.setdefault((task_of[q.qid], q.dataset_id), []).append(q.qid)
        order = {row: i for i, row in enumerate(BENCHMARK_ROWS)}
        rows = sorted(queries_of, key=lambda r: (order.get(r, len(order)), r))
        return cls(queries, pool, qrels, task_of, rows, queries_of)

    # ----------------------------------------------------------------- pools
    def query(self, qid: str) -> MbeirQuery:
        return self._by_qid[qid]

    @property
    def _by_qid(self) -> dict[str, MbeirQuery]:
        if "by_qid" not in self._cache:
            self._cache["by_qid"] = {q.qid: q for q in self.queries}
        return self._cache["by_qid"]

    def positives(self, qid: str) -> set[str]:
        return {d for d, r in self.qrels.judgements.get(qid, {}).items() if r > 0}

    def local_pool(self, row: tuple[int, int]) -> np.ndarray:
        """Indices into ``pool`` of the local pool of ``row`` (see the class docstring)."""
        key = ("local", row)
        if key not in self._cache:
            task, dataset = row
            stem = file_stem(task, dataset) + "_"
            by_file = [i for i, c in enumerate(self.pool)
                       if _POOL_FILE.match(Path(c.file).name) and Path(c.file).name.startswith(stem)]
            if by_file:
                idx = by_file
            else:
                modality = TASKS[task].cand_modality
                idx = [i for i, c in enumerate(self.pool) if c.dataset_id == dataset and c.modality == modality]
            self._cache[key] = np.asarray(idx, dtype=np.int64)
        return self._cache[key]

    def row_of(self, qid: str) -> tuple[int, int]:
        return self.task_of[qid], self.query(qid).dataset_id

    def scope_dids(self, scope: str, row: tuple[int, int]) -> set[str]:
        """The dids a query of ``row`` may retrieve in ``scope``."""
        if scope == "global":
            if "global" not in self._cache:
                self._cache["global"] = {c.did for c in self.pool}
            return self._cache["global"]
        if scope != "local":
            raise InputError(f"scope {scope!r} is not one of {', '.join(SCOPES)}")
        key = ("local-dids", row)
        if key not in self._cache:
            self._cache[key] = {self.pool[i].did for i in self.local_pool(row)}
        return self._cache[key]

    # ---------------------------------------------------------------- inputs
    def query_inputs(self, instructions: Instructions | None = None, mode: str = "fixed", prompt: int = 1,
                     seed: int = 0) -> list[Input]:
        """One :class:`~lsr.inputs.Input` per query, in ``queries`` order, with its task instruction.

        The instruction is looked up by the query's dataset id, its modality
        and its task's candidate modality; encoders put it before the query
        text (``Input.text_with_instruction``).
        """
        if mode not in INSTRUCTION_MODES:
            raise InputError(f"instruction mode {mode!r} is not one of {', '.join(INSTRUCTION_MODES)}")
        if mode != "none" and instructions is None:
            raise InputError("instructions are needed for instruction mode "
                             f"{mode!r}; pass the instructions TSV or use mode 'none'")
        out = []
        for q in self.queries:
            task = TASKS[self.task_of[q.qid]]
            instruction = None
            if mode != "none":
                instruction = instructions.pick(q.dataset_id, q.modality, task.cand_modality, mode, prompt, seed,
                                                q.qid, who=f"{q.source}: query {q.qid!r}: ")
            out.append(Input(text=q.text, image=q.image, instruction=instruction))
        return out

    def candidate_inputs(self) -> list[Input]:
        return [Input(text=c.text, image=c.image) for c in self.pool]


def _task_for(q: MbeirQuery, qrels: MbeirQrels, by_did: Mapping[str, MbeirCandidate], derived: bool) -> int:
    task = qrels.tasks.get(q.qid)
    if task is not None and q.task_id is not None and task != q.task_id:
        raise InputError(f"{q.source}: query {q.qid!r} has task_id {q.task_id} but the qrels "
                         f"({qrels.lines[q.qid]}) give task {task}")
    if task is None:
        task = q.task_id
    positives = [d for d, r in qrels.judgements.get(q.qid, {}).items() if r > 0]
    if task is None:
        found = [by_did[d] for d in positives if d in by_did]
        if not found:
            raise InputError(f"{q.source}: query {q.qid!r}: none of its positives ({', '.join(positives[:5])}) "
                             "is in the pool, so its task cannot be told; pass qrels with task ids or the pool "
                             "that holds its positives")
        task = task_id(q.modality, found[0].modality)
    t = TASKS[task]
    source = q.source if derived else qrels.lines[q.qid]
    if t.query_modality != q.modality:
        raise InputError(f"{source}: query {q.qid!r} is task {task} ({t.name}) but its query_modality is "
                         f"{q.modality!r} ({q.source})")
    for d in positives:
        c = by_did.get(d)
        if c is not None and c.modality != t.cand_modality:
            raise InputError(f"{source}: query {q.qid!r} is task {task} ({t.name}) but its positive {d!r} has "
                             f"modality {c.modality!r} ({c.source})")
    return task


def load_set(root: str | os.PathLike, queries, pool, qrels=None, check_images: bool = True) -> MbeirSet:
    """Read queries, pool and (optional) qrels and check them against each other."""
    return MbeirSet.build(read_queries(queries, root, check_images), read_pool(pool, root, check_images),
                          read_qrels(qrels) if qrels else None)


# ------------------------------------------------------------------ results
@dataclass
class Runs:
    """Ranked results of one system: ``{scope: {qid: [Hit]}}`` for ``local`` and/or ``global``."""

    name: str
    scopes: dict[str, dict[str, list[Hit]]]
    kind: str = ""
    info: dict = field(default_factory=dict)


def hit_at_k(hits: Sequence[Hit], positives: set[str], k: int) -> float:
    """1.0 when any of ``positives`` is among the first ``k`` hits (ranked by ``rank``), else 0.0."""
    ranked = sorted(hits, key=lambda h: h.rank)[:k]
    return 1.0 if any(h.docid in positives for h in ranked) else 0.0


def chance_hit_rate(pool_size: int, positives: int, k: int) -> float:
    """Expected Recall@k (hit rate) of a uniformly random ranking of ``pool_size`` candidates.

    ``1 - C(N - P, k) / C(N, k)``: the chance that a random top ``k`` holds
    at least one of ``P`` positives.
    """
    if positives <= 0 or pool_size <= 0:
        return 0.0
    if k >= pool_size or positives > pool_size - k:
        return 1.0
    miss = 1.0
    for i in range(k):
        miss *= (pool_size - positives - i) / (pool_size - i)
    return 1.0 - miss


@dataclass
class RowResult:
    """One row of the table: a task on a dataset."""

    task_id: int
    dataset_id: int
    queries: int
    k: int  # the headline cut-off
    recall: dict[str, dict[int, float]]  # scope -> {k: hit rate}
    chance: dict[str, float]  # scope -> expected headline Recall@k of a random ranking
    pool_size: dict[str, int]
    unreachable: dict[str, int]  # queries with no judged positive in the scope's pool

    @property
    def task(self) -> str:
        return TASKS[self.task_id].name

    @property
    def dataset(self) -> str:
        return dataset_name(self.dataset_id)

    @property
    def metric(self) -> str:
        return f"Recall@{self.k}"

    def headline(self, scope: str) -> float | None:
        got = self.recall.get(scope)
        return None if got is None else got[self.k]

    def to_dict(self) -> dict:
        return {
            "task_id": self.task_id, "task": self.task, "dataset_id": self.dataset_id, "dataset": self.dataset,
            "queries": self.queries, "metric": self.metric,
            **{scope: self.headline(scope) for scope in self.recall},
            "recall": {scope: {f"Recall@{k}": v for k, v in r.items()} for scope, r in self.recall.items()},
            "chance": self.chance, "pool_size": self.pool_size, "unreachable": self.unreachable,
        }


@dataclass
class MbeirReport:
    """Per-row Recall@k of one system, and the mean over rows (the paper's "Average")."""

    system: str
    rows: list[RowResult]
    scopes: tuple[str, ...]
    settings: dict = field(default_factory=dict)

    def average(self, scope: str) -> float:
        values = [r.headline(scope) for r in self.rows]
        return float(np.mean(values)) if values else 0.0

    def row(self, task: int, dataset: int) -> RowResult:
        for r in self.rows:
            if (r.task_id, r.dataset_id) == (task, dataset):
                return r
        raise KeyError((task, dataset))

    def table(self) -> str:
        """The per-row table and the average, as plain text."""
        head = f"{'id':>2}  {'task':<26} {'dataset':<11} {'queries':>7}  {'metric':<9}"
        head += "".join(f" {s:>7}" for s in self.scopes)
        lines = [head]
        for r in self.rows:
            line = f"{r.task_id:>2}  {r.task:<26} {r.dataset:<11} {r.queries:>7}  {r.metric:<9}"
            line += "".join(f" {r.headline(s):>7.3f}" for s in self.scopes)
            lines.append(line)
        avg = f"{'':>2}  {'average (' + str(len(self.rows)) + ' rows)':<26} {'':<11} " \
              f"{sum(r.queries for r in self.rows):>7}  {'':<9}"
        avg += "".join(f" {self.average(s):>7.3f}" for s in self.scopes)
        lines.append(avg)
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"system": self.system, "settings": self.settings, "scopes": list(self.scopes),
                "rows": [r.to_dict() for r in self.rows],
                "average": {s: self.average(s) for s in self.scopes}}


def evaluate(mset: MbeirSet, runs: Runs, settings: Mapping | None = None) -> MbeirReport:
    """Score ``runs`` against the set's judgements, per (task, dataset) row and scope.

    A query missing from a run scores 0. Queries are counted even when none
    of their positives is in the scope's pool (M-BEIR does the same); the
    number of such queries is reported per row as ``unreachable``.
    """
    scopes = tuple(s for s in SCOPES if s in runs.scopes)
    if not scopes:
        raise InputError(f"run {runs.name!r} has no local or global results")
    rows = []
    for row in mset.rows:
        qids = mset.queries_of[row]
        task, dataset = row
        ks = recall_ks(dataset)
        k = headline_k(dataset)
        recall, chance, sizes, unreachable = {}, {}, {}, {}
        for scope in scopes:
            run = runs.scopes[scope]
            allowed = mset.scope_dids(scope, row)
            sizes[scope] = len(allowed)
            hits = {kk: [] for kk in ks}
            expected, missing = [], 0
            for qid in qids:
                pos = mset.positives(qid)
                reachable = len(pos & allowed)
                missing += reachable == 0
                expected.append(chance_hit_rate(len(allowed), reachable, k))
                for kk in ks:
                    hits[kk].append(hit_at_k(run.get(qid, ()), pos, kk))
            recall[scope] = {kk: float(np.mean(v)) for kk, v in hits.items()}
            chance[scope] = float(np.mean(expected))
            unreachable[scope] = missing
        rows.append(RowResult(task, dataset, len(qids), k, recall, chance, sizes, unreachable))
    return MbeirReport(runs.name, rows, scopes, dict(settings or {}))


# ------------------------------------------------------------ dense retrieval
def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def encode_dense(encoder, inputs: Sequence[Input], role: str, chunk_size: int = 256, progress: bool = False,
                 path: str | os.PathLike | None = None) -> np.ndarray:
    """L2-normalised float32 embeddings ``[n, d]`` from ``encoder.encode_queries`` / ``encode_documents``.

    With ``path`` the matrix is written to that ``.npy`` file and returned memory mapped.
    """
    from lsr.progress import tqdm

    fn = encoder.encode_queries if role == "query" else encoder.encode_documents
    name = getattr(encoder, "name", type(encoder).__name__)
    out = None
    desc = "embed queries" if role == "query" else "embed candidates"
    bar = tqdm(total=len(inputs), unit="input", desc=desc, disable=not progress)
    for s in range(0, len(inputs), chunk_size):
        chunk = list(inputs[s:s + chunk_size])
        vecs = np.asarray(fn(chunk), dtype=np.float32)
        if vecs.ndim != 2 or len(vecs) != len(chunk) or vecs.shape[1] < 1:
            raise InputError(f"{name}: encode_{role}s returned shape {vecs.shape} for {len(chunk)} inputs; "
                             "expected [n, dim]")
        if out is None:
            shape = (len(inputs), vecs.shape[1])
            out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape) if path is not None \
                else np.empty(shape, dtype=np.float32)
        elif vecs.shape[1] != out.shape[1]:
            raise InputError(f"{name}: encode_{role}s returned {vecs.shape[1]} dimensions after {out.shape[1]}")
        out[s:s + len(chunk)] = _normalise(vecs)
        bar.update(len(chunk))
    bar.close()
    return out if out is not None else np.zeros((0, 0), np.float32)


def dense_runs(encoder, mset: MbeirSet, query_inputs: Sequence[Input], depth: int = 50,
               scopes: Iterable[str] = SCOPES, chunk_size: int = 256, block: int = 65536,
               workdir: str | os.PathLike | None = None, progress: bool = False) -> Runs:
    """Exhaustive cosine search with a dense encoder (``encode_*`` return float arrays ``[n, d]``).

    The pool is embedded once (into ``workdir/pool-embeddings.npy``, memory
    mapped, when ``workdir`` is given) and scanned in blocks of ``block``
    rows; the local scope only scans the row's local pool. Ties are broken
    by pool order.
    """
    scopes = tuple(scopes)
    if depth < 1:
        raise InputError(f"depth must be at least 1, got {depth}")
    path = None
    if workdir is not None:
        Path(workdir).mkdir(parents=True, exist_ok=True)
        path = Path(workdir) / "pool-embeddings.npy"
    matrix = encode_dense(encoder, mset.candidate_inputs(), "document", chunk_size, progress, path)
    queries = encode_dense(encoder, list(query_inputs), "query", chunk_size, progress)
    if len(queries) != len(mset.queries):
        raise InputError(f"{len(queries)} query inputs for {len(mset.queries)} queries")
    if queries.shape[1] != matrix.shape[1]:
        raise InputError(f"query embeddings have {queries.shape[1]} dimensions, candidates {matrix.shape[1]}")
    qids = [q.qid for q in mset.queries]
    position = {q: i for i, q in enumerate(qids)}
    dids = [c.did for c in mset.pool]
    out: dict[str, dict[str, list[Hit]]] = {}
    for scope in scopes:
        run: dict[str, list[Hit]] = {}
        if scope == "global":
            groups = [(np.arange(len(qids)), np.arange(len(dids)))]
        else:
            groups = [(np.asarray([position[q] for q in mset.queries_of[row]]), mset.local_pool(row))
                      for row in mset.rows]
        for qrows, cols in groups:
            blocks = ((queries[qrows] @ np.asarray(matrix[idx]).T, idx)
                      for idx in (cols[s:s + block] for s in range(0, len(cols), block)))
            best_i, best_s = blocked_top_k(blocks, len(qrows), depth)
            for r, qi in enumerate(qrows):
                run[qids[qi]] = [Hit(dids[j], float(v), rank) for rank, (j, v) in
                                 enumerate(zip(best_i[r].tolist(), best_s[r].tolist()), 1)]
        out[scope] = run
    return Runs(str(getattr(encoder, "name", type(encoder).__name__)), out, "dense")


def fuse_runs(runs: Sequence[Runs], method: str = "rrf", *, rrf_k: float = 60, alpha: float = 0.5,
              norm: str = "minmax", depth: int | None = None, name: str | None = None) -> Runs:
    """Fuse systems scope by scope with :mod:`lsr.fusion` (RRF, or interpolation where ``runs[0]``
    is the sparse run and ``alpha`` its weight)."""
    from .fusion import fusion_function

    if len(runs) < 2:
        raise InputError(f"fusion needs at least two runs, got {len(runs)}")
    fuse = fusion_function(method, k=rrf_k, alpha=alpha, norm=norm, depth=depth)
    scopes = [s for s in SCOPES if all(s in r.scopes for r in runs)]
    if not scopes:
        raise InputError("the runs to fuse share no scope (local / global)")
    fused = {s: fuse([r.scopes[s] for r in runs]) for s in scopes}
    how = f"rrf k={rrf_k:g}" if method == "rrf" else f"interp alpha={alpha:g} ({norm})"
    return Runs(name or " + ".join(r.name for r in runs), fused, "hybrid", {"fusion": how})


def restrict(hits: Sequence[Hit], allowed: set[str], depth: int) -> list[Hit]:
    """The hits whose docid is in ``allowed``, re-ranked from 1, at most ``depth``."""
    out = []
    for h in sorted(hits, key=lambda h: h.rank):
        if h.docid in allowed:
            out.append(Hit(h.docid, h.score, len(out) + 1, h.impact_score))
            if len(out) >= depth:
                break
    return out
