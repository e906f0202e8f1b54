"""Images to model-ready pixels for an image tower, in two halves so that the host work overlaps the model's.

:meth:`Pixels.prepare` is the CPU half: ``[3, H, W]`` tensors already at the
model's image size (uint8, or float in [0, 1]) are only stacked; anything else
is loaded with :func:`lsr.inputs.load_image` (errors name the file) and goes
through open_clip's resize, crop and normalisation, several images at a time
in threads. :meth:`Pixels.to_device` is the device half: one copy, then the
stacked tensors are scaled and normalised there.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from lsr.errors import InputError
from lsr.inputs import load_image

from .open_clip_models import open_clip_module


@dataclass
class PreparedImages:
    """The CPU half's result: rows ``fast`` as raw tensors, rows ``slow`` decoded and transformed."""

    n: int
    fast: list[int]
    raw: torch.Tensor | None
    slow: list[int]
    decoded: torch.Tensor | None


class Pixels:
    """The preprocessing an image tower records (``size``, ``mean``, ``std``, resize mode, interpolation, fill)."""

    def __init__(self, config: dict):
        open_clip = open_clip_module()
        size = config.get("size", 224)
        self.image_size = tuple(size) if isinstance(size, (list, tuple)) else (int(size), int(size))
        self.transform = open_clip.image_transform(
            self.image_size, is_train=False, mean=tuple(config.get("mean") or ()) or None,
            std=tuple(config.get("std") or ()) or None, resize_mode=config.get("resize_mode"),
            interpolation=config.get("interpolation"), fill_color=config.get("fill_color", 0))
        mean = config.get("mean") or open_clip.OPENAI_DATASET_MEAN
        std = config.get("std") or open_clip.OPENAI_DATASET_STD
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    def __call__(self, images: Sequence[Any], device: str | torch.device | None = None) -> torch.Tensor:
        """Model-ready ``[n, 3, H, W]`` float32 pixels on ``device`` (default CPU) for paths, PIL images or tensors."""
        device = torch.device(device) if device is not None else torch.device("cpu")
        return self.to_device(self.prepare(images, pin=device.type == "cuda"), device)

    def prepare(self, images: Sequence[Any], pin: bool = False) -> PreparedImages:
        """Stacked raw tensors and decoded, transformed images (in pinned memory with ``pin``)."""
        n = len(images)
        fast = [i for i, im in enumerate(images) if isinstance(im, torch.Tensor) and im.dim() == 3
                and im.shape[0] == 3 and tuple(im.shape[1:]) == self.image_size]
        raw = None
        if fast:
            raw = torch.stack([images[i].detach().cpu() for i in fast])
            if raw.dtype != torch.uint8:
                raw = raw.float()
                if not bool(torch.isfinite(raw).all()) or raw.min() < 0 or raw.max() > 1:
                    raise InputError("an image tensor must hold uint8 values or floats in [0, 1]")
            if pin:
                raw = raw.pin_memory()
        fast_set = set(fast)
        slow = [i for i in range(n) if i not in fast_set]
        decoded = None
        if slow:
            load = lambda im: self.transform(load_image(im))  # noqa: E731
            if len(slow) >= 8:
                decoded = torch.stack(list(_decode_pool().map(load, [images[i] for i in slow])))
            else:
                decoded = torch.stack([load(images[i]) for i in slow])
            if pin:
                decoded = decoded.pin_memory()
        return PreparedImages(n, fast, raw, slow, decoded)

    def to_device(self, prepared: PreparedImages, device: torch.device) -> torch.Tensor:
        """Copy, scale and normalise prepared images on ``device``."""
        parts = []
        if prepared.raw is not None:
            x = prepared.raw.to(device, non_blocking=True)
            x = x.float() / 255.0 if x.dtype == torch.uint8 else x
            parts.append((prepared.fast, (x - self.mean.to(device)) / self.std.to(device)))
        if prepared.decoded is not None:
            parts.append((prepared.slow, prepared.decoded.to(device, non_blocking=True)))
        if len(parts) == 1:
            return parts[0][1]
        out = torch.empty(prepared.n, 3, *self.image_size, device=device)
        for idx, x in parts:
            out[torch.tensor(idx, device=device)] = x
        return out


_DECODE_POOL: ThreadPoolExecutor | None = None


def _decode_pool() -> ThreadPoolExecutor:
    """Threads that decode and resize images (PIL releases the GIL while it works)."""
    global _DECODE_POOL
    if _DECODE_POOL is None:
        _DECODE_POOL = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1), thread_name_prefix="lsr-image")
    return _DECODE_POOL
