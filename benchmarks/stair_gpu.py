"""STAIR throughput: image encoding (images/s) and one training step, in bf16 on a GPU.

Measured in one run, on the same device and batches:

* ``tower``: the open_clip image tower alone (its usual pooled embedding), the
  baseline every image encoder pays;
* ``tower+head``: tower, token head and the max over positions (no sparsification);
* ``encode_documents``: the full path, ``[3, H, W]`` uint8 tensors in, a CSR
  :class:`~lsr.sparse.SparseBatch` on the host out;
* ``encode_documents (PIL)``: the same from PIL images of another size
  (resize, crop and normalise on the CPU), on fewer images;
* one training step (stage 3: image and text sides, bf16 autocast, AdamW),
  median seconds and peak GPU memory.

The default is a randomly initialised ``ViT-B-16`` tower with the SPLADE-tiny
text side, batch 256. A random token head activates most of the vocabulary;
``--target-nnz`` (default 256) lowers the head's bias so that an image gets
about that many non-zeros, as a trained, FLOPs-regularized model does, so that
the CSR copy to the host is measured at a realistic size. ``--loop-steps``
also runs :func:`lsr.training.train` itself (stage 3, bf16) for a few steps on
the device. ``--device cpu --tiny`` runs the same code at toy size.

    python -m benchmarks.stair_gpu --json OUT.json
    python -m benchmarks.stair_gpu --device cpu --tiny --json OUT.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path


def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rate(fn, n_images: int, repeats: int, device) -> dict:
    """Images/s of ``fn()`` (which handles ``n_images``), median over ``repeats`` after one warm-up."""
    fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {"images_per_s": n_images / med, "seconds_median": med, "repeats": repeats}


def run(image_model: str, device: str, batch_size: int, images: int, pil_images: int, repeats: int,
        train_batch: int, train_steps: int, bf16: bool = True, target_nnz: int = 256, loop_steps: int = 0) -> dict:
    import numpy as np
    import torch
    from PIL import Image

    from encoders.stair import StairEncoder
    from lsr.inputs import Input
    from lsr.losses import contrastive_with_flops

    dtype = "bfloat16" if bf16 else "float32"
    enc = StairEncoder.create(image_model=image_model, text_model="splade-tiny", device=device, dtype=dtype,
                              batch_size=batch_size)
    dev = enc.device
    h, w = enc.image_size
    gen = torch.Generator().manual_seed(0)
    tensors = [torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=gen) for _ in range(images)]
    batches = [tensors[s:s + batch_size] for s in range(0, images, batch_size)]
    out: dict = {"image_model": image_model, "device": str(dev), "dtype": str(enc.dtype), "batch_size": batch_size,
                 "images": images, "image_size": [h, w],
                 "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
                 "cpu": platform.processor() or platform.machine(), "torch": torch.__version__}

    pixel_batches = [enc.pixels(b, dev).to(enc.dtype) for b in batches]
    if target_nnz:
        with torch.inference_mode():
            pooled = enc.model.image_pooled_logits(pixel_batches[0]).float()
            pooled[:, sorted(enc.vocab.special_ids)] = float("-inf")
            cut = torch.quantile(pooled.flatten()[:1 << 24], 1.0 - target_nnz / pooled.shape[1])
        with torch.no_grad():
            enc.model.head.decoder.bias -= cut.to(enc.model.head.decoder.bias.dtype)
    out["target_nnz"] = target_nnz

    @torch.inference_mode()
    def tower():
        for px in pixel_batches:
            enc.model.visual(px)

    @torch.inference_mode()
    def tower_head():
        for px in pixel_batches:
            enc.model.image_pooled_logits(px)

    def full():
        enc.encode_documents([Input(image=t) for t in tensors])

    out["tower"] = _rate(tower, images, repeats, dev)
    out["tower+head"] = _rate(tower_head, images, repeats, dev)
    out["encode_documents"] = _rate(full, images, repeats, dev)
    vecs = enc.encode_documents([Input(image=t) for t in tensors[:batch_size]])
    out["nnz_per_image"] = float(vecs.nnz.mean())

    rng = np.random.default_rng(0)
    pil = [Image.fromarray(rng.integers(0, 256, (h + 32, w + 48, 3), dtype=np.uint8)) for _ in range(pil_images)]
    out["encode_documents (PIL)"] = _rate(lambda: enc.encode_documents([Input(image=p) for p in pil]),
                                          pil_images, max(1, repeats // 2), dev)

    # one training step: float32 weights, bf16 autocast, both sides trained (stage 3)
    enc.to(dtype="float32")
    for m in enc.image_modules() + enc.text_modules():
        m.train()
    params = [p for group in enc.parameter_groups().values() for p in group]
    opt = torch.optim.AdamW(params, lr=1e-5)
    captions = [f"a photo of object number {i} on a table" for i in range(train_batch)]
    queries = [Input(text=c) for c in captions]
    docs = [Input(image=tensors[i % len(tensors)]) for i in range(train_batch)]
    autocast = torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=bf16)
    step_times, parts = [], {}
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    for _ in range(train_steps + 1):
        _sync(dev)
        t0 = time.perf_counter()
        with autocast:
            q = enc.forward_inputs(queries)
            d = enc.forward_inputs(docs)
        parts = contrastive_with_flops(q.float(), d.float(), 1e-3, 1e-3)
        opt.zero_grad(set_to_none=True)
        parts["loss"].backward()
        opt.step()
        _sync(dev)
        step_times.append(time.perf_counter() - t0)
    out["train_step"] = {
        "batch": train_batch, "bf16_autocast": bf16, "seconds_median": statistics.median(step_times[1:]),
        "seconds_first": step_times[0], "steps": train_steps, "loss": float(parts["loss"].detach()),
        "finite": bool(torch.isfinite(parts["loss"])),
        "peak_gpu_mem_gib": (torch.cuda.max_memory_allocated(dev) / 2 ** 30) if dev.type == "cuda" else None,
    }
    out["ratio_encode_to_tower"] = out["encode_documents"]["images_per_s"] / out["tower"]["images_per_s"]
    if loop_steps:
        out["train_loop"] = _train_loop(enc, tensors, train_batch, loop_steps, str(dev), bf16)
    return out


def _train_loop(enc, tensors, batch: int, steps: int, device: str, bf16: bool) -> dict:
    """A few steps of :func:`lsr.training.train` (stage 3) on caption/image pairs, then a reload of the result."""
    import tempfile

    from encoders.stair import StairEncoder
    from lsr.inputs import Input
    from lsr.pairs import Pair
    from lsr.training import TrainConfig, read_log, train

    pairs = [Pair(Input(text=f"picture number {i}", instruction="Find an image that matches the caption."),
                  Input(image=tensors[i % len(tensors)]), f"q{i}", f"d{i}") for i in range(batch * 2)]
    with tempfile.TemporaryDirectory(prefix="stair-gpu-") as tmp:
        cfg = TrainConfig(output_dir=tmp, stage=3, steps=steps, batch_size=batch, learning_rate=1e-5,
                          lambda_q=1e-4, lambda_d=1e-4, device=device, bf16=bf16, log_every=1, progress=False)
        result = train(enc, pairs, cfg)
        log = read_log(tmp)
        back = StairEncoder.load(str(result.final_dir), device=device, batch_size=enc.batch_size)
        same = back.encode_documents([Input(image=tensors[0])]).nnz_total > 0
    secs = [b["seconds"] - a["seconds"] for a, b in zip(log, log[1:])]
    return {"steps": steps, "batch": batch, "seconds_per_step_median": statistics.median(secs) if secs else None,
            "loss_first": log[0]["loss"], "loss_last": log[-1]["loss"], "nnz_d_last": log[-1]["nnz_d"],
            "reloaded_and_encoded": bool(same)}


def print_table(res: dict) -> None:
    print(f"{res['image_model']} on {res['gpu'] or res['cpu']} ({res['device']}, {res['dtype']}), "
          f"batch {res['batch_size']}, {res['images']} images of {res['image_size'][0]}x{res['image_size'][1]}")
    print("| path | images/s |")
    print("| --- | --- |")
    for key in ("tower", "tower+head", "encode_documents", "encode_documents (PIL)"):
        print(f"| {key} | {res[key]['images_per_s']:,.0f} |")
    t = res["train_step"]
    mem = f", peak {t['peak_gpu_mem_gib']:.1f} GiB" if t["peak_gpu_mem_gib"] is not None else ""
    print(f"training step (stage 3, batch {t['batch']}, bf16 autocast {t['bf16_autocast']}): "
          f"{t['seconds_median'] * 1000:.0f} ms median{mem}, loss {t['loss']:.3f}")
    print(f"encode_documents / tower = {res['ratio_encode_to_tower']:.2f}; non-zeros per image {res['nnz_per_image']:.0f}")
    if "train_loop" in res:
        t = res["train_loop"]
        per = t["seconds_per_step_median"]
        print(f"lsr.training.train, stage 3, {t['steps']} steps of batch {t['batch']}: "
              f"{'%.0f ms/step' % (per * 1000) if per else 'n/a'}, loss {t['loss_first']:.3f} -> {t['loss_last']:.3f}, "
              f"reloaded: {t['reloaded_and_encoded']}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--image-model", default="ViT-B-16")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--images", type=int, default=4096)
    ap.add_argument("--pil-images", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--train-batch", type=int, default=128)
    ap.add_argument("--train-steps", type=int, default=3)
    ap.add_argument("--fp32", action="store_true", help="float32 instead of bf16")
    ap.add_argument("--target-nnz", type=int, default=256, help="non-zeros per image to calibrate the random head to "
                    "(0: leave the random head as it is)")
    ap.add_argument("--loop-steps", type=int, default=3, help="steps of lsr.training.train to run (0: skip)")
    ap.add_argument("--tiny", action="store_true", help="toy sizes for a CPU check (stair-tiny-vit, a few images)")
    args = ap.parse_args(argv)
    if args.tiny:
        args.image_model, args.batch_size, args.images, args.pil_images = "stair-tiny-vit", 4, 8, 2
        args.repeats, args.train_batch, args.train_steps, args.loop_steps = 1, 2, 1, 2
    res = run(args.image_model, args.device, args.batch_size, args.images, args.pil_images, args.repeats,
              args.train_batch, args.train_steps, bf16=not args.fp32, target_nnz=args.target_nnz,
              loop_steps=args.loop_steps)
    print_table(res)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
