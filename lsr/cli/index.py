"""``lsr index``: a Lucene impact index from vector directories, or a BM25 index from a BEIR corpus."""

from __future__ import annotations

import sys


def register(sub) -> dict:
    p = sub.add_parser("index", help="build a Lucene impact index from a vector directory")
    p.add_argument("--input", required=True, nargs="+",
                   help="vector directory written by `lsr encode`; several: the shards of one corpus (`--shard I/N`)")
    p.add_argument("--index", required=True, help="index directory to create")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--no-store-vectors", action="store_true",
                   help="do not keep document vectors in the index (explanations then need re-encoding)")
    p.add_argument("--bm25", action="store_true",
                   help="build a BM25 index instead: --input is a BEIR corpus.jsonl (title + text, Anserini's "
                        "default English analyzer); `lsr search` then needs no model")
    return {"index": cmd_index}


def cmd_index(args) -> int:
    from anserini_bridge.index import build_index

    if args.bm25:
        from anserini_bridge.bm25 import build_bm25_index
        from ..errors import InputError

        if len(args.input) != 1:
            raise InputError("--bm25 takes one corpus file: --input corpus.jsonl")
        meta = build_bm25_index(args.input[0], args.index, threads=args.threads, overwrite=args.overwrite)
        c = meta.counters
        print(f"indexed {c.get('indexed')} documents for BM25 into {args.index} (documents without text: "
              f"{c.get('reported_by_encoder', 0)}); search it with `lsr search --index {args.index} "
              "--queries queries.jsonl --output run.trec` (no model)", file=sys.stderr)
        return 0
    meta = build_index(args.input, args.index, threads=args.threads, overwrite=args.overwrite,
                       store_vectors=not args.no_store_vectors)
    c = meta.counters
    print(f"indexed {c.get('indexed')} documents into {args.index} (Anserini counters: indexed={c.get('indexed')} "
          f"empty={c.get('empty')} unindexable={c.get('unindexable')} skipped={c.get('skipped')} "
          f"errors={c.get('errors')}; reported before indexing: {c.get('reported_by_encoder', 0)})",
          file=sys.stderr)
    return 0
