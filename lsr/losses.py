"""Training losses that return their named parts, so that each part is logged."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import InputError
from .regularizers import flops


def in_batch_contrastive(
    queries: torch.Tensor, documents: torch.Tensor, temperature: float = 1.0,
    also_positive: torch.Tensor | None = None, negatives: torch.Tensor | None = None,
    negative_is_positive: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Symmetric in-batch-negative contrastive loss over dot products.

    Row ``i`` of ``queries`` matches row ``i`` of ``documents``; every other
    row of the batch is a negative. With ``s = q @ d.T / temperature``::

        q2d = mean_i CE(s[i, :], i)        d2q = mean_i CE(s[:, i], i)
        contrastive = (q2d + d2q) / 2

    ``also_positive[i, j]`` (bool, ``[b, b]``) marks off-diagonal pairs that
    are matches too (the same query or document twice in a batch); they are
    left out of the negatives instead of being pushed apart.

    ``negatives`` (``[m, vocab]``) are extra documents, e.g. hard negatives
    mined from an index: every query is scored against them too in ``q2d``
    (``d2q`` stays over the batch's documents). ``negative_is_positive[i, j]``
    (bool, ``[b, m]``) leaves out negative ``j`` for query ``i`` when it is in
    fact one of that query's matches.

    Returns ``{"contrastive", "q2d", "d2q"}``.
    """
    if queries.dim() != 2 or queries.shape != documents.shape:
        raise InputError(f"queries {tuple(queries.shape)} and documents {tuple(documents.shape)} must be "
                         "[batch, vocab] tensors of the same shape")
    if temperature <= 0:
        raise InputError(f"temperature must be positive, got {temperature}")
    b = queries.shape[0]
    scores = queries.float() @ documents.float().T / temperature
    if also_positive is not None:
        if also_positive.shape != (b, b):
            raise InputError(f"also_positive must be [{b}, {b}], got {tuple(also_positive.shape)}")
        ignore = also_positive.to(scores.device).bool() & ~torch.eye(b, dtype=torch.bool, device=scores.device)
        scores = scores.masked_fill(ignore, float("-inf"))
    target = torch.arange(b, device=scores.device)
    d2q = F.cross_entropy(scores.T, target)
    if negatives is not None:
        if negatives.dim() != 2 or negatives.shape[1] != queries.shape[1]:
            raise InputError(f"negatives {tuple(negatives.shape)} must be [m, {queries.shape[1]}]")
        extra = queries.float() @ negatives.float().T / temperature
        if negative_is_positive is not None:
            if negative_is_positive.shape != extra.shape:
                raise InputError(f"negative_is_positive must be {list(extra.shape)}, "
                                 f"got {list(negative_is_positive.shape)}")
            extra = extra.masked_fill(negative_is_positive.to(extra.device).bool(), float("-inf"))
        scores = torch.cat([scores, extra], dim=1)
    q2d = F.cross_entropy(scores, target)
    return {"contrastive": (q2d + d2q) / 2, "q2d": q2d, "d2q": d2q}


def contrastive_with_flops(
    queries: torch.Tensor, documents: torch.Tensor, lambda_q: float = 0.0, lambda_d: float = 0.0,
    temperature: float = 1.0, also_positive: torch.Tensor | None = None, negatives: torch.Tensor | None = None,
    negative_is_positive: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """In-batch contrastive loss plus FLOPs regularization with separate query and document weights.

    ``loss = contrastive + lambda_q * flops(queries) + lambda_d * flops(documents)``.
    Pass the weights of the current step (see :func:`lsr.regularizers.weight_at`). ``negatives`` are extra
    documents for the contrastive part (see :func:`in_batch_contrastive`); the FLOPs term covers ``documents``.
    Returns ``{"loss", "contrastive", "q2d", "d2q", "flops_q", "flops_d"}``; the
    ``flops_*`` parts are the unweighted regularizer values.
    """
    parts = in_batch_contrastive(queries, documents, temperature, also_positive, negatives, negative_is_positive)
    fq, fd = flops(queries.float()), flops(documents.float())
    parts["flops_q"], parts["flops_d"] = fq, fd
    parts["loss"] = parts["contrastive"] + lambda_q * fq + lambda_d * fd
    return parts
