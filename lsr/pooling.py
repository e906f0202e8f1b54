"""Pure tensor functions shared by the sparse encoders (torch only, no model code)."""

from __future__ import annotations

import torch


def log_saturation(x: torch.Tensor) -> torch.Tensor:
    """``log(1 + relu(x))``: SPLADE's and STAIR's activation."""
    return torch.log1p(torch.relu(x))


def masked_max_pool(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Max over positions of ``logits[b, t, v]`` where ``mask[b, t]`` is true.

    Returns ``[b, v]``. A row with no valid position gives ``-inf`` everywhere,
    which :func:`log_saturation` maps to 0.
    """
    neg = torch.finfo(logits.dtype).min
    masked = logits.masked_fill(~mask.bool().unsqueeze(-1), neg)
    return masked.amax(dim=1)


def splade_pool(logits: torch.Tensor, mask: torch.Tensor, excluded: torch.Tensor | None = None) -> torch.Tensor:
    """SPLADE max pooling: ``log1p(relu(max_t logits))`` in float32, excluded columns zeroed.

    Because ``log1p(relu(.))`` is monotone, pooling first and saturating the
    ``[b, v]`` result equals the textbook ``max_t log1p(relu(logits))`` and
    touches ``t`` times less memory.
    """
    pooled = log_saturation(masked_max_pool(logits, mask).float())
    if excluded is not None and excluded.numel():
        pooled[:, excluded] = 0.0
    return pooled
