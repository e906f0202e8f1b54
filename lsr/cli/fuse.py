"""``lsr fuse``: fuse whole TREC runs with reciprocal rank fusion or score interpolation."""

from __future__ import annotations

import sys

from ._options import add_fusion_args


def register(sub) -> dict:
    p = sub.add_parser("fuse", help="fuse TREC runs (RRF, interpolation or a weighted score sum) into one run")
    p.add_argument("--runs", nargs="+", required=True,
                   help="TREC run files; for interp the first is the sparse run, the others dense runs")
    add_fusion_args(p, "interp: fused = alpha * sparse (first run) + (1 - alpha) * dense (mean of the others)")
    p.add_argument("--k", type=int, default=1000, help="results kept per query")
    p.add_argument("--output", required=True, help="TREC run file to write")
    return {"fuse": cmd_fuse}


def cmd_fuse(args) -> int:
    from lsr.errors import InputError
    from lsr.fusion import describe, fusion_function
    from lsr.io import read_run, write_run

    if args.k < 1:
        raise InputError(f"--k must be at least 1, got {args.k}")
    if args.fusion == "interp" and len(args.runs) < 2:
        raise InputError("--fusion interp needs at least two runs (the sparse run first)")
    runs = [read_run(p) for p in args.runs]
    for path, run in zip(args.runs, runs):
        if not run:
            raise InputError(f"{path}: the run is empty")
    fused = fusion_function(args.fusion, k=args.rrf_k, alpha=args.alpha, norm=args.norm, depth=args.k,
                            weights=args.weights)(runs)
    how = describe(args.fusion, k=args.rrf_k, alpha=args.alpha, norm=args.norm, weights=args.weights)
    write_run(args.output, fused, tag=f"fused-{args.fusion}")
    print(f"fused {len(runs)} runs over {len(fused)} queries with {how} -> {args.output}", file=sys.stderr)
    return 0
