"""A dense image–text embedder built from two frozen towers and two learned projections (the LiT recipe).

Images go through a frozen image tower (e.g. the offline ImageNet
EfficientNet-Lite0, :mod:`encoders.towers`) and its pooled features through a
learned projection; texts through a frozen sentence embedder (e.g. ``minilm``)
and a learned projection. Both land in one ``dim``-sized space, L2-normalised,
so a dot product is a cosine. An image+text input is
``normalize(image_weight * img + (1 - image_weight) * txt)`` (UniIR's score
fusion, as :class:`encoders.dense.ClipEmbedder` does it).

Only the projections train (:meth:`TowerEmbedder.fit`, in-batch contrastive
loss with a learned temperature), on tower features cached once
(:class:`encoders.features.TowerFeatures`) and text embeddings computed once,
so training on 30,000 captions takes seconds after the features exist.

A saved model is a directory::

    DIR/lsr-towers.json     kind marker and configuration (towers, dim, fusion weight)
    DIR/model.safetensors   the projections and the temperature

It is a dense model wherever one is accepted: ``lsr embed --model DIR``,
``lsr search --rerank STORE``, ``lsr eval-mbeir --model DIR``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from lsr.errors import InputError
from lsr.inputs import as_inputs, load_image

from .splade import pick_device
from .towers import build_timm_tower, tower_fingerprint

MARKER = "lsr-towers.json"
FORMAT = "lsr-towers/1"
WEIGHTS_FILE = "model.safetensors"


def is_tower_embedder_dir(path: str | os.PathLike) -> bool:
    return (Path(os.path.expanduser(str(path))) / MARKER).is_file()


class _Projections(nn.Module):
    def __init__(self, image_width: int, text_width: int, dim: int, hidden: int = 0):
        super().__init__()
        if hidden:
            self.image = nn.Sequential(nn.Linear(image_width, hidden), nn.GELU(), nn.Linear(hidden, dim))
        else:
            self.image = nn.Linear(image_width, dim)
        self.text = nn.Linear(text_width, dim)
        self.logit_scale = nn.Parameter(torch.tensor(float(np.log(1 / 0.07))))


class TowerEmbedder:
    """Dense embeddings of texts, images and image+text inputs from a frozen image tower and a frozen
    sentence embedder, joined by learned projections.

    ``TowerEmbedder(path)`` loads a saved directory; ``TowerEmbedder(image_tower=..., text_model=...,
    dim=...)`` builds a new one with random projections (train it with :meth:`fit`).
    """

    kind = "towers"
    normalized = True

    def __init__(
        self,
        model: str | os.PathLike | None = None,
        *,
        image_tower: str = "efficientnet-lite0",
        pretrained: str | None = None,
        text_model: str = "minilm",
        dim: int = 256,
        image_hidden: int = 0,
        image_weight: float = 0.5,
        device: str | None = None,
        batch_size: int = 32,
        progress: bool = False,
        name: str | None = None,
    ):
        from .dense import SentenceEmbedder

        if not 0.0 <= image_weight <= 1.0:
            raise InputError(f"image_weight must lie in [0, 1], got {image_weight}")
        if batch_size < 1:
            raise InputError(f"batch_size must be positive, got {batch_size}")
        self.device = pick_device(device)
        self.batch_size = batch_size
        self.progress = progress
        self.features = None
        if model is not None:
            path = Path(os.path.expanduser(str(model)))
            if not (path / MARKER).is_file():
                raise InputError(f"{path}: not a tower embedder directory (it has no {MARKER})")
            try:
                config = json.loads((path / MARKER).read_text(encoding="utf-8"))
                if config.get("format") != FORMAT:
                    raise ValueError(f"unknown format {config.get('format')!r}")
            except (OSError, ValueError) as e:
                raise InputError(f"{path / MARKER}: not a readable configuration ({e})") from None
            self.source = str(path.resolve())
            self.name = name or str(model)
        else:
            if dim < 1:
                raise InputError(f"dim must be positive, got {dim}")
            config = {"format": FORMAT, "image_tower": image_tower, "pretrained": pretrained,
                      "text_model": text_model, "dim": int(dim), "image_hidden": int(image_hidden),
                      "image_weight": float(image_weight)}
            self.source = None
            self.name = name or f"towers:{image_tower}+{text_model}"
        self.config = config
        self.image_weight = float(config["image_weight"]) if model is not None else float(image_weight)
        self.tower = build_timm_tower(config["image_tower"], config.get("pretrained")).to(self.device).eval()
        self.text = SentenceEmbedder(config["text_model"], device=str(self.device), batch_size=batch_size,
                                     progress=progress)
        self.dim = int(config["dim"])
        self.proj = _Projections(self.tower.width, self.text.dim, self.dim, int(config.get("image_hidden", 0)))
        if model is not None:
            self._load_weights(Path(self.source))
        self.proj.to(self.device).eval()
        import open_clip

        pp = self.tower.preprocess_config()
        self.preprocess = open_clip.image_transform(tuple(pp["size"]), is_train=False, mean=tuple(pp["mean"]),
                                                    std=tuple(pp["std"]), resize_mode=pp["resize_mode"],
                                                    interpolation=pp["interpolation"])

    # ------------------------------------------------------------ towers
    def pixels(self, images: Sequence[Any], device=None) -> torch.Tensor:
        return torch.stack([self.preprocess(load_image(im)) for im in images]).to(device or self.device)

    def tower_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.tower.tokens(pixels)

    def tower_fingerprint(self) -> str:
        return tower_fingerprint(self.tower, self.tower.preprocess_config())

    def compute_features(self, images: Sequence[str], cache_dir: str | os.PathLike, progress: bool = True):
        from .features import TowerFeatures

        return TowerFeatures.compute(self, images, cache_dir, batch_size=self.batch_size, progress=progress)

    def use_features(self, features) -> None:
        """Read pooled tower features of cached images from ``features`` instead of running the tower."""
        if features is not None and features.fingerprint != self.tower_fingerprint():
            raise InputError(f"{features.path}: these features come from another image tower; recompute them")
        self.features = features

    def _pooled_images(self, images: Sequence[Any]) -> torch.Tensor:
        out = []
        for s in range(0, len(images), self.batch_size):
            part = images[s:s + self.batch_size]
            if self.features is not None and self.features.covers(part):
                tokens = self.features.lookup(part, self.device)
            else:
                tokens = self.tower.tokens(self.pixels(part))
            out.append(self.tower.pool(tokens))
        return torch.cat(out)

    # -------------------------------------------------------------- API
    def settings(self) -> dict:
        return {"image_weight": self.image_weight, "image_tower": self.config["image_tower"],
                "text_model": self.config["text_model"]}

    def encode_queries(self, inputs: Sequence[Any]) -> np.ndarray:
        return self._encode(inputs)

    def encode_documents(self, inputs: Sequence[Any]) -> np.ndarray:
        return self._encode(inputs)

    @torch.inference_mode()
    def _encode(self, inputs: Sequence[Any]) -> np.ndarray:
        items = as_inputs(inputs)
        out = torch.zeros((len(items), self.dim), dtype=torch.float32, device=self.device)
        text_rows = [i for i, x in enumerate(items) if x.text_with_instruction()]
        image_rows = [i for i, x in enumerate(items) if x.image is not None]
        if text_rows:
            emb = self.text.encode_documents([items[i].text_with_instruction() for i in text_rows])
            out[text_rows] = self._text_vectors(torch.from_numpy(emb).to(self.device))
        if image_rows:
            img = self._image_vectors(self._pooled_images([items[i].image for i in image_rows]))
            with_text = set(text_rows)
            w = self.image_weight
            for j, r in enumerate(image_rows):
                out[r] = w * img[j] + (1.0 - w) * out[r] if r in with_text else img[j]
        return torch.nn.functional.normalize(out, dim=-1).cpu().numpy().astype(np.float32, copy=False)

    def _text_vectors(self, emb: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(self.proj.text(emb.float()), dim=-1)

    def _image_vectors(self, pooled: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(self.proj.image(pooled.float()), dim=-1)

    # ---------------------------------------------------------- training
    def fit(self, texts: Sequence[str], images: Sequence[str], steps: int = 2000, batch_size: int = 256,
            learning_rate: float = 1e-3, weight_decay: float = 1e-4, seed: int = 0,
            cache_dir: str | os.PathLike | None = None) -> dict:
        """Train the projections on (caption, image) pairs with a symmetric in-batch contrastive loss.

        ``texts[i]`` describes ``images[i]`` (an image may appear with several
        captions; they are not negatives of each other). Tower features are
        computed once (cached in ``cache_dir``), text embeddings once per
        call. Returns the last step's loss parts.
        """
        from lsr.losses import in_batch_contrastive
        from lsr.progress import tqdm

        if len(texts) != len(images) or not texts:
            raise InputError(f"{len(texts)} texts for {len(images)} images; give one image per text")
        unique = sorted(set(map(str, images)))
        cache_dir = cache_dir or os.path.join(os.path.expanduser("~"), ".cache", "lsr", "features")
        feats = self.compute_features(unique, cache_dir, progress=self.progress)
        with torch.inference_mode():
            pooled = torch.cat([self.tower.pool(feats.lookup(unique[s:s + 512], self.device))
                                for s in range(0, len(unique), 512)])
            text_emb = torch.from_numpy(self.text.encode_documents(list(texts))).to(self.device)
        pooled, text_emb = pooled.clone(), text_emb.clone()
        row = {p: i for i, p in enumerate(unique)}
        image_of = torch.tensor([row[str(p)] for p in images], device=self.device)
        gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        opt = torch.optim.AdamW(self.proj.parameters(), lr=learning_rate, weight_decay=weight_decay)
        self.proj.train()
        last: dict = {}
        n = len(texts)
        b = min(batch_size, n)
        with tqdm(total=steps, desc="train projections", unit="step", disable=not self.progress) as bar:
            order = torch.randperm(n, generator=gen)
            pos = 0
            for step in range(steps):
                if pos + b > n:
                    order, pos = torch.randperm(n, generator=gen), 0
                idx = order[pos:pos + b].to(self.device)
                pos += b
                imgs = image_of[idx]
                q = self._text_vectors(text_emb[idx])
                d = self._image_vectors(pooled[imgs])
                scale = self.proj.logit_scale.clamp(max=np.log(100.0)).exp()
                same = imgs[:, None] == imgs[None, :]
                parts = in_batch_contrastive(q * scale, d, 1.0, same)
                opt.zero_grad(set_to_none=True)
                parts["contrastive"].backward()
                lr = learning_rate * min(1.0, (step + 1) / max(1, steps // 20)) * max(0.0, 1 - step / steps)
                for g in opt.param_groups:
                    g["lr"] = lr
                opt.step()
                bar.update(1)
                if (step + 1) % 50 == 0 or step + 1 == steps:
                    last = {"step": step + 1, "loss": float(parts["contrastive"].detach()),
                            "temperature": float(1 / scale.detach())}
                    bar.set_postfix(loss=f"{last['loss']:.3f}")
        self.proj.eval()
        return last

    # ------------------------------------------------------------ saving
    def save(self, path: str | os.PathLike) -> Path:
        from safetensors.torch import save_model

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tmp = path / (WEIGHTS_FILE + ".tmp")
        save_model(self.proj, str(tmp))
        os.replace(tmp, path / WEIGHTS_FILE)
        config = dict(self.config, image_weight=self.image_weight)
        (path / MARKER).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        return path

    def _load_weights(self, path: Path) -> None:
        from safetensors.torch import load_model

        weights = path / WEIGHTS_FILE
        if not weights.is_file():
            raise InputError(f"{weights}: file not found; the directory is incomplete")
        try:
            load_model(self.proj, str(weights), strict=True)
        except Exception as e:  # noqa: BLE001 - safetensors header / shape errors
            raise InputError(f"{weights}: cannot load the projections ({str(e).splitlines()[0][:200]})") from None

    def __repr__(self) -> str:
        return f"TowerEmbedder({self.name!r}, dim={self.dim}, device={self.device})"


__all__ = ["MARKER", "TowerEmbedder", "is_tower_embedder_dir"]
