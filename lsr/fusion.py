"""Fusion of ranked lists: reciprocal rank fusion, score interpolation and weighted score sums.

Pure functions over runs. A *run* maps a query id to its results, given either
as a list of :class:`~lsr.io.Hit` or as ``{docid: score}``. Within a query,
results are ranked by score, highest first; ties keep the order they were
given in. Every function returns ``{qid: [Hit]}`` ranked by the fused score
(ties broken by docid, so the output is deterministic), ``rank`` starting at 1.

The meaning of ``alpha`` is the same everywhere in the project::

    fused(d) = alpha * sparse(d) + (1 - alpha) * dense(d)

where ``sparse`` is the normalised score of the *first* run given (the sparse
first stage) and ``dense`` the mean of the normalised scores of the other runs.
``alpha = 1`` keeps the sparse ranking, ``alpha = 0`` keeps the dense one.

Missing documents: a document that one run returned and another did not gets,
in the run that missed it, that run's lowest normalised score for the query
(it ranked below everything the run returned). In RRF it simply gets no
contribution from that run. A run whose scores for a query are all equal
carries no ranking information: every one of its documents normalises to 0.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence, Union

from .errors import InputError
from .io import Hit

Run = Mapping[str, Union[Sequence[Hit], Mapping[str, float]]]
NORMALIZATIONS = ("minmax", "zscore")
FUSIONS = ("rrf", "interp", "sum")


def ranked(results: Sequence[Hit] | Mapping[str, float]) -> list[tuple[str, float]]:
    """``[(docid, score)]`` of one query's results, highest score first (stable for ties).

    A docid listed twice keeps its first (best-ranked) occurrence.
    """
    if isinstance(results, Mapping):
        pairs = [(str(d), float(s)) for d, s in results.items()]
    else:
        pairs = [(h.docid, float(h.score)) for h in results]
    for d, s in pairs:
        if math.isnan(s):
            raise InputError(f"document {d!r} has a NaN score; fusion needs real numbers")
    pairs.sort(key=lambda p: -p[1])
    seen, out = set(), []
    for d, s in pairs:
        if d not in seen:
            seen.add(d)
            out.append((d, s))
    return out


def normalize(scores: Mapping[str, float], method: str = "minmax") -> dict[str, float]:
    """Normalise one query's ``{docid: score}``.

    ``minmax``: ``(s - min) / (max - min)``, in [0, 1].
    ``zscore``: ``(s - mean) / std`` (population standard deviation).
    When all scores are equal (or there is one), every score becomes 0.
    """
    if method not in NORMALIZATIONS:
        raise InputError(f"normalisation {method!r} is not one of {', '.join(NORMALIZATIONS)}")
    if not scores:
        return {}
    values = [float(v) for v in scores.values()]
    if method == "minmax":
        lo, hi = min(values), max(values)
        if hi - lo <= 0.0:
            return {d: 0.0 for d in scores}
        return {d: (float(s) - lo) / (hi - lo) for d, s in scores.items()}
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    if std <= 0.0:
        return {d: 0.0 for d in scores}
    return {d: (float(s) - mean) / std for d, s in scores.items()}


def _check_runs(runs: Sequence[Run], at_least: int) -> None:
    if isinstance(runs, Mapping):
        raise InputError("expected a list of runs, got a single run (wrap it in a list)")
    if len(runs) < at_least:
        raise InputError(f"fusion needs at least {at_least} runs, got {len(runs)}")


def _hits(scores: Mapping[str, float], depth: int | None) -> list[Hit]:
    order = sorted(scores.items(), key=lambda p: (-p[1], p[0]))
    if depth is not None:
        order = order[:depth]
    return [Hit(d, float(s), r) for r, (d, s) in enumerate(order, 1)]


def _qids(runs: Sequence[Run]) -> list[str]:
    seen: dict[str, None] = {}
    for run in runs:
        for q in run:
            seen.setdefault(q, None)
    return list(seen)


def rrf(runs: Sequence[Run], k: float = 60, weights: Sequence[float] | None = None,
        depth: int | None = None) -> dict[str, list[Hit]]:
    """Reciprocal rank fusion: ``score(d) = sum_i w_i / (k + rank_i(d))``, ranks from 1.

    ``weights`` defaults to 1 per run; ``depth`` keeps the top ``depth`` fused
    results per query (all by default). Queries present in any run are kept.
    """
    _check_runs(runs, 1)
    if k < 0:
        raise InputError(f"RRF k must be non-negative, got {k}")
    weights = _weights(weights, len(runs))
    out = {}
    for qid in _qids(runs):
        parts: dict[str, list[float]] = {}
        for run, w in zip(runs, weights):
            for rank, (d, _) in enumerate(ranked(run.get(qid, ())), 1):
                parts.setdefault(d, []).append(w / (k + rank))
        # fsum: the exactly rounded sum, so equal contributions in another run order give the same score
        out[qid] = _hits({d: math.fsum(p) for d, p in parts.items()}, depth)
    return out


def weighted_sum(runs: Sequence[Run], weights: Sequence[float] | None = None, norm: str = "minmax",
                 depth: int | None = None) -> dict[str, list[Hit]]:
    """Weighted sum of normalised scores: ``score(d) = sum_i w_i * norm_i(d)`` (CombSUM with weights).

    ``weights`` defaults to 1 per run. Each run's scores are normalised per
    query (``norm``: ``minmax`` or ``zscore``); a document a run did not return
    gets that run's lowest normalised score for the query.
    """
    _check_runs(runs, 1)
    if norm not in NORMALIZATIONS:
        raise InputError(f"normalisation {norm!r} is not one of {', '.join(NORMALIZATIONS)}")
    weights = _weights(weights, len(runs))
    out = {}
    for qid in _qids(runs):
        normed = [normalize(dict(ranked(run.get(qid, ()))), norm) for run in runs]
        docs: dict[str, None] = {}
        for n in normed:
            docs.update(dict.fromkeys(n))
        floor = [min(n.values()) if n else 0.0 for n in normed]
        out[qid] = _hits({d: sum(w * n.get(d, f) for w, n, f in zip(weights, normed, floor)) for d in docs}, depth)
    return out


def interpolate(runs: Sequence[Run], alpha: float = 0.5, norm: str = "minmax",
                depth: int | None = None) -> dict[str, list[Hit]]:
    """``alpha * sparse + (1 - alpha) * dense`` of normalised scores (see the module docstring).

    ``runs[0]`` is the sparse run; ``runs[1:]`` are dense runs, averaged. With
    exactly two runs this is the plain two-way interpolation. It is
    :func:`weighted_sum` with weights ``alpha`` and ``(1 - alpha) / len(runs[1:])``.
    """
    _check_runs(runs, 2)
    if not 0.0 <= alpha <= 1.0 or math.isnan(alpha):
        raise InputError(f"alpha must lie in [0, 1] (weight of the sparse run), got {alpha}")
    n_dense = len(runs) - 1
    return weighted_sum(runs, [alpha] + [(1.0 - alpha) / n_dense] * n_dense, norm=norm, depth=depth)


def _weights(weights: Sequence[float] | None, n_runs: int) -> list[float]:
    if weights is None:
        return [1.0] * n_runs
    out = [float(w) for w in weights]
    if len(out) != n_runs:
        raise InputError(f"{len(out)} weights for {n_runs} runs; give one weight per run")
    if any(not math.isfinite(w) or w < 0 for w in out) or not any(out):
        raise InputError(f"weights must be finite, non-negative and not all zero, got {out}")
    return out


def fusion_function(method: str, *, k: float = 60, alpha: float = 0.5, norm: str = "minmax",
                    depth: int | None = None,
                    weights: Sequence[float] | None = None) -> Callable[[Sequence[Run]], dict[str, list[Hit]]]:
    """A one-argument function ``runs -> fused run`` for ``method`` in ``rrf`` / ``interp`` / ``sum``
    (``weights``: one per run, for ``rrf`` and ``sum``)."""
    if norm not in NORMALIZATIONS:
        raise InputError(f"normalisation {norm!r} is not one of {', '.join(NORMALIZATIONS)}")
    if method == "rrf":
        if k < 0:
            raise InputError(f"RRF k must be non-negative, got {k}")
        return lambda runs: rrf(runs, k=k, weights=weights, depth=depth)
    if method == "sum":
        return lambda runs: weighted_sum(runs, weights=weights, norm=norm, depth=depth)
    if method == "interp":
        if not 0.0 <= alpha <= 1.0:
            raise InputError(f"alpha must lie in [0, 1] (weight of the sparse run), got {alpha}")
        return lambda runs: interpolate(runs, alpha=alpha, norm=norm, depth=depth)
    raise InputError(f"fusion {method!r} is not one of {', '.join(FUSIONS)}")


def describe(method: str, *, k: float = 60, alpha: float = 0.5, norm: str = "minmax",
             weights: Sequence[float] | None = None) -> str:
    """A short text naming a fusion and its settings, as the command line reports it."""
    w = f", weights {' '.join(f'{x:g}' for x in weights)}" if weights is not None else ""
    if method == "rrf":
        return f"RRF k={k:g}{w}"
    if method == "sum":
        return f"weighted sum ({norm}){w or ', equal weights'}"
    return f"interpolation alpha={alpha:g} ({norm}; alpha weighs the first run)"
