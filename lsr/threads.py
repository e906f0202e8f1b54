"""Torch intra-op threads for small work.

A single query is a few dozen word pieces, and a dense rerank a few hundred
dot products: too little to split across threads. Splitting barely shortens
the work, and when the machine is busy the threads wait for each other at
every operation (ten times slower measured on a loaded 2-core host), so the
query paths run such work on one thread.
"""

from __future__ import annotations

from contextlib import contextmanager


@contextmanager
def intra_op_threads(n: int | None):
    """Run the block with ``n`` torch intra-op threads (``None``: unchanged), then restore the setting."""
    if n is None:
        yield
        return
    import torch

    old = torch.get_num_threads()
    if n == old:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
