"""A STAIR model and its configuration: built new from towers, or read from (and written to) a model directory.

A saved model is a directory::

    DIR/lsr-stair.json      kind marker and configuration (open_clip config, preprocessing, head, flags)
    DIR/model.safetensors   all weights: ``visual.*``, ``head.*``, ``text.*``
    DIR/text/               the text model's Hugging Face config and tokenizer files

and :func:`encoders.registry.resolve` reports such a directory as kind ``"stair"``.
The configuration is :class:`StairConfig`, one of the project's versioned
metadata classes (:class:`lsr.meta.Meta`: format tag, atomic write, a clear
error for a corrupted file or one from a newer version).
:class:`encoders.stair.StairEncoder` runs the model these functions build.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from lsr.errors import EnvironmentProblem, InputError, first_line
from lsr.meta import Meta, meta_field

from .base import load_masked_lm
from .open_clip_models import _random_init, open_clip_module, register_image_config
from .registry import STAIR_MARKER, resolve
from .stair_model import IMAGE_POSITIONS, StairModel, TokenHead, _mlm_head_parts, _plain, _probe_width, build_image_tower
from .towers import TimmTower



@dataclass
class StairConfig(Meta, format="lsr-stair", what="STAIR configuration",
                  remedy="save the model again with StairEncoder.save"):
    """``lsr-stair.json``: the image tower's name and the rest of the configuration (open_clip config,
    preprocessing, head, flags), kept as written."""

    image_model: str = meta_field(default="", required=True)
    settings: dict = meta_field(default_factory=dict, rest=True)


FORMAT = StairConfig.tag()
WEIGHTS_FILE = "model.safetensors"
TEXT_DIR = "text"
HEAD_INITS = ("random", "mlm")


def new_model(image_model: str, pretrained: str | None, image_config: dict | None, text_model: str,
              head_init: str = "random", head_vocab: Sequence[int] | None = None,
              image_positions: str | None = None,
              head_hidden: int | None = None, head_dropout: float = 0.0) -> tuple[StairModel, object, dict, list[str]]:
    """``(model, tokenizer, config, head parts copied)`` of a new STAIR model (float32, on the CPU).

    See :meth:`encoders.stair.StairEncoder.create` for the arguments.
    """
    if head_init not in HEAD_INITS:
        raise InputError(f"head_init must be 'mlm' or 'random', not {head_init!r}")
    if image_positions is not None and image_positions not in IMAGE_POSITIONS:
        raise InputError(f"image_positions must be one of {', '.join(IMAGE_POSITIONS)}, not {image_positions!r}")
    if head_hidden is not None and (not isinstance(head_hidden, int) or head_hidden < 1):
        raise InputError(f"head_hidden must be a positive integer, not {head_hidden!r}")
    if not 0.0 <= head_dropout < 1.0:
        raise InputError(f"head_dropout must lie in [0, 1), not {head_dropout!r}")
    visual, cfg, preprocess = build_image_tower(image_model, pretrained, image_config)
    tokenizer, text = load_masked_lm(text_model, torch.float32, what="text model")
    width = _probe_width(visual, preprocess)
    dense, norm, decoder = _mlm_head_parts(text)
    hidden = head_hidden or decoder.weight.shape[1]
    if head_init == "mlm" and hidden != decoder.weight.shape[1]:
        raise InputError(f"head_init='mlm' copies the text model's head, whose width is {decoder.weight.shape[1]}; "
                         f"leave head_hidden unset (got {hidden})")
    eps = getattr(norm, "eps", 1e-12) if norm is not None else 1e-12
    head = TokenHead(width, hidden, decoder.weight.shape[0], eps, head_vocab, head_dropout)
    copied = head.init_from_mlm(text) if head_init == "mlm" else []
    model = StairModel(visual, head, text)
    if image_positions is None:
        image_positions = "tokens+mean" if isinstance(visual, TimmTower) and visual.spatial else "tokens"
    model.image_positions = image_positions
    config = {
        "format": FORMAT,
        "image_model": image_model,
        "image_config": _plain(cfg),
        "pretrained": pretrained,
        "preprocess": preprocess,
        "image_width": width,
        "head_hidden": hidden,
        "head_eps": eps,
        "head_vocab": None if head.out_ids is None else head.out_ids.tolist(),
        "image_positions": image_positions,
        "head_dropout": float(head_dropout),
        "text_model": text_model,
    }
    return model, tokenizer, config, copied


def saved_image_positions(config: dict, path) -> str:
    """The ``image_positions`` of a saved configuration; directories written before that option record the
    same choice as ``global_token`` (true: ``"tokens+mean"``)."""
    value = config.get("image_positions")
    if value is None:
        return "tokens+mean" if config.get("global_token") else "tokens"
    if value not in IMAGE_POSITIONS:
        raise InputError(f"{Path(path) / STAIR_MARKER}: image_positions {value!r} is not one of "
                         f"{', '.join(IMAGE_POSITIONS)}; save the model again with StairEncoder.save")
    return value


def read_config(path: str | os.PathLike) -> dict:
    """The configuration in a STAIR directory's marker file; an error naming the file when it is unreadable."""
    return StairConfig.read(Path(path) / STAIR_MARKER).to_dict()


def read_model_dir(path: str | os.PathLike) -> tuple[StairModel, object, dict]:
    """``(model, tokenizer, config)`` of a saved STAIR directory (float32, on the CPU)."""
    from safetensors.torch import load_model
    from transformers import AutoConfig, AutoModelForMaskedLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    path = Path(path)
    config = read_config(path)
    image_model = config["image_model"]
    cfg = config.get("image_config") or {}
    if "timm_model" in cfg:
        visual = TimmTower(cfg["timm_model"])
    else:
        open_clip = open_clip_module()
        if image_model not in open_clip.list_models():
            register_image_config(image_model, cfg)
        elif open_clip.get_model_config(image_model) != cfg:  # a different model under a known name
            image_model = register_image_config(f"{image_model}-{_short_hash(cfg)}", cfg)
        visual = _random_init(image_model).visual
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path / TEXT_DIR))
        text = AutoModelForMaskedLM.from_config(AutoConfig.from_pretrained(str(path / TEXT_DIR)))
    except (OSError, ValueError) as e:
        raise InputError(f"{path / TEXT_DIR}: the text model's config or tokenizer is missing ({e})") from None
    vocab_size = text.get_output_embeddings().weight.shape[0]
    head = TokenHead(int(config["image_width"]), int(config["head_hidden"]), vocab_size,
                     float(config.get("head_eps", 1e-12)), config.get("head_vocab"),
                     float(config.get("head_dropout", 0.0)))
    model = StairModel(visual, head, text)
    model.image_positions = saved_image_positions(config, path)
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        raise InputError(f"{weights}: file not found; the STAIR directory is incomplete")
    try:
        load_model(model, str(weights), strict=True)
    except Exception as e:  # noqa: BLE001 - safetensors header / shape errors
        raise InputError(f"{weights}: cannot load the weights ({first_line(e, 300)})") from None
    return model, tokenizer, config


def write_model_dir(path: str | os.PathLike, model: StairModel, tokenizer, config: dict) -> Path:
    """Write the weights (safetensors), the text model's config and tokenizer, then the configuration."""
    from safetensors.torch import save_model

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / TEXT_DIR).mkdir(exist_ok=True)
    model.text.config.save_pretrained(str(path / TEXT_DIR))
    tokenizer.save_pretrained(str(path / TEXT_DIR))
    tmp = path / (WEIGHTS_FILE + ".tmp")
    save_model(model, str(tmp))
    os.replace(tmp, path / WEIGHTS_FILE)
    StairConfig.from_dict(config, "the STAIR configuration").write(path / STAIR_MARKER)
    return path


def load_weights_into(model: StairModel, path: str | os.PathLike, device: torch.device) -> None:
    """Load the weights of a saved directory with the same architecture into ``model``."""
    from safetensors.torch import load_model

    weights = Path(path) / WEIGHTS_FILE
    try:
        load_model(model, str(weights), strict=True, device=str(device))
    except FileNotFoundError:
        raise InputError(f"{weights}: file not found") from None
    except Exception as e:  # noqa: BLE001
        raise InputError(f"{weights}: does not fit this model ({first_line(e, 300)})") from None


def caption_vocabulary(text_model: str, texts: Sequence[str]) -> list[int]:
    """Ids of the word pieces (special tokens aside) that occur in ``texts`` under ``text_model``'s tokenizer."""
    from transformers import AutoTokenizer

    loc = resolve(text_model)
    try:
        tokenizer = AutoTokenizer.from_pretrained(loc.source, local_files_only=loc.is_local)
    except (OSError, ValueError) as e:
        raise EnvironmentProblem(f"cannot load the tokenizer of {text_model!r} ({first_line(e, 300)})") from None
    special = set(tokenizer.all_special_ids)
    seen: set[int] = set()
    for s in range(0, len(texts), 4096):
        for ids in tokenizer(list(texts[s:s + 4096]), add_special_tokens=False)["input_ids"]:
            seen.update(ids)
    return sorted(seen - special)


def _short_hash(obj) -> str:
    import hashlib

    return hashlib.sha1(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:8]
