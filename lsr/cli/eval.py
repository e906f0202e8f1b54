"""``lsr eval``: score a TREC run against qrels."""

from __future__ import annotations

import json


def register(sub) -> dict:
    p = sub.add_parser("eval", help="evaluate a TREC run against qrels")
    p.add_argument("--run", required=True)
    p.add_argument("--qrels", required=True, help="BEIR qrels TSV (with header) or TREC qrels")
    p.add_argument("--metrics", nargs="+", default=["ndcg@10", "recall@100"])
    p.add_argument("--json", action="store_true", help="print one JSON object {metric: value}")
    return {"eval": cmd_eval}


def cmd_eval(args) -> int:
    from ..evaluate import evaluate
    from ..io import read_qrels, read_run

    scores = evaluate(read_run(args.run), read_qrels(args.qrels), args.metrics)
    if args.json:
        print(json.dumps(scores))
    else:
        for name, value in scores.items():
            print(f"{name:<14}{value:.4f}")
    return 0
