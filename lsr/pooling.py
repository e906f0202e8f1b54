"""Pure tensor functions shared by the sparse encoders (torch only, no model code).

One pooling kernel serves SPLADE's inference decoder and STAIR's image and
text heads: a running max over positions of a projection, a block of
positions at a time (:func:`running_max`, with autograd in
:func:`max_projection`), then :func:`saturate` (``log(1 + relu(.))`` with the
special tokens zeroed).
"""

from __future__ import annotations

from typing import Callable

import torch


def log_saturation(x: torch.Tensor) -> torch.Tensor:
    """``log(1 + relu(x))``: SPLADE's and STAIR's activation."""
    return torch.log1p(torch.relu(x))


def saturate(pooled: torch.Tensor, excluded: torch.Tensor | None = None) -> torch.Tensor:
    """Float32 weights ``log(1 + relu(pooled))`` with the ``excluded`` vocabulary columns (special tokens) zeroed.

    ``pooled`` is ``[..., vocab]``; with autograd the zeroing is out of place.
    """
    weights = log_saturation(pooled.float())
    if excluded is not None and excluded.numel():
        if weights.requires_grad:
            weights = weights.index_fill(-1, excluded, 0.0)
        else:
            weights.index_fill_(-1, excluded, 0.0)
    return weights


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
    return saturate(masked_max_pool(logits, mask), excluded)


def fill_padding(hidden: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``hidden [b, t, h]`` with each padding position replaced by its row's first valid position.

    A max over positions of any per-position function is then unchanged, so
    no masking pass over the (much larger) logits is needed.
    """
    first = valid.to(torch.float32).argmax(dim=1)  # first valid position
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    return torch.where(valid[..., None], hidden, hidden[rows, first][:, None])


def block_positions(budget: int, batch: int, vocab: int) -> int:
    """Positions per block so that a block's ``[batch, positions, vocab]`` logits hold at most ``budget`` elements."""
    return max(1, budget // max(1, batch * vocab))


def running_max(hidden: torch.Tensor, project: Callable[[torch.Tensor], torch.Tensor], block: int,
                with_argmax: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(max_t project(hidden)[:, t], argmax_t)`` over ``hidden [b, t, h]``, ``block`` positions at a time.

    ``project`` maps ``[b, c, h]`` to ``[b, c, v]``; the ``[b, t, v]`` result
    is never held whole. The argmax (``None`` unless ``with_argmax``) is what
    the backward pass of :func:`max_projection` needs.
    """
    best = arg = None
    for s in range(0, hidden.shape[1], block):
        logits = project(hidden[:, s:s + block])
        if with_argmax:
            m, i = logits.max(dim=1)
            if best is None:
                best, arg = m, i + s
            else:
                better = m > best
                best = torch.where(better, m, best)
                arg = torch.where(better, i + s, arg)
        else:
            m = logits.amax(dim=1)
            best = m if best is None else torch.maximum(best, m, out=best)
    return best, arg


def max_projection(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                   budget: int | None = None) -> torch.Tensor:
    """``max_t (hidden[:, t] @ weight.T + bias)`` as ``[batch, vocab]``, with autograd.

    Equal to ``F.linear(hidden, weight, bias).amax(dim=1)`` but computed a few
    positions at a time, so the ``[batch, positions, vocab]`` logits are never
    held in memory, in the forward pass or the backward pass (which sends each
    gradient to the position that won the max). ``budget`` caps the logits
    elements per chunk. Under autocast the products run in the autocast dtype.
    """
    if budget is None:
        budget = (1 << 27) if hidden.device.type == "cuda" else (1 << 23)
    chunk = block_positions(budget, hidden.shape[0], weight.shape[0])
    if not torch.is_grad_enabled() or not (hidden.requires_grad or weight.requires_grad
                                           or (bias is not None and bias.requires_grad)):
        h, w, bb = _autocast_operands(hidden, weight, bias)
        return _linear_max(h, w, bb, chunk, with_argmax=False)[0]
    return _MaxProjection.apply(hidden, weight, bias, chunk)


def _autocast_operands(hidden, weight, bias):
    dev = hidden.device.type
    dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else hidden.dtype
    return hidden.to(dtype), weight.to(dtype), (bias.to(dtype) if bias is not None else None)


def _linear_max(h, w, bias, chunk: int, with_argmax: bool):
    with torch.autocast(h.device.type, enabled=False):
        return running_max(h, lambda part: torch.nn.functional.linear(part, w, bias), chunk, with_argmax)


class _MaxProjection(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, chunk):
        h, w, bb = _autocast_operands(hidden, weight, bias)
        best, arg = _linear_max(h, w, bb, chunk, with_argmax=True)
        ctx.save_for_backward(h, w, arg)
        ctx.chunk = chunk
        ctx.dtypes = (hidden.dtype, weight.dtype, bias.dtype if bias is not None else None)
        return best

    @staticmethod
    def backward(ctx, grad):
        h, w, arg = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        acc = torch.float32 if w.dtype in (torch.float16, torch.bfloat16) else w.dtype
        grad_w = torch.zeros(w.shape, dtype=acc, device=w.device) if need_w else None
        grad_h = torch.zeros_like(h) if need_h else None
        # Only vocabulary columns with a non-zero gradient matter; after log1p(relu(.)) and
        # FLOPs regularization they are often a small part of the vocabulary.
        cols = torch.nonzero(grad.ne(0).any(dim=0)).squeeze(1)
        if len(cols) < 0.75 * w.shape[0]:
            g, a, ws = grad[:, cols].to(h.dtype), arg[:, cols], w[cols]
        else:
            cols, g, a, ws = None, grad.to(h.dtype), arg, w
        chunk = max(1, ctx.chunk * w.shape[0] // max(1, ws.shape[0]))
        with torch.autocast(h.device.type, enabled=False):
            for s in range(0, h.shape[1] if g.shape[1] else 0, chunk):
                e = min(h.shape[1], s + chunk)
                pos = torch.arange(s, e, device=h.device).view(1, -1, 1)
                g_chunk = g.unsqueeze(1) * (a.unsqueeze(1) == pos)  # [batch, chunk, active vocab]
                if need_h:
                    grad_h[:, s:e] = g_chunk @ ws
                if need_w:
                    part = (g_chunk.flatten(0, 1).T @ h[:, s:e].flatten(0, 1)).to(acc)
                    if cols is None:
                        grad_w += part
                    else:
                        grad_w.index_add_(0, cols, part)
        dh, dw, db = ctx.dtypes
        return (grad_h.to(dh) if need_h else None, grad_w.to(dw) if need_w else None,
                grad.sum(0).to(db) if need_b and db is not None else None, None)
