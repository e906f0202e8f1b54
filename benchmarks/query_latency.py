"""Query latency: one query at a time, end to end, against the model's forward pass, bare Anserini and Pyserini.

    python -m benchmarks.query_latency [--index DIR --queries Q [--qrels QRELS]] [--model splade-tiny]
                                       [--k 1000] [--threads 2] [--json OUT]

Without ``--index`` a Cranfield impact index is built first with the model
(corpus from ``LSR_CRANFIELD``, default ``../shared/data/cranfield``; about a
minute on 2 CPU cores, progress on stderr), and Cranfield's queries and qrels
are used. Measured in one run, one query at a time through the Python API,
every path on the same query before the next query (the order of the paths
rotates from query to query):

* ``project``: ``SpladeEncoder.encode_query(text)`` then
  ``ImpactSearcher.search(vector, k)``: tokenization, model, pooling,
  quantization, Lucene, the hits as :class:`~lsr.io.Hit` values;
* ``floor``: the raw model forward (``model(input_ids).logits``, max over
  positions, ``log1p(relu)``) on the same queries tokenized beforehand, plus
  Anserini's bare ``SimpleImpactSearcher.search`` on the same integer queries
  (``java.util.HashMap`` built beforehand). The forward runs with torch's own
  thread setting and with one thread; the faster setting is the floor;
* ``pyserini``: ``LuceneImpactSearcher(index, SpladeQueryEncoder(model)).search(text, k)``
  and the hits' docids and scores read, when pyserini imports (the JVM is
  started by the project first and a dummy ``OPENAI_API_KEY`` is set);
* ``inference_free``: :class:`encoders.inference_free.InferenceFreeEncoder`
  (tokenizer only, IDF from the index) then the same search.

Batch: the project's ``encode_queries`` + ``batch_search`` over all queries
against Pyserini's ``batch_search`` with the same ``--threads``, each
``--batch-repeats`` times (median).

Checks in the same run: the project's single-query runs against its batch
runs (``single_equals_batch``: queries with the same docids and scores), the
direct Lucene search against Anserini's own ``search`` on the same integer
queries (``search_exact``), and nDCG@10 of every query mode when qrels are
given. JSON keys: ``project_p50_ms``, ``project_p99_ms``, ``floor_p50_ms``,
``pyserini_p50_ms``, ``inference_free_p50_ms``, ``project_batch_qps``,
``pyserini_batch_qps``, ``ndcg@10`` (per mode), ratios, the breakdown and
``cpu_p50_ms`` (process CPU time per query and path, all threads counted).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .common import describe, machine, median, ratio, table, write_json

REPO = Path(__file__).resolve().parents[1]


def log(msg: str) -> None:
    print(f"[query_latency] {msg}", file=sys.stderr, flush=True)


def p99(values) -> float:
    return float(np.percentile(values, 99)) if len(values) else float("nan")


def cranfield_dir() -> Path:
    return Path(os.environ.get("LSR_CRANFIELD", REPO.parent / "shared" / "data" / "cranfield"))


def build_cranfield_index(model: str, work: Path, docs: int | None) -> Path:
    """Encode Cranfield's corpus with ``model`` and index it under ``work``; returns the index directory."""
    from anserini_bridge.index import build_index
    from encoders.pipeline import encode_to_dir
    from encoders.splade import SpladeEncoder
    from lsr.io import read_corpus

    data = cranfield_dir()
    if not (data / "corpus.jsonl").is_file():
        raise SystemExit(f"no --index given and no Cranfield corpus at {data}; set LSR_CRANFIELD or pass --index")
    records = read_corpus(data / "corpus.jsonl")
    if docs:
        records = records[:docs]
    log(f"no --index: building a Cranfield index of {len(records)} documents with {model} in {work} "
        "(encode, then index; about a minute for the whole corpus on 2 CPU cores)")
    enc = SpladeEncoder(model, device="cpu", progress=True)
    encode_to_dir(enc, records, work / "vec", overwrite=True)
    build_index(work / "vec", work / "idx", overwrite=True, progress=True)
    log(f"index ready: {work / 'idx'}")
    return work / "idx"


def open_pyserini(index: Path, model_dir: str):
    """Pyserini's impact searcher with its own SPLADE query encoder, or ``(None, reason)``."""
    from anserini_bridge import jvm

    try:
        jvm.start()  # Pyserini then finds a running JVM with the Anserini jar on the class path
        os.environ.setdefault("OPENAI_API_KEY", "unused-by-this-benchmark")
        from pyserini.encode import SpladeQueryEncoder
        from pyserini.search.lucene import LuceneImpactSearcher

        return LuceneImpactSearcher(str(index), SpladeQueryEncoder(model_dir)), None
    except Exception as e:  # noqa: BLE001 - any import or start-up failure: the comparison is left out
        return None, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.query_latency", description=__doc__.split("\n\n")[0])
    p.add_argument("--index", default=None, help="impact index built by `lsr index` (default: build Cranfield)")
    p.add_argument("--queries", default=None, help="BEIR queries.jsonl (default with no --index: Cranfield's)")
    p.add_argument("--qrels", default=None, help="qrels for nDCG@10 (default with no --index: Cranfield's)")
    p.add_argument("--model", default="splade-tiny", help="the model the index was built with")
    p.add_argument("--k", type=int, default=1000)
    p.add_argument("--threads", type=int, default=2, help="threads for the batch searches")
    p.add_argument("--limit", type=int, default=None, help="use the first N queries")
    p.add_argument("--warmup", type=int, default=20, help="queries run untimed through every path first")
    p.add_argument("--batch-repeats", type=int, default=3)
    p.add_argument("--build-docs", type=int, default=None, help="with no --index: index only the first N documents")
    p.add_argument("--no-pyserini", action="store_true", help="leave the Pyserini comparison out")
    p.add_argument("--workdir", default=None, help="where a built index goes (default: a temp dir, removed)")
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args(argv)

    import torch

    from anserini_bridge import jvm
    from anserini_bridge.search import ImpactSearcher
    from encoders.inference_free import InferenceFreeEncoder
    from encoders.registry import resolve
    from encoders.splade import SpladeEncoder
    from lsr.evaluate import evaluate
    from lsr.io import read_qrels, read_queries

    work = Path(args.workdir or tempfile.mkdtemp(prefix="lsr-bench-query-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        if args.index:
            if not args.queries:
                raise SystemExit("--index needs --queries")
            index, queries_path, qrels_path = Path(args.index), Path(args.queries), args.qrels
        else:
            index = build_cranfield_index(args.model, work, args.build_docs)
            queries_path = Path(args.queries) if args.queries else cranfield_dir() / "queries.jsonl"
            qrels_path = args.qrels or (cranfield_dir() / "qrels" / "test.tsv" if not args.queries else None)
        records = read_queries(queries_path)[:args.limit]
        texts, qids, k = [r.text for r in records], [r.id for r in records], args.k
        log(f"{len(texts)} queries from {queries_path}, k={k}; loading the model and the index")

        enc = SpladeEncoder(args.model, device="cpu")
        searcher = ImpactSearcher(index)
        searcher.check_encoder(enc.name, enc.vocab.fingerprint)
        free = InferenceFreeEncoder(args.model, doc_freqs=searcher.document_frequencies, num_docs=searcher.num_docs)
        model, tok = enc.model, enc.tokenizer
        token_tensors = [torch.tensor([tok(t, truncation=True, max_length=enc.max_length)["input_ids"]])
                         for t in texts]
        ints = [searcher.quantized_queries(enc.encode_queries([t]))[0] for t in texts]
        HashMap, Integer = jvm.autoclass("java.util.HashMap"), jvm.autoclass("java.lang.Integer")
        jmaps = []
        for q in ints:
            m = HashMap()
            for tok_, w in q.items():
                m.put(tok_, Integer(int(w)))
            jmaps.append(m)
        bare = searcher._searcher
        default_threads = torch.get_num_threads()

        pys, pys_reason = (None, "--no-pyserini") if args.no_pyserini else open_pyserini(
            index, resolve(args.model).source)
        if pys is None:
            log(f"pyserini left out ({pys_reason})")

        def raw_forward(i: int, threads: int):
            old = torch.get_num_threads()
            torch.set_num_threads(threads)
            try:
                with torch.inference_mode():
                    logits = model(input_ids=token_tensors[i]).logits
                    return torch.log1p(torch.relu(logits.amax(dim=1)))
            finally:
                torch.set_num_threads(old)

        single_runs: dict[str, list] = {}
        free_runs: dict[str, list] = {}
        times: dict[str, list[float]] = {name: [] for name in (
            "project", "project_encode", "project_search", "forward_default", "forward_1thread", "bare_search",
            "pyserini", "inference_free")}

        def project(i, rec):
            t0 = time.perf_counter()
            qv = enc.encode_query(texts[i])
            t1 = time.perf_counter()
            hits = searcher.search(qv, k)
            t2 = time.perf_counter()
            if rec:
                times["project_encode"].append(t1 - t0)
                times["project_search"].append(t2 - t1)
                single_runs[qids[i]] = hits
            return t2 - t0

        def inference_free(i, rec):
            t0 = time.perf_counter()
            hits = searcher.search(free.encode_query(texts[i]), k)
            dt = time.perf_counter() - t0
            if rec:
                free_runs[qids[i]] = hits
            return dt

        def timed_call(fn):
            t0 = time.perf_counter()
            fn()
            return time.perf_counter() - t0

        paths = {
            "project": project,
            "forward_default": lambda i, rec: timed_call(lambda: raw_forward(i, default_threads)),
            "forward_1thread": lambda i, rec: timed_call(lambda: raw_forward(i, 1)),
            "bare_search": lambda i, rec: timed_call(lambda: bare.search(jmaps[i], k)),
            "inference_free": inference_free,
        }
        if pys is not None:
            paths["pyserini"] = lambda i, rec: timed_call(
                lambda: [(h.docid, h.score) for h in pys.search(texts[i], k)])
        names = list(paths)
        log(f"warm-up: {min(args.warmup, len(texts))} queries through every path")
        for i in range(min(args.warmup, len(texts))):
            for name in names:
                paths[name](i, False)
        log(f"single queries: {len(texts)} queries x {len(names)} paths")
        cpu: dict[str, list[float]] = {name: [] for name in names}
        for i in range(len(texts)):
            shift = i % len(names)
            for name in names[shift:] + names[:shift]:
                c0 = time.process_time()
                dt = paths[name](i, True)
                cpu[name].append(time.process_time() - c0)
                times[name].append(dt)
            if (i + 1) % 50 == 0:
                log(f"  {i + 1}/{len(texts)} queries")

        # direct Lucene search against Anserini's own search, on the same integer queries
        direct_hits = [searcher.search(q, k) for q in ints]
        saved, searcher._direct = searcher._direct, False
        anserini_hits = [searcher.search(q, k) for q in ints]
        searcher._direct = saved
        search_exact = sum(a == b for a, b in zip(direct_hits, anserini_hits))

        # batch
        log(f"batch: {len(texts)} queries, {args.threads} threads, {args.batch_repeats} repeats")
        batch_runs = {}

        def project_batch():
            q = enc.encode_queries(texts, ids=qids)
            batch_runs.update(searcher.batch_search(q, k=k, threads=args.threads))

        pyserini_batch_out = {}

        def pyserini_batch():
            pyserini_batch_out.update(pys.batch_search(texts, qids, k, args.threads))

        batch_paths = {"project": project_batch}
        if pys is not None:
            batch_paths["pyserini"] = pyserini_batch
        batch_times: dict[str, list[float]] = {name: [] for name in batch_paths}
        for r in range(args.batch_repeats):
            order = list(batch_paths.items())
            for name, fn in (order if r % 2 == 0 else order[::-1]):
                batch_times[name].append(timed_call(fn))
        single_equals_batch = sum(single_runs[q] == batch_runs[q] for q in qids)

        quality = {}
        if qrels_path:
            qrels = read_qrels(qrels_path)
            runs = {"project": batch_runs, "project_single": single_runs, "inference_free": free_runs}
            if pys is not None:
                runs["pyserini"] = {q: {h.docid: float(h.score) for h in hits} for q, hits in pyserini_batch_out.items()}
            quality = {name: round(evaluate(run, qrels, ["ndcg@10"])["ndcg@10"], 4) for name, run in runs.items()}

        ms = {name: [x * 1e3 for x in v] for name, v in times.items()}
        fwd = "forward_1thread" if median(ms["forward_1thread"]) <= median(ms["forward_default"]) else \
            "forward_default"
        floor = [a + b for a, b in zip(ms[fwd], ms["bare_search"])]
        n = len(texts)
        qps = {name: n / median(v) for name, v in batch_times.items()}
        result = {
            "benchmark": "query_latency",
            "index": str(index), "queries": n, "k": k, "threads": args.threads, "model": args.model,
            "built_cranfield_index": not args.index,
            "project_p50_ms": round(median(ms["project"]), 3),
            "project_p99_ms": round(p99(ms["project"]), 3),
            "project_encode_p50_ms": round(median(ms["project_encode"]), 3),
            "project_search_p50_ms": round(median(ms["project_search"]), 3),
            "floor_p50_ms": round(median(floor), 3),
            "floor_forward": fwd,
            "floor_forward_p50_ms": round(median(ms[fwd]), 3),
            "forward_default_threads_p50_ms": round(median(ms["forward_default"]), 3),
            "forward_1thread_p50_ms": round(median(ms["forward_1thread"]), 3),
            "torch_default_threads": default_threads,
            "bare_search_p50_ms": round(median(ms["bare_search"]), 3),
            "pyserini_p50_ms": round(median(ms["pyserini"]), 3) if pys is not None else None,
            "pyserini_p99_ms": round(p99(ms["pyserini"]), 3) if pys is not None else None,
            "inference_free_p50_ms": round(median(ms["inference_free"]), 3),
            "inference_free_p99_ms": round(p99(ms["inference_free"]), 3),
            "project_batch_qps": round(qps["project"], 2),
            "pyserini_batch_qps": round(qps["pyserini"], 2) if pys is not None else None,
            "project_to_floor": round(ratio(median(ms["project"]), median(floor)), 4),
            "project_to_pyserini": round(ratio(median(ms["project"]), median(ms["pyserini"])), 4)
            if pys is not None else None,
            "p99_to_p50": round(ratio(p99(ms["project"]), median(ms["project"])), 3),
            "batch_to_pyserini": round(ratio(qps["project"], qps["pyserini"]), 3) if pys is not None else None,
            "ndcg@10": quality,
            "single_equals_batch": single_equals_batch,
            "search_exact": search_exact,
            "pyserini_missing_reason": pys_reason,
            # process CPU time (all threads: torch's, the JVM's) per query, less sensitive to a busy machine
            "cpu_p50_ms": {name: round(median(v) * 1e3, 3) for name, v in cpu.items()},
            "batch_seconds": {name: [round(x, 4) for x in v] for name, v in batch_times.items()},
            "machine": machine(),
        }
        rows = [
            ["project: encode_query + search", result["project_p50_ms"], result["project_p99_ms"],
             quality.get("project_single", float("nan"))],
            [f"floor: raw forward ({fwd.split('_')[1]}) + bare Anserini search", result["floor_p50_ms"],
             p99(floor), float("nan")],
            ["  raw forward, torch default threads", result["forward_default_threads_p50_ms"],
             p99(ms["forward_default"]), float("nan")],
            ["  raw forward, 1 thread", result["forward_1thread_p50_ms"], p99(ms["forward_1thread"]), float("nan")],
            ["  bare Anserini search", result["bare_search_p50_ms"], p99(ms["bare_search"]), float("nan")],
        ]
        if pys is not None:
            rows.append(["pyserini LuceneImpactSearcher", result["pyserini_p50_ms"], result["pyserini_p99_ms"],
                         quality.get("pyserini", float("nan"))])
        rows.append(["inference-free: IDF query + search", result["inference_free_p50_ms"],
                     result["inference_free_p99_ms"], quality.get("inference_free", float("nan"))])
        info = result["machine"]
        print(f"query latency: {n} queries, k={k}, index {index}")
        print(f"machine: {describe(info)}, load average {info.get('load_average_1min', '-')}")
        print(table(rows, ["path (one query at a time)", "p50 ms", "p99 ms", "nDCG@10"]))
        print("process CPU time p50 (ms): " + ", ".join(f"{k} {v:.2f}" for k, v in result["cpu_p50_ms"].items()))
        print(f"project/floor {result['project_to_floor']:.3f}, project/pyserini "
              f"{result['project_to_pyserini'] if result['project_to_pyserini'] is not None else '-'}, "
              f"p99/p50 {result['p99_to_p50']:.2f}; encode p50 {result['project_encode_p50_ms']:.2f} ms, "
              f"search p50 {result['project_search_p50_ms']:.2f} ms")
        brows = [["project encode_queries + batch_search", qps["project"], quality.get("project", float("nan"))]]
        if pys is not None:
            brows.append(["pyserini batch_search", qps["pyserini"], quality.get("pyserini", float("nan"))])
        print(table(brows, [f"batch ({args.threads} threads)", "queries/s", "nDCG@10"]))
        print(f"single-query runs equal to batch runs: {single_equals_batch}/{n}; direct search equal to "
              f"Anserini's search: {search_exact}/{n}")
        write_json(args.json, result)
        searcher.close()
        return 0 if search_exact == n else 1
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
