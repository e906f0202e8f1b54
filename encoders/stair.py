"""STAIR: images, texts and image+text pairs as sparse vectors over one text vocabulary.

The image side is a CLIP image tower from open_clip followed by a token
prediction head shaped like BERT's masked-LM head (dense -> GELU -> LayerNorm
-> projection to the vocabulary). Its logits at every image token position are
max-pooled and saturated, ``log(1 + relu(max_t logits))``, giving one weight
per word piece. The text side is the SPLADE encoder (a masked LM). An input
with both an image and text gets the element-wise max of the two vectors.

Every vector lives in the text model's vocabulary, so images, texts and mixed
inputs go through the same quantization, export and Lucene index.

A saved model is a directory::

    DIR/lsr-stair.json      kind marker and configuration (open_clip config, preprocessing, head, flags)
    DIR/model.safetensors   all weights: ``visual.*``, ``head.*``, ``text.*``
    DIR/text/               the text model's Hugging Face config and tokenizer files

and :func:`encoders.registry.resolve` reports such a directory as kind ``"stair"``.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from lsr.progress import tqdm

from lsr.errors import EnvironmentProblem, InputError, first_line
from lsr.inputs import Input, as_inputs, load_image
from lsr.pooling import saturate
from lsr.meta import read_meta, write_meta
from lsr.sparse import SparseBatch, max_fuse

from .base import EncodeAll, EncodeStats, load_masked_lm, pick_device, pick_dtype
from .registry import STAIR_MARKER, resolve
from .splade import SpladeEncoder
from .open_clip_models import _random_init, open_clip_module, register_image_config  # noqa: F401
from .stair_model import (TINY_IMAGE_CONFIGS, StairModel, TokenHead, _mlm_head_parts, _plain,  # noqa: F401
                          _probe_width, build_image_tower)
from .towers import TimmTower

FORMAT = "lsr-stair/1"
WEIGHTS_FILE = "model.safetensors"
TEXT_DIR = "text"

# ----------------------------------------------------------------- encoder
class StairEncoder(EncodeAll):
    """Images, texts and image+text inputs to sparse vectors over the text vocabulary.

    ``StairEncoder(path)`` loads a saved STAIR directory (or a registered
    alias of kind ``stair``). ``StairEncoder(image_model=..., pretrained=...,
    text_model=...)`` builds a new model: an open_clip image tower (random
    init, an open_clip tag or a local checkpoint file), a token-prediction
    head and the SPLADE text model. The head starts random by default;
    ``head_init="mlm"`` copies the text model's MLM head where shapes allow
    (on a random tower that copy gives strongly negative logits, and every
    image vector was empty after a few training steps in our runs, so it is
    not the default).

    ``encode_documents`` / ``encode_queries`` take :class:`lsr.inputs.Input`
    objects or strings and return a :class:`~lsr.sparse.SparseBatch`. Text is
    encoded by :class:`~encoders.splade.SpladeEncoder` (after the instruction
    is prepended, when one is given), images by the image side, and inputs
    with both get the element-wise max of the two vectors.

    ``text_expansion=False`` restricts text vectors to the word pieces that
    occur in the text (what stage 1 of STAIR training optimises).
    ``global_token`` adds the average of a CNN tower's feature map as one more
    position for the head (default: on for timm CNN towers, which have no class
    token). ``head_vocab`` (token ids) restricts the image head to those word pieces,
    e.g. the ones that occur in the training captions: the projection, the
    costliest part of the head, shrinks accordingly.

    On a frozen tower, :meth:`use_features` reads tower features computed once
    (:class:`encoders.features.TowerFeatures`) instead of running the tower.
    """

    kind = "stair"
    takes_images = True

    def __init__(
        self,
        model: str | os.PathLike | None = None,
        *,
        image_model: str = "ViT-B-16",
        pretrained: str | None = None,
        image_config: dict | None = None,
        text_model: str = "splade-tiny",
        head_init: str = "random",
        head_vocab: Sequence[int] | None = None,
        global_token: bool | None = None,
        text_expansion: bool = True,
        device: str | None = None,
        dtype: str | torch.dtype | None = None,
        max_length: int | None = None,
        batch_size: int = 32,
        progress: bool = False,
    ):
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        if batch_size < 1:
            raise InputError(f"batch_size must be positive, got {batch_size}")
        if max_length is not None and max_length < 2:
            raise InputError(f"max_length must be at least 2, got {max_length}")
        self.batch_size = batch_size
        self.progress = progress
        if model is not None:
            loc = resolve(str(model), default_kind="stair")
            if loc.kind != "stair":
                raise InputError(f"model {model!r} is a {loc.kind} model, not a STAIR directory "
                                 f"(a STAIR directory has {STAIR_MARKER}); for a new model pass image_model=...")
            self._load(Path(loc.source))
            self.name = str(model)
            if max_length is not None:
                self.max_length = max_length
        else:
            self._create(image_model, pretrained, image_config, text_model, head_init, head_vocab, global_token)
            self.name = f"stair:{image_model}+{text_model}"
            self.text_expansion = bool(text_expansion)
            self.max_length = max_length or 256
        self.model.to(device=self.device, dtype=self.dtype).eval()
        self._setup()
        self.last_stats = EncodeStats()

    # ------------------------------------------------------------ building
    def _create(self, image_model, pretrained, image_config, text_model, head_init, head_vocab=None,
                global_token=None) -> None:
        visual, cfg, preprocess = build_image_tower(image_model, pretrained, image_config)
        tokenizer, text = load_masked_lm(text_model, torch.float32, what="text model")
        self.tokenizer = tokenizer
        width = _probe_width(visual, preprocess)
        dense, norm, decoder = _mlm_head_parts(text)
        hidden = decoder.weight.shape[1]
        eps = getattr(norm, "eps", 1e-12) if norm is not None else 1e-12
        head = TokenHead(width, hidden, decoder.weight.shape[0], eps, head_vocab)
        if head_init == "mlm":
            self.head_copied = head.init_from_mlm(text)
        elif head_init == "random":
            self.head_copied = []
        else:
            raise InputError(f"head_init must be 'mlm' or 'random', not {head_init!r}")
        self.model = StairModel(visual, head, text)
        if global_token is None:
            global_token = isinstance(visual, TimmTower) and visual.spatial
        self.model.global_token = bool(global_token)
        self.config = {
            "format": FORMAT,
            "image_model": image_model,
            "image_config": _plain(cfg),
            "pretrained": pretrained,
            "preprocess": preprocess,
            "image_width": width,
            "head_hidden": hidden,
            "head_eps": eps,
            "head_vocab": None if head.out_ids is None else head.out_ids.tolist(),
            "global_token": bool(global_token),
            "text_model": text_model,
        }

    def _load(self, path: Path) -> None:
        from safetensors.torch import load_model
        from transformers import AutoConfig, AutoModelForMaskedLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        marker = path / STAIR_MARKER
        try:
            config = read_meta(marker, FORMAT)
            image_model = config["image_model"]
        except (OSError, ValueError, KeyError, UnicodeDecodeError) as e:
            raise InputError(f"{marker}: not a readable STAIR configuration ({e})") from None
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
                         float(config.get("head_eps", 1e-12)), config.get("head_vocab"))
        self.model = StairModel(visual, head, text)
        self.model.global_token = bool(config.get("global_token", False))
        weights = path / WEIGHTS_FILE
        if not weights.is_file():
            raise InputError(f"{weights}: file not found; the STAIR directory is incomplete")
        try:
            load_model(self.model, str(weights), strict=True)
        except Exception as e:  # noqa: BLE001 - safetensors header / shape errors
            raise InputError(f"{weights}: cannot load the weights ({first_line(e, 300)})") from None
        self.tokenizer = tokenizer
        self.config = config
        self.text_expansion = bool(config.get("text_expansion", True))
        self.max_length = int(config.get("max_length", 256))
        self.head_copied = []

    def _setup(self) -> None:
        open_clip = open_clip_module()
        pp = self.config["preprocess"]
        size = pp.get("size", 224)
        self.image_size = tuple(size) if isinstance(size, (list, tuple)) else (int(size), int(size))
        self.preprocess = open_clip.image_transform(
            self.image_size, is_train=False, mean=tuple(pp.get("mean") or ()) or None,
            std=tuple(pp.get("std") or ()) or None, resize_mode=pp.get("resize_mode"),
            interpolation=pp.get("interpolation"), fill_color=pp.get("fill_color", 0))
        self._mean = torch.tensor(pp.get("mean") or open_clip.OPENAI_DATASET_MEAN, dtype=torch.float32).view(3, 1, 1)
        self._std = torch.tensor(pp.get("std") or open_clip.OPENAI_DATASET_STD, dtype=torch.float32).view(3, 1, 1)
        self.text_encoder = SpladeEncoder(self.name, hf_model=self.model.text, tokenizer=self.tokenizer,
                                          device=str(self.device), dtype=self.dtype, max_length=self.max_length,
                                          batch_size=self.batch_size)
        self.max_length = self.text_encoder.max_length
        self.vocab = self.text_encoder.vocab
        self._excluded = torch.tensor(sorted(self.vocab.special_ids), dtype=torch.long, device=self.device)
        self.model.eval()

    def to(self, device: str | torch.device | None = None, dtype: str | torch.dtype | None = None) -> "StairEncoder":
        """Move (and cast) the model; returns ``self``."""
        if device is not None:
            self.device = pick_device(str(device))
        if dtype is not None:
            self.dtype = pick_dtype(dtype, self.device)
        self.model.to(device=self.device, dtype=self.dtype)
        self._setup()
        return self

    # ---------------------------------------------------------------- saving
    def save(self, path: str | os.PathLike, extra: dict | None = None) -> Path:
        """Write the model directory (weights in safetensors, configuration in JSON)."""
        from safetensors.torch import save_model

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        config = dict(self.config, text_expansion=self.text_expansion, max_length=self.max_length,
                      vocab_size=len(self.vocab), vocab_fingerprint=self.vocab.fingerprint, **(extra or {}))
        (path / TEXT_DIR).mkdir(exist_ok=True)
        self.model.text.config.save_pretrained(str(path / TEXT_DIR))
        self.tokenizer.save_pretrained(str(path / TEXT_DIR))
        tmp = path / (WEIGHTS_FILE + ".tmp")
        save_model(self.model, str(tmp))
        os.replace(tmp, path / WEIGHTS_FILE)
        write_meta(path / STAIR_MARKER, config)
        return path

    def load_weights(self, path: str | os.PathLike) -> None:
        """Load the weights of a saved directory with the same architecture into this model."""
        from safetensors.torch import load_model

        weights = Path(path) / WEIGHTS_FILE
        try:
            load_model(self.model, str(weights), strict=True, device=str(self.device))
        except FileNotFoundError:
            raise InputError(f"{weights}: file not found") from None
        except Exception as e:  # noqa: BLE001
            raise InputError(f"{weights}: does not fit this model ({first_line(e, 300)})") from None

    # ------------------------------------------------------------ parameters
    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """``{"image": tower + head parameters, "text": text model parameters}``."""
        return {"image": list(self.model.visual.parameters()) + list(self.model.head.parameters()),
                "text": list(self.model.text.parameters())}

    def image_modules(self) -> list[nn.Module]:
        return [self.model.visual, self.model.head]

    def text_modules(self) -> list[nn.Module]:
        return [self.model.text]

    # ------------------------------------------------------------------ API
    @staticmethod
    def _check_inputs(inputs: Sequence[Input | str]) -> list:
        return _inputs_or_empty(inputs)

    def iter_encode(self, inputs: Sequence[Input | str], ids: Sequence[str] | None = None, chunk_size: int = 8192,
                    stats: EncodeStats | None = None) -> Iterator[SparseBatch]:
        """Encode in chunks of ``chunk_size`` inputs, yielding one batch per chunk in input order.

        An empty or whitespace-only string gives an empty vector (as in
        :class:`~encoders.splade.SpladeEncoder`).
        """
        inputs = _inputs_or_empty(inputs)
        if ids is not None and len(ids) != len(inputs):
            raise InputError(f"{len(ids)} ids for {len(inputs)} inputs")
        stats = stats if stats is not None else EncodeStats()
        bar = tqdm(total=len(inputs), unit="input", desc="encode", disable=not self.progress)
        try:
            for start in range(0, len(inputs), chunk_size):
                chunk = inputs[start:start + chunk_size]
                chunk_ids = tuple(ids[start:start + chunk_size]) if ids is not None else None
                yield self._encode_chunk(chunk, chunk_ids, stats)
                bar.update(len(chunk))
        finally:
            bar.close()

    def _encode_chunk(self, inputs: list[Input | None], ids, stats: EncodeStats) -> SparseBatch:
        n = len(inputs)
        stats.inputs += n
        texts = [x.text_with_instruction() if x is not None else "" for x in inputs]
        text_part = None
        if any(texts):
            text_stats = EncodeStats()
            text_part = SparseBatch.concat(list(self.text_encoder.iter_encode(texts, None, stats=text_stats)))
            stats.truncated += text_stats.truncated
            if not self.text_expansion:
                text_part = self._restrict_to_input_tokens(text_part, texts)
        rows = [i for i, x in enumerate(inputs) if x is not None and x.image is not None]
        image_part = None
        if rows:
            batches = [[inputs[i].image for i in rows[s:s + self.batch_size]]
                       for s in range(0, len(rows), self.batch_size)]
            got = []
            features = getattr(self, "features", None)
            if features is not None and features.covers([inputs[i].image for i in rows]):
                got = self._cached_image_batches([inputs[i].image for i in rows])
                batches = []
            # the next batch is loaded and stacked on the CPU while the model runs on the current one, and
            # a batch's vectors are copied to the host only after the next batch is launched, so an
            # accelerator always has work queued while the host waits for a result
            if batches:
                with ThreadPoolExecutor(max_workers=1) as ahead:
                    job = ahead.submit(self._prepare, batches[0])
                    in_flight = None
                    for k in range(len(batches)):
                        prepared = job.result()
                        if k + 1 < len(batches):
                            job = ahead.submit(self._prepare, batches[k + 1])
                        launched = self._launch_image_batch(prepared)
                        if in_flight is not None:
                            got.append(SparseBatch.from_torch(in_flight, self.vocab))
                        in_flight = launched
                    got.append(SparseBatch.from_torch(in_flight, self.vocab))
            image_part = _scatter_rows(SparseBatch.concat(got), np.asarray(rows), n)
        parts = [p for p in (text_part, image_part) if p is not None]
        if not parts:
            out = SparseBatch.empty(self.vocab, n)
        else:
            out = parts[0] if len(parts) == 1 else max_fuse(*parts)
        stats.empty += int((out.nnz == 0).sum())
        return out.with_ids(ids) if ids is not None else SparseBatch(out.indptr, out.indices, out.values, out.vocab)

    def _restrict_to_input_tokens(self, batch: SparseBatch, texts: list[str]) -> SparseBatch:
        token_ids, _ = self.text_encoder.tokenize(texts)
        keep = np.zeros(batch.nnz_total, dtype=bool)
        for i, toks in enumerate(token_ids):
            s, e = batch.indptr[i], batch.indptr[i + 1]
            if e > s and toks:
                keep[s:e] = np.isin(batch.indices[s:e], np.asarray(toks))
        return batch._replace_values(keep)

    @torch.inference_mode()
    def _cached_image_batches(self, images: list) -> list[SparseBatch]:
        got = []
        for s in range(0, len(images), self.batch_size):
            pooled = saturate(self._image_pooled_logits(images[s:s + self.batch_size]), self._excluded)
            got.append(SparseBatch.from_torch(pooled, self.vocab))
        return got

    @torch.inference_mode()
    def _launch_image_batch(self, prepared: "_Prepared") -> torch.Tensor:
        """``[batch, vocab]`` weights of prepared images, on the device (nothing waits for it)."""
        pixels = self._to_device(prepared, self.device).to(self.dtype)
        return saturate(self.model.image_pooled_logits(pixels), self._excluded)

    # ------------------------------------------------------- preprocessing
    def pixels(self, images: Sequence[Any], device: str | torch.device | None = None) -> torch.Tensor:
        """Model-ready ``[n, 3, H, W]`` float32 pixels on ``device`` (default CPU) for paths, PIL images or tensors.

        ``[3, H, W]`` tensors already at the model's image size (uint8, or
        float in [0, 1]) are only normalised, all together on ``device``;
        anything else is loaded with :func:`lsr.inputs.load_image` (errors
        name the file) and goes through open_clip's resize, crop and
        normalisation on the CPU, several images at a time in threads.
        """
        device = torch.device(device) if device is not None else torch.device("cpu")
        return self._to_device(self._prepare(images, pin=device.type == "cuda"), device)

    def _prepare(self, images: Sequence[Any], pin: bool | None = None) -> "_Prepared":
        """The CPU half of :meth:`pixels`: stacked raw tensors and decoded, transformed images."""
        pin = self.device.type == "cuda" if pin is None else pin
        n = len(images)
        fast = [i for i, im in enumerate(images) if isinstance(im, torch.Tensor) and im.dim() == 3
                and im.shape[0] == 3 and tuple(im.shape[1:]) == self.image_size]
        raw = None
        if fast:
            raw = torch.stack([images[i].detach().cpu() for i in fast])
            if raw.dtype != torch.uint8:
                raw = raw.float()
                if not bool(torch.isfinite(raw).all()) or raw.min() < 0 or raw.max() > 1:
                    raise InputError("an image tensor must hold uint8 values or floats in [0, 1]")
            if pin:
                raw = raw.pin_memory()
        fast_set = set(fast)
        slow = [i for i in range(n) if i not in fast_set]
        decoded = None
        if slow:
            load = lambda im: self.preprocess(load_image(im))  # noqa: E731
            if len(slow) >= 8:
                decoded = torch.stack(list(_decode_pool().map(load, [images[i] for i in slow])))
            else:
                decoded = torch.stack([load(images[i]) for i in slow])
            if pin:
                decoded = decoded.pin_memory()
        return _Prepared(n, fast, raw, slow, decoded)

    def _to_device(self, prepared: "_Prepared", device: torch.device) -> torch.Tensor:
        """The GPU half of :meth:`pixels`: copy, scale and normalise."""
        parts = []
        if prepared.raw is not None:
            x = prepared.raw.to(device, non_blocking=True)
            x = x.float() / 255.0 if x.dtype == torch.uint8 else x
            parts.append((prepared.fast, (x - self._mean.to(device)) / self._std.to(device)))
        if prepared.decoded is not None:
            parts.append((prepared.slow, prepared.decoded.to(device, non_blocking=True)))
        if len(parts) == 1:
            return parts[0][1]
        out = torch.empty(prepared.n, 3, *self.image_size, device=device)
        for idx, x in parts:
            out[torch.tensor(idx, device=device)] = x
        return out

    # ----------------------------------------------------------- training
    def forward_inputs(self, inputs: Sequence[Input], mask_text_to_input: bool = False) -> torch.Tensor:
        """Dense ``[n, |V|]`` float32 vectors with autograd, for training.

        Text and image parts are max-pooled over positions without
        materialising every position's logits (:meth:`StairModel.text_pooled_logits`,
        :func:`max_projection`); mixed inputs take the element-wise max.
        ``mask_text_to_input`` zeroes every text weight whose token does not
        occur in that text (STAIR stage 1).
        """
        inputs = as_inputs(inputs)
        n, vsize = len(inputs), len(self.vocab)
        text_rows = [i for i, x in enumerate(inputs) if x.text_with_instruction()]
        image_rows = [i for i, x in enumerate(inputs) if x.image is not None]
        parts = []
        if text_rows:
            enc = self.tokenizer([inputs[i].text_with_instruction() for i in text_rows], padding=True,
                                 truncation=True, max_length=self.max_length, return_tensors="pt")
            ids = enc["input_ids"].to(self.device)
            mask = enc["attention_mask"].to(self.device)
            vec = saturate(self.model.text_pooled_logits(ids, mask, mask_text_to_input), self._excluded)
            if mask_text_to_input:
                present = torch.zeros_like(vec).scatter_(1, ids * mask, 1.0)
                vec = vec * present
            parts.append(_scatter_dense(vec, text_rows, n))
        if image_rows:
            vec = saturate(self._image_pooled_logits([inputs[i].image for i in image_rows]), self._excluded)
            parts.append(_scatter_dense(vec, image_rows, n))
        if not parts:
            return torch.zeros(n, vsize, device=self.device)
        return parts[0] if len(parts) == 1 else torch.maximum(parts[0], parts[1])

    # ------------------------------------------------------ frozen tower
    def tower_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """The image tower's token features ``[batch, positions, width]`` (before the token head)."""
        return self.model.image_tokens(pixels)

    def tower_fingerprint(self) -> str:
        from .towers import tower_fingerprint

        return tower_fingerprint(self.model.visual, self.config.get("preprocess"))

    def tower_modules(self) -> list[nn.Module]:
        return [self.model.visual]

    def compute_features(self, images: Sequence[str], cache_dir: str | os.PathLike, progress: bool = True):
        """Tower features of ``images``, from ``cache_dir`` or computed once and saved there."""
        from .features import TowerFeatures

        return TowerFeatures.compute(self, images, cache_dir, batch_size=self.batch_size, progress=progress)

    def use_features(self, features) -> None:
        """Read tower features of cached images from ``features`` (:class:`encoders.features.TowerFeatures`)
        instead of running the tower; ``None`` stops. Only valid while the tower's weights stay as they are."""
        if features is not None and features.fingerprint != self.tower_fingerprint():
            raise InputError(f"{features.path}: these features come from another image tower; recompute them")
        self.features = features

    def _image_pooled_logits(self, images: Sequence[Any]) -> torch.Tensor:
        """Max over positions of the token logits, ``[n, vocab]``; tower features from the cache when it has them."""
        features = getattr(self, "features", None)
        tower_frozen = not any(p.requires_grad and torch.is_grad_enabled() for p in self.model.visual.parameters())
        if features is not None and tower_frozen and features.covers(images):
            tokens = features.lookup(images, self.device).to(self.dtype)
            return self.model.head.pooled(self.model.head.transform(self.model.head_positions(tokens)))
        return self.model.image_pooled_logits(self.pixels(images, self.device).to(self.dtype))

    def __repr__(self) -> str:
        return f"StairEncoder({self.name!r}, device={self.device}, dtype={self.dtype})"


@dataclass
class _Prepared:
    n: int
    fast: list[int]
    raw: torch.Tensor | None
    slow: list[int]
    decoded: torch.Tensor | None


_DECODE_POOL: ThreadPoolExecutor | None = None


def _decode_pool() -> ThreadPoolExecutor:
    """Threads that decode and resize images (PIL releases the GIL while it works)."""
    global _DECODE_POOL
    if _DECODE_POOL is None:
        _DECODE_POOL = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1), thread_name_prefix="lsr-image")
    return _DECODE_POOL


def _inputs_or_empty(items) -> list[Input | None]:
    """Like :func:`lsr.inputs.as_inputs`, but an empty or blank string becomes ``None`` (an empty vector)."""
    if isinstance(items, (str, Input)):
        return as_inputs(items)  # raises: a single input instead of a list
    items = list(items)
    blank = [isinstance(x, str) and not x.strip() for x in items]
    if not any(blank):
        return as_inputs(items)
    kept = as_inputs([x for x, b in zip(items, blank) if not b])
    it = iter(kept)
    return [None if b else next(it) for b in blank]


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


def _scatter_dense(vec: torch.Tensor, rows: list[int], n: int) -> torch.Tensor:
    if len(rows) == n:
        return vec
    idx = torch.tensor(rows, dtype=torch.long, device=vec.device)
    return torch.zeros(n, vec.shape[1], dtype=vec.dtype, device=vec.device).index_copy(0, idx, vec)


def _scatter_rows(batch: SparseBatch, rows: np.ndarray, n: int) -> SparseBatch:
    import scipy.sparse as sp

    m = batch.to_scipy().tocoo()
    full = sp.csr_matrix((m.data, (rows[m.row], m.col)), shape=(n, len(batch.vocab)))
    return SparseBatch.from_scipy(full, batch.vocab)


def encode_inputs_to_dir(encoder: StairEncoder, inputs: Sequence[Input | str], ids: Sequence[str],
                         vecdir: str | os.PathLike, quantizer=None, role: str = "document",
                         contents: Sequence[str] | None = None, overwrite: bool = False, chunk_size: int = 8192):
    """Encode any mix of texts, images and image+text inputs into a vector directory.

    ``contents`` is stored with each vector (default: the text, or the image
    path for image-only inputs). Returns the :class:`~lsr.vectors.VectorDirInfo`.
    """
    from .pipeline import encode_items_to_dir

    inputs = as_inputs(inputs)
    if contents is None:
        contents = [x.text if x.has_text else (str(x.image) if isinstance(x.image, (str, os.PathLike)) else "")
                    for x in inputs]
    return encode_items_to_dir(encoder, inputs, ids, vecdir, quantizer, role=role, overwrite=overwrite,
                               contents=contents, chunk_size=chunk_size,
                               writer="inline", extra={"kind": "stair"})
