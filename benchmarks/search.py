"""Search throughput: the project's batch search against bare Anserini and an exhaustive scipy product.

    python -m benchmarks.search [--docs 20000] [--queries 200] [--k 10] [--threads 2] [--json OUT]

One impact index of random integer documents (80 terms each, Zipf-distributed
token popularity over a 30,522-token vocabulary, weights 1..255) and random
queries (30 terms, weights 1..100), searched in the same run by:

* ``project``: ``anserini_bridge.search.ImpactSearcher.batch_search`` with
  ``{token: int}`` queries, returning ``Hit`` lists;
* ``anserini (maps)``: ``SimpleImpactSearcher.batch_search`` driven through
  pyjnius the usual way: a ``java.util.HashMap`` per query filled with one
  ``put`` and one ``Integer`` per term, hits read field by field;
* ``anserini (strings)``: ``SimpleImpactSearcher.batch_search_queries`` with
  each query as one whitespace-joined string, every token repeated as many
  times as its weight (the analyzer counts them), hits read field by field;
* ``scipy``: the exhaustive sparse product documents x queries and a top-k.

``anserini_qps`` is the better of the two bare Anserini ways. Every path is
checked against the exhaustive top-k scores (they must be identical), then
run ``--warmup`` rounds untimed (the JVM compiles the search code on first
use), then timed ``--repeats`` rounds, the paths in turn (in reverse order every
other round); the table shows medians. JSON keys:
``project_qps``, ``anserini_qps``, ``ratio_to_anserini``, ``scipy_qps``, plus
``anserini_maps_qps``, ``anserini_strings_qps``, ``exact`` and the setup.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from .common import describe, machine, median, ratio, table, timed, write_json


def exhaustive_top(doc_matrix, q_matrix, k: int) -> list[np.ndarray]:
    """Top-``k`` scores per query (descending) of the exact sparse product."""
    scores = (doc_matrix @ q_matrix.T).toarray()  # [docs, queries]
    k = min(k, scores.shape[0])
    top = np.partition(scores, scores.shape[0] - k, axis=0)[-k:]
    out = []
    for j in range(scores.shape[1]):
        col = np.sort(top[:, j])[::-1]
        out.append(col[col > 0])
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.search", description=__doc__.split("\n\n")[0])
    p.add_argument("--docs", type=int, default=20_000)
    p.add_argument("--doc-terms", type=int, default=80)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--query-terms", type=int, default=30)
    p.add_argument("--vocab", type=int, default=30_522)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds first (the JVM compiles the search paths)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--workdir", default=None, help="where the index is built (default: a temp dir, removed)")
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args(argv)

    from anserini_bridge import jvm
    from anserini_bridge.index import build_index
    from anserini_bridge.search import ImpactSearcher
    from lsr.fixtures.synthetic import random_vectors, synthetic_vocab
    from lsr.quantize import Quantizer
    from lsr.vectors import VectorWriter

    work = Path(args.workdir or tempfile.mkdtemp(prefix="lsr-bench-search-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        vocab = synthetic_vocab(args.vocab)
        docs = random_vectors(args.docs, args.doc_terms, vocab, max_weight=255, seed=args.seed)
        queries = random_vectors(args.queries, args.query_terms, vocab, max_weight=100, seed=args.seed + 1,
                                 prefix="q")
        with VectorWriter(work / "vec", Quantizer(scale=1, max_value=100_000), encoder="synthetic", vocab=vocab,
                          overwrite=True) as w:
            w.write(docs)
        build_index(work / "vec", work / "idx", threads=args.threads, overwrite=True, progress=False)
        qids = list(queries.ids)
        qints = [{t: int(v) for t, v in queries.to_dict(i).items()} for i in range(len(queries))]
        qstrings = [" ".join(" ".join([t] * w) for t, w in q.items()) for q in qints]
        dmat, qmat = docs.to_scipy(), queries.to_scipy()
        k, threads = args.k, args.threads

        searcher = ImpactSearcher(work / "idx")
        bare = searcher._searcher  # the SimpleImpactSearcher itself
        ArrayList = jvm.autoclass("java.util.ArrayList")
        HashMap = jvm.autoclass("java.util.HashMap")
        Integer = jvm.autoclass("java.lang.Integer")

        def project():
            return {q: [h.impact_score for h in hits] for q, hits in searcher.batch_search(qints, qids, k, threads).items()}

        def anserini_maps():
            jq, jids = ArrayList(), ArrayList()
            for qid, q in zip(qids, qints):
                m = HashMap()
                for tok, w in q.items():
                    m.put(tok, Integer(w))
                jq.add(m)
                jids.add(qid)
            out = bare.batch_search(jq, jids, k, threads)
            return {qid: [(sd.docid, sd.score) for sd in out.get(qid)] for qid in qids}

        def anserini_strings():
            jq, jids = ArrayList(), ArrayList()
            for qid, text in zip(qids, qstrings):
                jq.add(text)
                jids.add(qid)
            out = bare.batch_search_queries(jq, jids, k, threads)
            return {qid: [(sd.docid, sd.score) for sd in out.get(qid)] for qid in qids}

        def scipy_top():
            return exhaustive_top(dmat, qmat, k)

        # exactness: every path returns the exhaustive top-k scores
        want = scipy_top()
        got = {"project": project(), "anserini_maps": anserini_maps(), "anserini_strings": anserini_strings()}
        exact = {
            name: all([float(x) if not isinstance(x, tuple) else float(x[1]) for x in res[q]] == want[j].tolist()
                      for j, q in enumerate(qids))
            for name, res in got.items()
        }

        paths = {"project": project, "anserini_maps": anserini_maps, "anserini_strings": anserini_strings,
                 "scipy": scipy_top}
        for _ in range(args.warmup):
            for fn in paths.values():
                fn()
        times: dict[str, list[float]] = {name: [] for name in paths}
        for r in range(args.repeats):
            order = list(paths.items())
            for name, fn in (order if r % 2 == 0 else order[::-1]):  # no path always runs first
                times[name].append(timed(fn)[0])
        searcher.close()
        n = len(qids)
        qps = {name: n / median(t) for name, t in times.items()}
        best_bare = max(qps["anserini_maps"], qps["anserini_strings"])
        info = machine()
        result = {
            "benchmark": "search",
            "docs": args.docs, "doc_terms": args.doc_terms, "queries": n, "query_terms": args.query_terms,
            "vocab": args.vocab, "k": k, "threads": threads, "repeats": args.repeats, "warmup": args.warmup,
            "project_qps": round(qps["project"], 1),
            "anserini_qps": round(best_bare, 1),
            "ratio_to_anserini": round(ratio(qps["project"], best_bare), 4),
            "scipy_qps": round(qps["scipy"], 1),
            "anserini_maps_qps": round(qps["anserini_maps"], 1),
            "anserini_strings_qps": round(qps["anserini_strings"], 1),
            "exact": all(exact.values()),
            "exact_by_path": exact,
            "seconds": {name: [round(x, 4) for x in t] for name, t in times.items()},
            "machine": info,
        }
        rows = [
            ["project ImpactSearcher.batch_search", qps["project"], 1.0, exact["project"]],
            ["anserini batch_search, HashMap per query", qps["anserini_maps"],
             ratio(qps["anserini_maps"], qps["project"]), exact["anserini_maps"]],
            ["anserini batch_search_queries, strings", qps["anserini_strings"],
             ratio(qps["anserini_strings"], qps["project"]), exact["anserini_strings"]],
            ["scipy exhaustive product + top-k", qps["scipy"], ratio(qps["scipy"], qps["project"]), True],
        ]
        print(f"search: {args.docs} documents x {args.doc_terms} terms, {n} queries x {args.query_terms} terms, "
              f"top {k}, {threads} threads")
        print(f"machine: {describe(info)}")
        print(table(rows, ["path", "queries/s", "x project", "top-k = exhaustive"]))
        print(f"ratio_to_anserini {result['ratio_to_anserini']:.3f} (best bare Anserini: "
              f"{'strings' if qps['anserini_strings'] > qps['anserini_maps'] else 'maps'})")
        write_json(args.json, result)
        return 0 if result["exact"] else 1
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
