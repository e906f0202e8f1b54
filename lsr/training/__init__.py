"""The training loop for sparse encoders: in-batch contrastive loss, FLOPs regularization, STAIR stages.

The loop works on any model object that offers (see :class:`encoders.stair.StairEncoder`)::

    model.to(device, dtype) -> model
    model.parameter_groups() -> {"image": [...], "text": [...]}
    model.image_modules(), model.text_modules() -> lists of torch modules
    model.forward_inputs(inputs, mask_text_to_input=bool) -> [batch, vocab] tensor with autograd
    model.save(directory, extra=dict), model.load_weights(directory)
    optional, for ``freeze_tower``: model.tower_modules(), model.compute_features(images, cache_dir),
    model.use_features(features or None)

STAIR's three stages (Chen et al., 2023):

1. text vectors are masked to the word pieces that occur in the text; only the
   image side (tower and token head) is trained, so image vectors learn to
   predict the words of their captions;
2. the image side is frozen and the text side is trained (no mask), so text
   vectors learn to expand into the words images activate;
3. everything is trained, no mask.

A model trained in stage 1 is saved with ``text_expansion = false``: its text
vectors keep to their own word pieces at inference too, as in training.

Output directory::

    OUT/train-log.jsonl            one line per logged step: loss parts, non-zeros per vector, lr, lambdas
    OUT/checkpoint-0000100/        a full model directory plus optimizer.safetensors and trainer-state.json
    OUT/final/                     the model after the last step (loadable by path)

``resume = true`` continues from the newest checkpoint: weights, optimizer state
and the position in the (seeded, deterministic) batch order. Dropout's random
state is not restored.

Modules: :mod:`~lsr.training.config` (:class:`TrainConfig`, the stages),
:mod:`~lsr.training.batches` (learning rate, batch order, negatives, the
frozen-side cache), :mod:`~lsr.training.checkpoints` (checkpoints and the log)
and :mod:`~lsr.training.loop` (:func:`train`).
"""

from __future__ import annotations

from .batches import FrozenCache, also_positive, batch_indices, lr_at, negatives_for_batch  # noqa: F401
from .checkpoints import (CHECKPOINT_PREFIX, LOG_FILE, OPTIMIZER_FILE, STATE_FILE, checkpoints,  # noqa: F401
                          load_optimizer, read_log, save_optimizer)
from .config import STAGES, TrainConfig  # noqa: F401
from .loop import TrainResult, train  # noqa: F401

__all__ = ["STAGES", "TrainConfig", "TrainResult", "also_positive", "batch_indices", "checkpoints", "load_optimizer",
           "negatives_for_batch", "lr_at", "read_log", "save_optimizer", "train"]
