"""One ``SpladeEncoder.iter_encode`` call: texts tokenized a window ahead on background threads, batches
launched on the model and collected in input order (see :mod:`encoders.splade` for the design)."""

from __future__ import annotations

import os
import queue
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import chain
from typing import TYPE_CHECKING, Iterator

import numpy as np
import torch

from lsr.sparse import SparseBatch, row_entries

from .base import EncodeStats

if TYPE_CHECKING:
    from .splade import SpladeEncoder

# Texts per tokenizer call on a background thread.
_TOKENIZE_SLICE = 256
# Batches launched on a CUDA device before the host waits for the oldest one.
_CUDA_DEPTH = 6


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
