"""STAIR: images, texts and image+text pairs as sparse vectors over one text vocabulary.

The image side is a CLIP image tower from open_clip followed by a token
prediction head shaped like BERT's masked-LM head (dense -> GELU -> LayerNorm
-> projection to the vocabulary). Its logits at every image token position are
max-pooled and saturated, ``log(1 + relu(max_t logits))``, giving one weight
per word piece. The text side is the SPLADE encoder (a masked LM). An input
with both an image and text gets the element-wise max of the two vectors.

Every vector lives in the text model's vocabulary, so images, texts and mixed
inputs go through the same quantization, export and Lucene index.

This module runs a model: :meth:`StairEncoder.load` opens a saved model
directory and :meth:`StairEncoder.create` builds a new model from towers
(:mod:`encoders.stair_config` holds both, and the directory's layout;
:mod:`encoders.stair_model` the trainable modules).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from lsr.progress import tqdm

from lsr.errors import InputError
from lsr.inputs import Input, as_inputs
from lsr.pooling import saturate
from lsr.sparse import SparseBatch, max_fuse

from .base import EncodeAll, EncodeStats, pick_device, pick_dtype
from .open_clip_models import register_image_config  # noqa: F401 - re-exported
from .pixels import Pixels, PreparedImages
from .registry import STAIR_MARKER, resolve
from .splade import SpladeEncoder
from .stair_config import caption_vocabulary  # noqa: F401 - re-exported
from .stair_config import load_weights_into, new_model, read_model_dir, write_model_dir
from .stair_model import TINY_IMAGE_CONFIGS, StairModel, build_image_tower  # noqa: F401 - re-exported

#: The options of :meth:`StairEncoder.load`: how a model runs, not what it is.
RUNTIME_OPTIONS = ("device", "dtype", "max_length", "batch_size", "progress")
#: What :meth:`StairEncoder.create` takes besides the runtime options: what a new model is.
MODEL_OPTIONS = ("image_model", "pretrained", "image_config", "text_model", "head_init", "head_vocab",
                 "image_positions", "head_hidden", "head_dropout", "text_expansion")


# ----------------------------------------------------------------- encoder
class StairEncoder(EncodeAll):
    """Images, texts and image+text inputs to sparse vectors over the text vocabulary.

    Open a saved model with :meth:`load`, build a new one with :meth:`create`.

    ``encode_documents`` / ``encode_queries`` take :class:`lsr.inputs.Input`
    objects or strings and return a :class:`~lsr.sparse.SparseBatch`. Text is
    encoded by :class:`~encoders.splade.SpladeEncoder` (after the instruction
    is prepended, when one is given), images by the image side, and inputs
    with both get the element-wise max of the two vectors.

    ``text_expansion=False`` restricts text vectors to the word pieces that
    occur in the text (what stage 1 of STAIR training optimises). On a frozen
    tower, :meth:`use_features` reads tower features computed once
    (:class:`encoders.features.TowerFeatures`) instead of running the tower.
    """

    kind = "stair"
    takes_images = True

    def __init__(self, model: StairModel, tokenizer=None, config: dict | None = None, *, name: str = "stair",
                 text_expansion: bool = True, device: str | None = None, dtype: str | torch.dtype | None = None,
                 max_length: int | None = None, batch_size: int = 32, progress: bool = False,
                 head_copied: Sequence[str] = ()):
        """Run built modules (with their tokenizer and configuration); :meth:`load` and :meth:`create` make them."""
        if not isinstance(model, StairModel) or tokenizer is None or config is None:
            raise InputError(f"StairEncoder({model!r}, ...) takes built modules: open a saved model with "
                             "StairEncoder.load(path), or build a new one with StairEncoder.create(image_model=..., "
                             "text_model=...)")
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        if batch_size < 1:
            raise InputError(f"batch_size must be positive, got {batch_size}")
        if max_length is not None and max_length < 2:
            raise InputError(f"max_length must be at least 2, got {max_length}")
        self.model, self.tokenizer, self.config = model, tokenizer, config
        self.name = name
        self.text_expansion = bool(text_expansion)
        self.max_length = max_length or 256
        self.batch_size = batch_size
        self.progress = progress
        self.head_copied = list(head_copied)
        self.model.to(device=self.device, dtype=self.dtype).eval()
        self._setup()
        self.last_stats = EncodeStats()

    @classmethod
    def load(cls, path: str | os.PathLike, **runtime_options) -> "StairEncoder":
        """The model saved in directory ``path`` (or a registered alias of kind ``stair``).

        ``runtime_options`` are ``device``, ``dtype``, ``max_length`` (default:
        the saved one; ``None`` counts as not given), ``batch_size`` and
        ``progress``. What the model is (its towers, head and
        ``text_expansion``) is recorded in the directory: those arguments of
        :meth:`create` are refused here.
        """
        _check_options("StairEncoder.load", runtime_options, RUNTIME_OPTIONS,
                       f"a saved model's architecture and text_expansion are recorded in its {STAIR_MARKER} (set "
                       "encoder.text_expansion after loading to change it); StairEncoder.create(...) builds a new "
                       "model")
        loc = resolve(str(path), default_kind="stair")
        if loc.kind != "stair":
            raise InputError(f"model {str(path)!r} is a {loc.kind} model, not a STAIR directory (a STAIR directory "
                             f"has {STAIR_MARKER}); for a new model use StairEncoder.create(image_model=...)")
        model, tokenizer, config = read_model_dir(loc.source)
        options = {k: v for k, v in runtime_options.items() if v is not None}
        options.setdefault("max_length", int(config.get("max_length", 256)))
        return cls(model, tokenizer, config, name=str(path), text_expansion=bool(config.get("text_expansion", True)),
                   **options)

    @classmethod
    def create(cls, *, image_model: str = "ViT-B-16", pretrained: str | None = None, image_config: dict | None = None,
               text_model: str = "splade-tiny", head_init: str = "random", head_vocab: Sequence[int] | None = None,
               image_positions: str | None = None, head_hidden: int | None = None, head_dropout: float = 0.0,
               text_expansion: bool = True, **runtime_options) -> "StairEncoder":
        """A new model: an image tower, a token-prediction head and the SPLADE text model ``text_model``.

        ``image_model``: an open_clip model name, ``timm:NAME`` or a tower alias
        (see :func:`encoders.stair_model.build_image_tower`), with weights from
        ``pretrained`` (``None``: random init, an open_clip tag or a local
        checkpoint file); ``image_config`` registers a custom open_clip config
        under that name first. The head starts random by default;
        ``head_init="mlm"`` copies the text model's MLM head where shapes allow
        (on a random tower that copy gives strongly negative logits, and every
        image vector was empty after a few training steps in our runs, so it is
        not the default). ``head_vocab`` (token ids) restricts the head to those
        word pieces, e.g. the ones that occur in the training captions
        (:func:`caption_vocabulary`): the projection, the costliest part of the
        head, shrinks accordingly. ``image_positions`` is what the head reads
        from the tower (:meth:`~encoders.stair_model.StairModel.head_positions`):
        ``"tokens"`` (the default for ViT towers), ``"tokens+mean"`` (the
        default for timm CNN towers, which have no class token) or ``"mean"``.
        ``head_hidden`` is the width of the head's hidden layer (default: the
        text model's, which ``head_init="mlm"`` needs). ``head_dropout`` drops
        tower features while the head trains (saved with the model).

        ``runtime_options`` are those of :meth:`load` (``max_length`` defaults to 256).
        """
        _check_options("StairEncoder.create", runtime_options, MODEL_OPTIONS + RUNTIME_OPTIONS,
                       "a saved model is opened with StairEncoder.load(path)")
        model, tokenizer, config, copied = new_model(image_model, pretrained, image_config, text_model, head_init,
                                                     head_vocab, image_positions, head_hidden, head_dropout)
        options = {k: v for k, v in runtime_options.items() if v is not None}
        return cls(model, tokenizer, config, name=f"stair:{image_model}+{text_model}", text_expansion=text_expansion,
                   head_copied=copied, **options)

    def _setup(self) -> None:
        self._pixels = Pixels(self.config["preprocess"])
        self.image_size, self.preprocess = self._pixels.image_size, self._pixels.transform
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
        """Write the model directory (weights in safetensors, configuration in JSON), to open with :meth:`load`."""
        config = dict(self.config, text_expansion=self.text_expansion, max_length=self.max_length,
                      vocab_size=len(self.vocab), vocab_fingerprint=self.vocab.fingerprint, **(extra or {}))
        return write_model_dir(path, self.model, self.tokenizer, config)

    def load_weights(self, path: str | os.PathLike) -> None:
        """Load the weights of a saved directory with the same architecture into this model."""
        load_weights_into(self.model, path, self.device)

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
    def _launch_image_batch(self, prepared: PreparedImages) -> torch.Tensor:
        """``[batch, vocab]`` weights of prepared images, on the device (nothing waits for it)."""
        pixels = self._pixels.to_device(prepared, self.device).to(self.dtype)
        return saturate(self.model.image_pooled_logits(pixels), self._excluded)

    # ------------------------------------------------------- preprocessing
    def pixels(self, images: Sequence[Any], device: str | torch.device | None = None) -> torch.Tensor:
        """Model-ready ``[n, 3, H, W]`` float32 pixels on ``device`` (default CPU) for paths, PIL images or tensors
        (see :mod:`encoders.pixels`)."""
        return self._pixels(images, device)

    def _prepare(self, images: Sequence[Any]) -> PreparedImages:
        return self._pixels.prepare(images, pin=self.device.type == "cuda")

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


def _check_options(where: str, given: dict, accepted: Sequence[str], hint: str) -> None:
    """Refuse every option of ``given`` that ``where`` does not take, naming it (with ``hint`` for the options
    that belong to the other constructor)."""
    wrong = sorted(set(given) - set(accepted))
    if not wrong:
        return
    misplaced = [k for k in wrong if k in MODEL_OPTIONS or k in ("model", "path")]
    why = f"; {hint}" if misplaced else ""
    raise InputError(f"{where} does not take {', '.join(wrong)} (it takes {', '.join(accepted)}){why}")


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
