"""Random integer sparse vectors over a synthetic vocabulary, for tests and benchmarks."""

from __future__ import annotations

import numpy as np

from .sparse import SparseBatch
from .vocab import Vocabulary


def synthetic_vocab(size: int) -> Vocabulary:
    """Tokens ``t0 .. t{size-1}`` (no special tokens)."""
    return Vocabulary(tuple(f"t{i}" for i in range(size)))


def random_vectors(
    n: int, terms: int, vocab: Vocabulary, max_weight: int, seed: int = 0, prefix: str = "d",
    zipf: float | None = 1.1,
) -> SparseBatch:
    """``n`` rows with ``terms`` distinct tokens each and integer weights in ``[1, max_weight]``.

    With ``zipf`` set, token popularity follows a power law (as in real text),
    so posting lists have realistic, uneven lengths.
    """
    rng = np.random.default_rng(seed)
    v = len(vocab)
    if zipf:
        p = 1.0 / np.arange(1, v + 1) ** zipf
        p /= p.sum()
    else:
        p = None
    indices = np.empty(n * terms, np.int32)
    for i in range(n):
        indices[i * terms:(i + 1) * terms] = np.sort(rng.choice(v, size=terms, replace=False, p=p))
    values = rng.integers(1, max_weight + 1, size=n * terms).astype(np.float32)
    indptr = np.arange(0, n * terms + 1, terms, dtype=np.int64)
    return SparseBatch(indptr, indices, values, vocab, tuple(f"{prefix}{i}" for i in range(n)))
