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
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from .errors import InputError, option
from .losses import contrastive_with_flops
from .pairs import Pair
from .regularizers import nonzeros, weight_at

#: stage -> (parameter groups trained, text vectors masked to their own tokens)
STAGES: dict[int, tuple[tuple[str, ...], bool]] = {1: (("image",), True), 2: (("text",), False),
                                                   3: (("image", "text"), False)}
LOG_FILE = "train-log.jsonl"
STATE_FILE = "trainer-state.json"
OPTIMIZER_FILE = "optimizer.safetensors"
CHECKPOINT_PREFIX = "checkpoint-"


@dataclass
class TrainConfig:
    """Everything a training run needs; ``lsr train --config FILE`` reads it from JSON or TOML."""

    # data
    data: str = ""  # BEIR-style directory, or an M-BEIR query JSONL
    data_format: str = "auto"  # "auto", "beir", "mbeir" or "captions" (captions JSONL, token file, Karpathy JSON)
    split: str = "train"  # BEIR qrels split; captions: a Karpathy split name or a Flickr split list file
    candidates: str | None = None  # M-BEIR candidate pool JSONL
    image_root: str | None = None  # base of relative image paths (default: the data file's directory)
    instruction: str | None = None  # prepended to query text when a query has none of its own
    # model: continue from a saved model, or build a new one
    model: str | None = None  # saved STAIR directory (or alias); overrides the fields below
    image_model: str = "ViT-B-16"  # open_clip model name
    pretrained: str | None = None  # open_clip tag or local checkpoint file; None = random init
    text_model: str = "splade-tiny"
    max_length: int = 64  # word pieces per text
    head_vocab: str = "all"  # image head over "all" word pieces, or only those in the training "captions"
    freeze_tower: bool = False  # keep the image tower fixed (LiT); its features are computed once and cached
    feature_cache: str | None = None  # directory of cached tower features (default ~/.cache/lsr/features)
    # optimisation
    output_dir: str = "stair-run"
    stage: int = 1
    steps: int = 1000
    batch_size: int = 32
    learning_rate: float = 5e-5
    weight_decay: float = 0.01
    warmup_steps: int = 0  # linear learning-rate warm-up
    lr_schedule: str = "linear"  # after warm-up: "linear" decay to 0, or "constant"
    grad_clip: float = 1.0  # max gradient norm; 0 disables clipping
    temperature: float = 1.0
    lambda_q: float = 0.0  # FLOPs weight on query vectors
    lambda_d: float = 0.0  # FLOPs weight on document vectors
    lambda_warmup_steps: int = 0  # quadratic warm-up of both lambdas
    # machinery
    device: str = "auto"
    bf16: bool = False  # autocast to bfloat16 (weights and optimizer stay float32)
    seed: int = 0
    cache_frozen: int = 100_000  # vectors of single-modality inputs of the frozen side kept in memory (0: none)
    log_every: int = 10
    save_every: int = 0  # 0: only at the end
    keep_checkpoints: int = 2
    resume: bool = False
    progress: bool = True

    def __post_init__(self):
        if self.stage not in STAGES:
            raise InputError(f"stage must be 1, 2 or 3, got {self.stage!r}")
        for name in ("steps", "batch_size", "log_every"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"{name} must be at least 1, got {getattr(self, name)!r}")
        for name in ("learning_rate", "temperature"):
            if not float(getattr(self, name)) > 0:
                raise InputError(f"{name} must be positive, got {getattr(self, name)!r}")
        for name in ("weight_decay", "lambda_q", "lambda_d", "grad_clip"):
            if float(getattr(self, name)) < 0:
                raise InputError(f"{name} must be non-negative, got {getattr(self, name)!r}")
        for name in ("warmup_steps", "lambda_warmup_steps", "save_every", "keep_checkpoints", "cache_frozen"):
            if int(getattr(self, name)) < 0:
                raise InputError(f"{name} must be non-negative, got {getattr(self, name)!r}")
        if self.head_vocab not in ("all", "captions"):
            raise InputError(f"head_vocab must be 'all' or 'captions', not {self.head_vocab!r}")
        if self.lr_schedule not in ("linear", "constant"):
            raise InputError(f"lr_schedule must be 'linear' or 'constant', not {self.lr_schedule!r}")

    # ------------------------------------------------------------- files
    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> "TrainConfig":
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise InputError(f"{source}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        try:
            return cls(**d)
        except TypeError as e:
            raise InputError(f"{source}: {e}") from None

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "TrainConfig":
        """Read a ``.json`` or ``.toml`` file (a TOML file may put the settings in a ``[train]`` table).

        Relative paths in the file are resolved against the file's directory.
        """
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: config file not found")
        try:
            if path.suffix.lower() == ".toml":
                try:
                    import tomllib
                except ImportError:  # Python 3.10
                    raise InputError(f"{path}: TOML configs need Python 3.11 or later; use a JSON file") from None
                with open(path, "rb") as fh:
                    d = tomllib.load(fh)
                d = d.get("train", d)
            else:
                d = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise InputError(f"{path}: not valid {'TOML' if path.suffix.lower() == '.toml' else 'JSON'} ({e})") from None
        if not isinstance(d, dict):
            raise InputError(f"{path}: expected an object of settings")
        cfg = cls.from_dict(d, str(path))
        # Relative paths are relative to the config file. model and pretrained may also be names
        # (an alias, an open_clip tag), so they are taken as paths only when the file exists.
        base = path.parent
        for name in ("data", "candidates", "image_root", "output_dir", "model", "pretrained", "feature_cache",
                     "split"):
            value = getattr(cfg, name)
            if not value or os.path.isabs(os.path.expanduser(value)):
                continue
            if name not in ("model", "pretrained", "split") or (base / value).exists():
                setattr(cfg, name, str(base / value))
        return cfg

    def replace(self, **changes) -> "TrainConfig":
        """A copy with the given settings changed (``None`` values are ignored)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ------------------------------------------------------------ pure helpers
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


# -------------------------------------------------------------- checkpoints
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


# ------------------------------------------------------------------ loop
@dataclass
class TrainResult:
    final_dir: Path
    steps: int
    last: dict  # the last logged record
    seconds: float


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
        last = _last_log(out)
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
                _save_checkpoint(model, optimizer, out, done, config)
        _save_checkpoint(model, optimizer, out, config.steps, config)
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


def _save_checkpoint(model, optimizer, out: Path, step: int, config: TrainConfig) -> Path:
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


def _last_log(out: Path) -> dict:
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


__all__ = ["STAGES", "TrainConfig", "TrainResult", "also_positive", "batch_indices", "checkpoints", "load_optimizer",
           "negatives_for_batch",
           "lr_at", "read_log", "save_optimizer", "train"]
