"""Sparsity regularizers and their weight schedule, as pure functions.

The regularizers take a batch of non-negative vectors ``x[b, v]`` and return
a scalar tensor; the schedule is a function of the step only, so nothing is
advanced inside a model's ``forward``.
"""

from __future__ import annotations

import torch

from .errors import InputError


def flops(x: torch.Tensor) -> torch.Tensor:
    """FLOPs regularizer: ``sum_v (mean_b |x[b, v]|)^2`` (Paria et al., 2020).

    It approximates the expected number of multiplications of a query-document
    match and pushes the *average* activation of every token down, so tokens
    that fire for many inputs are penalised most.
    """
    _check(x)
    if x.shape[0] == 0:
        return x.new_zeros(())
    return x.abs().mean(dim=0).pow(2).sum()


def l1(x: torch.Tensor) -> torch.Tensor:
    """L1 regularizer: ``mean_b sum_v |x[b, v]|``."""
    _check(x)
    if x.shape[0] == 0:
        return x.new_zeros(())
    return x.abs().sum(dim=1).mean()


def weight_at(step: int, max_weight: float, warmup_steps: int = 0) -> float:
    """Quadratic warm-up: ``max_weight * min(1, step / warmup_steps) ** 2``.

    SPLADE's schedule: the regularizer is weak while the model learns to
    retrieve and reaches ``max_weight`` after ``warmup_steps`` steps (at once
    when ``warmup_steps`` is 0).
    """
    if step < 0:
        raise InputError(f"step must be non-negative, got {step}")
    if max_weight < 0:
        raise InputError(f"a regularizer weight must be non-negative, got {max_weight}")
    if warmup_steps <= 0 or step >= warmup_steps:
        return float(max_weight)
    return float(max_weight) * (step / warmup_steps) ** 2


def nonzeros(x: torch.Tensor) -> float:
    """Average number of non-zero entries per row (for logging)."""
    _check(x)
    return float((x != 0).sum(dim=1).float().mean()) if x.shape[0] else 0.0


def _check(x: torch.Tensor) -> None:
    if x.dim() != 2:
        raise InputError(f"expected a [batch, vocab] tensor, got shape {tuple(x.shape)}")
