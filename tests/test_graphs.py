"""CUDA graph replay of fixed-shape functions (needs a CUDA device; skipped without one)."""

import pytest
import torch

from encoders.graphs import GraphedFunction

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_replays_one_graph_per_shape_and_returns_fresh_results():
    weight = torch.randn(32, 8, device="cuda")
    fn = GraphedFunction(lambda x: torch.relu(x @ weight.T).amax(dim=1))
    outs = []
    for rows in (4, 4, 6, 4):
        x = torch.randn(rows, 5, 8, device="cuda")
        got = fn(x)
        torch.testing.assert_close(got, torch.relu(x @ weight.T).amax(dim=1))
        outs.append((x, got))
    assert fn.active and fn.stats.captured == 2 and fn.stats.replays == 4
    for x, got in outs:  # earlier results are copies, not overwritten by later replays
        torch.testing.assert_close(got, torch.relu(x @ weight.T).amax(dim=1))


def test_a_function_that_waits_for_the_device_falls_back_to_eager():
    def syncing(x):
        return x * float(x.sum().item())

    fn = GraphedFunction(syncing)
    x = torch.ones(3, device="cuda")
    torch.testing.assert_close(fn(x), x * 3.0)
    assert not fn.active and "capture failed" in fn.reason
    torch.testing.assert_close(fn(x), x * 3.0)
    assert fn.stats.eager == 2
    y = torch.randn(10, device="cuda")  # the device still works after the failed capture
    torch.testing.assert_close(y * 2, y + y)
