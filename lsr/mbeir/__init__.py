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
retrieval through a Lucene index lives in :mod:`lsr.cli.eval_mbeir`.

Modules: :mod:`~lsr.mbeir.tasks` (tasks, datasets, table rows),
:mod:`~lsr.mbeir.records` (readers of queries, pools, instructions, qrels),
:mod:`~lsr.mbeir.data` (one evaluation set), :mod:`~lsr.mbeir.metrics` (runs,
Recall@k, the report) and :mod:`~lsr.mbeir.runs` (dense retrieval, fusion).
"""

from __future__ import annotations

from .tasks import (BENCHMARK_ROWS, DATASETS, DATASET_IDS, RECALL_AT_10, SCOPES, TASKS, Task, dataset_name, file_stem,
                    headline_k, recall_ks, task_id)  # noqa: F401
from .records import (INSTRUCTION_MODES, Instructions, MbeirCandidate, MbeirQrels, MbeirQuery, qrels_from_queries,
                      read_instructions, read_pool, read_qrels, read_queries)  # noqa: F401
from .data import (MbeirSet, load_set)  # noqa: F401
from .metrics import (MbeirReport, RowResult, Runs, chance_hit_rate, evaluate, hit_at_k)  # noqa: F401
from .runs import (dense_runs, encode_dense, fuse_runs, restrict)  # noqa: F401

__all__ = [
    "BENCHMARK_ROWS", "DATASETS", "DATASET_IDS", "INSTRUCTION_MODES", "Instructions", "MbeirCandidate",
    "MbeirQrels", "MbeirQuery", "MbeirReport", "MbeirSet", "RECALL_AT_10", "RowResult", "Runs", "SCOPES", "TASKS",
    "Task", "chance_hit_rate", "dataset_name", "dense_runs", "encode_dense", "evaluate", "file_stem", "fuse_runs",
    "headline_k", "hit_at_k", "load_set", "qrels_from_queries", "read_instructions", "read_pool", "read_qrels",
    "read_queries", "recall_ks", "restrict", "task_id"
]
