"""STAIR's trainable modules: the open_clip (or timm) image tower, the token-prediction head, and the model
that holds them with the SPLADE text model."""

from __future__ import annotations

import json
from typing import Sequence

import torch
from torch import nn

from lsr.errors import InputError
from lsr.pooling import fill_padding, max_projection
from lsr.training.config import IMAGE_POSITIONS  # noqa: F401 - what head_positions accepts, one list for both

from .open_clip_models import create_open_clip, open_clip_module, register_image_config
from .towers import TimmTower, build_timm_tower, is_timm_tower


#: Small open_clip configurations for tests and synthetic experiments (random init only).
TINY_IMAGE_CONFIGS: dict[str, dict] = {
    "stair-tiny-vit": {
        "embed_dim": 64,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 128, "head_width": 32, "patch_size": 8},
        "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1},
    },
}


# ------------------------------------------------------------ image towers
def build_image_tower(image_model: str, pretrained: str | None = None,
                      image_config: dict | None = None) -> tuple[nn.Module, dict, dict]:
    """An open_clip image tower: ``(visual module, open_clip model config, preprocessing config)``.

    ``image_model`` is any open_clip model name (``open_clip.list_models()``),
    a name from :data:`TINY_IMAGE_CONFIGS`, ``timm:NAME`` for any timm model, or
    a tower alias of :mod:`encoders.towers` (``efficientnet-lite0``: ImageNet
    weights that install from the package registry); ``image_config`` registers a
    custom config under that name first. ``pretrained`` is ``None`` (random
    initialisation), an open_clip tag such as ``"laion2b_s34b_b88k"``
    (downloaded by open_clip; needs network access or its cache) or a local
    checkpoint file (a full open_clip state dict, or the image tower alone,
    with or without the ``visual.`` prefix).
    """
    if is_timm_tower(image_model):
        if image_config is not None:
            raise InputError(f"image_config applies to open_clip models, not to {image_model!r}")
        tower = build_timm_tower(image_model, pretrained)
        return tower, {"timm_model": tower.model_name}, tower.preprocess_config()
    open_clip = open_clip_module()
    if image_config is not None:
        register_image_config(image_model, image_config)
    elif image_model in TINY_IMAGE_CONFIGS:
        register_image_config(image_model, TINY_IMAGE_CONFIGS[image_model])
    if image_model.startswith("hf-hub:"):
        raise InputError(f"image model {image_model!r}: a STAIR tower needs an open_clip model name (its config is "
                         "saved with the model); see open_clip.list_models()")
    model, _ = create_open_clip(image_model, pretrained, image_tower_only=True)
    config = open_clip.get_model_config(image_model)
    visual = model.visual
    preprocess = dict(getattr(visual, "preprocess_cfg", None) or {})
    preprocess.setdefault("size", getattr(visual, "image_size", 224))
    del model  # the text tower of the CLIP model is not used
    return visual, config, _plain(preprocess)


def _plain(obj):
    """JSON-friendly copy (tuples become lists)."""
    return json.loads(json.dumps(obj))


# ----------------------------------------------------------------- modules
class TokenHead(nn.Module):
    """Dense -> GELU -> LayerNorm -> projection to the vocabulary (the shape of BERT's MLM head).

    ``dropout`` drops the tower's token features while the head trains, each token before any average
    (:meth:`StairModel.head_positions`): a head trained on a frozen tower's features of a few thousand
    images overfits without it.
    """

    def __init__(self, in_dim: int, hidden: int, vocab_size: int, eps: float = 1e-12,
                 out_ids: Sequence[int] | None = None, dropout: float = 0.0):
        super().__init__()
        self.vocab_size = vocab_size
        self.dropout = nn.Dropout(dropout)  # on the tower's features, in training only
        self.dense = nn.Linear(in_dim, hidden)
        self.act = nn.GELU()
        self.norm = nn.LayerNorm(hidden, eps=eps)
        if out_ids is not None:
            ids = torch.as_tensor(sorted(set(int(i) for i in out_ids)), dtype=torch.long)
            if len(ids) == 0 or int(ids[0]) < 0 or int(ids[-1]) >= vocab_size:
                raise InputError(f"head vocabulary: token ids must lie in [0, {vocab_size}) and not be empty")
            self.register_buffer("out_ids", ids)
        else:
            self.out_ids = None
        self.decoder = nn.Linear(hidden, vocab_size if out_ids is None else len(self.out_ids))

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.act(self.dense(x)))

    def expand(self, x: torch.Tensor) -> torch.Tensor:
        """Logits over the head's own word pieces ``[..., n]`` to the whole vocabulary ``[..., vocab]``.

        A head restricted to some word pieces (``out_ids``, e.g. those that occur
        in the training captions) gives every other word piece logit 0, which
        is weight 0 after ``log(1 + relu(.))``.
        """
        if self.out_ids is None:
            return x
        out = x.new_zeros(*x.shape[:-1], self.vocab_size)
        return out.index_copy(x.dim() - 1, self.out_ids, x)

    def pooled(self, hidden: torch.Tensor) -> torch.Tensor:
        """``max`` over positions of the logits of transformed features ``[batch, positions, hidden]``."""
        return self.expand(max_projection(hidden, self.decoder.weight, self.decoder.bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.expand(self.decoder(self.transform(x)))

    @torch.no_grad()
    def init_from_mlm(self, text_model: nn.Module) -> list[str]:
        """Copy the text model's MLM head where shapes allow; returns the names of the copied parts."""
        dense, norm, decoder = _mlm_head_parts(text_model)
        copied = []
        for name, src, dst in (("dense", dense, self.dense), ("norm", norm, self.norm), ("decoder", decoder, self.decoder)):
            if src is None or src.weight.shape != dst.weight.shape:
                continue
            dst.weight.copy_(src.weight)
            if getattr(src, "bias", None) is not None and dst.bias is not None and src.bias.shape == dst.bias.shape:
                dst.bias.copy_(src.bias)
            copied.append(name)
        return copied


def _mlm_head_parts(model: nn.Module):
    """``(dense, layer_norm, decoder)`` of a BERT- or RoBERTa-style MLM head (missing parts are ``None``)."""
    decoder = model.get_output_embeddings()
    transform = getattr(getattr(getattr(model, "cls", None), "predictions", None), "transform", None)
    if transform is not None:  # BERT
        return getattr(transform, "dense", None), getattr(transform, "LayerNorm", None), decoder
    lm_head = getattr(model, "lm_head", None)
    if lm_head is not None:  # RoBERTa
        return getattr(lm_head, "dense", None), getattr(lm_head, "layer_norm", None), decoder
    return None, None, decoder


class StairModel(nn.Module):
    """The trainable modules: ``visual`` (open_clip image tower), ``head`` (token prediction), ``text`` (masked LM)."""

    def __init__(self, visual: nn.Module, head: TokenHead, text: nn.Module):
        super().__init__()
        self.visual = visual
        self.head = head
        self.text = text
        self.image_positions = "tokens"  # see head_positions

    def image_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """Final hidden states at every image token position, ``[batch, positions, width]``."""
        if isinstance(self.visual, TimmTower):
            return self.visual.tokens(pixels)
        fmt = "NLC" if hasattr(self.visual, "class_embedding") else "NCHW"
        out = self.visual.forward_intermediates(pixels, indices=1, normalize_intermediates=True,
                                                intermediates_only=True, output_fmt=fmt, output_extra_tokens=True)
        tokens = out["image_intermediates"][-1]
        if tokens.dim() == 4:  # [B, C, H, W] feature map
            tokens = tokens.flatten(2).transpose(1, 2)
        prefix = out.get("image_intermediates_prefix")
        if prefix:
            tokens = torch.cat([prefix[-1], tokens], dim=1)
        return tokens

    def head_positions(self, tokens: torch.Tensor) -> torch.Tensor:
        """The positions the token head reads, by ``self.image_positions`` (one of :data:`IMAGE_POSITIONS`).

        ``"tokens"``: every token of the tower (STAIR's max over positions);
        ``"tokens+mean"``: their average first, as one more position (a CNN's
        feature map has no class token; the average of its cells is what its
        ImageNet classifier reads), so the max can also take whole-image
        evidence; ``"mean"``: the average alone (one position: no max), which
        generalises better when a frozen tower's head is trained on a few
        thousand images (see the Flickr8k ablation in the README).
        """
        tokens = self.head.dropout(tokens)  # active while the head trains, on each token before any average
        if self.image_positions == "tokens":
            return tokens
        mean = tokens.mean(dim=1, keepdim=True)
        return mean if self.image_positions == "mean" else torch.cat([mean, tokens], dim=1)

    def image_logits(self, pixels: torch.Tensor) -> torch.Tensor:
        """Token-prediction logits at every image position, ``[batch, positions, vocab]``."""
        return self.head(self.head_positions(self.image_tokens(pixels)))

    def image_pooled_logits(self, pixels: torch.Tensor) -> torch.Tensor:
        """``max`` over image positions of the token-prediction logits, ``[batch, vocab]``.

        The same numbers as ``image_logits(pixels).amax(dim=1)``, computed by
        :func:`max_projection` without materialising every position's logits.
        """
        return self.head.pooled(self.head.transform(self.head_positions(self.image_tokens(pixels))))

    def text_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.text(input_ids=input_ids, attention_mask=attention_mask).logits

    def text_pooled_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                           only_input_tokens: bool = False) -> torch.Tensor:
        """``max`` over valid positions of the text's MLM logits, ``[batch, vocab]``, with autograd.

        The same numbers as the masked max of ``text_logits``, without the
        ``[batch, positions, vocab]`` logits: the model runs up to its output
        projection, padding positions take their row's first position, and
        :func:`max_projection` projects a few positions at a time.
        ``only_input_tokens`` projects only onto the word pieces that occur in
        the batch (the rest get logit 0, weight 0 after saturation): what
        STAIR's stage 1 needs, where text vectors keep to their own tokens.
        """
        from .pooled_decoder import _parent_of

        decoder = self.text.get_output_embeddings()
        parent, attr = _parent_of(self.text, decoder)
        setattr(parent, attr, nn.Identity())
        try:
            hidden = self.text(input_ids=input_ids, attention_mask=attention_mask).logits  # [b, t, hidden]
        finally:
            setattr(parent, attr, decoder)
        valid = attention_mask.bool()
        hidden = fill_padding(hidden, valid)
        weight, bias = decoder.weight, decoder.bias
        if not only_input_tokens:
            return max_projection(hidden, weight, bias)
        used = torch.unique(input_ids[valid])
        part = max_projection(hidden, weight[used], bias[used] if bias is not None else None)
        return part.new_zeros(part.shape[0], weight.shape[0]).index_copy(1, used, part)


def _probe_width(visual: nn.Module, preprocess: dict) -> int:
    """Width of the tower's token features, found by running one blank image."""
    size = preprocess.get("size", 224)
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    tmp = StairModel(visual, TokenHead(1, 1, 1), nn.Identity())
    with torch.no_grad():
        tokens = tmp.image_tokens(torch.zeros(1, 3, h, w))
    return int(tokens.shape[-1])
