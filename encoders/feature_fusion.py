"""UniIR-style feature fusion on frozen towers: image cells and text token states meet in a small transformer.

An input's image becomes its tower's grid cells (the feature map averaged down
to ``visual_grid x visual_grid`` cells, plus the whole map's average; a ViT's
tokens as they are), its text the frozen sentence encoder's last-layer token
states. Each passes a learned linear map into ``width`` dimensions, gets a
learned position and modality embedding, and the concatenation goes through a
``layers``-deep transformer; the masked mean of its output, projected to
``dim`` and L2-normalised, is the vector. Texts alone and images alone go
through the same transformer with their own tokens only, so one model embeds
all three modalities and an image+text query is fused before scoring, not
after (UniIR's feature fusion, here on frozen towers with only the fusion
transformer trained).

    from encoders.feature_fusion import FeatureFusionEmbedder
    ff = FeatureFusionEmbedder(image_tower="efficientnet-lite0", text_model="minilm", dim=256)
    ff.fit(captions, image_paths, steps=1000)     # or ff.fit_pairs(queries, documents, groups)
    ff.save("ff-model")                           # lsr embed --model ff-model ...
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn

from lsr.errors import InputError

from .tower_model import GridTowerModel, sentence_parts


class _FusionNet(nn.Module):
    def __init__(self, image_width: int, text_width: int, image_positions: int, text_positions: int, width: int,
                 layers: int, heads: int, dim: int):
        super().__init__()
        self.image_in = nn.Linear(image_width, width)
        self.text_in = nn.Linear(text_width, width)
        self.image_pos = nn.Parameter(torch.randn(image_positions, width) * 0.02)
        self.text_pos = nn.Parameter(torch.randn(text_positions, width) * 0.02)
        self.modality = nn.Parameter(torch.randn(2, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.1, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, dim)
        self.logit_scale = nn.Parameter(torch.tensor(float(np.log(1 / 0.07))))

    def forward(self, text: tuple[torch.Tensor, torch.Tensor] | None, image: torch.Tensor | None) -> torch.Tensor:
        seq, keep = [], []
        if image is not None:
            seq.append(self.image_in(image) + self.image_pos[: image.shape[1]] + self.modality[0])
            keep.append(torch.ones(image.shape[:2], dtype=torch.bool, device=image.device))
        if text is not None:
            states, mask = text
            seq.append(self.text_in(states) + self.text_pos[: states.shape[1]] + self.modality[1])
            keep.append(mask)
        x, keep = torch.cat(seq, dim=1), torch.cat(keep, dim=1)
        h = self.norm(self.encoder(x, src_key_padding_mask=~keep))
        w = keep.unsqueeze(-1).to(h.dtype)
        pooled = (h * w).sum(1) / w.sum(1).clamp(min=1.0)
        return torch.nn.functional.normalize(self.out(pooled), dim=-1)


class FeatureFusionEmbedder(GridTowerModel):
    """Dense embeddings from a frozen image tower and a frozen sentence encoder, fused by a small trained
    transformer over both token sequences (UniIR's feature fusion).

    ``FeatureFusionEmbedder(path)`` loads a saved directory; ``FeatureFusionEmbedder(image_tower=...,
    text_model=..., dim=...)`` builds a new, untrained one.
    """

    fusion = "feature"

    def __init__(
        self,
        model: str | os.PathLike | None = None,
        *,
        image_tower: str = "efficientnet-lite0",
        pretrained: str | None = None,
        text_model: str = "minilm",
        dim: int = 256,
        width: int = 256,
        layers: int = 2,
        heads: int = 4,
        visual_grid: int = 3,
        max_text_tokens: int = 64,
        device: str | None = None,
        batch_size: int = 32,
        progress: bool = False,
        name: str | None = None,
    ):
        if model is None:
            for key, value in (("dim", dim), ("width", width), ("layers", layers), ("heads", heads),
                               ("visual_grid", visual_grid), ("max_text_tokens", max_text_tokens)):
                if value < 1:
                    raise InputError(f"{key} must be positive, got {value}")
            if width % heads:
                raise InputError(f"width {width} is not a multiple of heads {heads}")
        new = {"image_tower": image_tower, "pretrained": pretrained, "text_model": text_model, "dim": int(dim),
               "width": int(width), "layers": int(layers), "heads": int(heads), "visual_grid": int(visual_grid),
               "max_text_tokens": int(max_text_tokens)}
        self._setup(model, new, device=device, batch_size=batch_size, progress=progress, name=name)

    def _build(self) -> nn.Module:
        c = self.config
        self.dim = int(c["dim"])
        self.grid = int(c["visual_grid"])
        self.max_text_tokens = int(c["max_text_tokens"])
        self.transformer, self.tokenizer, _ = sentence_parts(self.text)
        positions = self._image_rep(torch.zeros(1, self.tower.positions, 1)).shape[1]  # cells per image
        return _FusionNet(self.tower.width, self.text.dim, positions, self.max_text_tokens, int(c["width"]),
                          int(c["layers"]), int(c["heads"]), self.dim)

    def _text_items(self, texts: list[str]) -> list:
        out = []
        for s in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(texts[s:s + self.batch_size], padding=True, truncation=True,
                                 max_length=min(self.max_text_tokens, self.text.max_length), return_tensors="pt")
            enc = {k: v.to(self.device) for k, v in enc.items()}
            states = self.transformer(**enc).last_hidden_state.half().cpu()
            lengths = enc["attention_mask"].sum(1).tolist()
            out.extend(states[i, :n] for i, n in enumerate(lengths))
        return out

    def _collate(self, items: list) -> tuple[torch.Tensor, torch.Tensor]:
        longest = max(len(x) for x in items)
        states = torch.zeros(len(items), longest, items[0].shape[-1])
        mask = torch.zeros(len(items), longest, dtype=torch.bool)
        for i, x in enumerate(items):
            states[i, :len(x)] = x.float()
            mask[i, :len(x)] = True
        return states.to(self.device), mask.to(self.device)

    def _fuse(self, texts, images):
        return self.net(texts, images.float() if images is not None else None)


__all__ = ["FeatureFusionEmbedder"]
