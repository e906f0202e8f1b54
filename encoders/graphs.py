"""CUDA graphs for fixed-shape inference: one capture per input shape, then one launch per call.

An eager forward pass of a BERT-sized model issues several hundred kernel
launches from Python; on a fast GPU with batches of ~100 short passages the
host's launch time, not the device, sets the pace, and any other Python work
in the process (tokenization, collection) slows the launches further. A
captured graph replays the whole pass with one launch.

:class:`GraphedFunction` wraps ``fn(*tensors) -> tensor``. The first call with
a new set of input shapes runs ``fn`` eagerly a few times on a side stream
(lazy initialisation must not happen during capture), captures it into a
graph that shares one memory pool with the other shapes' graphs, replays it
and compares the result with the eager output. Any failure during capture, or
a mismatch, switches the wrapper off for good (``reason`` says why) and the
caller runs ``fn`` eagerly; nothing is lost but the attempt.

Replays happen on the caller's current stream, in call order, so graphs that
share the pool never run concurrently. Each call returns a fresh copy of the
graph's output, which the caller may keep while later calls replay.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch


@dataclass
class _Captured:
    inputs: list[torch.Tensor]
    output: torch.Tensor
    graph: object  # torch.cuda.CUDAGraph


@dataclass
class GraphStats:
    captured: int = 0
    replays: int = 0
    eager: int = 0
    shapes: list[tuple] = field(default_factory=list)


class GraphedFunction:
    """``fn`` replayed from CUDA graphs, one per input shape (see the module docstring)."""

    def __init__(self, fn: Callable[..., torch.Tensor], *, warmup: int = 2, rtol: float = 2e-2, atol: float = 2e-2,
                 max_graphs: int = 64):
        self.fn = fn
        self.warmup = warmup
        self.rtol, self.atol = rtol, atol
        self.max_graphs = max_graphs
        self.reason: str | None = None  # set when graphs were switched off
        self.stats = GraphStats()
        self._graphs: dict[tuple, _Captured] = {}
        self._pool = None

    @property
    def active(self) -> bool:
        return self.reason is None

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        """``fn(*inputs)``, from a graph when one is (or can be) captured for these shapes, else eagerly."""
        out = self.replay(*inputs)
        if out is None:
            self.stats.eager += 1
            return self.fn(*inputs)
        return out

    def replay(self, *inputs: torch.Tensor) -> torch.Tensor | None:
        """The graph's result for ``inputs``, or ``None`` when graphs are off or none can be captured."""
        if self.reason is not None or not all(t.is_cuda for t in inputs):
            return None
        key = tuple((tuple(t.shape), t.dtype, t.device) for t in inputs)
        captured = self._graphs.get(key)
        if captured is None:
            if len(self._graphs) >= self.max_graphs:
                return None
            captured = self._capture(key, inputs)
            if captured is None:
                return None
        for static, x in zip(captured.inputs, inputs):
            static.copy_(x, non_blocking=True)
        captured.graph.replay()
        self.stats.replays += 1
        return captured.output.clone()

    def _capture(self, key: tuple, inputs: tuple[torch.Tensor, ...]) -> _Captured | None:
        device = inputs[0].device
        try:
            with torch.cuda.device(device):
                static = [x.clone() for x in inputs]
                caller = torch.cuda.current_stream()
                side = torch.cuda.Stream()
                side.wait_stream(caller)
                with torch.cuda.stream(side):
                    for _ in range(max(1, self.warmup)):
                        expected = self.fn(*static)
                caller.wait_stream(side)
                graph = torch.cuda.CUDAGraph()
                # thread_local: other threads of the process may use the device while this one captures
                with torch.cuda.graph(graph, pool=self._pool, capture_error_mode="thread_local"):
                    output = self.fn(*static)
                if self._pool is None:
                    self._pool = graph.pool()
                graph.replay()
                if output.shape != expected.shape or not torch.allclose(
                        output.float(), expected.float(), rtol=self.rtol, atol=self.atol):
                    diff = (output.float() - expected.float()).abs().max().item()
                    self.reason = f"graph replay differs from the eager result (max |diff| {diff:.3g})"
                    return None
        except Exception as e:  # noqa: BLE001 - any capture problem: run eagerly from now on
            self.reason = f"capture failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            return None
        captured = _Captured(static, output, graph)
        self._graphs[key] = captured
        self.stats.captured += 1
        self.stats.shapes.append(key[0][0])
        return captured

    def reset(self) -> None:
        """Drop every graph and its memory."""
        self._graphs.clear()
        self._pool = None
