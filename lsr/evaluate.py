"""Retrieval metrics through ir_measures (pytrec_eval underneath).

Metric names are accepted the way people type them (``ndcg@10``,
``recall@100``, ``map``, ``mrr@10``, ``p@5``) and reported under the name given.
"""

from __future__ import annotations

import re
from typing import Iterable, Mapping, Sequence

from .errors import InputError
from .io import Hit

_ALIASES = {
    "ndcg": "nDCG", "recall": "R", "r": "R", "map": "AP", "ap": "AP", "mrr": "RR", "rr": "RR",
    "p": "P", "precision": "P", "success": "Success", "judged": "Judged",
}
DEFAULT_METRICS = ("ndcg@10", "recall@100")


def parse_metric(name: str):
    import ir_measures

    m = re.fullmatch(r"([A-Za-z_]+)(?:@(\d+))?", name.strip())
    if not m:
        raise InputError(f"metric {name!r} is not understood; use e.g. ndcg@10, recall@100, map, mrr@10")
    base = _ALIASES.get(m.group(1).lower(), m.group(1))
    spec = base + (f"@{m.group(2)}" if m.group(2) else "")
    try:
        return ir_measures.parse_measure(spec)
    except (ValueError, NameError, AttributeError, TypeError):
        raise InputError(f"metric {name!r} is not understood; use e.g. ndcg@10, recall@100, map, mrr@10") from None


def _run_dict(run: Mapping[str, Sequence[Hit]] | Mapping[str, Mapping[str, float]]) -> dict:
    out = {}
    for qid, hits in run.items():
        if isinstance(hits, Mapping):
            out[qid] = {d: float(s) for d, s in hits.items()}
        else:
            out[qid] = {h.docid: float(h.score) for h in hits}
    return out


def evaluate(
    run, qrels: Mapping[str, Mapping[str, int]], metrics: Iterable[str] = DEFAULT_METRICS,
    per_query: bool = False,
):
    """Mean of each metric over the judged queries (queries missing from the run score 0).

    ``run`` maps qid to a list of :class:`~lsr.io.Hit` or to ``{docid: score}``.
    Returns ``{name_as_given: value}``; with ``per_query=True`` also
    ``{name: {qid: value}}``.
    """
    import ir_measures

    names = list(metrics)
    if not names:
        raise InputError("no metrics given")
    measures = {name: parse_metric(name) for name in names}
    run_d = _run_dict(run)
    qrels_d = {q: dict(d) for q, d in qrels.items()}
    # Queries with judgements but no results count as zero, as trec_eval -c does.
    for q in qrels_d:
        run_d.setdefault(q, {})
    per_q: dict[str, dict[str, float]] = {n: {} for n in names}
    by_measure = {str(m): n for n, m in measures.items()}
    for r in ir_measures.iter_calc(list(measures.values()), qrels_d, run_d):
        per_q[by_measure[str(r.measure)]][r.query_id] = float(r.value)
    judged = [q for q in qrels_d if any(v > 0 for v in qrels_d[q].values())]
    means = {n: (sum(per_q[n].get(q, 0.0) for q in judged) / len(judged) if judged else 0.0) for n in names}
    return (means, per_q) if per_query else means
