"""One M-BEIR evaluation set: queries, pools and qrels, grouped into (task, dataset) rows."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..errors import InputError
from ..inputs import Input
from .records import (INSTRUCTION_MODES, Instructions, MbeirCandidate, MbeirQrels, MbeirQuery, qrels_from_queries,
                      read_pool, read_qrels, read_queries)
from .tasks import BENCHMARK_ROWS, SCOPES, TASKS, file_stem, task_id

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
