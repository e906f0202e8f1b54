"""Indexing throughput and export memory: the project's export + index against bare Anserini IndexCollection.

    python -m benchmarks.index [--docs 20000] [--rss-docs 1000000] [--threads 2] [--json OUT]

Random integer documents (80 terms each, Zipf-distributed token popularity
over a 30,522-token vocabulary, weights 1..255), generated in memory first.

* ``export``: ``lsr.vectors.VectorWriter`` writes them as a vector directory
  (JsonVectorCollection JSONL, offsets table, metadata), what ``lsr encode``
  does after the model;
* ``index``: ``anserini_bridge.index.build_index`` on that directory, what
  ``lsr index`` does;
* ``bare IndexCollection``: Anserini's ``IndexCollection`` (JsonVectorCollection,
  ``-impact -pretokenized``, same threads) started directly on the same,
  pre-written JSONL files.

Memory: a child process streams ``--rss-docs`` documents (generated in chunks
of 10,000) through ``VectorWriter`` and reports its own peak resident set size
(``VmHWM``); a second child does the same with 1% of the documents, so the
difference shows what grows with the corpus.

JSON keys: ``export_docs_per_s``, ``index_docs_per_s``, ``export_plus_index_docs_per_s``,
``bare_index_docs_per_s``, ``ratio_to_bare`` (export + index vs bare
IndexCollection), ``index_ratio_to_bare`` (index alone), ``export_share``
(fraction of export + index time spent exporting), ``rss_docs``,
``peak_rss_mb`` (exporting ``rss_docs`` documents), ``peak_rss_mb_small``
(1% of them), ``rss_export_docs_per_s``, plus the setup and the machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .common import describe, machine, median, random_sparse_rows, ratio, table, timed, write_json

CHUNK = 10_000


def export_child(n: int, out: str, terms: int, vocab_size: int, seed: int) -> None:
    """Stream ``n`` random documents into a vector directory (run in a child process to measure its memory)."""
    from lsr.fixtures.synthetic import synthetic_vocab
    from lsr.quantize import Quantizer
    from lsr.sparse import SparseBatch
    from lsr.vectors import VectorWriter

    vocab = synthetic_vocab(vocab_size)
    t = time.perf_counter()
    with VectorWriter(out, Quantizer(scale=1, max_value=100_000), encoder="synthetic", vocab=vocab,
                      overwrite=True) as w:
        for start in range(0, n, CHUNK):
            m = min(CHUNK, n - start)
            indptr, indices, values = random_sparse_rows(m, terms, vocab_size, 255, seed=seed + start)
            w.write(SparseBatch(indptr, indices, values, vocab, tuple(f"d{start + i}" for i in range(m))))
    print(f"{time.perf_counter() - t:.6f} {_own_peak_rss_kb()}")


def _own_peak_rss_kb() -> int:
    """This process's peak resident set (kB) since it started its program.

    ``/proc/self/status`` VmHWM belongs to the current program only; the
    ``ru_maxrss`` that ``wait4`` reports also keeps the parent's peak when the
    child was started with vfork (as ``subprocess`` does), which inflates the
    figure when the parent is large (a test run that has loaded models).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux reports kilobytes


def measure_rss(n: int, out: Path, terms: int, vocab_size: int, seed: int) -> tuple[float, float]:
    """Peak RSS (MB) and export seconds of a child process that exports ``n`` documents."""
    code = (f"from benchmarks.index import export_child; "
            f"export_child({n}, {str(out)!r}, {terms}, {vocab_size}, {seed})")
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"export child failed ({proc.returncode}): {stderr.decode(errors='replace')[-2000:]}")
    seconds, peak_kb = stdout.decode().strip().splitlines()[-1].split()
    return int(peak_kb) / 1024.0, float(seconds)


def bare_index_collection(input_dir: Path, index_dir: Path, threads: int) -> None:
    from anserini_bridge import jvm

    home = jvm.java_home()
    cmd = [str(home / "bin" / "java"), *jvm.jvm_options(home), "-cp", str(jvm.anserini_jar()),
           "io.anserini.index.IndexCollection", "-collection", "JsonVectorCollection",
           "-input", str(input_dir), "-index", str(index_dir), "-impact", "-pretokenized",
           "-threads", str(threads)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.index", description=__doc__.split("\n\n")[0])
    p.add_argument("--docs", type=int, default=20_000, help="documents for the throughput comparison")
    p.add_argument("--terms", type=int, default=80)
    p.add_argument("--vocab", type=int, default=30_522)
    p.add_argument("--shard-size", type=int, default=5_000, help="documents per part file (IndexCollection "
                   "reads one file per thread)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--rss-docs", type=int, default=1_000_000, help="documents for the memory measurement (0: skip)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", default=None, help="default: a temp dir, removed")
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args(argv)

    from anserini_bridge import jvm
    from anserini_bridge.index import build_index
    from lsr.fixtures.synthetic import synthetic_vocab
    from lsr.quantize import Quantizer
    from lsr.sparse import SparseBatch
    from lsr.vectors import VectorWriter, part_files

    work = Path(args.workdir or tempfile.mkdtemp(prefix="lsr-bench-index-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        vocab = synthetic_vocab(args.vocab)
        indptr, indices, values = random_sparse_rows(args.docs, args.terms, args.vocab, 255, seed=args.seed)
        docs = SparseBatch(indptr, indices, values, vocab, tuple(f"d{i}" for i in range(args.docs)))
        jvm.jvm_options(jvm.java_home())  # the one-off check of the Java runtime, outside the timings

        def export(k):
            with VectorWriter(work / f"vec{k}", Quantizer(scale=1, max_value=100_000), encoder="synthetic",
                              vocab=vocab, shard_size=args.shard_size, overwrite=True) as w:
                for s in range(0, args.docs, CHUNK):
                    e = min(args.docs, s + CHUNK)
                    a, b = int(docs.indptr[s]), int(docs.indptr[e])
                    w.write(SparseBatch(docs.indptr[s:e + 1] - a, docs.indices[a:b], docs.values[a:b], vocab,
                                        docs.ids[s:e]))

        t_export, t_index, t_bare = [], [], []
        for k in range(args.repeats):
            t_export.append(timed(lambda: export(k))[0])
            t_index.append(timed(lambda: build_index(work / f"vec{k}", work / f"idx{k}", threads=args.threads,
                                                     overwrite=True, progress=False))[0])
            staging = work / f"bare-input{k}"
            staging.mkdir(exist_ok=True)
            for part in part_files(work / f"vec{k}"):
                os.symlink(part.resolve(), staging / part.name)
            t_bare.append(timed(lambda: bare_index_collection(staging, work / f"bare{k}", args.threads))[0])
            for d in (f"idx{k}", f"bare{k}", f"bare-input{k}"):
                shutil.rmtree(work / d, ignore_errors=True)
            if k:
                shutil.rmtree(work / f"vec{k}", ignore_errors=True)
        n = args.docs
        export_rate, index_rate, bare_rate = n / median(t_export), n / median(t_index), n / median(t_bare)
        both = n / (median(t_export) + median(t_index))

        rss = rss_small = rss_rate = None
        if args.rss_docs:
            rss, secs = measure_rss(args.rss_docs, work / "rss", args.terms, args.vocab, args.seed)
            rss_rate = args.rss_docs / secs
            shutil.rmtree(work / "rss", ignore_errors=True)
            rss_small, _ = measure_rss(max(1, args.rss_docs // 100), work / "rss-small", args.terms, args.vocab,
                                       args.seed)
            shutil.rmtree(work / "rss-small", ignore_errors=True)

        info = machine()
        result = {
            "benchmark": "index",
            "docs": n, "terms": args.terms, "vocab": args.vocab, "threads": args.threads,
            "shard_size": args.shard_size, "repeats": args.repeats,
            "export_docs_per_s": round(export_rate, 1),
            "index_docs_per_s": round(index_rate, 1),
            "export_plus_index_docs_per_s": round(both, 1),
            "bare_index_docs_per_s": round(bare_rate, 1),
            "ratio_to_bare": round(ratio(both, bare_rate), 4),
            "index_ratio_to_bare": round(ratio(index_rate, bare_rate), 4),
            "export_share": round(median(t_export) / (median(t_export) + median(t_index)), 4),
            "rss_docs": args.rss_docs,
            "peak_rss_mb": round(rss, 1) if rss is not None else None,
            "peak_rss_mb_small": round(rss_small, 1) if rss_small is not None else None,
            "rss_export_docs_per_s": round(rss_rate, 1) if rss_rate is not None else None,
            "seconds": {"export": [round(t, 4) for t in t_export], "index": [round(t, 4) for t in t_index],
                        "bare_index": [round(t, 4) for t in t_bare]},
            "machine": info,
        }
        rows = [
            ["export (VectorWriter -> JSONL)", export_rate, ratio(export_rate, bare_rate)],
            ["index (build_index)", index_rate, ratio(index_rate, bare_rate)],
            ["export + index", both, ratio(both, bare_rate)],
            ["bare IndexCollection on the same JSONL", bare_rate, 1.0],
        ]
        print(f"index: {n} documents x {args.terms} terms, {args.threads} threads, "
              f"{len(part_files(work / 'vec0'))} part files")
        print(f"machine: {describe(info)}")
        print(table(rows, ["path", "docs/s", "x bare"]))
        if rss is not None:
            print(f"peak RSS exporting {args.rss_docs:,} documents: {rss:,.0f} MB "
                  f"({max(1, args.rss_docs // 100):,} documents: {rss_small:,.0f} MB); "
                  f"{rss_rate:,.0f} docs/s")
        write_json(args.json, result)
        return 0
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
