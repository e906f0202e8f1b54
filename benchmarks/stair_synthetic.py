"""Learnability of STAIR on a synthetic captioned-image task, generated at run time with PIL.

Images show one shape of one colour at one position ("a red circle on the
left"). A fifth of the shape x colour x position combinations never appear in
training; the test asks, for each held-out caption, which of the held-out
images (one per combination, drawn afresh) it describes: text -> image
Recall@1, chance = 1 / number of held-out combinations.

The image side is a tiny randomly initialised open_clip ViT with the token
prediction head; the text side is the real SPLADE-tiny model. Training is
STAIR stage 1 (text vectors masked to their own word pieces, image side
trained), run twice: with FLOPs regularization on the image vectors and with
lambda = 0. Vectors are evaluated through ``encode_queries`` /
``encode_documents``, the same path that exports to an index.

    python -m benchmarks.stair_synthetic --json OUT.json [--steps N] [--quick]
    python -m benchmarks.stair_synthetic --write-data DIR     # the same data as files, for lsr train
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SHAPES = ("circle", "square", "triangle", "star", "diamond", "cross")
COLOURS = {
    "red": (220, 30, 30), "green": (30, 170, 50), "blue": (40, 70, 235),
    "yellow": (235, 220, 30), "purple": (140, 40, 190), "orange": (245, 135, 15),
}
POSITIONS = {  # caption phrase, centre as a fraction of the image side
    "left": ("on the left", (0.25, 0.5)), "right": ("on the right", (0.75, 0.5)),
    "top": ("at the top", (0.5, 0.25)), "bottom": ("at the bottom", (0.5, 0.75)),
    "center": ("in the center", (0.5, 0.5)),
}


def caption(shape: str, colour: str, position: str) -> str:
    return f"a {colour} {shape} {POSITIONS[position][0]}"


def draw(shape: str, colour: str, position: str, rng: np.random.Generator, size: int = 32):
    """One PIL image: the shape drawn at 4x resolution with jittered size, place and tint, then downsampled."""
    from PIL import Image, ImageDraw

    s = size * 4
    bg = int(rng.integers(15, 70))
    img = Image.new("RGB", (s, s), (bg, bg, bg))
    d = ImageDraw.Draw(img)
    fx, fy = POSITIONS[position][1]
    cx = fx * s + rng.uniform(-0.05, 0.05) * s
    cy = fy * s + rng.uniform(-0.05, 0.05) * s
    r = rng.uniform(0.13, 0.18) * s
    fill = tuple(int(np.clip(c + rng.integers(-20, 21), 0, 255)) for c in COLOURS[colour])
    if shape == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        q = r * 0.85
        d.rectangle([cx - q, cy - q, cx + q, cy + q], fill=fill)
    elif shape == "triangle":
        d.polygon([(cx, cy - r), (cx + r, cy + r * 0.8), (cx - r, cy + r * 0.8)], fill=fill)
    elif shape == "diamond":
        d.polygon([(cx, cy - r), (cx + r * 0.8, cy), (cx, cy + r), (cx - r * 0.8, cy)], fill=fill)
    elif shape == "cross":
        w = r * 0.35
        d.rectangle([cx - r, cy - w, cx + r, cy + w], fill=fill)
        d.rectangle([cx - w, cy - r, cx + w, cy + r], fill=fill)
    elif shape == "star":
        pts = []
        for k in range(10):
            ang = -np.pi / 2 + k * np.pi / 5
            rr = r if k % 2 == 0 else r * 0.45
            pts.append((cx + rr * np.cos(ang), cy + rr * np.sin(ang)))
        d.polygon(pts, fill=fill)
    else:
        raise ValueError(shape)
    arr = np.asarray(img.resize((size, size), Image.LANCZOS), dtype=np.int16)
    arr = np.clip(arr + rng.integers(-6, 7, arr.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(arr, "RGB")


@dataclass
class Task:
    train_combos: list[tuple[str, str, str]]
    test_combos: list[tuple[str, str, str]]
    train_pairs: list  # lsr.pairs.Pair
    test_galleries: list[list]  # one list of images (one per test combo) per rendering
    image_size: int = 32


def make_task(seed: int = 0, per_combo: int = 16, test_renderings: int = 5, held_out: float = 0.2,
              image_size: int = 32) -> Task:
    """The train pairs (rendered images of the training combinations) and the held-out test galleries."""
    from lsr.inputs import Input
    from lsr.pairs import Pair

    rng = np.random.default_rng(seed)
    combos = [(s, c, p) for s in SHAPES for c in COLOURS for p in POSITIONS]
    order = rng.permutation(len(combos))
    n_test = int(round(held_out * len(combos)))
    test = [combos[i] for i in sorted(order[:n_test])]
    train = [combos[i] for i in sorted(order[n_test:])]
    for k, values in enumerate((SHAPES, COLOURS, POSITIONS)):  # every word is seen in training
        missing = set(values) - {c[k] for c in train}
        assert not missing, missing
    pairs = []
    for combo in train:
        text = caption(*combo)
        for j in range(per_combo):
            pairs.append(Pair(Input(text=text), Input(image=draw(*combo, rng, image_size)), text, f"{text}#{j}"))
    galleries = [[draw(*combo, rng, image_size) for combo in test] for _ in range(test_renderings)]
    return Task(train, test, pairs, galleries, image_size)


def write_beir(task: Task, root: str | Path) -> Path:
    """Write the task as a BEIR-style directory with PNG files (for ``lsr train --config``).

    Training images are documents ``train-N`` judged for their caption
    (``qrels/train.tsv``); the first test rendering is documents ``test-N``
    judged for the held-out captions (``qrels/test.tsv``).
    """
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "qrels").mkdir(exist_ok=True)
    corpus, queries, train_qrels, test_qrels = [], {}, [], []
    for i, pair in enumerate(task.train_pairs):
        pair.document.image.save(root / "images" / f"train-{i}.png")
        corpus.append({"_id": f"train-{i}", "image": f"images/train-{i}.png"})
        qid = "q-" + pair.query_id.replace(" ", "-")
        queries[qid] = pair.query.text
        train_qrels.append(f"{qid}\ttrain-{i}\t1")
    for i, (combo, image) in enumerate(zip(task.test_combos, task.test_galleries[0])):
        image.save(root / "images" / f"test-{i}.png")
        corpus.append({"_id": f"test-{i}", "image": f"images/test-{i}.png"})
        text = caption(*combo)
        qid = "q-" + text.replace(" ", "-")
        queries[qid] = text
        test_qrels.append(f"{qid}\ttest-{i}\t1")
    with open(root / "corpus.jsonl", "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(d) + "\n" for d in corpus)
    with open(root / "queries.jsonl", "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps({"_id": q, "text": t}) + "\n" for q, t in queries.items())
    for name, rows in (("train", train_qrels), ("test", test_qrels)):
        (root / "qrels" / f"{name}.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(rows) + "\n")
    return root


def evaluate(encoder, task: Task, top_k: int = 5) -> dict:
    """Text -> image Recall@1 over the held-out galleries, non-zeros per vector, top-token hit rates."""
    captions = [caption(*c) for c in task.test_combos]
    q = encoder.encode_queries(captions)
    hits, nnz, colour_hits, shape_hits, position_hits = [], [], [], [], []
    examples = []
    for g, gallery in enumerate(task.test_galleries):
        d = encoder.encode_documents([_image_input(im) for im in gallery])
        nnz.extend(d.nnz.tolist())
        scores = q.dot(d)
        # ties count against the query: the correct image must score strictly higher than every other
        correct = np.diag(scores)
        others = scores - np.diag(np.full(len(correct), np.inf))
        hits.extend((correct > others.max(axis=1)).tolist())
        for i, (shape, colour, position) in enumerate(task.test_combos):
            top = [t for t, _ in sorted(d.to_dict(i).items(), key=lambda kv: -kv[1])[:top_k]]
            colour_hits.append(colour in top)
            shape_hits.append(shape in top)
            position_hits.append(position in top)
            if g == 0 and len(examples) < 4:
                examples.append({"caption": captions[i], "top_tokens": top})
    return {
        "recall_at_1": float(np.mean(hits)),
        "chance": 1.0 / len(task.test_combos),
        "queries": len(hits),
        "nnz_image_mean": float(np.mean(nnz)),
        "nnz_query_mean": float(q.nnz.mean()),
        f"colour_in_top{top_k}": float(np.mean(colour_hits)),
        f"shape_in_top{top_k}": float(np.mean(shape_hits)),
        f"position_in_top{top_k}": float(np.mean(position_hits)),
        "examples": examples,
    }


def log(message: str) -> None:
    """A progress line on standard error (the table goes to standard output)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _image_input(im):
    from lsr.inputs import Input

    return Input(image=im)


@dataclass
class RunSettings:
    steps: int = 300
    batch_size: int = 32
    learning_rate: float = 1e-3
    temperature: float = 1.0
    lambda_d: float = 3e-4
    lambda_warmup_steps: int = 100
    per_combo: int = 16
    test_renderings: int = 5
    seed: int = 0
    threads: int | None = None
    extra: dict = field(default_factory=dict)


def train_and_evaluate(task: Task, settings: RunSettings, lambda_d: float, workdir: Path) -> dict:
    import torch

    from encoders.stair import StairEncoder
    from lsr.training import TrainConfig, train

    torch.manual_seed(settings.seed)
    encoder = StairEncoder.create(image_model="stair-tiny-vit", text_model="splade-tiny", device="cpu",
                                  batch_size=256)
    config = TrainConfig(
        output_dir=str(workdir), stage=1, steps=settings.steps, batch_size=settings.batch_size,
        learning_rate=settings.learning_rate, warmup_steps=min(50, settings.steps // 10), lr_schedule="linear",
        temperature=settings.temperature, lambda_q=0.0, lambda_d=lambda_d,
        lambda_warmup_steps=settings.lambda_warmup_steps, weight_decay=0.01, device="cpu", seed=settings.seed,
        log_every=max(1, settings.steps // 10), save_every=0, keep_checkpoints=1, progress=True,
    )
    t0 = time.perf_counter()
    result = train(encoder, task.train_pairs, config)
    train_s = time.perf_counter() - t0
    log(f"lambda_d={lambda_d:g}: trained {settings.steps} steps in {train_s:.0f} s; evaluating on "
        f"{len(task.test_galleries)} x {len(task.test_combos)} held-out images")
    metrics = evaluate(encoder, task)
    metrics["train_seconds"] = round(train_s, 1)
    metrics["last_log"] = result.last
    return metrics


def run(settings: RunSettings, flops_off: bool = True) -> dict:
    import torch

    if settings.threads:
        torch.set_num_threads(settings.threads)
    log(f"rendering the task: {settings.per_combo} images per training combination, "
        f"{settings.test_renderings} test renderings")
    task = make_task(settings.seed, settings.per_combo, settings.test_renderings)
    runs = 2 if flops_off else 1
    with tempfile.TemporaryDirectory(prefix="stair-synthetic-") as tmp:
        log(f"run 1 of {runs}: FLOPs on (lambda_d={settings.lambda_d:g}), {settings.steps} steps of "
            f"{settings.batch_size} pairs ({len(task.train_pairs)} pairs)")
        on = train_and_evaluate(task, settings, settings.lambda_d, Path(tmp) / "flops-on")
        if flops_off:
            log(f"run 2 of {runs}: FLOPs off (lambda_d=0), {settings.steps} steps")
        off = train_and_evaluate(task, settings, 0.0, Path(tmp) / "flops-off") if flops_off else None
    out = {
        "recall_at_1": on["recall_at_1"],
        "chance": on["chance"],
        "nnz_flops_on": on["nnz_image_mean"],
        "nnz_flops_off": off["nnz_image_mean"] if off else None,
        "recall_at_1_flops_off": off["recall_at_1"] if off else None,
        "train_pairs": len(task.train_pairs),
        "train_combinations": len(task.train_combos),
        "test_combinations": len(task.test_combos),
        "settings": settings.__dict__,
        "flops_on": on,
        "flops_off": off,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "cpu_count": os.cpu_count(),
        "load_average_at_end": list(os.getloadavg()),
        "torch_threads": torch.get_num_threads(),
    }
    return out


def print_table(res: dict) -> None:
    on, off = res["flops_on"], res["flops_off"]
    rows = [("FLOPs on (lambda_d=%g)" % res["settings"]["lambda_d"], on)]
    if off:
        rows.append(("FLOPs off (lambda=0)", off))
    print(f"held-out combinations: {res['test_combinations']} (chance Recall@1 = {res['chance']:.3f}), "
          f"train pairs: {res['train_pairs']} over {res['train_combinations']} combinations")
    print("| run | Recall@1 | nnz / image | nnz / query | colour in top-5 | shape in top-5 | position in top-5 "
          "| train s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, m in rows:
        print(f"| {name} | {m['recall_at_1']:.3f} | {m['nnz_image_mean']:.1f} | {m['nnz_query_mean']:.1f} | "
              f"{m['colour_in_top5']:.2f} | {m['shape_in_top5']:.2f} | {m['position_in_top5']:.2f} | "
              f"{m['train_seconds']:.0f} |")
    for ex in on["examples"]:
        print(f"  {ex['caption']!r}: image top tokens {ex['top_tokens']}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--lambda-d", type=float, default=None)
    ap.add_argument("--learning-rate", type=float, default=None)
    ap.add_argument("--temperature", type=float, default=None)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-flops-off", action="store_true", help="skip the lambda = 0 run")
    ap.add_argument("--quick", action="store_true", help="a short run (fewer steps and test renderings)")
    ap.add_argument("--write-data", metavar="DIR", help="only write the task as a BEIR-style directory with PNG "
                    "images (for lsr train) and exit")
    args = ap.parse_args(argv)
    settings = RunSettings()
    if args.quick:
        settings.steps, settings.per_combo, settings.test_renderings, settings.lambda_warmup_steps = 120, 8, 1, 40
    for name in ("steps", "lambda_d", "learning_rate", "temperature", "batch_size", "seed", "threads"):
        if getattr(args, name) is not None:
            setattr(settings, name, getattr(args, name))
    if args.write_data:
        task = make_task(settings.seed, settings.per_combo, 1)
        root = write_beir(task, args.write_data)
        print(f"wrote {len(task.train_pairs)} training and {len(task.test_combos)} test images with captions to {root}")
        return 0
    t0 = time.perf_counter()
    res = run(settings, flops_off=not args.no_flops_off)
    res["total_seconds"] = round(time.perf_counter() - t0, 1)
    print_table(res)
    print(f"total {res['total_seconds']:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
