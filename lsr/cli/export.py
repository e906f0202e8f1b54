"""``lsr export``: the vectors of ``lsr encode`` into Milvus, or as OpenSearch/Elasticsearch bulk files.

Targets:

* ``milvus://HOST:PORT/COLLECTION`` (``milvus+https://`` for TLS; a token from
  ``LSR_MILVUS_TOKEN``): create the collection, or append to one built for
  the same model and quantization, and upsert every document;
* ``opensearch-bulk:FILE`` / ``elasticsearch-bulk:FILE``: a ``_bulk`` NDJSON
  file plus ``FILE.index.json`` with the index mapping.

Several ``--input`` directories (the shards of one corpus) go into one target.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def register(sub) -> dict:
    p = sub.add_parser("export", help="put vector directories into Milvus, or write OpenSearch/Elasticsearch bulk files")
    p.add_argument("--to", required=True, metavar="TARGET",
                   help="milvus://HOST:PORT/COLLECTION | opensearch-bulk:FILE | elasticsearch-bulk:FILE")
    p.add_argument("--input", nargs="+", required=True, metavar="VECDIR",
                   help="vector directories written by `lsr encode` (several: the shards of one corpus)")
    p.add_argument("--replace", action="store_true",
                   help="drop a collection built for other vectors (Milvus), or overwrite an existing FILE")
    p.add_argument("--model", default=None,
                   help="Milvus: the encoder, so that dimension ids are its vocabulary ids (default: ids derived from "
                        "the tokens in the vectors, stored with the collection)")
    p.add_argument("--batch-size", type=int, default=1000, help="Milvus: documents per insert request")
    p.add_argument("--timeout", type=float, default=10.0, help="Milvus: seconds to wait for the server")
    p.add_argument("--index-name", default=None,
                   help="bulk files: name the index in every action line (default: none, POST /INDEX/_bulk)")
    p.add_argument("--no-contents", action="store_true", help="bulk files: leave the document text out")
    p.add_argument("--report", default=None,
                   help="write the documents that failed to this JSONL file ({id, reason} per line)")
    return {"export": cmd_export}


def cmd_export(args) -> int:
    from lsr.errors import InputError

    target = args.to.strip()
    from lsr.vectors import META_FILE

    for d in args.input:
        if Path(d).is_dir() and not (Path(d) / META_FILE).is_file():
            print(f"{d} has no {META_FILE} (vectors from another tool): its encoder and quantization are not "
                  "known and not checked", file=sys.stderr)
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be positive, got {args.batch_size}")
    if target.startswith(("milvus://", "milvus+http://", "milvus+https://")):
        return _to_milvus(args, target)
    for engine in ("opensearch", "elasticsearch"):
        prefix = f"{engine}-bulk:"
        if target.startswith(prefix):
            path = target[len(prefix):]
            if not path:
                raise InputError(f"--to {target}: give a file after '{prefix}'")
            return _to_bulk(args, engine, Path(path))
    raise InputError(f"--to {target!r}: expected milvus://HOST:PORT/COLLECTION, opensearch-bulk:FILE or "
                     "elasticsearch-bulk:FILE")


def _to_milvus(args, target: str) -> int:
    from lsr.engines.milvus import export_vector_dirs, parse_milvus_uri

    uri, collection = parse_milvus_uri(target)
    vocab = None
    if args.model:
        from encoders.splade import SpladeEncoder

        vocab = SpladeEncoder(args.model, device="cpu").vocab
    t0 = time.perf_counter()
    action, report = export_vector_dirs(args.input, uri, collection, vocab=vocab, replace=args.replace,
                                        token=os.environ.get("LSR_MILVUS_TOKEN"), batch_size=args.batch_size,
                                        timeout=args.timeout)
    dt = time.perf_counter() - t0
    verb = {"created": "created collection", "appending": "appended to collection",
            "replaced": "replaced collection"}[action]
    print(f"{verb} {collection} at {uri}: {report.summary()} ({dt:.1f}s)", file=sys.stderr)
    _write_report(args.report, report.failed)
    return 0 if report.ok else 1


def _to_bulk(args, engine: str, path: Path) -> int:
    from lsr.engines.opensearch import write_bulk
    from lsr.errors import InputError

    if path.exists() and not args.replace:
        raise InputError(f"{path}: already exists; choose a new file or pass --replace")
    stats, body = write_bulk(args.input, path, engine, index=args.index_name, contents=not args.no_contents)
    index = args.index_name or "INDEX"
    print(f"wrote {stats.documents} documents to {path} and the index mapping to {body}\n"
          f"precision: {stats.precision_note()}\n"
          f"load it with:\n"
          f"  curl -XPUT \"$URL/{index}\" -H 'Content-Type: application/json' --data-binary @{body}\n"
          f"  curl -XPOST \"$URL/{index}/_bulk\" -H 'Content-Type: application/x-ndjson' --data-binary @{path}\n"
          f"(split files above ~100 MB into requests of even line counts, e.g. split -l 2000)", file=sys.stderr)
    return 0


def _write_report(path, failed) -> None:
    if not path:
        return
    with open(path, "w", encoding="utf-8") as fh:
        for docid, reason in failed:
            fh.write(json.dumps({"id": docid, "reason": reason}) + "\n")  # ASCII: ids may hold lone surrogates
