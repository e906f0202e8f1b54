"""Quality of the hybrid recipe against its parts, on Cranfield and on a second collection.

    python -m benchmarks.hybrid_recipe --workdir DIR [--collections cranfield flickr8k-captions] [--json OUT]

The recipe (chosen on Cranfield only, before the second collection was built):
reciprocal rank fusion, k = 60, of three whole runs (depth 1000 each): BM25
(`lsr index --bm25`), SPLADE-tiny (Lucene impact index) and MiniLM (exhaustive
search of an embedding store)::

    lsr fuse --runs bm25.trec splade.trec minilm.trec --fusion rrf --output hybrid.trec

It is compared with each component and with the earlier recommendation, which
was tuned on Cranfield (SPLADE-tiny k0=100 + 100 MiniLM candidates, interp
alpha=0.3). Every step runs through the `lsr` command line, so the table can be
reproduced command by command; what a work directory already holds is reused.

Collections (BEIR layout):

* ``cranfield``: ``../shared/data/cranfield`` (``LSR_CRANFIELD``): 1,400
  abstracts, 225 queries, graded judgements;
* ``flickr8k-captions``: built here from the Flickr8k captions
  (``../shared/data/flickr8k``, train + dev): a document per image holding its
  captions #0..#3, a query per dev image holding its caption #4; the one
  relevant document of a query is its own image (7,000 documents, 1,000
  queries). Known-item caption search: short texts, one answer per query.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from .common import machine, table, write_json

REPO = Path(__file__).resolve().parents[1]
METRICS = ["ndcg@10", "recall@100"]


def build_flickr8k_captions(src: Path, out: Path) -> Path:
    """A BEIR-layout caption retrieval collection from the Flickr8k captions (see the module docstring)."""
    if (out / "qrels" / "test.tsv").is_file():
        return out
    captions: dict[str, dict[int, str]] = {}
    dev_images = []
    for split in ("train", "dev"):
        for line in open(src / f"captions_{split}.jsonl", encoding="utf-8"):
            r = json.loads(line)
            name, n = r["caption_id"].rsplit("#", 1)
            if name not in captions and split == "dev":
                dev_images.append(name)
            captions.setdefault(name, {})[int(n)] = r["caption"].strip()
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    with open(out / "corpus.jsonl", "w", encoding="utf-8") as fh:
        for name in sorted(captions):
            text = " ".join(captions[name][n] for n in range(4) if n in captions[name])
            fh.write(json.dumps({"_id": name.split(".")[0], "title": "", "text": text}) + "\n")
    with open(out / "queries.jsonl", "w", encoding="utf-8") as q, open(out / "qrels" / "test.tsv", "w") as qr:
        qr.write("query-id\tcorpus-id\tscore\n")
        for name in dev_images:
            doc = name.split(".")[0]
            q.write(json.dumps({"_id": f"q-{doc}", "text": captions[name][4]}) + "\n")
            qr.write(f"q-{doc}\t{doc}\t1\n")
    return out


def _lsr(*args) -> None:
    from lsr.cli import main

    print("$ lsr " + " ".join(map(str, args)), file=sys.stderr, flush=True)
    rc = main([str(a) for a in args])
    if rc != 0:
        raise SystemExit(f"lsr {args[0]} failed with exit status {rc}")


def run_collection(data: Path, work: Path, device: str) -> dict[str, dict[str, float]]:
    from lsr.evaluate import evaluate
    from lsr.io import read_qrels, read_run

    work.mkdir(parents=True, exist_ok=True)
    corpus, queries, qrels = data / "corpus.jsonl", data / "queries.jsonl", data / "qrels" / "test.tsv"
    steps = [
        (work / "bm25", ("index", "--bm25", "--input", corpus, "--index", work / "bm25")),
        (work / "bm25.trec", ("search", "--index", work / "bm25", "--queries", queries, "--k", 1000,
                              "--output", work / "bm25.trec")),
        (work / "vec", ("encode", "--model", "splade-tiny", "--input", corpus, "--output", work / "vec",
                        "--device", device)),
        (work / "splade", ("index", "--input", work / "vec", "--index", work / "splade")),
        (work / "splade.trec", ("search", "--index", work / "splade", "--model", "splade-tiny", "--queries", queries,
                                "--k", 1000, "--output", work / "splade.trec", "--device", device)),
        (work / "minilm", ("embed", "--model", "minilm", "--input", corpus, "--output", work / "minilm",
                           "--device", device)),
        (work / "minilm.trec", ("search", "--index", work / "minilm", "--queries", queries, "--k", 1000,
                                "--output", work / "minilm.trec", "--device", device)),
        (work / "hybrid.trec", ("fuse", "--runs", work / "bm25.trec", work / "splade.trec", work / "minilm.trec",
                                "--fusion", "rrf", "--output", work / "hybrid.trec")),
        (work / "interp.trec", ("search", "--index", work / "splade", "--model", "splade-tiny", "--queries", queries,
                                "--rerank", work / "minilm", "--fusion", "interp", "--alpha", 0.3, "--k0", 100,
                                "--dense-candidates", 100, "--k", 100, "--output", work / "interp.trec",
                                "--device", device)),
    ]
    timings = {}
    for done, args in steps:
        if not done.exists():
            t0 = time.perf_counter()
            _lsr(*args)
            timings[done.name] = time.perf_counter() - t0
    judged = read_qrels(qrels)
    names = {"BM25": "bm25", "SPLADE-tiny": "splade", "MiniLM (exhaustive)": "minilm",
             "recipe: RRF of BM25 + SPLADE-tiny + MiniLM": "hybrid",
             "earlier: SPLADE-tiny + 100 MiniLM candidates, interp 0.3": "interp"}
    return {label: evaluate(read_run(work / f"{f}.trec"), judged, METRICS) for label, f in names.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", required=True, help="indexes, stores and runs are kept (and reused) here")
    ap.add_argument("--collections", nargs="+", default=["cranfield", "flickr8k-captions"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    work = Path(args.workdir)
    shared = REPO.parent / "shared" / "data"
    sources = {"cranfield": lambda: Path(os.environ.get("LSR_CRANFIELD", shared / "cranfield")),
               "flickr8k-captions": lambda: build_flickr8k_captions(shared / "flickr8k", work / "flickr8k-captions-data")}
    results = {}
    for name in args.collections:
        results[name] = run_collection(sources[name](), work / name, args.device)
    rows = []
    for label in next(iter(results.values())):
        row = [label]
        for name in args.collections:
            row += [f"{results[name][label]['ndcg@10']:.3f}", f"{results[name][label]['recall@100']:.3f}"]
        rows.append(row)
    header = ["system"] + [f"{n} {m}" for n in args.collections for m in ("nDCG@10", "R@100")]
    print(table(rows, header))
    if args.json:
        write_json(args.json, {"machine": machine(), "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
