"""Shared pieces of the benchmarks: machine description, synthetic data, timing, tables, JSON."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np


def machine(device: str | None = None) -> dict:
    """What the numbers were measured on: CPU model and cores, GPU name, library versions."""
    info = {
        "cpu": _cpu_model(),
        "cpu_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
    }
    if "torch" in sys.modules or device:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        if device and str(device).startswith("cuda") and torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    try:
        load = os.getloadavg()[0]
        info["load_average_1min"] = round(load, 2)
    except OSError:
        pass
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe(info: dict) -> str:
    gpu = f", GPU {info['gpu']}" if info.get("gpu") else ""
    return f"{info['cpu']} ({info['cpu_cores']} cores){gpu}"


# ------------------------------------------------------------------- data
def passage_words(tokenizer) -> list[str]:
    """Vocabulary entries that are whole lower-case words, each one word piece."""
    vocab = tokenizer.get_vocab()
    return sorted(w for w in vocab if w.isascii() and w.isalpha() and w.islower() and len(w) >= 2)


def synthetic_passages(n: int, tokenizer, mean_pieces: float = 69.5, seed: int = 0) -> list[str]:
    """``n`` passages of random whole words, gamma-distributed lengths, ``mean_pieces`` word pieces on average.

    Each word is one word piece, and [CLS] and [SEP] add two, so the mean
    passage length in word pieces is ``mean_pieces`` (as for MS MARCO passages
    under a BERT tokenizer, about 70).
    """
    rng = np.random.default_rng(seed)
    words = np.array(passage_words(tokenizer))
    lengths = np.clip(np.round(rng.gamma(4.0, (mean_pieces - 2) / 4.0, n)), 3, 400).astype(np.int64)
    picks = rng.integers(0, len(words), int(lengths.sum()))
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    return [" ".join(words[picks[bounds[i]:bounds[i + 1]]]) for i in range(n)]


def random_sparse_rows(n: int, terms: int, vocab_size: int, max_weight: int, seed: int = 0,
                       zipf: float = 1.1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR parts of ``n`` rows with ``terms`` distinct token ids each (Zipf popularity), integer weights.

    The same distribution as :func:`lsr.fixtures.synthetic.random_vectors`, vectorised
    so that a million rows take seconds.
    """
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, vocab_size + 1) ** zipf
    cdf = np.cumsum(p / p.sum())
    out = np.empty((n, terms), np.int64)
    todo = np.arange(n)
    draw = 2 * terms
    while len(todo):
        cand = np.searchsorted(cdf, rng.random((len(todo), draw)), side="right").clip(0, vocab_size - 1)
        cand.sort(axis=1)
        dup = np.zeros_like(cand, dtype=bool)
        dup[:, 1:] = cand[:, 1:] == cand[:, :-1]
        key = rng.random(cand.shape)
        key[dup] = 2.0  # never chosen
        pick = np.argpartition(key, terms - 1, axis=1)[:, :terms]
        chosen = np.take_along_axis(cand, pick, axis=1)
        ok = (np.take_along_axis(key, pick, axis=1) < 2.0).all(axis=1)
        out[todo[ok]] = np.sort(chosen[ok], axis=1)
        todo = todo[~ok]
        draw *= 2
    indptr = np.arange(0, n * terms + 1, terms, dtype=np.int64)
    values = rng.integers(1, max_weight + 1, n * terms).astype(np.float32)
    return indptr, out.reshape(-1).astype(np.int32), values


# ----------------------------------------------------------------- timing
def timed(fn: Callable[[], object]) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


# ----------------------------------------------------------------- output
def table(rows: Sequence[Sequence], headers: Sequence[str]) -> str:
    """A plain text table, columns right-aligned except the first."""
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for k, r in enumerate(cells):
        lines.append("  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r)))
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(c) -> str:
    if isinstance(c, float):
        if c != c:
            return "-"
        return f"{c:,.0f}" if abs(c) >= 100 else f"{c:.3g}"
    return str(c)


def write_json(path: str | os.PathLike | None, obj: dict) -> None:
    if not path:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def ratio(a: float, b: float) -> float:
    return float(a / b) if b and b == b and a == a else float("nan")
