"""The masked LM's output projection replaced, during inference, by a running max over positions."""

from __future__ import annotations

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
    """

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = [model]  # a list, so the model is not registered as a submodule
        self.decoder = model.get_output_embeddings()
        self.parent, self.attr = _parent_of(model, self.decoder)
        self.mask: torch.Tensor | None = None
        self._buffer: torch.Tensor | None = None

    @property
    def budget(self) -> int:
        """Logits elements per block."""
        return (1 << 28) if self.decoder.weight.device.type == "cuda" else (1 << 26)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        b, t, h = hidden.shape
        weight = self.decoder.weight
        vocab = weight.shape[0]
        valid = self.mask.bool() if self.mask is not None else None  # None: no padding
        if valid is not None:
            hidden = fill_padding(hidden, valid)
        block = min(t, block_positions(self.budget, b, vocab))
        if isinstance(self.decoder, torch.nn.Linear) and not hidden.is_cuda and not torch.is_grad_enabled():
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

    def release(self) -> None:
        """Free the CPU logits buffer."""
        self._buffer = None

    class _Installed:
        def __init__(self, owner, mask):
            self.owner, self.mask = owner, mask

        def __enter__(self):
            self.owner.mask = self.mask
            setattr(self.owner.parent, self.owner.attr, self.owner)

        def __exit__(self, *exc):
            setattr(self.owner.parent, self.owner.attr, self.owner.decoder)
            self.owner.mask = None
            return False

    def installed(self, mask: torch.Tensor):
        return self._Installed(self, mask)


def _parent_of(model: torch.nn.Module, child: torch.nn.Module) -> tuple[torch.nn.Module, str]:
    for module in model.modules():
        for name, sub in module.named_children():
            if sub is child:
                return module, name
    raise InputError(f"{type(model).__name__}: cannot locate its output projection for SPLADE pooling")
