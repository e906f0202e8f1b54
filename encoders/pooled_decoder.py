"""The masked LM's output projection replaced, during inference, by a running max over positions."""

from __future__ import annotations

import math

import torch

from lsr.errors import InputError
from lsr.pooling import block_positions, fill_padding, running_max


class PooledDecoder(torch.nn.Module):
    """Stands in for a masked LM's output projection during inference.

    Instead of materialising ``[batch, positions, vocab]`` logits and then
    taking the max over positions, it projects a block of positions at a time
    and keeps a running max, returning ``[batch, 1, vocab]``. Padding
    positions are replaced by the first valid position of their row before the
    projection, so no masking pass over the logits is needed and the max is
    unchanged. On the CPU the logits block is written into one reused buffer
    (fresh allocations of this size cost page faults). The result equals the
    masked max of the full logits.

    With ``bounded=True`` (see :meth:`installed`), one unpadded row on the
    CPU takes :meth:`bounded_max` instead: the same values wherever the max
    is positive, which is all that ``log1p(relu(.))`` keeps.
    """

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = [model]  # a list, so the model is not registered as a submodule
        self.decoder = model.get_output_embeddings()
        self.parent, self.attr = _parent_of(model, self.decoder)
        self.mask: torch.Tensor | None = None
        self.bounded = False
        self._buffer: torch.Tensor | None = None
        self._low: tuple[tuple, torch.Tensor, torch.Tensor] | None = None  # (weight's identity, bf16 copy, row norms)

    @property
    def budget(self) -> int:
        """Logits elements per block."""
        return (1 << 28) if self.decoder.weight.device.type == "cuda" else (1 << 26)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        b, t, h = hidden.shape
        weight = self.decoder.weight
        vocab = weight.shape[0]
        valid = self.mask.bool() if self.mask is not None else None  # None: no padding
        # a plain linear layer in inference on the CPU: projected here (into the buffer, or bounded) by hand
        cpu_linear = isinstance(self.decoder, torch.nn.Linear) and not hidden.is_cuda and not torch.is_grad_enabled()
        if cpu_linear and self.bounded and valid is None and b == 1 and weight.dtype == torch.float32:
            out = self.bounded_max(hidden[0])
            if out is not None:
                return out.view(1, 1, vocab)
        if valid is not None:
            hidden = fill_padding(hidden, valid)
        block = min(t, block_positions(self.budget, b, vocab))
        if cpu_linear:
            def project(part):
                c = part.shape[1]
                return self._cpu_linear(part.reshape(b * c, h), weight, self.decoder.bias).view(b, c, vocab)
        else:
            project = self.decoder
        out, _ = running_max(hidden, project, block)
        if valid is not None:
            empty = ~valid.any(dim=1)
            out = out.masked_fill(empty[:, None], torch.finfo(out.dtype).min)
        return out.unsqueeze(1)

    def _cpu_linear(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        n = x.shape[0] * weight.shape[0]
        buf = self._buffer
        if buf is None or buf.numel() < n or buf.dtype != x.dtype:
            buf = self._buffer = torch.empty(n, dtype=x.dtype)
        out = buf[:n].view(x.shape[0], weight.shape[0])
        if bias is None:
            return torch.mm(x, weight.t(), out=out)
        return torch.addmm(bias, x, weight.t(), out=out)

    def bounded_max(self, hidden: torch.Tensor) -> torch.Tensor | None:
        """``max_t (hidden[t] @ W.T + b)`` over ``hidden [t, h]`` wherever it is positive; elsewhere the lowest
        float (the true max is then at most 0, and ``log1p(relu(.))`` maps both to 0). ``None`` if ``hidden`` is
        not finite.

        The whole vocabulary is first projected in bfloat16: half the memory
        read of float32, and bfloat16 products run in hardware on recent CPUs.
        Rounding the two operands and the result to bfloat16 (8 significant
        bits) moves a logit by at most ``3 * 2**-8 * sum_d |h_d W_jd|``, which
        is at most ``3 * 2**-8 * |h| |W_j|``; the bound used, ``BOUND_SLACK *
        max_t |h_t| * |W_j|`` with ``BOUND_SLACK = 2**-5``, leaves room for
        rounding by truncation as well. Word pieces whose approximate max plus
        that bound is not positive cannot be active; the others (about 100 of
        30,522 for a SPLADE-tiny query) are projected again in float32, by the
        same product as the full projection.
        """
        weight, bias = self.decoder.weight, self.decoder.bias
        scale = float(hidden.norm(dim=1).max()) if hidden.shape[0] else 0.0
        if not math.isfinite(scale):
            return None
        low, norms = self._low_precision(weight)
        upper = torch.mm(hidden.to(torch.bfloat16), low.t()).amax(dim=0).float()
        upper.add_(norms, alpha=BOUND_SLACK * scale + 1e-30)
        if bias is not None:
            upper.add_(bias)
        candidates = torch.nonzero(upper > 0).view(-1)
        out = torch.full((weight.shape[0],), torch.finfo(weight.dtype).min, dtype=weight.dtype)
        if candidates.numel():
            rows = weight.index_select(0, candidates)
            exact = torch.mm(hidden, rows.t()) if bias is None else torch.addmm(bias[candidates], hidden, rows.t())
            out[candidates] = exact.amax(dim=0)
        return out

    def _low_precision(self, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The bfloat16 copy of ``weight`` and its rows' norms, made again whenever the weight changes (training
        updates it in place, which bumps its version)."""
        key = (weight.data_ptr(), weight._version, tuple(weight.shape))
        if self._low is None or self._low[0] != key:
            self._low = (key, weight.detach().to(torch.bfloat16).contiguous(), weight.detach().norm(dim=1))
        return self._low[1], self._low[2]

    def release(self) -> None:
        """Free the CPU logits buffer and the bfloat16 copy of the projection."""
        self._buffer = None
        self._low = None

    class _Installed:
        def __init__(self, owner, mask, bounded):
            self.owner, self.mask, self.bounded = owner, mask, bounded

        def __enter__(self):
            self.owner.mask = self.mask
            self.owner.bounded = self.bounded
            setattr(self.owner.parent, self.owner.attr, self.owner)

        def __exit__(self, *exc):
            setattr(self.owner.parent, self.owner.attr, self.owner.decoder)
            self.owner.mask = None
            self.owner.bounded = False
            return False

    def installed(self, mask: torch.Tensor | None, bounded: bool = False):
        """Stand in for the model's output projection inside the block; ``mask``: the padding mask (``None``:
        no padding); ``bounded``: one row's positive maxima through :meth:`bounded_max`."""
        return self._Installed(self, mask, bounded)


#: See :meth:`PooledDecoder.bounded_max`.
BOUND_SLACK = 2.0 ** -5


def fast_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware (AVX-512 BF16 or AMX), where the bounded
    projection pays off."""
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    try:
        return any(bool(check()) for check in checks if check is not None)
    except Exception:  # noqa: BLE001 - a torch without these probes
        return False


def _parent_of(model: torch.nn.Module, child: torch.nn.Module) -> tuple[torch.nn.Module, str]:
    for module in model.modules():
        for name, sub in module.named_children():
            if sub is child:
                return module, name
    raise InputError(f"{type(model).__name__}: cannot locate its output projection for SPLADE pooling")
