"""VISTA-style in-depth fusion: image cells become extra word pieces of a frozen sentence encoder.

The image tower's feature map (averaged down to ``visual_grid x visual_grid``
cells, plus the whole map's average; a ViT's tokens as they are) passes a
learned linear map into the sentence encoder's word-embedding space. Those
visual tokens are placed right after ``[CLS]``, before the text's word pieces
(an image alone: ``[CLS] visual tokens [SEP]``), and the frozen encoder reads
the whole sequence; its own pooling (mean or ``[CLS]``), L2-normalised, is the
vector. Only the visual projection trains; gradients flow through the frozen
encoder into it.

A text alone never meets the trained part: it is the frozen sentence
encoder's own embedding, so the model's text retrieval is exactly the
encoder's (VISTA's premise: image support without losing text retrieval).

    from encoders.vista import VistaEmbedder
    vista = VistaEmbedder(image_tower="efficientnet-lite0", text_model="minilm", visual_grid=2)
    vista.fit(captions, image_paths, steps=800)   # or vista.fit_pairs(queries, documents, groups)
    vista.save("vista-model")                     # lsr embed --model vista-model ...

Cost: every image pass runs the sentence encoder over ``visual_grid**2 + 3``
positions or more, forward and backward while training; ``visual_grid`` trades
detail for speed (2 on a CPU, the full 7 on a GPU).
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn

from lsr.errors import InputError

from .tower_model import GridTowerModel, sentence_parts


class _VisualProjection(nn.Module):
    def __init__(self, image_width: int, hidden: int):
        super().__init__()
        self.visual = nn.Linear(image_width, hidden)
        nn.init.normal_(self.visual.weight, std=0.02)
        nn.init.zeros_(self.visual.bias)
        self.logit_scale = nn.Parameter(torch.tensor(float(np.log(1 / 0.07))))


class VistaEmbedder(GridTowerModel):
    """Dense embeddings where a frozen sentence encoder reads an image's projected grid cells as word pieces.

    ``VistaEmbedder(path)`` loads a saved directory; ``VistaEmbedder(image_tower=..., text_model=...)`` builds a
    new one with an untrained projection. The vector size is the sentence encoder's.
    """

    fusion = "vista"

    def __init__(
        self,
        model: str | os.PathLike | None = None,
        *,
        image_tower: str = "efficientnet-lite0",
        pretrained: str | None = None,
        text_model: str = "minilm",
        visual_grid: int = 7,
        max_text_tokens: int = 128,
        device: str | None = None,
        batch_size: int = 32,
        progress: bool = False,
        name: str | None = None,
    ):
        if model is None and (visual_grid < 1 or max_text_tokens < 1):
            raise InputError(f"visual_grid and max_text_tokens must be positive, got {visual_grid}, "
                             f"{max_text_tokens}")
        new = {"image_tower": image_tower, "pretrained": pretrained, "text_model": text_model,
               "visual_grid": int(visual_grid), "max_text_tokens": int(max_text_tokens)}
        self._setup(model, new, device=device, batch_size=batch_size, progress=progress, name=name)

    def _build(self) -> nn.Module:
        self.grid = int(self.config["visual_grid"])
        self.max_text_tokens = int(self.config["max_text_tokens"])
        self.transformer, self.tokenizer, self.pooling = sentence_parts(self.text)
        for p in self.transformer.parameters():  # frozen: only the visual projection learns
            p.requires_grad_(False)
        self.word_embeddings = self.transformer.embeddings.word_embeddings
        self.cls_id, self.sep_id = self.tokenizer.cls_token_id, self.tokenizer.sep_token_id
        if self.cls_id is None or self.sep_id is None:
            raise InputError(f"{self.text.name!r}: its tokenizer has no [CLS]/[SEP] tokens")
        self.dim = int(self.text.dim)
        return _VisualProjection(self.tower.width, self.word_embeddings.embedding_dim)

    def _text_items(self, texts: list[str]) -> list:
        """Per text: its word-piece ids (no special tokens) and the frozen encoder's own embedding of it."""
        ids = self.tokenizer(texts, add_special_tokens=False, truncation=True,
                             max_length=min(self.max_text_tokens, self.text.max_length - 2))["input_ids"]
        emb = torch.from_numpy(self.text.encode_documents(texts))
        return [(torch.tensor(i, dtype=torch.long), e) for i, e in zip(ids, emb)]

    def _collate(self, items: list) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(ids, mask, embeddings)``: the word pieces padded and followed by ``[SEP]``."""
        longest = max(len(i) for i, _ in items) + 1
        ids = torch.zeros(len(items), longest, dtype=torch.long)
        mask = torch.zeros(len(items), longest, dtype=torch.long)
        for r, (i, _) in enumerate(items):
            ids[r, :len(i)] = i
            ids[r, len(i)] = self.sep_id
            mask[r, :len(i) + 1] = 1
        return ids.to(self.device), mask.to(self.device), torch.stack([e for _, e in items]).to(self.device)

    def _fuse(self, texts, images):
        if images is None:  # a text alone: the frozen encoder's own embedding
            return torch.nn.functional.normalize(texts[2].float(), dim=-1)
        n = images.shape[0]
        if texts is None:
            ids = torch.full((n, 1), self.sep_id, dtype=torch.long, device=self.device)
            mask = torch.ones((n, 1), dtype=torch.long, device=self.device)
        else:
            ids, mask = texts[0], texts[1]
        cls = self.word_embeddings(torch.full((n, 1), self.cls_id, dtype=torch.long, device=self.device))
        visual = self.net.visual(images.float())
        seq = torch.cat([cls, visual, self.word_embeddings(ids)], dim=1)
        full_mask = torch.cat([torch.ones((n, 1 + visual.shape[1]), dtype=torch.long, device=self.device), mask], 1)
        hidden = self.transformer(inputs_embeds=seq, attention_mask=full_mask).last_hidden_state
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            w = full_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * w).sum(1) / w.sum(1)
        return torch.nn.functional.normalize(pooled, dim=-1)


__all__ = ["VistaEmbedder"]
