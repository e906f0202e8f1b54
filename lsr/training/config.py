"""The settings of a training run: :class:`TrainConfig`, read from JSON or TOML, and the STAIR stages."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError

#: What a STAIR token head reads from the image tower (see ``encoders.stair_model.StairModel.head_positions``).
IMAGE_POSITIONS = ("tokens", "tokens+mean", "mean")

#: stage -> (parameter groups trained, text vectors masked to their own tokens)
STAGES: dict[int, tuple[tuple[str, ...], bool]] = {1: (("image",), True), 2: (("text",), False),
                                                   3: (("image", "text"), False)}


@dataclass
class TrainConfig:
    """Everything a training run needs; ``lsr train --config FILE`` reads it from JSON or TOML."""

    # data
    data: str = ""  # BEIR-style directory, or an M-BEIR query JSONL
    data_format: str = "auto"  # "auto", "beir", "mbeir" or "captions" (captions JSONL, token file, Karpathy JSON)
    split: str = "train"  # BEIR qrels split; captions: a Karpathy split name or a Flickr split list file
    candidates: str | None = None  # M-BEIR candidate pool JSONL
    image_root: str | None = None  # base of relative image paths (default: the data file's directory)
    instruction: str | None = None  # prepended to query text when a query has none of its own
    # model: continue from a saved model, or build a new one
    model: str | None = None  # saved STAIR directory (or alias); overrides the fields below
    image_model: str = "ViT-B-16"  # open_clip model name
    pretrained: str | None = None  # open_clip tag or local checkpoint file; None = random init
    text_model: str = "splade-tiny"
    max_length: int = 64  # word pieces per text
    head_vocab: str = "all"  # image head over "all" word pieces, or only those in the training "captions"
    image_positions: str | None = None  # what the head reads: "tokens", "tokens+mean" or "mean" (None: the tower's default)
    head_hidden: int | None = None  # width of the head (None: the text model's hidden size)
    head_dropout: float = 0.0  # dropout on the tower features while the head trains
    freeze_tower: bool = False  # keep the image tower fixed (LiT); its features are computed once and cached
    feature_cache: str | None = None  # directory of cached tower features (default ~/.cache/lsr/features)
    # optimisation
    output_dir: str = "stair-run"
    stage: int = 1
    steps: int = 1000
    batch_size: int = 32
    learning_rate: float = 5e-5
    weight_decay: float = 0.01
    warmup_steps: int = 0  # linear learning-rate warm-up
    lr_schedule: str = "linear"  # after warm-up: "linear" decay to 0, or "constant"
    grad_clip: float = 1.0  # max gradient norm; 0 disables clipping
    temperature: float = 1.0
    lambda_q: float = 0.0  # FLOPs weight on query vectors
    lambda_d: float = 0.0  # FLOPs weight on document vectors
    lambda_warmup_steps: int = 0  # quadratic warm-up of both lambdas
    # machinery
    device: str = "auto"
    bf16: bool = False  # autocast to bfloat16 (weights and optimizer stay float32)
    seed: int = 0
    cache_frozen: int = 100_000  # vectors of single-modality inputs of the frozen side kept in memory (0: none)
    log_every: int = 10
    save_every: int = 0  # 0: only at the end
    keep_checkpoints: int = 2
    resume: bool = False
    progress: bool = True

    def __post_init__(self):
        if self.stage not in STAGES:
            raise InputError(f"stage must be 1, 2 or 3, got {self.stage!r}")
        for name in ("steps", "batch_size", "log_every"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"{name} must be at least 1, got {getattr(self, name)!r}")
        for name in ("learning_rate", "temperature"):
            if not float(getattr(self, name)) > 0:
                raise InputError(f"{name} must be positive, got {getattr(self, name)!r}")
        for name in ("weight_decay", "lambda_q", "lambda_d", "grad_clip"):
            if float(getattr(self, name)) < 0:
                raise InputError(f"{name} must be non-negative, got {getattr(self, name)!r}")
        for name in ("warmup_steps", "lambda_warmup_steps", "save_every", "keep_checkpoints", "cache_frozen"):
            if int(getattr(self, name)) < 0:
                raise InputError(f"{name} must be non-negative, got {getattr(self, name)!r}")
        if self.head_vocab not in ("all", "captions"):
            raise InputError(f"head_vocab must be 'all' or 'captions', not {self.head_vocab!r}")
        if self.image_positions is not None and self.image_positions not in IMAGE_POSITIONS:
            choices = ", ".join(map(repr, IMAGE_POSITIONS[:-1])) + f" or {IMAGE_POSITIONS[-1]!r}"
            raise InputError(f"image_positions must be {choices}, not {self.image_positions!r}")
        if not 0.0 <= float(self.head_dropout) < 1.0:
            raise InputError(f"head_dropout must lie in [0, 1), got {self.head_dropout!r}")
        if self.lr_schedule not in ("linear", "constant"):
            raise InputError(f"lr_schedule must be 'linear' or 'constant', not {self.lr_schedule!r}")

    # ------------------------------------------------------------- files
    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> "TrainConfig":
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise InputError(f"{source}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        try:
            return cls(**d)
        except TypeError as e:
            raise InputError(f"{source}: {e}") from None

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "TrainConfig":
        """Read a ``.json`` or ``.toml`` file (a TOML file may put the settings in a ``[train]`` table).

        Relative paths in the file are resolved against the file's directory.
        """
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: config file not found")
        try:
            if path.suffix.lower() == ".toml":
                try:
                    import tomllib
                except ImportError:  # Python 3.10
                    raise InputError(f"{path}: TOML configs need Python 3.11 or later; use a JSON file") from None
                with open(path, "rb") as fh:
                    d = tomllib.load(fh)
                d = d.get("train", d)
            else:
                d = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise InputError(f"{path}: not valid {'TOML' if path.suffix.lower() == '.toml' else 'JSON'} ({e})") from None
        if not isinstance(d, dict):
            raise InputError(f"{path}: expected an object of settings")
        cfg = cls.from_dict(d, str(path))
        # Relative paths are relative to the config file. model and pretrained may also be names
        # (an alias, an open_clip tag), so they are taken as paths only when the file exists.
        base = path.parent
        for name in ("data", "candidates", "image_root", "output_dir", "model", "pretrained", "feature_cache",
                     "split"):
            value = getattr(cfg, name)
            if not value or os.path.isabs(os.path.expanduser(value)):
                continue
            if name not in ("model", "pretrained", "split") or (base / value).exists():
                setattr(cfg, name, str(base / value))
        return cfg

    def replace(self, **changes) -> "TrainConfig":
        """A copy with the given settings changed (``None`` values are ignored)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
