"""Runs per scope, Recall@k per row, and the report table."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from ..errors import InputError
from ..io import Hit
from .data import MbeirSet
from .tasks import SCOPES, TASKS, dataset_name, headline_k, recall_ks

# ------------------------------------------------------------------ results
#: ``Runs.kind`` of a model's own runs (a fusion's is ``hybrid``)
SPARSE, DENSE = "sparse", "dense"


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
