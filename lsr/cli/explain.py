"""``lsr explain``: why a document matched a query, token by token."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import InputError


def register(sub) -> dict:
    from .inspect import add_encoder_args

    p = sub.add_parser("explain", help="per-token contributions of a document's score, beside Lucene's score")
    p.add_argument("--index", required=True, help="index directory built by `lsr index`")
    add_encoder_args(p, required=False)
    p.add_argument("--query", help="query text (needs --model, the index's encoder)")
    p.add_argument("--query-vector", metavar="FILE",
                   help="integer query vector: a JSON object {token: int} or {\"vector\": {...}}, or a JSONL "
                        "file of {id, vector} lines (pick one with --query-id)")
    p.add_argument("--query-id", help="which line of a multi-line --query-vector file to use")
    p.add_argument("--docid", required=True, help="id of the indexed document")
    p.add_argument("--scale", type=float, default=None,
                   help="an index built by Anserini or Pyserini (no lsr-index.json): the scale its impacts were "
                        "quantized with, to quantize --query (default 100)")
    p.add_argument("--top", type=int, default=0,
                   help="show only the largest N contributions, in the table and in --json (0: all)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--html", metavar="OUT.html", help="also write a self-contained HTML page")
    return {"explain": cmd_explain}


def read_query_vector(path: str | Path, query_id: str | None = None) -> dict[str, int]:
    """One integer query vector from a JSON object or a JSONL file of ``{id, vector}`` lines."""
    from ..vectors import parse_vector, read_vector_file

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: query vector file not found")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise InputError(f"{path}: not valid UTF-8") from None
    except json.JSONDecodeError:
        obj = None  # several lines: JSONL
    if isinstance(obj, dict) and query_id is None:
        return parse_vector(path, 1, obj if isinstance(obj.get("vector"), dict) else {"vector": obj})
    ids, vectors = read_vector_file(path)
    if not ids:
        raise InputError(f"{path}: no query vector in the file")
    if query_id is None:
        if len(ids) > 1:
            raise InputError(f"{path} holds {len(ids)} query vectors; pick one with --query-id "
                             f"(e.g. {', '.join(ids[:3])})")
        return vectors[0]
    if query_id not in ids:
        raise InputError(f"{path}: no query with id {query_id!r}")
    return vectors[ids.index(query_id)]


def cmd_explain(args) -> int:
    from anserini_bridge.explain import explain
    from anserini_bridge.search import ImpactSearcher

    if bool(args.query is not None) == bool(args.query_vector):
        raise InputError("give either --query TEXT (with --model) or --query-vector FILE")
    if args.query is not None and not args.query.strip():
        raise InputError("--query is empty; give the query text")
    if args.query is not None and not args.model:
        raise InputError("--query needs --model (the encoder the index was built with)")
    if args.top < 0:
        raise InputError(f"--top must be 0 (all) or positive, got {args.top}")
    from ..quantize import Quantizer

    with ImpactSearcher(args.index, quantizer=Quantizer(args.scale) if args.scale else None) as searcher:
        searcher.doc_vector(args.docid)  # fail on the document before loading a model
        if args.query is not None:
            from .inspect import load_encoder

            encoder = load_encoder(args)
            e = explain(searcher, args.query, args.docid, encoder=encoder)
        else:
            e = explain(searcher, read_query_vector(args.query_vector, args.query_id), args.docid)
    if args.html:
        from ..html_view import render_explanation_page, write_page

        write_page(args.html, render_explanation_page(e))
        print(f"wrote {args.html}", file=sys.stderr)
    if args.json:
        print(json.dumps(e.to_dict(args.top or None)))
    else:
        print(e.format_text(args.top or None))
    if not e.matches_lucene:
        print(f"lsr explain: the contributions sum to {e.sum_of_contributions} but Lucene scored "
              f"{e.lucene_score}; the stored vectors may not be the ones indexed (rebuild with `lsr index`)",
              file=sys.stderr)
        return 1
    return 0
