"""The training loop."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import torch

from ..errors import InputError, option
from ..losses import contrastive_with_flops
from ..pairs import Pair
from ..regularizers import nonzeros, weight_at
from .batches import FrozenCache, also_positive, batch_indices, lr_at, negatives_for_batch
from .checkpoints import LOG_FILE, OPTIMIZER_FILE, STATE_FILE, checkpoints, last_log, load_optimizer, save_checkpoint
from .config import STAGES, TrainConfig


@dataclass
class TrainResult:
    final_dir: Path
    steps: int
    last: dict  # the last logged record
    seconds: float


def train(model, pairs: Sequence[Pair], config: TrainConfig,
          negatives: Mapping[str, Sequence] | None = None) -> TrainResult:
    """Train ``model`` on ``pairs`` for ``config.steps`` steps of ``config.stage``; returns where it saved.

    ``negatives`` (optional) maps query ids to ``(doc_id, Input)`` hard negatives
    (see :func:`negatives_for_batch`; ``anserini_bridge.mining.mine_negatives``
    mines them from an impact index); each step adds one per pair to the
    contrastive loss.
    """
    if not pairs:
        raise InputError("no training pairs")
    trained, mask_text = STAGES[config.stage]
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    model.to(None if config.device == "auto" else config.device, torch.float32)
    device = model.device
    if hasattr(model, "text_expansion"):
        model.text_expansion = not mask_text

    groups = model.parameter_groups()
    for name, params in groups.items():
        for p in params:
            p.requires_grad_(name in trained)
    tower = model.tower_modules() if config.freeze_tower and hasattr(model, "tower_modules") else []
    fixed = {id(p) for m in tower for p in m.parameters()}
    for m in tower:
        m.requires_grad_(False)
    params = [p for name in trained for p in groups[name] if id(p) not in fixed]
    if not params:
        raise InputError(f"stage {config.stage} with freeze_tower leaves nothing to train")
    if tower and hasattr(model, "use_features"):
        images = sorted({str(x.image) for p in pairs for x in (p.query, p.document)
                         if x.image is not None and isinstance(x.image, (str, os.PathLike))})
        if images:
            cache_dir = config.feature_cache or os.path.join(os.path.expanduser("~"), ".cache", "lsr", "features")
            model.use_features(model.compute_features(images, cache_dir, progress=config.progress))
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)

    start = 0
    found = checkpoints(out)
    if config.resume and found:
        ckpt = found[-1]
        state = json.loads((ckpt / STATE_FILE).read_text(encoding="utf-8"))
        if int(state.get("stage", config.stage)) != config.stage:
            raise InputError(f"{ckpt} is a stage {state.get('stage')} checkpoint but this run is stage {config.stage}; "
                             "continue a finished stage with model = <its final directory> and a new output_dir")
        model.load_weights(ckpt)
        load_optimizer(optimizer, ckpt / OPTIMIZER_FILE)
        start = int(state["step"])
    elif found and not config.resume:
        raise InputError(f"{out} already holds checkpoints ({found[-1].name}); pass "
                         f"{option('resume=True', '--resume')} to continue "
                         "or choose a new output directory")
    if start >= config.steps and (out / "final").is_dir():
        last = last_log(out)
        return TrainResult(out / "final", start, last, 0.0)

    for m in model.image_modules():
        m.train("image" in trained and m not in tower)
    for m in model.text_modules():
        m.train("text" in trained)
    autocast = (torch.autocast(device_type=device.type, dtype=torch.bfloat16) if config.bf16
                else contextlib.nullcontext())
    log = open(out / LOG_FILE, "a", encoding="utf-8")
    from lsr.progress import tqdm

    bar = tqdm(total=config.steps, initial=start, unit="step", desc=f"stage {config.stage}",
               disable=not config.progress)
    frozen = [name for name in ("text", "image") if name not in trained]
    cache = FrozenCache(frozen[0], config.cache_frozen) if frozen and config.cache_frozen else None
    t0 = time.perf_counter()
    last: dict = {}
    sums: dict[str, float] = {}
    count = 0
    try:
        for step in range(start, config.steps):
            batch = [pairs[i] for i in batch_indices(len(pairs), config.batch_size, config.seed, step)]
            lq = weight_at(step, config.lambda_q, config.lambda_warmup_steps)
            ld = weight_at(step, config.lambda_d, config.lambda_warmup_steps)
            with autocast:
                if cache is not None:
                    q = cache.vectors(model, [p.query for p in batch], mask_text)
                    d = cache.vectors(model, [p.document for p in batch], mask_text)
                else:
                    q = model.forward_inputs([p.query for p in batch], mask_text_to_input=mask_text)
                    d = model.forward_inputs([p.document for p in batch], mask_text_to_input=mask_text)
                neg = negatives_for_batch(batch, negatives, config.seed, step) if negatives else None
                if neg is not None:
                    neg_vecs = (cache.vectors(model, neg[0], mask_text) if cache is not None
                                else model.forward_inputs(neg[0], mask_text_to_input=mask_text))
            parts = contrastive_with_flops(q.float(), d.float(), lq, ld, config.temperature, also_positive(batch),
                                           neg_vecs.float() if neg is not None else None,
                                           neg[1] if neg is not None else None)
            if not torch.isfinite(parts["loss"]):
                raise InputError(f"step {step}: the loss is {parts['loss'].item()}; lower the learning rate "
                                 "or the lambdas")
            optimizer.zero_grad(set_to_none=True)
            parts["loss"].backward()
            if config.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
            lr = lr_at(step, config)
            for g in optimizer.param_groups:
                g["lr"] = lr
            optimizer.step()

            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            sums["nnz_q"] = sums.get("nnz_q", 0.0) + nonzeros(q.detach())
            sums["nnz_d"] = sums.get("nnz_d", 0.0) + nonzeros(d.detach())
            count += 1
            done = step + 1
            bar.update(1)
            if done % config.log_every == 0 or done == config.steps:
                last = {"step": done, "stage": config.stage, **{k: v / count for k, v in sums.items()},
                        "lr": lr, "lambda_q": lq, "lambda_d": ld,
                        "seconds": round(time.perf_counter() - t0, 3)}
                log.write(json.dumps(last) + "\n")
                log.flush()
                bar.set_postfix(loss=f"{last['loss']:.3f}", nnz_q=f"{last['nnz_q']:.0f}",
                                nnz_d=f"{last['nnz_d']:.0f}")
                sums, count = {}, 0
            if config.save_every and done % config.save_every == 0 and done < config.steps:
                save_checkpoint(model, optimizer, out, done, config)
        save_checkpoint(model, optimizer, out, config.steps, config)
        final = out / "final"
        tmp = out / "final.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        model.save(tmp, extra={"trained": {"stage": config.stage, "steps": config.steps}})
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    finally:
        bar.close()
        log.close()
        for m in model.image_modules() + model.text_modules():
            m.eval()
        for params_ in groups.values():
            for p in params_:
                p.requires_grad_(True)
        if tower and hasattr(model, "use_features"):
            model.use_features(None)
    return TrainResult(final, config.steps, last, time.perf_counter() - t0)
