"""Dense image–text embedders built on two frozen towers: one base, three ways to fuse an image and a text.

Every model here reads images through a frozen image tower (e.g. the offline
ImageNet EfficientNet-Lite0, :mod:`encoders.towers`) and texts through a frozen
sentence embedder (e.g. ``minilm``); only a small part trains. They differ in
how an image+text input becomes one vector:

* ``score`` -- :class:`TowerEmbedder` (this module; UniIR's score fusion, the
  LiT recipe): pooled tower features and the sentence embedding each pass a
  learned projection; an image+text input is
  ``normalize(image_weight * img + (1 - image_weight) * txt)``.
* ``feature`` -- :class:`encoders.feature_fusion.FeatureFusionEmbedder`
  (UniIR's feature fusion): the tower's grid cells and the text's token
  states meet in a small transformer before pooling.
* ``vista`` -- :class:`encoders.vista.VistaEmbedder` (VISTA): the grid cells,
  projected into the sentence encoder's word-embedding space, are prepended
  to the text's word pieces and the frozen sentence encoder reads both.

The shared machinery (loading and saving, cached tower features, encoding
mixed inputs, the contrastive training loop ``fit``/``fit_pairs``) lives in
:class:`encoders.tower_model.TowerModel`.

A saved model is a directory::

    DIR/lsr-towers.json     kind marker and configuration ("fusion": score | feature | vista)
    DIR/model.safetensors   the trained part

It is a dense model wherever one is accepted: ``lsr embed --model DIR``,
``lsr search --rerank STORE``, ``lsr eval-mbeir --model DIR``
(:func:`load_tower_model` picks the class from the directory).
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn

from lsr.errors import InputError

from .tower_model import (FUSIONS, MARKER, TowerModel, is_tower_embedder_dir, load_tower_model,
                          tower_model_class_of)


class _Projections(nn.Module):
    def __init__(self, image_width: int, text_width: int, dim: int, hidden: int = 0):
        super().__init__()
        if hidden:
            self.image = nn.Sequential(nn.Linear(image_width, hidden), nn.GELU(), nn.Linear(hidden, dim))
        else:
            self.image = nn.Linear(image_width, dim)
        self.text = nn.Linear(text_width, dim)
        self.logit_scale = nn.Parameter(torch.tensor(float(np.log(1 / 0.07))))


class TowerEmbedder(TowerModel):
    """UniIR score fusion on frozen towers: pooled tower features and the sentence embedding, each through a
    learned projection into one ``dim``-sized space; image+text is their weighted sum, renormalised.

    ``TowerEmbedder(path)`` loads a saved directory; ``TowerEmbedder(image_tower=..., text_model=...,
    dim=...)`` builds a new one with random projections (train it with :meth:`fit` or :meth:`fit_pairs`).
    """

    fusion = "score"
    name_prefix = "towers"

    def __init__(
        self,
        model: str | os.PathLike | None = None,
        *,
        image_tower: str = "efficientnet-lite0",
        pretrained: str | None = None,
        text_model: str = "minilm",
        dim: int = 256,
        image_hidden: int = 0,
        image_weight: float | None = None,
        device: str | None = None,
        batch_size: int = 32,
        progress: bool = False,
        name: str | None = None,
    ):
        if image_weight is not None and not 0.0 <= image_weight <= 1.0:
            raise InputError(f"image_weight must lie in [0, 1], got {image_weight}")
        if model is None and dim < 1:
            raise InputError(f"dim must be positive, got {dim}")
        new = {"image_tower": image_tower, "pretrained": pretrained, "text_model": text_model, "dim": int(dim),
               "image_hidden": int(image_hidden), "image_weight": 0.5 if image_weight is None else float(image_weight)}
        self._setup(model, new, device=device, batch_size=batch_size, progress=progress, name=name,
                    overrides={"image_weight": image_weight})
        self.image_weight = float(self.config["image_weight"])

    def _build(self) -> nn.Module:
        self.dim = int(self.config["dim"])
        return _Projections(self.tower.width, self.text.dim, self.dim, int(self.config.get("image_hidden", 0)))

    def settings(self) -> dict:
        return {**super().settings(), "image_weight": self.image_weight}

    def _config_to_save(self) -> dict:
        return dict(self.config, image_weight=self.image_weight)

    def _image_rep(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.tower.pool(tokens)

    def _text_items(self, texts: list[str]) -> list:
        return list(torch.from_numpy(self.text.encode_documents(texts)))

    def _collate(self, items: list) -> torch.Tensor:
        return torch.stack(items).to(self.device)

    def _fuse(self, texts, images):
        norm = torch.nn.functional.normalize
        t = norm(self.net.text(texts.float()), dim=-1) if texts is not None else None
        im = norm(self.net.image(images.float()), dim=-1) if images is not None else None
        if t is None or im is None:
            return t if im is None else im
        return norm(self.image_weight * im + (1.0 - self.image_weight) * t, dim=-1)


__all__ = ["FUSIONS", "MARKER", "TowerEmbedder", "TowerModel", "is_tower_embedder_dir", "load_tower_model",
           "tower_model_class_of"]
