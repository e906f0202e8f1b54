"""M-BEIR's tasks, datasets and the rows of its results table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import InputError
from ..inputs import MODALITIES

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
