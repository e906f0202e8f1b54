"""Encoding throughput: the project's end-to-end encode against the raw model forward and sentence-transformers.

    python -m benchmarks.encode [--device cpu|cuda] [--model splade-tiny|bert-base-random|DIR]
                                [--docs N] [--batch-size B] [--json OUT]

Measured in one run, on the same synthetic passages (random whole words, about
70 word pieces on average):

* ``project``: ``encoders.pipeline.encode_to_dir`` from texts to quantized
  JSONL on disk (tokenization, model, pooling, sparsification, writing);
* ``raw forward``: the model's forward pass alone (full MLM logits, no
  pooling) over the same texts tokenized beforehand and batched after sorting
  all of them by length: the limit for any encoder built on this model;
* ``sentence-transformers``: ``SparseEncoder.encode_document`` with an
  ``MLMTransformer`` + ``SpladePooling`` model built from the same weights,
  when sentence-transformers is installed.

``bert-base-random`` is a BERT-base-sized masked LM (``BertConfig()``
defaults: 12 layers, hidden 768, vocabulary 30,522) initialised at random from
its config, with the tokenizer of SPLADE-tiny (the bert-base-uncased
vocabulary). Random logits would switch on half the vocabulary, so the output
bias is shifted by one constant until documents activate about
``--target-nnz`` terms, as a trained SPLADE model does; this does not change
the amount of computation. ``bert-tiny-random`` is the same at 2 layers,
hidden 128 (for quick checks).

Each path runs once untimed (over every batch on a GPU, where the first use
of each batch shape selects kernels), then ``--repeats`` times, raw and
project alternating; the table shows medians. JSON keys: ``project_docs_per_s``,
``raw_forward_docs_per_s``, ``ratio_to_raw``, ``st_docs_per_s`` (best over
``--st-batch-sizes``), ``ratio_to_st``, plus ``device``, ``model``, ``docs``,
``batch_size``, ``mean_word_pieces``, ``mean_nnz`` and the machine.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

from .common import describe, machine, median, ratio, synthetic_passages, table, timed, write_json

RANDOM_MODELS = {
    "bert-base-random": {},
    "bert-tiny-random": {"hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
                         "intermediate_size": 512},
}


def build_encoder(args):
    """The project's encoder for ``args.model`` (random models are built from a config)."""
    import torch

    from encoders.splade import SpladeEncoder

    if args.model not in RANDOM_MODELS:
        return SpladeEncoder(args.model, device=args.device, dtype=args.dtype, max_length=args.max_length,
                             batch_size=args.batch_size, cuda_graphs=args.cuda_graphs)
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    from encoders.registry import resolve

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or resolve("splade-tiny").source)
    torch.manual_seed(args.seed)
    config = BertConfig(vocab_size=len(tokenizer.get_vocab()), **RANDOM_MODELS[args.model])
    model = BertForMaskedLM(config).eval()
    return SpladeEncoder(args.model, hf_model=model, tokenizer=tokenizer, device=args.device, dtype=args.dtype,
                         max_length=args.max_length, batch_size=args.batch_size, cuda_graphs=args.cuda_graphs)


def calibrate_sparsity(encoder, texts: list[str], target_nnz: int) -> float:
    """Shift the output bias so that documents activate about ``target_nnz`` terms; returns the shift."""
    import torch

    model, tok = encoder.model, encoder.tokenizer
    pooled = []
    with torch.inference_mode():
        for s in range(0, len(texts), 32):
            batch = tok(texts[s:s + 32], padding=True, truncation=True, max_length=encoder.max_length,
                        return_tensors="pt").to(encoder.device)
            with encoder._pooled_decoder.installed(batch["attention_mask"]):
                out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, 0]
            out = out.float()
            out[:, encoder._excluded] = float("-inf")
            pooled.append(out.cpu())
    values = torch.cat(pooled).numpy()
    keep = np.isfinite(values)
    shift = float(np.quantile(values[keep], 1.0 - target_nnz / values.shape[1]))
    decoder = model.get_output_embeddings()
    with torch.no_grad():
        decoder.bias -= shift
    return shift


def model_dir_for_st(args, encoder, work: Path) -> str:
    from encoders.registry import resolve

    if args.model not in RANDOM_MODELS:
        return resolve(args.model).source
    path = work / "model"
    if not path.exists():
        import torch

        cpu = encoder.model.to("cpu", dtype=torch.float32)
        cpu.save_pretrained(str(path))
        encoder.tokenizer.save_pretrained(str(path))
        encoder.model.to(encoder.device, dtype=encoder.dtype)
    return str(path)


def build_st(model_dir: str, device: str, dtype, max_length: int):
    """A sentence-transformers SparseEncoder (MLM transformer + SPLADE max pooling) on the same weights."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from sentence_transformers import SparseEncoder

        try:
            from sentence_transformers.sparse_encoder.models import MLMTransformer, SpladePooling
        except ImportError:
            from sentence_transformers.sparse_encoder.modules import MLMTransformer, SpladePooling
        import logging

        logging.getLogger("sentence_transformers").setLevel(logging.ERROR)
        mlm = MLMTransformer(model_dir, max_seq_length=max_length)
        st = SparseEncoder(modules=[mlm, SpladePooling(pooling_strategy="max")], device=device)
    return st.to(dtype)


def raw_batches(encoder, texts: list[str]):
    """The texts tokenized and padded into batches after sorting all of them by length."""
    tok = encoder.tokenizer
    ids = tok(texts, truncation=True, max_length=encoder.max_length)["input_ids"]
    lengths = np.array([len(x) for x in ids])
    order = np.argsort(-lengths, kind="stable")
    pin = encoder.device.type == "cuda"
    batches = []
    for b in range(0, len(order), encoder.batch_size):
        sel = order[b:b + encoder.batch_size]
        p = tok.pad({"input_ids": [ids[i] for i in sel]}, padding=True, return_tensors="pt")
        x, m = p["input_ids"], p["attention_mask"]
        batches.append((x.pin_memory(), m.pin_memory()) if pin else (x, m))
    return batches, float(lengths.mean())


def check_against_reference(encoder, texts: list[str]) -> dict:
    """Compare ``encode_documents`` with the textbook computation (full logits, masked max, log1p(relu))."""
    import torch

    got = encoder.encode_documents(texts).to_scipy().toarray()
    tok, model = encoder.tokenizer, encoder.model
    rows = []
    with torch.inference_mode():
        for s in range(0, len(texts), 16):
            batch = tok(texts[s:s + 16], padding=True, truncation=True, max_length=encoder.max_length,
                        return_tensors="pt").to(encoder.device)
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            logits = logits.masked_fill(~batch["attention_mask"].bool()[..., None], float("-inf"))
            pooled = torch.log1p(torch.relu(logits.amax(dim=1).float()))
            pooled[:, encoder._excluded] = 0
            rows.append(pooled.cpu().numpy())
    want = np.concatenate(rows)
    a, b = got != 0, want != 0
    return {"docs": len(texts), "max_abs_diff": float(np.abs(got - want).max()),
            "mean_abs_diff_nonzero": float(np.abs(got - want)[a | b].mean()) if (a | b).any() else 0.0,
            "support_jaccard": float((a & b).sum() / max(1, (a | b).sum()))}


def run_raw(encoder, batches) -> None:
    import torch

    dev = encoder.device
    with torch.inference_mode():
        for x, m in batches:
            encoder.model(input_ids=x.to(dev, non_blocking=True), attention_mask=m.to(dev, non_blocking=True)).logits
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.encode", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto", help="cpu, cuda (default: cuda when available)")
    p.add_argument("--model", default="splade-tiny",
                   help="splade-tiny, bert-base-random, bert-tiny-random, or a model alias/directory")
    p.add_argument("--tokenizer", default=None, help="tokenizer directory for the random models "
                   "(default: SPLADE-tiny's, the bert-base-uncased vocabulary)")
    p.add_argument("--docs", type=int, default=None, help="passages (default: 32768 on GPU, 1024 on CPU)")
    p.add_argument("--batch-size", type=int, default=None, help="default: 128 on GPU, 32 on CPU")
    p.add_argument("--dtype", default="auto", help="float32, bfloat16, float16 (default: bf16 on GPU)")
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", default="auto", choices=["auto", "full", "small"],
                   help="untimed pass over all batches (full) or a few (small); auto: full on GPU")
    p.add_argument("--st-batch-sizes", default=None, help="comma-separated (default: 128,512 on GPU, the batch size on CPU)")
    p.add_argument("--st-repeats", type=int, default=1)
    p.add_argument("--no-st", action="store_true", help="skip sentence-transformers")
    p.add_argument("--target-nnz", type=int, default=300, help="terms per document for the random models")
    p.add_argument("--breakdown", action="store_true",
                   help="also time encode_documents alone (in memory, nothing written)")
    p.add_argument("--writer", default="auto", choices=["auto", "process", "inline"],
                   help="encode_to_dir's writer (default: auto)")
    p.add_argument("--cuda-graphs", action="store_true",
                   help="the project's encoder replays CUDA graphs (SpladeEncoder(cuda_graphs=True))")
    p.add_argument("--check", type=int, default=0, metavar="N",
                   help="also compare encode_documents on N passages with the textbook computation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", default=None, help="where vectors are written (default: a temp dir, removed)")
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args(argv)

    import torch

    from encoders.pipeline import encode_to_dir
    from encoders.base import pick_device, pick_dtype
    from lsr.io import Record

    dev = pick_device(args.device)
    args.device = str(dev)
    gpu = dev.type == "cuda"
    args.docs = args.docs or (32768 if gpu else 1024)
    args.batch_size = args.batch_size or (128 if gpu else 32)
    args.dtype = pick_dtype(args.dtype, dev)
    st_sizes = [int(x) for x in (args.st_batch_sizes or ("128,512" if gpu else str(args.batch_size))).split(",")]

    work = Path(args.workdir or tempfile.mkdtemp(prefix="lsr-bench-encode-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        encoder = build_encoder(args)
        texts = synthetic_passages(args.docs, encoder.tokenizer, seed=args.seed)
        records = [Record(f"p{i}", t) for i, t in enumerate(texts)]
        shift = None
        if args.model in RANDOM_MODELS:
            shift = calibrate_sparsity(encoder, texts[:256], args.target_nnz)
        sample = encoder.encode_documents(texts[:256])
        from lsr.quantize import Quantizer

        mean_nnz = float(Quantizer().quantize(sample).nnz.mean())
        batches, mean_pieces = raw_batches(encoder, texts)
        warm = records[: min(len(records), 4 * args.batch_size)]

        # warm-up: on a GPU every batch shape is seen once by both paths (kernel selection per shape
        # costs seconds on the first pass); on the CPU a few batches suffice
        full = args.warmup == "full" or (args.warmup == "auto" and gpu)
        run_raw(encoder, batches if full else batches[: min(4, len(batches))])
        encode_to_dir(encoder, records if full else warm, work / "warm", overwrite=True, writer=args.writer)
        shutil.rmtree(work / "warm", ignore_errors=True)

        raw_t, proj_t, only_t = [], [], []
        for k in range(args.repeats):
            raw_t.append(timed(lambda: run_raw(encoder, batches))[0])
            out = work / f"vec{k}"
            proj_t.append(timed(lambda: encode_to_dir(encoder, records, out, overwrite=True,
                                                        writer=args.writer))[0])
            shutil.rmtree(out, ignore_errors=True)
            if args.breakdown:
                only_t.append(timed(lambda: encoder.encode_documents(texts))[0])
        n = len(texts)
        raw_rate = n / median(raw_t)
        proj_rate = n / median(proj_t)

        info = machine(args.device)
        result = {
            "benchmark": "encode",
            "device": args.device,
            "model": args.model,
            "dtype": str(args.dtype).replace("torch.", ""),
            "docs": n,
            "batch_size": args.batch_size,
            "max_length": args.max_length,
            "mean_word_pieces": round(mean_pieces, 2),
            "mean_nnz": round(mean_nnz, 1),
            "project_docs_per_s": round(proj_rate, 1),
            "raw_forward_docs_per_s": round(raw_rate, 1),
            "ratio_to_raw": round(ratio(proj_rate, raw_rate), 4),
            "st_docs_per_s": None,
            "ratio_to_st": None,
            "st_docs_per_s_by_batch_size": {},
            "repeats": args.repeats,
            "seconds": {"project": [round(t, 4) for t in proj_t], "raw_forward": [round(t, 4) for t in raw_t]},
            "writer": args.writer,
            "mask_4d": encoder._mask4d,
            "cuda_graphs": encoder.cuda_graphs_status,
            "machine": info,
        }
        if shift is not None:
            result["output_bias_shift"] = round(shift, 4)
        if only_t:
            result["encode_only_docs_per_s"] = round(n / median(only_t), 1)
            result["seconds"]["encode_only"] = [round(t, 4) for t in only_t]
        if args.check:
            result["check"] = check_against_reference(encoder, texts[:args.check])
        write_json(args.json, result)  # what is measured so far survives a failure below

        st_rates: dict[str, float] = {}
        st_error = None
        if not args.no_st:
            try:
                st = build_st(model_dir_for_st(args, encoder, work), args.device, args.dtype, args.max_length)
                for bs in st_sizes:
                    st.encode_document(texts[: 2 * bs], batch_size=bs, show_progress_bar=False)
                    times = []

                    def run_st():
                        st.encode_document(texts, batch_size=bs, show_progress_bar=False)
                        if gpu:
                            torch.cuda.synchronize(dev)

                    for _ in range(args.st_repeats):
                        times.append(timed(run_st)[0])
                    st_rates[str(bs)] = n / median(times)
                del st
            except ImportError as e:
                st_error = f"sentence-transformers not available ({e})"
            except Exception as e:  # noqa: BLE001 - keep the project's figures when the peer fails
                st_error = f"sentence-transformers failed: {type(e).__name__}: {e}"
        st_rate = max(st_rates.values()) if st_rates else float("nan")
        result.update({
            "st_docs_per_s": round(st_rate, 1) if st_rates else None,
            "ratio_to_st": round(ratio(proj_rate, st_rate), 3) if st_rates else None,
            "st_docs_per_s_by_batch_size": {k: round(v, 1) for k, v in st_rates.items()},
        })
        if st_error:
            result["st_error"] = st_error

        rows = [["project encode_to_dir (text -> JSONL)", proj_rate, 1.0]]
        if only_t:
            rows.append(["project encode_documents (in memory)", n / median(only_t), ratio(n / median(only_t), proj_rate)])
        rows.append(["raw model forward, sorted batches", raw_rate, ratio(raw_rate, proj_rate)])
        for bs, r in st_rates.items():
            rows.append([f"sentence-transformers encode_document, batch {bs}", r, ratio(r, proj_rate)])
        print(f"encode: {args.model} on {args.device} ({result['dtype']}), {n} passages, "
              f"{mean_pieces:.1f} word pieces and {mean_nnz:.0f} terms on average, batch {args.batch_size}")
        print(f"machine: {describe(info)}")
        if args.cuda_graphs:
            print(f"cuda graphs: {encoder.cuda_graphs_status}")
        print(table(rows, ["path", "docs/s", "x project"]))
        print(f"ratio_to_raw {result['ratio_to_raw']:.3f}" +
              (f", ratio_to_st {result['ratio_to_st']:.2f}" if st_rates else "") +
              (f"  ({st_error})" if st_error else ""))
        if "check" in result:
            c = result["check"]
            print(f"check on {c['docs']} passages against the textbook computation: max |diff| "
                  f"{c['max_abs_diff']:.3g}, support Jaccard {c['support_jaccard']:.4f}")
        write_json(args.json, result)
        return 0
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
