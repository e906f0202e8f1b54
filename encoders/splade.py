"""SPLADE text encoder over any Hugging Face masked language model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from lsr.errors import EnvironmentProblem, InputError
from lsr.pooling import log_saturation
from lsr.sparse import SparseBatch
from lsr.vocab import Vocabulary

from .registry import resolve

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


def pick_device(device: str | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} was asked for but CUDA is not available; use --device cpu")
    return dev


def pick_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    try:
        return _DTYPES[dtype]
    except KeyError:
        raise InputError(f"dtype {dtype!r} is not one of {sorted(_DTYPES)} or 'auto'") from None


@dataclass
class EncodeStats:
    """Counts from the last encode call."""

    inputs: int = 0
    empty: int = 0
    truncated: int = 0


class SpladeEncoder:
    """Text to vocabulary-sized sparse vectors, SPLADE style.

    ``log1p(relu(max over tokens of the MLM logits))`` with the attention mask
    applied, special tokens removed from the output, batches sorted by length
    so that padding is minimal. Empty or whitespace-only texts give an empty
    vector without running the model.
    """

    kind = "splade"

    def __init__(
        self,
        model: str = "splade-tiny",
        *,
        device: str | None = None,
        dtype: str | torch.dtype | None = None,
        max_length: int = 256,
        batch_size: int = 32,
        progress: bool = False,
        hf_model=None,
        tokenizer=None,
    ):
        """Load ``model`` (alias, ``hf:`` id or path), or wrap ``hf_model`` + ``tokenizer`` objects."""
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        if max_length < 2:
            raise InputError(f"max_length must be at least 2, got {max_length}")
        if batch_size < 1:
            raise InputError(f"batch_size must be positive, got {batch_size}")
        self.max_length = max_length
        self.batch_size = batch_size
        self.progress = progress
        if hf_model is None:
            from transformers import AutoModelForMaskedLM, AutoTokenizer
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()

            loc = resolve(model)
            try:
                tokenizer = AutoTokenizer.from_pretrained(loc.source)
                hf_model = AutoModelForMaskedLM.from_pretrained(loc.source, dtype=self.dtype)
            except OSError as e:
                hint = "" if loc.is_local else " (hub models need network access or a local copy: pass a directory)"
                raise EnvironmentProblem(f"cannot load model {model!r} from {loc.source}: {e}{hint}") from None
            self.name = model
        else:
            if tokenizer is None:
                raise InputError("hf_model given without its tokenizer")
            self.name = model
        self.tokenizer = tokenizer
        self.model = hf_model.to(device=self.device, dtype=self.dtype).eval()
        self.max_length = min(self.max_length, getattr(tokenizer, "model_max_length", self.max_length) or self.max_length)
        vocab_size = self.model.get_output_embeddings().weight.shape[0]
        self.vocab = vocabulary_of(tokenizer, vocab_size)
        self._excluded = torch.tensor(sorted(self.vocab.special_ids), dtype=torch.long, device=self.device)
        self._pooled_decoder = PooledDecoder(self.model)
        self.last_stats = EncodeStats()

    # ------------------------------------------------------------------ API
    def encode_documents(self, texts: Sequence[str], ids: Sequence[str] | None = None) -> SparseBatch:
        return self._encode_all(texts, ids)

    def encode_queries(self, texts: Sequence[str], ids: Sequence[str] | None = None) -> SparseBatch:
        return self._encode_all(texts, ids)

    def _encode_all(self, texts, ids) -> SparseBatch:
        texts = _as_texts(texts)
        stats = EncodeStats()
        parts = list(self.iter_encode(texts, ids, stats=stats))
        self.last_stats = stats
        if not parts:
            return SparseBatch.empty(self.vocab, 0, ids=() if ids is not None else None)
        return SparseBatch.concat(parts)

    def iter_encode(
        self, texts: Sequence[str], ids: Sequence[str] | None = None, chunk_size: int = 8192,
        stats: EncodeStats | None = None,
    ) -> Iterator[SparseBatch]:
        """Encode in chunks of ``chunk_size`` texts, yielding one batch per chunk in input order.

        Within a chunk, texts are sorted by token count so each model batch
        pads to a similar length. Memory is bounded by the chunk size.
        """
        texts = _as_texts(texts)
        if ids is not None and len(ids) != len(texts):
            raise InputError(f"{len(ids)} ids for {len(texts)} texts")
        stats = stats if stats is not None else EncodeStats()
        bar = tqdm(total=len(texts), unit="doc", desc="encode", disable=not self.progress)
        try:
            for start in range(0, len(texts), chunk_size):
                chunk = texts[start:start + chunk_size]
                chunk_ids = tuple(ids[start:start + chunk_size]) if ids is not None else None
                yield self._encode_chunk(chunk, chunk_ids, stats, bar)
        finally:
            bar.close()

    # ------------------------------------------------------------- internals
    def tokenize(self, texts: Sequence[str]) -> tuple[list[list[int]], int]:
        """Token ids per text (truncated to ``max_length``) and how many texts were truncated."""
        enc = self.tokenizer(list(texts), truncation=True, max_length=self.max_length,
                             return_overflowing_tokens=True, stride=0, return_attention_mask=False,
                             return_token_type_ids=False)
        mapping = enc["overflow_to_sample_mapping"]
        ids: list[list[int] | None] = [None] * len(texts)
        counts = np.bincount(np.asarray(mapping, dtype=np.int64), minlength=len(texts))
        for row, sample in zip(enc["input_ids"], mapping):
            if ids[sample] is None:
                ids[sample] = row
        return ids, int((counts > 1).sum())  # type: ignore[return-value]

    def _encode_chunk(self, texts, ids, stats: EncodeStats, bar) -> SparseBatch:
        n = len(texts)
        nonempty = [i for i, t in enumerate(texts) if t.strip()]
        stats.inputs += n
        stats.empty += n - len(nonempty)
        bar.update(n - len(nonempty))
        rows_out: list[SparseBatch] = []
        positions: list[np.ndarray] = []
        if nonempty:
            token_ids, truncated = self.tokenize([texts[i] for i in nonempty])
            stats.truncated += truncated
            lengths = np.array([len(t) for t in token_ids])
            order = np.argsort(-lengths, kind="stable")
            for b in range(0, len(order), self.batch_size):
                sel = order[b:b + self.batch_size]
                rows_out.append(self._forward([token_ids[i] for i in sel]))
                positions.append(np.asarray(nonempty)[sel])
                bar.update(len(sel))
        if rows_out:
            got = SparseBatch.concat(rows_out)
            where = np.concatenate(positions)
            # scatter back into input order, with empty rows for empty texts
            m = got.to_scipy().tocoo()
            import scipy.sparse as sp

            full = sp.csr_matrix((m.data, (where[m.row], m.col)), shape=(n, len(self.vocab)))
            return SparseBatch.from_scipy(full, self.vocab, ids)
        return SparseBatch.empty(self.vocab, n, ids)

    @torch.inference_mode()
    def _forward(self, token_ids: list[list[int]]) -> SparseBatch:
        batch = self.tokenizer.pad({"input_ids": token_ids}, padding=True, return_tensors="pt")
        input_ids = batch["input_ids"].to(self.device, non_blocking=True)
        mask = batch["attention_mask"].to(self.device, non_blocking=True)
        with self._pooled_decoder.installed(mask):
            # the decoder returns the masked max over positions: [batch, 1, vocab]
            pooled = self.model(input_ids=input_ids, attention_mask=mask).logits[:, 0]
        pooled = log_saturation(pooled.float())
        pooled[:, self._excluded] = 0.0
        return SparseBatch.from_torch(pooled, self.vocab)


class PooledDecoder(torch.nn.Module):
    """Stands in for a masked LM's output projection during inference.

    Instead of materialising ``[batch, positions, vocab]`` logits and then
    taking the max over positions, it projects a few positions at a time and
    keeps a running masked max, returning ``[batch, 1, vocab]``. The result is
    identical; memory traffic drops by the number of positions.
    """

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = [model]  # a list, so the model is not registered as a submodule
        self.decoder = model.get_output_embeddings()
        self.parent, self.attr = _parent_of(model, self.decoder)
        self.mask: torch.Tensor | None = None
        on_gpu = self.decoder.weight.device.type == "cuda"
        self.budget = (1 << 26) if on_gpu else (1 << 22)  # logits elements per chunk

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        b, t, _ = hidden.shape
        vocab = self.decoder.weight.shape[0]
        chunk = max(1, self.budget // max(1, b * vocab))
        valid = self.mask.bool()
        out = None
        for s in range(0, t, chunk):
            logits = self.decoder(hidden[:, s:s + chunk])
            logits.masked_fill_(~valid[:, s:s + chunk, None], torch.finfo(logits.dtype).min)
            m = logits.amax(dim=1)
            out = m if out is None else torch.maximum(out, m, out=out)
        return out.unsqueeze(1)

    class _Installed:
        def __init__(self, owner, mask):
            self.owner, self.mask = owner, mask

        def __enter__(self):
            self.owner.mask = self.mask
            setattr(self.owner.parent, self.owner.attr, self.owner)

        def __exit__(self, *exc):
            setattr(self.owner.parent, self.owner.attr, self.owner.decoder)
            self.owner.mask = None
            return False

    def installed(self, mask: torch.Tensor):
        return self._Installed(self, mask)


def _parent_of(model: torch.nn.Module, child: torch.nn.Module) -> tuple[torch.nn.Module, str]:
    for module in model.modules():
        for name, sub in module.named_children():
            if sub is child:
                return module, name
    raise InputError(f"{type(model).__name__}: cannot locate its output projection for SPLADE pooling")


def vocabulary_of(tokenizer, size: int | None = None) -> Vocabulary:
    """The :class:`Vocabulary` of a Hugging Face tokenizer (ids in order, special tokens marked)."""
    vocab = tokenizer.get_vocab()
    size = size or len(vocab)
    tokens = [f"[unused_id_{i}]" for i in range(size)]
    for tok, i in vocab.items():
        if i < size:
            tokens[i] = tok
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    # Ids the tokenizer never produces are excluded as well.
    special.update(i for i, t in enumerate(tokens) if t.startswith("[unused_id_"))
    return Vocabulary(tuple(tokens), frozenset(i for i in special if i < size))


def _as_texts(texts) -> list[str]:
    if isinstance(texts, str):
        raise InputError("expected a list of texts, got a single string (wrap it in a list)")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise InputError(f"text #{i} is {type(t).__name__}, expected str")
    return out
