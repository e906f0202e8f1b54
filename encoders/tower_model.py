"""The shared part of the dense tower models: frozen image tower + frozen sentence encoder, a small trained part.

:class:`TowerModel` holds what every fusion kind shares: loading and saving a
directory, the tower and its preprocessing, cached tower features
(:class:`encoders.features.TowerFeatures`), encoding any mix of text, image and
image+text inputs, and :meth:`TowerModel.fit_pairs`, the in-batch contrastive
loop (learned temperature) on any (query, document) pairs. A subclass says only
what its frozen parts produce (``_image_rep``, ``_text_items``/``_collate``) and
how the trainable part fuses them (``_fuse``). The kinds are listed in
:data:`FUSIONS`; :mod:`encoders.image_text` explains them.

A saved model is a directory::

    DIR/lsr-towers.json     kind marker and configuration ("fusion": score | feature | vista)
    DIR/model.safetensors   the trained part
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from lsr.errors import InputError, first_line
from lsr.inputs import Input, as_inputs, load_image

from .base import pick_device
from .towers import build_timm_tower, tower_fingerprint

MARKER = "lsr-towers.json"
FORMAT = "lsr-towers/1"
WEIGHTS_FILE = "model.safetensors"
#: fusion name -> "module:Class"
FUSIONS = {"score": "encoders.image_text:TowerEmbedder",
           "feature": "encoders.feature_fusion:FeatureFusionEmbedder",
           "vista": "encoders.vista:VistaEmbedder"}


def is_tower_embedder_dir(path: str | os.PathLike) -> bool:
    return (Path(os.path.expanduser(str(path))) / MARKER).is_file()


def _read_config(path: Path) -> dict:
    if not (path / MARKER).is_file():
        raise InputError(f"{path}: not a tower embedder directory (it has no {MARKER})")
    try:
        config = json.loads((path / MARKER).read_text(encoding="utf-8"))
        if config.get("format") != FORMAT:
            raise ValueError(f"unknown format {config.get('format')!r}")
    except (OSError, ValueError) as e:
        raise InputError(f"{path / MARKER}: not a readable configuration ({e})") from None
    config.setdefault("fusion", "score")
    if config["fusion"] not in FUSIONS:
        raise InputError(f"{path / MARKER}: unknown fusion {config['fusion']!r} (known: {', '.join(FUSIONS)})")
    return config


def tower_model_class(fusion: str):
    module, _, cls = FUSIONS[fusion].partition(":")
    return getattr(importlib.import_module(module), cls)


def tower_model_class_of(path: str | os.PathLike):
    """The class that loads the saved directory ``path``."""
    return tower_model_class(_read_config(Path(os.path.expanduser(str(path))))["fusion"])


def load_tower_model(path: str | os.PathLike, **options) -> "TowerModel":
    """A saved tower model of any fusion kind."""
    return tower_model_class_of(path)(path, **options)


def sentence_parts(text) -> tuple[nn.Module, Any, str]:
    """``(transformer, tokenizer, pooling)`` inside a :class:`encoders.dense.SentenceEmbedder`: the Hugging Face
    model that reads word-piece embeddings, its tokenizer, and the sentence pooling (``mean`` or ``cls``)."""
    st = text.model
    first = st[0]
    auto = getattr(first, "auto_model", None) or getattr(first, "model", None)
    tokenizer = getattr(first, "tokenizer", None)
    embeddings = getattr(getattr(auto, "embeddings", None), "word_embeddings", None)
    if auto is None or tokenizer is None or embeddings is None:
        raise InputError(f"{text.name!r}: token-level fusion needs a BERT-like sentence-transformers model "
                         "(a Transformer module whose model has embeddings.word_embeddings)")
    pooling = "mean"
    for module in list(st)[1:]:
        mode = getattr(module, "pooling_mode", None)
        if mode is None and hasattr(module, "get_pooling_mode_str"):
            mode = module.get_pooling_mode_str()
        if mode is not None:
            pooling = str(mode)
            break
    if pooling not in ("mean", "cls"):
        raise InputError(f"{text.name!r}: sentence pooling {pooling!r} is not supported here (mean or cls)")
    return auto, tokenizer, pooling


def grid_tokens(tower, tokens: torch.Tensor, grid: int) -> torch.Tensor:
    """``[n, grid*grid + 1, width]``: a CNN's feature map averaged down to ``grid x grid`` cells, plus the
    average of the whole map; a ViT's tokens as they are."""
    if not tower.spatial:
        return tokens
    n, positions, width = tokens.shape
    side = int(round(positions ** 0.5))
    if side * side != positions:
        raise InputError(f"a {positions}-cell feature map is not square")
    fmap = tokens.transpose(1, 2).reshape(n, width, side, side)
    cells = nn.functional.adaptive_avg_pool2d(fmap, min(grid, side)).flatten(2).transpose(1, 2)
    return torch.cat([tokens.mean(dim=1, keepdim=True), cells], dim=1)


def _shape(x: Input) -> str:
    """``text``, ``image`` or ``image,text``; an instruction without text counts as text (M-BEIR style)."""
    return ",".join(p for p, on in (("image", x.image is not None), ("text", bool(x.text_with_instruction())))
                    if on)


class TowerModel:
    """The shared part of the tower embedders (see the module docstring). Not used on its own."""

    kind = "towers"
    normalized = True
    fusion = ""

    @property
    def name_prefix(self) -> str:
        """How a new, unsaved model's name starts."""
        return f"towers-{self.fusion}"

    # ------------------------------------------------------ construction
    def _setup(self, model, new_config: dict, *, device, batch_size: int, progress: bool, name: str | None,
               overrides: dict | None = None) -> None:
        if batch_size < 1:
            raise InputError(f"batch_size must be positive, got {batch_size}")
        from .dense import SentenceEmbedder

        self.device = pick_device(device)
        self.batch_size = batch_size
        self.progress = progress
        self.features = None
        if model is not None:
            path = Path(os.path.expanduser(str(model)))
            config = _read_config(path)
            if config["fusion"] != self.fusion:
                raise InputError(f"{path}: a {config['fusion']!r}-fusion model, not {self.fusion!r}; load it with "
                                 f"{tower_model_class(config['fusion']).__name__} or encoders.dense.load_embedder")
            config.update({k: v for k, v in (overrides or {}).items() if v is not None})
            self.source = str(path.resolve())
            self.name = name or str(model)
        else:
            config = {"format": FORMAT, "fusion": self.fusion, **new_config}
            self.source = None
            self.name = name or f"{self.name_prefix}:{config['image_tower']}+{config['text_model']}"
        self.config = config
        self.tower = build_timm_tower(config["image_tower"], config.get("pretrained")).to(self.device).eval()
        # no progress bars of its own: this model's loops show one
        self.text = SentenceEmbedder(config["text_model"], device=str(self.device), batch_size=batch_size)
        self.net = self._build()
        if model is not None:
            self._load_weights(Path(self.source))
        self.net.to(self.device).eval()
        import open_clip

        pp = self.tower.preprocess_config()
        self.preprocess = open_clip.image_transform(tuple(pp["size"]), is_train=False, mean=tuple(pp["mean"]),
                                                    std=tuple(pp["std"]), resize_mode=pp["resize_mode"],
                                                    interpolation=pp["interpolation"])

    # ---------------------------------------------- what a subclass says
    def _build(self) -> nn.Module:
        """The trainable module (with a ``logit_scale`` parameter); ``self.dim`` set."""
        raise NotImplementedError

    def _image_rep(self, tokens: torch.Tensor) -> torch.Tensor:
        """The frozen image part from the tower's ``[n, positions, width]`` tokens."""
        raise NotImplementedError

    def _text_items(self, texts: list[str]) -> list:
        """The frozen text part of each text (one item per text, kept between training steps)."""
        raise NotImplementedError

    def _collate(self, items: list):
        """A batch of text items, as ``_fuse`` takes it."""
        raise NotImplementedError

    def _fuse(self, texts, images: torch.Tensor | None) -> torch.Tensor:
        """``[n, dim]`` L2-normalised vectors of texts only (``images`` None), images only (``texts`` None) or
        image+text pairs; differentiable in the trainable module."""
        raise NotImplementedError

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
        """Read tower features of cached images from ``features`` instead of running the tower."""
        if features is not None and features.fingerprint != self.tower_fingerprint():
            raise InputError(f"{features.path}: these features come from another image tower; recompute them")
        self.features = features

    @torch.inference_mode()
    def _image_reps(self, images: Sequence[Any]) -> torch.Tensor:
        out = []
        for s in range(0, len(images), self.batch_size):
            part = images[s:s + self.batch_size]
            if self.features is not None and self.features.covers(part):
                tokens = self.features.lookup(part, self.device)
            else:
                tokens = self.tower.tokens(self.pixels(part))
            out.append(self._image_rep(tokens.float()))
        return torch.cat(out)

    # -------------------------------------------------------------- API
    def settings(self) -> dict:
        return {"fusion": self.fusion, "image_tower": self.config["image_tower"],
                "text_model": self.config["text_model"]}

    def encode_queries(self, inputs: Sequence[Any]) -> np.ndarray:
        return self._encode(inputs)

    def encode_documents(self, inputs: Sequence[Any]) -> np.ndarray:
        return self._encode(inputs)

    def _encode(self, inputs: Sequence[Any]) -> np.ndarray:
        from lsr.progress import tqdm

        items = as_inputs(inputs)
        out = np.zeros((len(items), self.dim), dtype=np.float32)
        groups: dict[str, list[int]] = {}
        for i, x in enumerate(items):
            groups.setdefault(_shape(x), []).append(i)
        show = self.progress and len(items) > 4 * self.batch_size
        with tqdm(total=len(items), desc=f"embed ({self.fusion} fusion)", unit="input", disable=not show) as bar:
            for rows in groups.values():
                for s in range(0, len(rows), self.batch_size):
                    part = [items[r] for r in rows[s:s + self.batch_size]]
                    with torch.inference_mode():
                        vec = self._embed(part, self._text_items, self._image_reps)
                    out[rows[s:s + self.batch_size]] = vec.float().cpu().numpy()
                    bar.update(len(part))
        return out

    def _embed(self, part: list[Input], text_items, image_reps) -> torch.Tensor:
        """Vectors of inputs of one modality, with the frozen parts from ``text_items`` and ``image_reps``."""
        texts = [x.text_with_instruction() for x in part]
        has_text, has_image = bool(texts[0]), part[0].image is not None
        t = self._collate(text_items(texts)) if has_text else None
        im = image_reps([x.image for x in part]) if has_image else None
        return self._fuse(t, im)

    # ---------------------------------------------------------- training
    def fit(self, texts: Sequence[str], images: Sequence[str], **options) -> dict:
        """Train on (caption, image) pairs: ``texts[i]`` describes ``images[i]``; captions of one image are not
        negatives of each other. Options as :meth:`fit_pairs`."""
        if len(texts) != len(images) or not texts:
            raise InputError(f"{len(texts)} texts for {len(images)} images; give one image per text")
        return self.fit_pairs([Input(text=t) for t in texts], [Input(image=str(p)) for p in images],
                              groups=[str(p) for p in images], **options)

    def fit_pairs(self, queries: Sequence[Any], documents: Sequence[Any], groups: Sequence[Any] | None = None, *,
                  steps: int = 2000, batch_size: int = 256, learning_rate: float = 1e-3, weight_decay: float = 1e-4,
                  seed: int = 0, cache_dir: str | os.PathLike | None = None) -> dict:
        """Train the trainable part on (query, document) pairs with a symmetric in-batch contrastive loss.

        Queries and documents are strings or :class:`lsr.inputs.Input` of any
        modality. A batch holds pairs of one shape (query modality -> document
        modality); each shape is drawn equally often. Pairs with the
        same ``groups`` value (default: the same document) are not negatives
        of each other. Tower features are computed once (cached in
        ``cache_dir``), frozen text parts once per distinct text. Returns the
        last logged step's loss.
        """
        from lsr.losses import in_batch_contrastive
        from lsr.progress import tqdm

        queries, documents = as_inputs(queries), as_inputs(documents)
        if len(queries) != len(documents) or not queries:
            raise InputError(f"{len(queries)} queries for {len(documents)} documents; give one document per query")
        if groups is None:
            groups = [(d.text_with_instruction(), str(d.image)) for d in documents]
        if len(groups) != len(queries):
            raise InputError(f"{len(groups)} groups for {len(queries)} pairs")
        group_id = {g: i for i, g in enumerate(dict.fromkeys(groups))}
        gid = torch.tensor([group_id[g] for g in groups])
        for side in (queries, documents):
            bad = next((x for x in side if x.image is not None and not isinstance(x.image, (str, os.PathLike))), None)
            if bad is not None:
                raise InputError("training images must be file paths (their tower features are cached), "
                                 f"got {type(bad.image).__name__}")
        # frozen image parts of every image, once
        unique = sorted({str(x.image) for side in (queries, documents) for x in side if x.image is not None})
        image_row = {p: i for i, p in enumerate(unique)}
        reps = None
        if unique:
            cache_dir = cache_dir or os.path.join(os.path.expanduser("~"), ".cache", "lsr", "features")
            feats = self.compute_features(unique, cache_dir, progress=self.progress)
            with torch.no_grad():  # not inference_mode: these tensors enter the training graph
                reps = torch.cat([self._image_rep(feats.lookup(unique[s:s + 256], self.device))
                                  for s in range(0, len(unique), 256)])
        # frozen text parts, computed the first time a text is met
        memo: dict[str, Any] = {}

        def text_items(texts: list[str]) -> list:
            new = [t for t in dict.fromkeys(texts) if t not in memo]
            if new:
                with torch.no_grad():
                    memo.update(zip(new, self._text_items(new)))
            return [memo[t] for t in texts]

        def image_reps(images: list) -> torch.Tensor:
            return reps[torch.tensor([image_row[str(p)] for p in images])]

        shapes: dict[tuple[str, str], list[int]] = {}
        for i, (q, d) in enumerate(zip(queries, documents)):
            shapes.setdefault((_shape(q), _shape(d)), []).append(i)
        buckets = [torch.tensor(rows) for rows in shapes.values()]
        gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        orders = [b[torch.randperm(len(b), generator=gen)] for b in buckets]
        pos = [0] * len(buckets)
        params = [p for p in self.net.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay)
        self.net.train()
        last: dict = {}
        with tqdm(total=steps, desc=f"train {self.fusion} fusion", unit="step", disable=not self.progress) as bar:
            for step in range(steps):
                k = int(torch.randint(len(buckets), (1,), generator=gen)) if len(buckets) > 1 else 0
                b = min(batch_size, len(buckets[k]))
                if pos[k] + b > len(buckets[k]):
                    orders[k], pos[k] = buckets[k][torch.randperm(len(buckets[k]), generator=gen)], 0
                idx = orders[k][pos[k]:pos[k] + b]
                pos[k] += b
                q = self._embed([queries[i] for i in idx], text_items, image_reps)
                d = self._embed([documents[i] for i in idx], text_items, image_reps)
                scale = self.net.logit_scale.clamp(max=np.log(100.0)).exp()
                g = gid[idx]
                parts = in_batch_contrastive(q * scale, d, 1.0, g[:, None] == g[None, :])
                opt.zero_grad(set_to_none=True)
                parts["contrastive"].backward()
                lr = learning_rate * min(1.0, (step + 1) / max(1, steps // 20)) * max(0.0, 1 - step / steps)
                for grp in opt.param_groups:
                    grp["lr"] = lr
                opt.step()
                bar.update(1)
                if (step + 1) % 50 == 0 or step + 1 == steps:
                    last = {"step": step + 1, "loss": float(parts["contrastive"].detach()),
                            "temperature": float(1 / scale.detach())}
                    bar.set_postfix(loss=f"{last['loss']:.3f}")
        self.net.eval()
        return last

    # ------------------------------------------------------------ saving
    def save(self, path: str | os.PathLike) -> Path:
        from safetensors.torch import save_model

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tmp = path / (WEIGHTS_FILE + ".tmp")
        save_model(self.net, str(tmp))
        os.replace(tmp, path / WEIGHTS_FILE)
        (path / MARKER).write_text(json.dumps(self._config_to_save(), indent=2) + "\n", encoding="utf-8")
        return path

    def _config_to_save(self) -> dict:
        return dict(self.config)

    def _load_weights(self, path: Path) -> None:
        from safetensors.torch import load_model

        weights = path / WEIGHTS_FILE
        if not weights.is_file():
            raise InputError(f"{weights}: file not found; the directory is incomplete")
        try:
            load_model(self.net, str(weights), strict=True)
        except Exception as e:  # noqa: BLE001 - safetensors header / shape errors
            raise InputError(f"{weights}: cannot load the trained part ({first_line(e, 200)})") from None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, dim={self.dim}, device={self.device})"


class GridTowerModel(TowerModel):
    """A tower model that reads an image as grid cells (:func:`grid_tokens`, ``self.grid`` per side)."""

    grid = 7

    def settings(self) -> dict:
        return {**super().settings(), "visual_grid": self.grid}

    def _image_rep(self, tokens: torch.Tensor) -> torch.Tensor:
        return grid_tokens(self.tower, tokens, self.grid)


__all__ = ["FUSIONS", "MARKER", "GridTowerModel", "TowerModel", "grid_tokens", "is_tower_embedder_dir",
           "load_tower_model", "sentence_parts", "tower_model_class", "tower_model_class_of"]
