"""What every sparse encoder shares: the protocol it meets and the helpers its constructors use.

A sparse encoder (:class:`encoders.splade.SpladeEncoder`,
:class:`encoders.stair.StairEncoder`) meets :class:`SparseEncoder`; dense
embedders use the same device, dtype and batching helpers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Protocol, Sequence, runtime_checkable

import torch

from lsr.errors import EnvironmentProblem, InputError, option
from lsr.sparse import SparseBatch
from lsr.vocab import Vocabulary

from .hub import hub_error, hub_unavailable
from .registry import resolve

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


def pick_device(device: str | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        use_cpu = option('device="cpu"', "--device cpu")
        raise InputError(f"device {device!r} was asked for but CUDA is not available; use {use_cpu}")
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


def load_masked_lm(model: str, dtype: torch.dtype, what: str = "model"):
    """``(tokenizer, masked LM)`` of an alias, ``hf:`` id or directory; a clear error when it cannot be loaded."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    loc = resolve(model)
    offline = None if loc.is_local else hub_unavailable()  # offline: the local cache only, no retries
    local_only = loc.is_local or offline is not None
    try:
        return (AutoTokenizer.from_pretrained(loc.source, local_files_only=local_only),
                AutoModelForMaskedLM.from_pretrained(loc.source, dtype=dtype, local_files_only=local_only))
    except OSError as e:
        if not loc.is_local:
            raise hub_error(what, model, loc.source, offline, e) from None
        raise EnvironmentProblem(f"cannot load {what} {model!r} from {loc.source}: {e}") from None


def default_batch_size(device: torch.device) -> int:
    """Texts per model call when none is given: 128 on an accelerator, 32 on the CPU."""
    return 32 if device.type == "cpu" else 128


def check_batching(max_length: int, batch_size: int) -> None:
    """The text encoders' shared argument checks."""
    if max_length < 2:
        raise InputError(f"max_length must be at least 2, got {max_length}")
    if batch_size < 1:
        raise InputError(f"batch_size must be positive, got {batch_size}")


@dataclass
class EncodeStats:
    """Counts from the last encode call."""

    inputs: int = 0
    empty: int = 0
    truncated: int = 0


class EncodeAll:
    """``encode_documents`` / ``encode_queries`` over ``iter_encode``: the whole input as one batch.

    Subclasses define ``_check_inputs(inputs) -> list`` and ``iter_encode(inputs, ids, stats=...)``.
    """

    vocab: Vocabulary
    last_stats: EncodeStats

    def encode_documents(self, inputs, ids: Sequence[str] | None = None) -> SparseBatch:
        return self._encode_all(inputs, ids)

    def encode_queries(self, inputs, ids: Sequence[str] | None = None) -> SparseBatch:
        return self._encode_all(inputs, ids)

    def _encode_all(self, inputs, ids) -> SparseBatch:
        inputs = self._check_inputs(inputs)
        stats = EncodeStats()
        parts = list(self.iter_encode(inputs, ids, stats=stats))
        self.last_stats = stats
        if not parts:
            return SparseBatch.empty(self.vocab, 0, ids=() if ids is not None else None)
        return SparseBatch.concat(parts)


@runtime_checkable
class SparseEncoder(Protocol):
    """What the pipeline, the CLI and evaluation expect of a sparse encoder."""

    name: str
    vocab: Vocabulary
    max_length: int
    device: torch.device
    takes_images: bool

    def iter_encode(self, inputs: Sequence, ids: Sequence[str] | None = None, chunk_size: int = 8192,
                    stats: EncodeStats | None = None) -> Iterator[SparseBatch]: ...

    def encode_queries(self, inputs, ids: Sequence[str] | None = None) -> SparseBatch: ...

    def encode_documents(self, inputs, ids: Sequence[str] | None = None) -> SparseBatch: ...
