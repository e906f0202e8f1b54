"""``lsr encode``: a BEIR JSONL corpus or query file -> a vector directory of integer impacts."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ..errors import LsrError
from ._options import add_model_args


def register(sub) -> dict:
    p = sub.add_parser("encode", help="encode a BEIR JSONL corpus or queries into a vector directory")
    add_model_args(p, batch_size=True)
    p.add_argument("--input", required=True, help="BEIR corpus.jsonl (_id, title, text) or queries.jsonl")
    p.add_argument("--output", required=True, help="vector directory to create")
    p.add_argument("--role", choices=["document", "query"], default="document")
    p.add_argument("--scale", type=float, default=100.0, help="impact = round(weight * scale)")
    p.add_argument("--max-value", type=int, default=1000, help="largest integer impact")
    p.add_argument("--shard-size", type=int, default=100_000, help="documents per part file")
    p.add_argument("--cuda-graphs", action="store_true",
                   help="on a GPU, replay full batches from CUDA graphs (fewer launches from Python; "
                        "falls back to eager mode by itself if capture fails)")
    p.add_argument("--shard", default=None, metavar="I/N",
                   help="encode only shard I of N (0 <= I < N): the documents whose id hashes to I; run the N shards "
                        "on N GPUs or machines, then `lsr index --input DIR0 DIR1 ...`")
    p.add_argument("--overwrite", action="store_true")
    return {"encode": cmd_encode}


def load_sparse_encoder(args):
    """The sparse encoder named by ``--model``: SPLADE, or a STAIR directory (its text side for text input)."""
    from encoders.registry import load, resolve

    from .inspect import check_sparse_model

    check_sparse_model(args.model)
    cuda_graphs = getattr(args, "cuda_graphs", False)
    if cuda_graphs and resolve(args.model).kind == "stair":
        raise LsrError("--cuda-graphs is for SPLADE text models; drop it for a STAIR model")
    return load(args.model, kind="sparse", device=args.device, dtype=args.dtype, max_length=args.max_length,
                batch_size=args.batch_size, progress=True, cuda_graphs=cuda_graphs or None)


def cmd_encode(args) -> int:
    from encoders.pipeline import encode_to_dir
    from ..io import read_corpus, read_queries
    from ..quantize import Quantizer

    from .inspect import check_sparse_model
    from ..vectors import check_new_output

    # everything that can be checked before the model loads (which takes seconds)
    check_new_output(Path(args.output), args.overwrite, args.shard_size)
    check_sparse_model(args.model)
    quantizer = Quantizer(args.scale, args.max_value)
    records = read_corpus(args.input) if args.role == "document" else read_queries(args.input)
    shard, total = None, len(records)
    if args.shard:
        from ..engines import parse_shard

        shard = parse_shard(args.shard)
        records = shard.select(records)
        print(f"shard {shard}: {len(records)} of {total} records", file=sys.stderr)
    encoder = load_sparse_encoder(args)
    t0 = time.perf_counter()
    info = encode_to_dir(encoder, records, args.output, quantizer, role=args.role, shard_size=args.shard_size,
                         overwrite=args.overwrite)
    dt = time.perf_counter() - t0
    if shard is not None:  # record the split, so that `lsr index` can check the shards fit together
        from ..engines import shard_info
        from ..meta import write_meta
        from ..vectors import META_FILE

        info.extra["shard"] = shard_info(shard, args.input, total)
        write_meta(Path(args.output) / META_FILE, info.to_dict())
    print(f"read {info.documents_read}, written {info.documents_written}, "
          f"reported {info.documents_reported} (see {Path(args.output) / 'report.jsonl'})"
          if info.documents_reported else
          f"read {info.documents_read}, written {info.documents_written}, reported 0", file=sys.stderr)
    if info.truncated:
        print(f"{info.truncated} texts were longer than {encoder.max_length} word pieces and were truncated",
              file=sys.stderr)
    print(f"encoded in {dt:.1f}s ({info.documents_read / max(dt, 1e-9):.0f} docs/s) -> {args.output}",
          file=sys.stderr)
    if getattr(args, "cuda_graphs", False):
        g = encoder.cuda_graphs_status
        print(f"cuda graphs: {g['graphs']} captured, {g['replays']} batches replayed" if g["active"] else
              f"cuda graphs: not used ({g['reason']})", file=sys.stderr)
    return 0
