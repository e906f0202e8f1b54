"""open_clip models with their weights: the one loader behind CLIP embedders and STAIR image towers.

:func:`create_open_clip` builds an open_clip model by name with weights from
nowhere (random initialisation), a local checkpoint file or an open_clip
pretrained tag. :class:`encoders.dense.ClipEmbedder` uses the whole model;
STAIR (:func:`encoders.stair_model.build_image_tower`) keeps its image tower,
and may read a checkpoint that holds the image tower alone.
:func:`register_image_config` makes a custom model configuration known to
open_clip under a name.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from torch import nn

from lsr.errors import EnvironmentProblem, InputError, first_line

from .hub import cache_only, hub_unavailable

_CONFIG_DIR: Path | None = None
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".npz")


def open_clip_module():
    """The ``open_clip`` package, or an error saying how to install it."""
    try:
        import open_clip
    except ImportError as e:  # pragma: no cover - depends on the installation
        raise EnvironmentProblem(f"open_clip is needed for CLIP models and image towers ({e}); "
                                 "pip install 'open_clip_torch>=2.24' torchvision") from None
    return open_clip


def register_image_config(name: str, config: dict) -> str:
    """Make an open_clip model configuration available to ``open_clip.create_model`` as ``name``.

    ``config`` is an open_clip model config (``embed_dim``, ``vision_cfg``,
    ``text_cfg``). Registering the same config twice is a no-op; a different
    config under a name open_clip already knows is refused.
    """
    global _CONFIG_DIR
    open_clip = open_clip_module()
    if not isinstance(config, dict) or not all(k in config for k in ("embed_dim", "vision_cfg", "text_cfg")):
        raise InputError(f"image model config {name!r} needs 'embed_dim', 'vision_cfg' and 'text_cfg'")
    if not name or "/" in name or os.sep in name:
        raise InputError(f"image model name {name!r} must be a plain name")
    if name in open_clip.list_models():
        if open_clip.get_model_config(name) == config:
            return name
        raise InputError(f"open_clip already has a different model called {name!r}; register under another name")
    if _CONFIG_DIR is None:
        _CONFIG_DIR = Path(tempfile.mkdtemp(prefix="lsr-open-clip-configs-"))
        atexit.register(shutil.rmtree, _CONFIG_DIR, True)
    path = _CONFIG_DIR / f"{name}.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    open_clip.add_model_config(path)
    return name


def create_open_clip(model_name: str, pretrained: str | None = None, *, device: str | torch.device = "cpu",
                     image_tower_only: bool = False) -> tuple[nn.Module, str | None]:
    """``(model, source)``: the open_clip model ``model_name`` with weights from ``pretrained``.

    ``model_name`` is a name from ``open_clip.list_models()`` (or one added by
    :func:`register_image_config`), or ``hf-hub:ORG/NAME``. ``pretrained`` is

    * ``None`` or ``""``: random initialisation;
    * a local checkpoint file (an existing file, or a value that looks like a
      path or has a checkpoint suffix): a full open_clip state dict, or, with
      ``image_tower_only``, the image tower alone, with or without the
      ``visual.`` prefix (the text tower then stays random);
    * an open_clip pretrained tag such as ``laion2b_s34b_b88k``: downloaded by
      open_clip; when the hub cannot be reached, read from the local cache only
      (no retries), with an error saying so when it is not there.

    ``source`` is the checkpoint's resolved path, ``MODEL@TAG``, or ``None``.
    """
    open_clip = open_clip_module()
    hub_model = model_name.startswith("hf-hub:")
    if not hub_model and model_name not in open_clip.list_models():
        raise InputError(f"open_clip has no model {model_name!r}; choose one of open_clip.list_models() (e.g. "
                         "ViT-B-16) or register a config with encoders.open_clip_models.register_image_config")
    if not pretrained and not hub_model:
        return _random_init(model_name).to(device), None
    if pretrained:
        path = Path(os.path.expanduser(pretrained))
        if path.is_file() or _looks_like_file(pretrained):
            return _from_checkpoint_file(model_name, path, image_tower_only).to(device), str(path.resolve())
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        if pretrained not in tags:
            raise InputError(f"pretrained {pretrained!r} for {model_name!r} is neither a local checkpoint file nor "
                             f"a known tag ({', '.join(tags) or 'none'})")
    # a tag (or an hf-hub model) downloads from the hub: offline, use the local cache only
    offline = hub_unavailable()
    try:
        with cache_only() if offline else contextlib.nullcontext():
            model = open_clip.create_model(model_name, pretrained=pretrained or None, device=device)
    except Exception as e:  # noqa: BLE001 - download and conversion errors from open_clip
        weights = f"{model_name}@{pretrained}" if pretrained else model_name
        if offline:
            raise EnvironmentProblem(f"cannot load open_clip weights {weights}: {offline}, and they are not in the "
                                     "local cache; download them where the hub is reachable, or pass a local "
                                     "checkpoint file as the pretrained weights") from None
        raise EnvironmentProblem(f"cannot load open_clip weights {weights} ({first_line(e, 300)}); tags are "
                                 "downloaded from the model hub, which needs network access: download the "
                                 "checkpoint once and pass its path as the pretrained weights") from None
    return model, (f"{model_name}@{pretrained}" if pretrained else None)


def _looks_like_file(pretrained: str) -> bool:
    return (os.sep in pretrained or "/" in pretrained or pretrained.startswith(("~", "."))
            or Path(pretrained).suffix.lower() in _CHECKPOINT_SUFFIXES)


def _random_init(model_name: str) -> nn.Module:
    """``open_clip.create_model`` without weights, without its "initialized randomly" warning."""
    import logging

    open_clip = open_clip_module()
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        return open_clip.create_model(model_name)
    finally:
        logging.disable(previous)


def _from_checkpoint_file(model_name: str, path: Path, image_tower_only: bool) -> nn.Module:
    open_clip = open_clip_module()
    from open_clip.factory import load_state_dict

    if not path.is_file():
        raise InputError(f"checkpoint {path}: file not found")
    unreadable = f"checkpoint {path}: not a readable torch or safetensors checkpoint"
    model = _random_init(model_name)
    if not image_tower_only:
        try:
            open_clip.load_checkpoint(model, str(path), strict=True)
        except RuntimeError as e:
            if "Error(s) in loading state_dict" not in str(e):
                raise InputError(f"{unreadable} ({first_line(e, 300)})") from None
            raise InputError(f"checkpoint {path}: does not fit open_clip model {model_name} ({first_line(e, 300)}); "
                             "pass the model name the checkpoint was trained with") from None
        except Exception as e:  # noqa: BLE001 - torch.load / safetensors raise many types on bad files
            raise InputError(f"{unreadable} ({first_line(e, 300)})") from None
        return model
    try:
        state = load_state_dict(str(path))
    except Exception as e:  # noqa: BLE001 - torch.load / safetensors raise many types on bad files
        raise InputError(f"{unreadable} ({first_line(e, 300)})") from None
    if not isinstance(state, dict) or not state:
        raise InputError(f"checkpoint {path}: holds no state dict")
    if any(k.startswith("visual.") for k in state) and any(not k.startswith("visual.") for k in state):
        try:
            open_clip.load_checkpoint(model, str(path), strict=True)
            return model
        except Exception:  # noqa: BLE001 - fall back to the image tower part of the file
            pass
    sub = {k[len("visual."):]: v for k, v in state.items() if k.startswith("visual.")} or state
    try:
        model.visual.load_state_dict(sub, strict=True)
    except RuntimeError as e:
        raise InputError(f"checkpoint {path}: does not fit open_clip model {model_name} "
                         f"({first_line(e, 300)}); pass the model name the checkpoint was trained with") from None
    return model
