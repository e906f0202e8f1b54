"""One ``SpladeEncoder.iter_encode`` call: one loop on the calling thread launches batches on the model
and collects them in input order, while a pool of tokenizer threads tokenizes the next windows and puts
finished windows back into input order (see :mod:`encoders.splade` for the design).

The moving parts are the loop, the pool and three first-in-first-out lists: windows being tokenized,
batches launched and not yet collected (a few on an accelerator, so the loop rarely waits for the
device; none on the CPU, where the model has finished when the launch returns), and windows being put
back in order. With zero tokenizer threads the same loop does all the work itself.
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import chain
from typing import TYPE_CHECKING, Callable, Iterator, NamedTuple

import numpy as np
import torch

from lsr.sparse import SparseBatch, row_entries

from .base import EncodeStats

if TYPE_CHECKING:
    from .splade import SpladeEncoder, _InFlight

# Input texts per tokenizer task.
_TOKENIZE_SLICE = 256
# Windows tokenized ahead of the one the model is working on.
_AHEAD = 2
# Batches launched on an accelerator before the loop collects the oldest one.
_DEVICE_DEPTH = 6


def default_tokenizer_threads() -> int:
    """A quarter of the cores this process may use, at least 1 and at most 2.

    Each tokenizer call also runs on the Hugging Face tokenizers' own thread
    pool (unless ``TOKENIZERS_PARALLELISM`` is false, when more threads help),
    and the model needs the remaining cores.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 2)
    return max(1, min(2, cores // 4))


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



class _Tokens(NamedTuple):
    """Token ids of the non-empty texts among some inputs."""

    positions: np.ndarray  # their input positions
    flat: np.ndarray  # their ids, one text after the other
    lengths: np.ndarray
    truncated: int


@dataclass
class _Window:
    """A tokenized window of inputs ``[start, end)``: ``packed`` holds the ids of its non-empty texts (input
    order), then per row in length order the start of its ids and its length; ``batches`` are
    ``(first row, last row, width)``."""

    start: int
    end: int
    packed: torch.Tensor | None
    tokens: int
    rows: int
    batches: list[tuple[int, int, int]]
    positions: np.ndarray  # window-relative input position of each row, in length order
    truncated: int


class _Launched(NamedTuple):
    """One step of the loop, collected in order: a batch on the model (``None`` for a window without rows)
    and, on the last step of a window, the window."""

    job: _InFlight | None
    window: _Window | None


class _Rows(NamedTuple):
    """Finished rows in input order, as CSR parts."""

    indptr: np.ndarray
    indices: np.ndarray
    values: np.ndarray


class _EncodeRun:
    """One ``iter_encode`` call; :meth:`chunks` is the loop."""

    def __init__(self, enc: SpladeEncoder, texts: list[str], ids, chunk_size: int, sort_window: int,
                 stats: EncodeStats, bar):
        self.enc, self.texts, self.ids = enc, texts, ids
        self.chunk_size, self.sort_window, self.stats, self.bar = chunk_size, sort_window, stats, bar
        self.n = len(texts)
        self.cuda = enc.device.type == "cuda"
        self.depth = 0 if enc.device.type == "cpu" else _DEVICE_DEPTH
        self.tokenizer = enc._tokenizer_for_batches()
        self.pool: ThreadPoolExecutor | None = None
        self.launched: deque[_Launched] = deque()  # not yet collected, oldest first
        self.results: list = []  # collected batches of the window being collected
        self.finished: deque[Future] = deque()  # -> _Rows, windows in input order
        # rows finished, in input order, not yet yielded
        self.done_indptr: list[np.ndarray] = []
        self.done_indices: list[np.ndarray] = []
        self.done_values: list[np.ndarray] = []
        self.done_rows = 0
        self.yielded = 0

    # --------------------------------------------------------------- loop
    @torch.inference_mode()
    def chunks(self) -> Iterator[SparseBatch]:
        small = self.n <= self.enc.batch_size
        spans = plan_windows(self.n, self.sort_window, self.n if small else max(256, 8 * self.enc.batch_size))
        if self.enc.tokenizer_threads and not small:  # one batch: nothing to overlap
            self.pool = ThreadPoolExecutor(self.enc.tokenizer_threads, thread_name_prefix="lsr-tokenize")
        try:
            tokenizing = deque(self._tokenize_window(s, e) for s, e in spans[:_AHEAD])
            for k, (start, end) in enumerate(spans):
                if k + _AHEAD < len(spans):
                    tokenizing.append(self._tokenize_window(*spans[k + _AHEAD]))
                w = self._window(start, end, tokenizing.popleft())
                self.stats.inputs += end - start
                self.stats.empty += end - start - w.rows
                self.stats.truncated += w.truncated
                yield from self._launch(w)
            yield from self._collect(keep=0)
            yield from self._take_finished(block=True)
            yield from self._ready_chunks(final=True)
        finally:
            if self.pool is not None:
                self.pool.shutdown(wait=False, cancel_futures=True)
            self.enc._pooled_decoder.release()

    def _start(self, fn: Callable, *args) -> Future:
        """``fn(*args)`` on a tokenizer thread, or here and now without one."""
        if self.pool is not None:
            return self.pool.submit(fn, *args)
        done: Future = Future()
        done.set_result(fn(*args))
        return done

    # ------------------------------------------------------------ windows
    def _tokenize_window(self, start: int, end: int) -> list[Future]:
        return [self._start(self._tokenize, s, min(s + _TOKENIZE_SLICE, end))
                for s in range(start, end, _TOKENIZE_SLICE)]

    def _tokenize(self, start: int, end: int) -> _Tokens:
        texts = self.texts
        positions = np.fromiter((i for i in range(start, end) if texts[i].strip()), np.int64)
        if not len(positions):
            none = np.zeros(0, np.int64)
            return _Tokens(positions, none, none, 0)
        return _Tokens(positions, *self.tokenizer([texts[i] for i in positions.tolist()]))

    def _window(self, start: int, end: int, slices: list[Future]) -> _Window:
        parts: list[_Tokens] = [f.result() for f in slices]
        truncated = sum(p.truncated for p in parts)
        lengths = np.concatenate([p.lengths for p in parts])
        rows = len(lengths)
        if not rows:
            return _Window(start, end, None, 0, 0, [], np.zeros(0, np.int64), truncated)
        flat = np.concatenate([p.flat for p in parts])
        positions = np.concatenate([p.positions for p in parts])
        order = np.argsort(-lengths, kind="stable")
        tokens = len(flat)
        packed = torch.empty(tokens + 2 * rows, dtype=torch.int64, pin_memory=self.cuda)
        arr = packed.numpy()
        arr[:tokens] = flat
        arr[tokens:tokens + rows] = (np.cumsum(lengths) - lengths)[order]
        sorted_lengths = lengths[order]
        arr[tokens + rows:] = sorted_lengths
        bs = self.enc.batch_size
        batches = [(b, min(b + bs, rows), int(sorted_lengths[b])) for b in range(0, rows, bs)]
        return _Window(start, end, packed, tokens, rows, batches, positions[order] - start, truncated)

    # ------------------------------------------------------------ batches
    def _launch(self, w: _Window) -> Iterator[SparseBatch]:
        """Launch the window's batches, collecting the oldest ones once more than ``depth`` are in flight."""
        if not w.rows:
            self.launched.append(_Launched(None, w))
            yield from self._collect(self.depth)
            return
        enc = self.enc
        dev = w.packed.to(enc.device, non_blocking=True)  # the window's ids, in one copy
        flat = dev[:w.tokens]
        starts = dev[w.tokens:w.tokens + w.rows]
        lengths = dev[w.tokens + w.rows:]
        w.packed = None
        for first, last, width in w.batches:
            job = enc._launch_rows(flat, starts, lengths, first, last, width)
            self.launched.append(_Launched(job, w if last == w.rows else None))
            yield from self._collect(self.depth)

    def _collect(self, keep: int) -> Iterator[SparseBatch]:
        """Collect launched batches, oldest first, until ``keep`` are left; put completed windows in order."""
        while len(self.launched) > keep:
            job, window = self.launched.popleft()
            if job is not None:
                self.results.append(self.enc._collect(job))
            if window is not None:
                self.finished.append(self._start(self._window_rows, window, self.results))
                self.results = []
        yield from self._take_finished(block=False)

    def _window_rows(self, w: _Window, results: list) -> _Rows:
        """A window's rows in input order, with empty rows for empty texts."""
        n = w.end - w.start
        indptr = np.zeros(n + 1, np.int64)
        if not results:
            return _Rows(indptr, np.zeros(0, np.int32), np.zeros(0, np.float32))
        pos = w.positions
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
        return _Rows(indptr, out_cols, out_vals)

    # ------------------------------------------------------------- output
    def _take_finished(self, block: bool) -> Iterator[SparseBatch]:
        """Move windows put back in order to the output and yield the chunks they complete; with ``block``,
        wait for all of them."""
        while self.finished and (block or self.finished[0].done()):
            rows: _Rows = self.finished.popleft().result()
            self.done_indptr.append(rows.indptr)
            self.done_indices.append(rows.indices)
            self.done_values.append(rows.values)
            self.done_rows += len(rows.indptr) - 1
            self.bar.update(len(rows.indptr) - 1)
            yield from self._ready_chunks(final=False)

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
