"""A run's files: checkpoints (model, optimizer state, position) and the training log."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from ..errors import InputError
from .config import TrainConfig

LOG_FILE = "train-log.jsonl"
STATE_FILE = "trainer-state.json"
OPTIMIZER_FILE = "optimizer.safetensors"
CHECKPOINT_PREFIX = "checkpoint-"


def checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints in ``output_dir``, oldest first."""
    out = Path(output_dir)
    if not out.is_dir():
        return []
    found = [p for p in out.glob(CHECKPOINT_PREFIX + "*") if (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):]))


def save_optimizer(optimizer: torch.optim.Optimizer, path: str | os.PathLike) -> None:
    """The optimizer's state in safetensors (tensors) with its hyperparameters in the file's metadata."""
    from safetensors.torch import save_file

    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, state in sd["state"].items():
        for key, value in state.items():
            name = f"state.{idx}.{key}"
            if torch.is_tensor(value):
                tensors[name] = value.detach().cpu().contiguous()
            else:
                scalars[name] = value
    meta = {"param_groups": sd["param_groups"], "scalars": scalars}
    save_file(tensors, str(path), metadata={"lsr-optimizer": json.dumps(meta)})


def load_optimizer(optimizer: torch.optim.Optimizer, path: str | os.PathLike) -> None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = json.loads(fh.metadata()["lsr-optimizer"])
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
        raise InputError(f"{path}: unreadable optimizer state ({e}); delete the checkpoint or start afresh") from None
    state: dict[int, dict] = {}
    for name, value in list(tensors.items()) + list(meta["scalars"].items()):
        _, idx, key = name.split(".", 2)
        state.setdefault(int(idx), {})[key] = value
    groups = meta["param_groups"]
    for g in groups:
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except ValueError as e:
        raise InputError(f"{path}: the optimizer state does not fit this run ({e}); was the stage changed?") from None


def save_checkpoint(model, optimizer, out: Path, step: int, config: TrainConfig) -> Path:
    name = f"{CHECKPOINT_PREFIX}{step:07d}"
    tmp = out / (name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save(tmp, extra={"trained": {"stage": config.stage, "steps": step}})
    save_optimizer(optimizer, tmp / OPTIMIZER_FILE)
    (tmp / STATE_FILE).write_text(json.dumps({"step": step, "stage": config.stage, "config": config.to_dict()},
                                             indent=2) + "\n", encoding="utf-8")
    dest = out / name
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    if config.keep_checkpoints:
        for old in checkpoints(out)[:-config.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
    return dest


def last_log(out: Path) -> dict:
    path = out / LOG_FILE
    if not path.is_file():
        return {}
    lines = [l for l in path.read_text(encoding="utf-8").splitlines() if l.strip()]
    return json.loads(lines[-1]) if lines else {}


def read_log(output_dir: str | os.PathLike) -> list[dict]:
    """The records of ``train-log.jsonl``."""
    path = Path(output_dir) / LOG_FILE
    if not path.is_file():
        return []
    return [json.loads(l) for l in path.read_text(encoding="utf-8").splitlines() if l.strip()]
