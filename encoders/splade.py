"""SPLADE text encoder over any Hugging Face masked language model.

Encoding is a pipeline that keeps the model busy:

* texts are tokenized on background threads (the Rust tokenizer releases the
  GIL), a *sort window* ahead of the model; a window's token ids travel to the
  device in one (pinned, asynchronous) copy and each batch is padded there;
* within a window, texts are sorted by token count so each batch pads to a
  similar length; the first and last windows of a long input are small, so
  the model starts early and the output of the last window is ready soon after
  the model finishes;
* the thread that launches the model never waits for the device: results are
  collected by a second thread, a bounded number of batches ahead; on CUDA the
  padding mask goes to the model as a 4D boolean mask when that gives the same
  result, because a 2D mask makes Hugging Face models check on the host
  whether any padding exists, which waits for the device at every batch;
* the masked language model's output projection is replaced during inference
  by :class:`PooledDecoder`, which keeps a running masked max over positions
  instead of materialising ``[batch, positions, vocab]`` logits;
* ``log1p(relu(.))`` is applied to the pooled ``[batch, vocab]`` tensor
  (identical to saturating first, since the function is monotone), and the
  result is sparsified to CSR on the device with one host copy per batch; on
  CUDA this happens on a side stream while the next batches run, so the host
  never waits for the model;
* results are put back into input order and yielded in chunks.
"""

from __future__ import annotations

import os
import queue
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import chain
from typing import Iterator, Sequence

import numpy as np
import torch
from lsr.progress import tqdm

from lsr.errors import InputError
from lsr.pooling import block_positions, fill_padding, running_max, saturate
from lsr.sparse import SparseBatch, row_entries
from lsr.threads import intra_op_threads
from lsr.vocab import Vocabulary

# pick_device, pick_dtype and check_batching are also imported from here by dense.py and image_text.py.
from .base import EncodeAll, EncodeStats, check_batching, default_batch_size, load_masked_lm, pick_device, pick_dtype
from .graphs import GraphedFunction

# Texts per tokenizer call on a background thread.
_TOKENIZE_SLICE = 256
# Batches launched on a CUDA device before the host waits for the oldest one.
_CUDA_DEPTH = 6
# With CUDA graphs, batches are padded to a multiple of this many word pieces (one graph per padded length).
_GRAPH_PAD_MULTIPLE = 16


class SpladeEncoder(EncodeAll):
    """Text to vocabulary-sized sparse vectors, SPLADE style.

    ``log1p(relu(max over tokens of the MLM logits))`` with the attention mask
    applied, special tokens removed from the output, batches sorted by length
    so that padding is minimal. Empty or whitespace-only texts give an empty
    vector without running the model.
    """

    kind = "splade"
    takes_images = False

    def __init__(
        self,
        model: str = "splade-tiny",
        *,
        device: str | None = None,
        dtype: str | torch.dtype | None = None,
        max_length: int = 256,
        batch_size: int | None = None,
        progress: bool = False,
        hf_model=None,
        tokenizer=None,
        cuda_graphs: bool = False,
        pad_multiple: int | None = None,
        query_threads: int | None = 1,
    ):
        """Load ``model`` (alias, ``hf:`` id or path), or wrap ``hf_model`` + ``tokenizer`` objects.

        ``batch_size``: texts per model call (default: 128 on a GPU, where
        small batches leave it waiting for the host, 32 on the CPU).

        ``cuda_graphs``: on a CUDA device, replay full batches from CUDA graphs
        captured once per padded length (see :mod:`encoders.graphs`); batches
        are then padded to a multiple of 16 word pieces so that few graphs are
        needed. ``pad_multiple``: pad every batch to a multiple of this many
        word pieces (the result is the same; only the amount of padding
        changes).

        ``query_threads``: intra-op threads for :meth:`encode_query` on the CPU
        (default 1; ``None``: torch's setting). A query of a few dozen word
        pieces is too small to split: with two threads the work barely
        shrinks, and on a busy machine the threads wait for each other at
        every operation (ten times slower measured on a loaded 2-core host).
        """
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        batch_size = default_batch_size(self.device) if batch_size is None else batch_size
        check_batching(max_length, batch_size)
        if pad_multiple is not None and pad_multiple < 1:
            raise InputError(f"pad_multiple must be positive, got {pad_multiple}")
        self.max_length = max_length
        self.batch_size = batch_size
        self.progress = progress
        if hf_model is None:
            tokenizer, hf_model = load_masked_lm(model, self.dtype)
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
        self._batch_tokenizer: _BatchTokenizer | None = None
        self._side_stream = None
        self._mask4d: bool | None = None
        self._positions: torch.Tensor | None = None
        self._graphed: GraphedFunction | None = None
        if cuda_graphs and self.device.type == "cuda":
            self._graphed = GraphedFunction(self._pooled_weights)
            pad_multiple = pad_multiple or _GRAPH_PAD_MULTIPLE
        self.cuda_graphs = cuda_graphs
        self.pad_multiple = pad_multiple
        if query_threads is not None and query_threads < 1:
            raise InputError(f"query_threads must be positive, got {query_threads}")
        self.query_threads = query_threads
        self.last_stats = EncodeStats()

    # ------------------------------------------------------------------ API
    @staticmethod
    def _check_inputs(texts) -> list[str]:
        return _as_texts(texts)

    def iter_encode(
        self, texts: Sequence[str], ids: Sequence[str] | None = None, chunk_size: int = 8192,
        stats: EncodeStats | None = None, *, sort_window: int | None = None,
    ) -> Iterator[SparseBatch]:
        """Encode in chunks of ``chunk_size`` texts, yielding one batch per chunk in input order.

        Texts are sorted by token count within windows of ``sort_window``
        texts (default: ``chunk_size``) so each model batch pads to a similar
        length. A window larger than the chunk pads less; a chunk is yielded
        as soon as the windows covering it are done. Memory is bounded by the
        larger of the two.
        """
        texts = _as_texts(texts)
        if ids is not None and len(ids) != len(texts):
            raise InputError(f"{len(ids)} ids for {len(texts)} texts")
        if chunk_size < 1:
            raise InputError(f"chunk_size must be positive, got {chunk_size}")
        sort_window = chunk_size if sort_window is None else sort_window
        if sort_window < 1:
            raise InputError(f"sort_window must be positive, got {sort_window}")
        stats = stats if stats is not None else EncodeStats()
        bar = tqdm(total=len(texts), unit="doc", desc="encode", disable=not self.progress)
        run = _EncodeRun(self, texts, ids, chunk_size, sort_window, stats, bar)
        try:
            yield from run.chunks()
        finally:
            run.close()
            bar.close()

    def _encode_all(self, inputs, ids) -> SparseBatch:
        texts = self._check_inputs(inputs)
        if len(texts) == 1 and (ids is None or len(ids) == 1):
            # one text: the direct path, without the batching machinery
            return self.encode_query(texts[0], ids[0] if ids is not None else None)
        return super()._encode_all(texts, ids)

    @torch.inference_mode()
    def encode_query(self, text: str, qid: str | None = None) -> SparseBatch:
        """One text as a one-row batch, encoded on this thread with nothing set up per call.

        The text is tokenized by the fast tokenizer (no padding, no attention
        mask to build), the model runs once on its word pieces and the pooling
        projects each of them onto the vocabulary into a buffer that is kept
        between calls, so a stream of single queries costs the model's forward
        pass and little more. Every position is projected (SPLADE's max over
        positions needs all of them): the computation is the model's own, and
        the weights equal :meth:`encode_queries`' for the same text up to
        float32 rounding, since a padded batch's matrix products sum in another
        order (see "What is exact" in the README).
        """
        if not isinstance(text, str):
            raise InputError(f"expected a text (str), got {type(text).__name__}")
        ids = (qid,) if qid is not None else None
        stats = EncodeStats(inputs=1)
        self.last_stats = stats
        if not text.strip():
            stats.empty = 1
            return SparseBatch.empty(self.vocab, 1, ids=ids)
        fast = self._tokenizer_for_batches().fast
        if fast is not None:
            enc = fast.encode(text)
            token_ids = enc.ids
            stats.truncated = int(len(token_ids) >= self.max_length and bool(enc.overflowing))
        else:
            rows, stats.truncated = self.tokenize([text])
            token_ids = rows[0]
        x = torch.tensor(token_ids, dtype=torch.long).view(1, -1).to(self.device)
        with intra_op_threads(self.query_threads if self.device.type == "cpu" else None):
            # one unpadded row: no attention mask, and the pooling needs none
            with self._pooled_decoder.installed(None):
                pooled = self.model(input_ids=x).logits[0, 0]
            weights = saturate(pooled, self._excluded)
            cols = torch.nonzero(weights).view(-1)
            vals = weights[cols]
        cols_np = cols.to(torch.int32).cpu().numpy()
        return SparseBatch(np.array([0, len(cols_np)], np.int64), cols_np, vals.cpu().numpy(), self.vocab, ids)

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

    def _tokenizer_for_batches(self) -> "_BatchTokenizer":
        if self._batch_tokenizer is None or self._batch_tokenizer.max_length != self.max_length:
            self._batch_tokenizer = _BatchTokenizer(self, self.max_length)
        return self._batch_tokenizer

    @torch.inference_mode()
    def _forward(self, token_ids: list[list[int]]) -> SparseBatch:
        """Encode one batch of token id lists (in the given order)."""
        lengths = np.array([len(t) for t in token_ids], dtype=np.int64)
        flat = np.fromiter(chain.from_iterable(token_ids), np.int64, int(lengths.sum()))
        host = _pad_rows(flat, np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths, self._pad_id(), False)
        counts, cols, vals = self._collect(self._launch(host))
        indptr = np.concatenate([[0], np.cumsum(counts)])
        return SparseBatch(indptr, cols, vals, self.vocab)

    def _pad_id(self) -> int:
        pad = getattr(self.tokenizer, "pad_token_id", None)
        return int(pad) if pad is not None else 0

    def _launch(self, host: torch.Tensor) -> "_InFlight":
        """Start one batch on the device. ``host`` is ``[batch, length + 1]``: token ids, then the length."""
        x = host.to(self.device, non_blocking=True)
        length = x.shape[1] - 1
        valid = torch.arange(length, device=self.device)[None, :] < x[:, length:]
        return self._launch_tokens(x[:, :length].contiguous(), valid)

    def _launch_rows(self, flat: torch.Tensor, starts: torch.Tensor, lengths: torch.Tensor, first: int, last: int,
                     width: int) -> "_InFlight":
        """Start rows ``first:last`` of a window whose ids are ``flat`` (row r: ``starts[r]``, ``lengths[r]`` long).

        The batch is padded on the device, so nothing is copied per batch.
        """
        if self.pad_multiple:
            width = min(-(-width // self.pad_multiple) * self.pad_multiple, self.max_length)  # never past it
        if self._positions is None or len(self._positions) < width or self._positions.device != flat.device:
            self._positions = torch.arange(max(width, self.max_length), device=flat.device)
        pos = self._positions[:width]
        valid = pos[None, :] < lengths[first:last, None]
        idx = (starts[first:last, None] + pos[None, :]).clamp_(max=len(flat) - 1)
        ids = flat[idx].masked_fill_(~valid, self._pad_id())
        return self._launch_tokens(ids, valid)

    def _launch_tokens(self, input_ids: torch.Tensor, valid: torch.Tensor) -> "_InFlight":
        """Model, pooling and saturation for padded ids (``valid`` marks the real tokens); nothing waits."""
        weights = None
        graphed = self._graphed
        if graphed is not None and graphed.active and input_ids.shape[0] == self.batch_size:
            if not self._use_mask4d(input_ids.device):
                graphed.reason = "the model does not take a 4D attention mask (a 2D one waits for the device)"
            else:
                weights = graphed.replay(input_ids, valid)
        if weights is None:
            weights = self._pooled_weights(input_ids, valid)
        event = None
        if weights.is_cuda:
            event = torch.cuda.Event()
            event.record()
        return _InFlight(weights, event)

    def _pooled_weights(self, input_ids: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """``[batch, vocab]`` float32 SPLADE weights of padded ids, special tokens zeroed."""
        if self._use_mask4d(input_ids.device):
            model_mask = valid[:, None, None, :]
        else:
            model_mask = valid.to(torch.long)
        with self._pooled_decoder.installed(valid):
            # the decoder returns the masked max over positions: [batch, 1, vocab]
            pooled = self.model(input_ids=input_ids, attention_mask=model_mask).logits[:, 0]
        return saturate(pooled, self._excluded)

    @property
    def cuda_graphs_status(self) -> dict:
        """Whether CUDA graphs were asked for and are in use, why not, and how often they ran."""
        g = self._graphed
        if g is None:
            reason = None if not self.cuda_graphs else f"not on a CUDA device ({self.device})"
            return {"requested": self.cuda_graphs, "active": False, "reason": reason}
        return {"requested": True, "active": g.active, "reason": g.reason, "graphs": g.stats.captured,
                "padded_lengths": sorted(shape[-1] for shape in g.stats.shapes), "replays": g.stats.replays}

    def _use_mask4d(self, device: torch.device) -> bool:
        if device.type != "cuda":
            return False  # the host-side padding check costs nothing without a device to wait for
        if self._mask4d is None:
            self._mask4d = self._probe_mask4d()
        return self._mask4d

    @torch.inference_mode()
    def _probe_mask4d(self) -> bool:
        """Does the model give the same output for a ``[batch, 1, 1, length]`` boolean mask as for the 2D mask?"""
        try:
            usable = [i for i in range(len(self.vocab)) if i not in self.vocab.special_ids][:16]
            ids = torch.tensor(usable, device=self.device).view(2, 8)
            valid = torch.ones(2, 8, dtype=torch.bool, device=self.device)
            valid[1, 5:] = False
            a = self.model(input_ids=ids, attention_mask=valid.to(torch.long)).logits
            b = self.model(input_ids=ids, attention_mask=valid[:, None, None, :]).logits
            tol = 1e-5 if self.dtype == torch.float32 else 2e-2
            return bool(torch.allclose(a[valid].float(), b[valid].float(), rtol=tol, atol=tol))
        except Exception:  # noqa: BLE001 - a model that does not take 4D masks: use the 2D one
            return False

    def _collect(self, job: "_InFlight") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """CSR parts of a launched batch: non-zeros per row, column ids and weights (one host copy)."""
        w = job.weights
        if not w.is_cuda:
            rows, cols = torch.nonzero(w, as_tuple=True)
            counts = (w != 0).sum(dim=1)
            return counts.numpy(), cols.to(torch.int32).numpy(), w[rows, cols].numpy()
        if self._side_stream is None or self._side_stream.device != w.device:
            self._side_stream = torch.cuda.Stream(device=w.device)
        side = self._side_stream
        with torch.cuda.device(w.device), torch.cuda.stream(side):
            side.wait_event(job.event)
            counts = (w != 0).sum(dim=1, dtype=torch.int32)
            rows, cols = torch.nonzero(w, as_tuple=True)  # waits for this stream only
            vals = w[rows, cols]
            packed = torch.cat([counts, cols.to(torch.int32), vals.view(torch.int32)]).cpu().numpy()
        b, nnz = w.shape[0], len(vals)
        return (packed[:b].astype(np.int64), packed[b:b + nnz],
                packed[b + nnz:].view(np.float32))


@dataclass
class _InFlight:
    weights: torch.Tensor
    event: object | None


class PooledDecoder(torch.nn.Module):
    """Stands in for a masked LM's output projection during inference.

    Instead of materialising ``[batch, positions, vocab]`` logits and then
    taking the max over positions, it projects a block of positions at a time
    and keeps a running max, returning ``[batch, 1, vocab]``. Padding
    positions are replaced by the first valid position of their row before the
    projection, so no masking pass over the logits is needed and the max is
    unchanged. On the CPU the logits block is written into one reused buffer
    (fresh allocations of this size cost page faults). The result equals the
    masked max of the full logits.
    """

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = [model]  # a list, so the model is not registered as a submodule
        self.decoder = model.get_output_embeddings()
        self.parent, self.attr = _parent_of(model, self.decoder)
        self.mask: torch.Tensor | None = None
        self._buffer: torch.Tensor | None = None

    @property
    def budget(self) -> int:
        """Logits elements per block."""
        return (1 << 28) if self.decoder.weight.device.type == "cuda" else (1 << 26)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        b, t, h = hidden.shape
        weight = self.decoder.weight
        vocab = weight.shape[0]
        valid = self.mask.bool() if self.mask is not None else None  # None: no padding
        if valid is not None:
            hidden = fill_padding(hidden, valid)
        block = min(t, block_positions(self.budget, b, vocab))
        if isinstance(self.decoder, torch.nn.Linear) and not hidden.is_cuda and not torch.is_grad_enabled():
            def project(part):
                c = part.shape[1]
                return self._cpu_linear(part.reshape(b * c, h), weight, self.decoder.bias).view(b, c, vocab)
        else:
            project = self.decoder
        out, _ = running_max(hidden, project, block)
        if valid is not None:
            empty = ~valid.any(dim=1)
            out = out.masked_fill(empty[:, None], torch.finfo(out.dtype).min)
        return out.unsqueeze(1)

    def _cpu_linear(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        n = x.shape[0] * weight.shape[0]
        buf = self._buffer
        if buf is None or buf.numel() < n or buf.dtype != x.dtype:
            buf = self._buffer = torch.empty(n, dtype=x.dtype)
        out = buf[:n].view(x.shape[0], weight.shape[0])
        if bias is None:
            return torch.mm(x, weight.t(), out=out)
        return torch.addmm(bias, x, weight.t(), out=out)

    def release(self) -> None:
        """Free the CPU logits buffer."""
        self._buffer = None

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


# ------------------------------------------------------------ tokenization
class _BatchTokenizer:
    """Token ids of many texts as flat arrays, from any thread.

    Uses a private copy of the fast (Rust) tokenizer, configured to truncate
    exactly like ``tokenizer(texts, truncation=True, max_length=...)``; the
    copy is checked against that call on a few probe texts and the Hugging
    Face call is used instead when they differ (or no fast tokenizer exists).
    """

    _PROBES = ("Supersonic flow over a swept wing.", "  Ünïcödé\tspaces  and   CAPITALS!  ", "x",
               "naïve café résumé 東京 😀 " * 3, "lift " * 600)

    def __init__(self, encoder: SpladeEncoder, max_length: int):
        self.encoder = encoder
        self.max_length = max_length
        self.fast = None
        backend = getattr(encoder.tokenizer, "backend_tokenizer", None)
        if backend is not None:
            try:
                import tokenizers

                fast = tokenizers.Tokenizer.from_str(backend.to_str())
                fast.no_padding()
                fast.enable_truncation(max_length, stride=0, strategy="longest_first",
                                       direction=getattr(encoder.tokenizer, "truncation_side", "right") or "right")
                probes = list(self._PROBES)
                want = encoder.tokenize(probes)[0]
                got = [e.ids for e in fast.encode_batch(probes)]
                if got == want:
                    self.fast = fast
            except Exception:  # noqa: BLE001 - any mismatch or missing feature: use the reference call
                self.fast = None

    def __call__(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray, int]:
        """``(flat ids int64, lengths int64, truncated count)`` for non-empty texts."""
        if self.fast is not None:
            encs = self.fast.encode_batch(texts)  # releases the GIL
            ids = [e.ids for e in encs]
            lengths = np.fromiter(map(len, ids), np.int64, len(ids))
            full = np.flatnonzero(lengths >= self.max_length)
            truncated = sum(1 for i in full.tolist() if encs[i].overflowing)
        else:
            ids, truncated = self.encoder.tokenize(texts)
            lengths = np.fromiter(map(len, ids), np.int64, len(ids))
        flat = np.fromiter(chain.from_iterable(ids), np.int64, int(lengths.sum()))
        return flat, lengths, truncated


def _pad_rows(flat: np.ndarray, starts: np.ndarray, lengths: np.ndarray, pad_id: int, pin: bool) -> torch.Tensor:
    """``[rows, max_length + 1]`` int64: each row's ids padded with ``pad_id``, its length in the last column."""
    rows, width = len(lengths), int(lengths.max())
    out = torch.empty((rows, width + 1), dtype=torch.int64, pin_memory=pin)
    arr = out.numpy()
    arr[:, :width] = pad_id
    arr[:, width] = lengths
    total = int(lengths.sum())
    out_starts = np.arange(rows, dtype=np.int64) * (width + 1)
    cum = np.cumsum(lengths) - lengths
    src = np.repeat(starts - cum, lengths) + np.arange(total)
    dst = np.repeat(out_starts - cum, lengths) + np.arange(total)
    arr.reshape(-1)[dst] = flat[src]
    return out


@dataclass
class _Window:
    start: int  # input positions [start, end)
    end: int
    future: Future | None = None  # -> _PreparedWindow


@dataclass
class _PreparedWindow:
    """A tokenized window: ``packed`` holds the ids of its non-empty texts (input order), then per row in
    length order the start of its ids and its length; ``batches`` are ``(first row, last row, width)``."""

    packed: torch.Tensor | None
    tokens: int
    rows: int
    batches: list[tuple[int, int, int]]
    positions: np.ndarray  # window-relative input position of each row, in length order
    inputs: int
    empty: int
    truncated: int


def plan_windows(n: int, sort_window: int, first: int) -> list[tuple[int, int]]:
    """Split ``n`` inputs into sort windows: small at both ends, ``sort_window`` at most in between.

    The first window is ``first`` texts and each next one four times larger,
    so the model starts after little tokenization; the end mirrors the start,
    so little output is left to write after the model finishes.
    """
    if n <= 0:
        return []
    ramp = []
    size = max(1, first)
    while size < sort_window and 2 * (sum(ramp) + size) < n:
        ramp.append(size)
        size *= 4
    middle = n - 2 * sum(ramp)
    pieces = max(1, -(-middle // sort_window))
    base, extra = divmod(middle, pieces)
    sizes = ramp + [base + (1 if i < extra else 0) for i in range(pieces)] + ramp[::-1]
    out, s = [], 0
    for z in sizes:
        if z > 0:
            out.append((s, s + z))
            s += z
    return out


def _tokenizer_threads() -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 2)
    if os.environ.get("TOKENIZERS_PARALLELISM", "").strip().lower() in ("", "1", "true", "t", "yes", "y", "on"):
        return max(1, min(2, cores // 4))  # each call already runs on the Rust tokenizer's own threads
    return max(1, min(8, cores // 2))


class _EncodeRun:
    """One ``iter_encode`` call: windows tokenized ahead, batches launched by this thread and collected by
    another (a bounded number in flight), chunks yielded in input order."""

    def __init__(self, enc: SpladeEncoder, texts: list[str], ids, chunk_size: int, sort_window: int,
                 stats: EncodeStats, bar):
        self.enc, self.texts, self.ids = enc, texts, ids
        self.chunk_size, self.stats, self.bar = chunk_size, stats, bar
        self.n = len(texts)
        self.cuda = enc.device.type == "cuda"
        small = self.n <= enc.batch_size
        self.windows = [_Window(s, e) for s, e in plan_windows(
            self.n, sort_window, max(256, 8 * enc.batch_size) if not small else self.n)]
        self.tokenizer = enc._tokenizer_for_batches()
        self.threaded = not small
        self.pool = ThreadPoolExecutor(_tokenizer_threads(), thread_name_prefix="lsr-tokenize") if self.threaded else None
        self.planner = ThreadPoolExecutor(1, thread_name_prefix="lsr-batches") if self.threaded else None
        self.closed = threading.Event()
        # launched batches go to the collector thread through `jobs`; finished windows come back through `done`
        self.jobs: queue.Queue = queue.Queue()
        self.done: queue.Queue = queue.Queue()
        self.slots = threading.Semaphore(_CUDA_DEPTH if self.cuda else 2)
        self.collector: threading.Thread | None = None
        self.collector_done = False
        self.pending: deque = deque()  # finished windows taken from `done`, in order
        # putting a window's rows back into input order runs beside the collector, which keeps collecting
        self.assembler = ThreadPoolExecutor(1, thread_name_prefix="lsr-assemble") if self.threaded else None
        # rows finished, in input order, not yet yielded
        self.done_indptr: list[np.ndarray] = []
        self.done_indices: list[np.ndarray] = []
        self.done_values: list[np.ndarray] = []
        self.done_rows = 0
        self.yielded = 0

    # ------------------------------------------------------------ windows
    def _submit(self, w: _Window) -> None:
        if w.future is not None:
            return
        if self.planner is None:
            f: Future = Future()
            f.set_result(self._prepare(w, None))
            w.future = f
            return
        nonempty = self.pool.submit(self._nonempty, w.start, w.end)
        w.future = self.planner.submit(self._prepare, w, nonempty)

    def _nonempty(self, start: int, end: int) -> tuple[np.ndarray, list[Future]]:
        texts = self.texts
        pos = np.fromiter((i for i in range(start, end) if texts[i].strip()), np.int64)
        slices = []
        for s in range(0, len(pos), _TOKENIZE_SLICE):
            part = pos[s:s + _TOKENIZE_SLICE]
            slices.append(self.pool.submit(self.tokenizer, [texts[i] for i in part.tolist()]))
        return pos, slices

    def _prepare(self, w: _Window, nonempty: Future | None) -> _PreparedWindow:
        if nonempty is None:
            pos = np.fromiter((i for i in range(w.start, w.end) if self.texts[i].strip()), np.int64)
            parts = [self.tokenizer([self.texts[i] for i in pos.tolist()])] if len(pos) else []
        else:
            pos, slices = nonempty.result()
            parts = [f.result() for f in slices]
        n = w.end - w.start
        if not parts or self.closed.is_set():
            return _PreparedWindow(None, 0, 0, [], np.zeros(0, np.int64), n, n - len(pos), 0)
        flat = np.concatenate([p[0] for p in parts])
        lengths = np.concatenate([p[1] for p in parts])
        order = np.argsort(-lengths, kind="stable")
        rows, tokens = len(lengths), len(flat)
        packed = torch.empty(tokens + 2 * rows, dtype=torch.int64, pin_memory=self.cuda)
        arr = packed.numpy()
        arr[:tokens] = flat
        arr[tokens:tokens + rows] = (np.cumsum(lengths) - lengths)[order]
        arr[tokens + rows:] = lengths[order]
        sorted_lengths = lengths[order]
        bs = self.enc.batch_size
        batches = [(b, min(b + bs, rows), int(sorted_lengths[b])) for b in range(0, rows, bs)]
        return _PreparedWindow(packed, tokens, rows, batches, pos[order] - w.start, n, n - rows,
                               sum(p[2] for p in parts))

    # ----------------------------------------------------------- collector
    def _collect_loop(self) -> None:
        """Collect launched batches in order; put each finished window (CSR in input order) on ``done``."""
        state: dict[int, list] = {}
        failed = False
        with torch.inference_mode():
            while True:
                item = self.jobs.get()
                if item is None:
                    break
                kind, wi, payload = item
                if kind == "window":
                    state[wi] = [payload, [], len(payload.batches)]
                else:
                    try:
                        if not failed:
                            state[wi][1].append(self.enc._collect(payload))
                            state[wi][2] -= 1
                    except BaseException as e:  # noqa: BLE001 - handed to the launching thread
                        failed = True
                        self.done.put(("error", e))
                    finally:
                        self.slots.release()
                while not failed and state and state[min(state)][2] == 0:
                    first = min(state)
                    w, (prep, results, _) = self.windows[first], state.pop(first)
                    self.done.put(("rows", self.assembler.submit(self._window_rows, w, prep, results)))
        self.done.put(None)

    def _window_rows(self, w: _Window, prep: _PreparedWindow, results: list):
        """A window's rows in input order, with empty rows for empty texts: ``(indptr, indices, values)``."""
        n = w.end - w.start
        indptr = np.zeros(n + 1, np.int64)
        if not results:
            return indptr, np.zeros(0, np.int32), np.zeros(0, np.float32)
        pos = prep.positions
        c = np.concatenate([r[0] for r in results])
        cols = np.concatenate([r[1] for r in results])
        vals = np.concatenate([r[2] for r in results])
        counts = np.zeros(n, np.int64)
        counts[pos] = c
        np.cumsum(counts, out=indptr[1:])
        total = int(c.sum())
        dst, _ = row_entries(indptr, pos)  # entry j of collected row k goes to indptr[pos[k]] + j
        out_cols = np.empty(total, np.int32)
        out_vals = np.empty(total, np.float32)
        out_cols[dst] = cols
        out_vals[dst] = vals
        return indptr, out_cols, out_vals

    def _take_done(self, item) -> None:
        if item[0] == "error":
            raise item[1]
        indptr, cols, vals = item[1].result() if isinstance(item[1], Future) else item[1]
        self.done_indptr.append(indptr)
        self.done_indices.append(cols)
        self.done_values.append(vals)
        self.done_rows += len(indptr) - 1
        self.bar.update(len(indptr) - 1)

    # ------------------------------------------------------------- output
    def _ready_chunks(self, final: bool) -> Iterator[SparseBatch]:
        while self.done_rows - self.yielded >= self.chunk_size or (final and self.done_rows > self.yielded):
            take = min(self.chunk_size, self.done_rows - self.yielded)
            yield self._take(take)

    def _take(self, k: int) -> SparseBatch:
        """The next ``k`` finished rows as one batch."""
        indptrs, idx, vals = [], [], []
        need, offset = k, 0
        while need:
            ip = self.done_indptr[0]
            rows = len(ip) - 1
            if rows <= need:
                self.done_indptr.pop(0)
                indptrs.append(ip[1:] + offset)
                idx.append(self.done_indices.pop(0))
                vals.append(self.done_values.pop(0))
                offset += int(ip[-1])
                need -= rows
            else:
                cut = int(ip[need])
                indptrs.append(ip[1:need + 1] + offset)
                idx.append(self.done_indices[0][:cut])
                vals.append(self.done_values[0][:cut])
                self.done_indptr[0] = ip[need:] - cut
                self.done_indices[0] = self.done_indices[0][cut:]
                self.done_values[0] = self.done_values[0][cut:]
                need = 0
        indptr = np.concatenate([[0]] + indptrs)
        start = self.yielded
        self.yielded += k
        chunk_ids = tuple(self.ids[start:start + k]) if self.ids is not None else None
        return SparseBatch(indptr, np.concatenate(idx), np.concatenate(vals), self.enc.vocab, chunk_ids)

    # --------------------------------------------------------------- loop
    def _drain(self, block: bool) -> Iterator[SparseBatch]:
        """Take finished windows in order and yield the chunks they complete; with ``block``, all of them."""
        while True:
            while self.pending and (block or self.pending[0][0] == "error" or self.pending[0][1].done()):
                self._take_done(self.pending.popleft())
                yield from self._ready_chunks(final=False)
            if self.collector_done or (self.pending and not block):
                return
            try:
                item = self.done.get(block=block)
            except queue.Empty:
                return
            if item is None:
                self.collector_done = True
                self.collector = None
            else:
                self.pending.append(item)

    @torch.inference_mode()
    def chunks(self) -> Iterator[SparseBatch]:
        enc = self.enc
        if not self.threaded:
            yield from self._chunks_inline()
            return
        ahead = 2
        for w in self.windows[:ahead]:
            self._submit(w)
        self.collector = threading.Thread(target=self._collect_loop, name="lsr-collect", daemon=True)
        self.collector.start()
        try:
            for wi, w in enumerate(self.windows):
                if wi + ahead < len(self.windows):
                    self._submit(self.windows[wi + ahead])
                prep = w.future.result()
                w.future = None
                self.stats.inputs += prep.inputs
                self.stats.empty += prep.empty
                self.stats.truncated += prep.truncated
                self.jobs.put(("window", wi, prep))
                if prep.rows:
                    dev = prep.packed.to(enc.device, non_blocking=True)  # the window's ids, in one copy
                    flat = dev[:prep.tokens]
                    starts = dev[prep.tokens:prep.tokens + prep.rows]
                    lengths = dev[prep.tokens + prep.rows:]
                    for first, last, width in prep.batches:
                        self.slots.acquire()
                        self.jobs.put(("batch", wi, enc._launch_rows(flat, starts, lengths, first, last, width)))
                        yield from self._drain(block=False)
                prep.packed = None
                yield from self._drain(block=False)
            self.jobs.put(None)
            yield from self._drain(block=True)
            yield from self._ready_chunks(final=True)
        finally:
            if self.collector is not None:
                self.jobs.put(None)
            enc._pooled_decoder.release()

    def _chunks_inline(self) -> Iterator[SparseBatch]:
        """Small inputs: everything on this thread, no worker threads to start."""
        enc = self.enc
        try:
            for w in self.windows:
                prep = self._prepare(w, None)
                self.stats.inputs += prep.inputs
                self.stats.empty += prep.empty
                self.stats.truncated += prep.truncated
                results = []
                if prep.rows:
                    packed = prep.packed.to(enc.device)
                    flat = packed[:prep.tokens]
                    starts = packed[prep.tokens:prep.tokens + prep.rows]
                    lengths = packed[prep.tokens + prep.rows:]
                    for first, last, width in prep.batches:
                        results.append(enc._collect(enc._launch_rows(flat, starts, lengths, first, last, width)))
                self._take_done(("rows", self._window_rows(w, prep, results)))
                yield from self._ready_chunks(final=False)
            yield from self._ready_chunks(final=True)
        finally:
            enc._pooled_decoder.release()

    def close(self) -> None:
        self.closed.set()
        if self.collector is not None:
            self.jobs.put(None)
        for ex in (self.pool, self.planner, self.assembler):
            if ex is not None:
                ex.shutdown(wait=False, cancel_futures=True)


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
