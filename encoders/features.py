"""Image tower features computed once and kept on disk, for training on a frozen tower.

With the image tower frozen (the LiT recipe; STAIR's first stage with the tower
fixed), every image always gets the same token features, so they are computed
once and read from a memory-mapped float16 file afterwards: training the token
head or a projection then costs no tower forward passes at all.

A cache is two files in ``cache_dir``, named by the tower's fingerprint (a hash
of its weights and preprocessing) and by the list of images (path, size and
modification time of each)::

    <tower>-<images>.npy     [images, positions, width] float16 token features
    <tower>-<images>.json    the image paths in row order

Any model object offering ``tower_fingerprint()``, ``pixels(images)`` and
``tower_tokens(pixels)`` can fill one (:class:`encoders.stair.StairEncoder`,
:class:`encoders.image_text.TowerEmbedder`).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from lsr.errors import InputError


def _images_key(images: Sequence[str]) -> str:
    h = hashlib.sha1()
    for p in images:
        try:
            st = os.stat(p)
        except OSError:
            raise InputError(f"image {p} does not exist") from None
        h.update(f"{os.path.abspath(p)}\0{st.st_size}\0{int(st.st_mtime)}\n".encode())
    return h.hexdigest()[:16]


class TowerFeatures:
    """Token features of a fixed list of images under one frozen tower."""

    def __init__(self, path: str | os.PathLike):
        path = Path(path)
        meta_path = path.with_suffix(".json")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            self.images: list[str] = list(meta["images"])
            self.fingerprint: str = meta["tower"]
        except (OSError, ValueError, KeyError) as e:
            raise InputError(f"{meta_path}: not a readable feature cache ({e}); delete it to recompute") from None
        self.path = path
        self.tokens = np.load(path, mmap_mode="r")
        if self.tokens.shape[0] != len(self.images):
            raise InputError(f"{path}: {self.tokens.shape[0]} rows for {len(self.images)} images; delete it to recompute")
        self.row = {p: i for i, p in enumerate(self.images)}

    def __len__(self) -> int:
        return len(self.images)

    def __contains__(self, image) -> bool:
        return isinstance(image, (str, os.PathLike)) and str(image) in self.row

    def covers(self, images: Sequence) -> bool:
        return all(im in self for im in images)

    def lookup(self, images: Sequence, device=None) -> torch.Tensor:
        """``[n, positions, width]`` float32 features of ``images`` (all must be cached)."""
        rows = [self.row[str(im)] for im in images]
        order = np.argsort(rows)  # memory-mapped reads in file order
        got = np.empty((len(rows),) + self.tokens.shape[1:], dtype=np.float16)
        got[order] = self.tokens[np.asarray(rows)[order]]
        return torch.from_numpy(got).to(device=device, dtype=torch.float32)

    @classmethod
    def compute(cls, model, images: Sequence[str], cache_dir: str | os.PathLike, batch_size: int = 32,
                progress: bool = True) -> "TowerFeatures":
        """Features of ``images`` under ``model``'s tower, read from ``cache_dir`` or computed and saved there."""
        images = [str(p) for p in images]
        if not images:
            raise InputError("no images to compute features for")
        if len(set(images)) != len(images):
            raise InputError("the image list names the same image twice")
        fp = model.tower_fingerprint()
        cache_dir = Path(cache_dir)
        cache_dir.mkdir(parents=True, exist_ok=True)
        path = cache_dir / f"{fp}-{_images_key(images)}.npy"
        if path.is_file() and path.with_suffix(".json").is_file():
            return cls(path)
        for other in sorted(cache_dir.glob(f"{fp}-*.json")):  # an earlier cache of more images may cover these
            try:
                listed = set(json.loads(other.read_text(encoding="utf-8"))["images"])
            except (OSError, ValueError, KeyError):
                continue
            if listed.issuperset(images) and other.with_suffix(".npy").is_file():
                _images_key(images)  # the images must still exist
                return cls(other.with_suffix(".npy"))
        from lsr.progress import tqdm

        tmp = path.with_suffix(".npy.tmp")
        out = None
        t0 = time.perf_counter()
        with tqdm(total=len(images), unit="image", desc="tower features", disable=not progress) as bar:
            with torch.inference_mode():
                for s in range(0, len(images), batch_size):
                    pixels = model.pixels(images[s:s + batch_size], model.device)
                    tok = model.tower_tokens(pixels).float().cpu().numpy().astype(np.float16)
                    if out is None:
                        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16,
                                                        shape=(len(images),) + tok.shape[1:])
                    out[s:s + len(tok)] = tok
                    bar.update(len(tok))
        out.flush()
        del out
        os.replace(tmp, path)
        path.with_suffix(".json").write_text(json.dumps({"tower": fp, "images": images,
                                                         "seconds": round(time.perf_counter() - t0, 1)}),
                                             encoding="utf-8")
        print(f"tower features of {len(images)} images cached in {path} ({time.perf_counter() - t0:.0f} s)",
              file=sys.stderr)
        return cls(path)


__all__ = ["TowerFeatures"]
