"""What each step trains on: the learning rate, the batch order, in-batch positives, hard negatives and
cached vectors of the frozen side."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch

from ..errors import InputError
from ..pairs import Pair
from .config import TrainConfig


def lr_at(step: int, config: TrainConfig) -> float:
    """Learning rate of ``step``: linear warm-up, then constant or linear decay to 0 at ``steps``."""
    base = config.learning_rate
    if config.warmup_steps and step < config.warmup_steps:
        return base * (step + 1) / config.warmup_steps
    if config.lr_schedule == "constant":
        return base
    rest = max(1, config.steps - config.warmup_steps)
    return base * max(0.0, 1.0 - (step - config.warmup_steps) / rest)


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """Indices of the pairs in batch ``step``: a seeded permutation per epoch, last partial batch dropped.

    A pure function of its arguments, so a resumed run sees the same batches.
    """
    if n < 1:
        raise InputError("no training pairs")
    size = min(batch_size, n)
    per_epoch = n // size
    epoch, b = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(n)
    return order[b * size:(b + 1) * size]


def also_positive(batch: Sequence[Pair]) -> torch.Tensor:
    """``[b, b]``: pairs that share their query or their document (not negatives of each other)."""
    q = np.array([p.query_id for p in batch], dtype=object)
    d = np.array([p.doc_id for p in batch], dtype=object)
    return torch.from_numpy((q[:, None] == q[None, :]) | (d[:, None] == d[None, :]))


class FrozenCache:
    """Vectors of inputs that only the frozen side of the model sees, computed once.

    In stage 1 the text side is frozen (and in eval mode), so a text-only
    input always gets the same vector; in stage 2 the same holds for
    image-only inputs. Entries are keyed by the identity of the
    :class:`~lsr.inputs.Input` object (the training pairs are held for the
    whole run) and kept as sparse tensors; at most ``capacity`` are kept.
    """

    def __init__(self, modality: str, capacity: int):
        self.modality = modality
        self.capacity = capacity
        self.store: dict[int, torch.Tensor] = {}

    def vectors(self, model, inputs: Sequence, mask_text: bool) -> torch.Tensor:
        n = len(inputs)
        cached = [i for i, x in enumerate(inputs) if id(x) in self.store]
        if not cached:
            todo = list(range(n))
        else:
            have = set(cached)
            todo = [i for i in range(n) if i not in have]
        computed = model.forward_inputs([inputs[i] for i in todo], mask_text_to_input=mask_text) if todo else None
        if computed is not None:
            for row, i in enumerate(todo):
                x = inputs[i]
                if x.modality == self.modality and len(self.store) < self.capacity and id(x) not in self.store:
                    self.store[id(x)] = computed[row].detach().to_sparse()
        if not cached:
            return computed
        rows = torch.stack([self.store[id(inputs[i])].to_dense() for i in cached])
        out = torch.zeros(n, rows.shape[1], dtype=rows.dtype, device=rows.device)
        out = out.index_copy(0, torch.tensor(cached, device=rows.device), rows)
        if computed is not None:
            out = out.index_copy(0, torch.tensor(todo, device=rows.device), computed.to(rows.dtype))
        return out


def negatives_for_batch(batch: Sequence[Pair], negatives: Mapping[str, Sequence], seed: int, step: int):
    """One hard negative per pair of the batch that has any (seeded choice): ``(inputs, mask)`` or ``None``.

    ``negatives`` maps a query id to ``(doc_id, Input)`` pairs, e.g. the top-ranked
    wrong documents of that query in an index of the current model. ``mask[i, j]``
    is true when negative ``j`` is a match of query ``i`` (its positive document).
    """
    rng = np.random.default_rng([seed, step, 7])
    chosen = []
    for p in batch:
        options = negatives.get(p.query_id)
        if options:
            chosen.append(options[int(rng.integers(len(options)))])
    if not chosen:
        return None
    neg_ids = np.array([d for d, _ in chosen], dtype=object)
    pos_ids = np.array([p.doc_id for p in batch], dtype=object)
    mask = torch.from_numpy(pos_ids[:, None] == neg_ids[None, :])
    return [x for _, x in chosen], mask
