"""The ``lsr`` command line.

Model and Java code is imported inside each command, so ``lsr eval`` and
``lsr --help`` start fast and work without them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .commands._options import add_fusion_args, add_model_args
from .errors import LsrError


def _load_encoder(args):
    """The sparse encoder named by ``--model``: SPLADE, or a STAIR directory (its text side for text input)."""
    from encoders.registry import load, resolve

    from .commands.inspect import check_sparse_model

    check_sparse_model(args.model)
    cuda_graphs = getattr(args, "cuda_graphs", False)
    if cuda_graphs and resolve(args.model).kind == "stair":
        raise LsrError("--cuda-graphs is for SPLADE text models; drop it for a STAIR model")
    return load(args.model, kind="sparse", device=args.device, dtype=args.dtype, max_length=args.max_length,
                batch_size=args.batch_size, progress=True, cuda_graphs=cuda_graphs or None)


def package_version() -> str:
    """The installed ``lsr-search`` version; from a source tree that is not installed, setup.py's."""
    import re
    from importlib import metadata

    setup_py = Path(__file__).resolve().parent.parent / "setup.py"
    try:
        installed = metadata.distribution("lsr-search")
    except metadata.PackageNotFoundError:
        installed = None
    if installed is not None:
        return installed.version
    try:
        m = re.search(r"""\bversion\s*=\s*["']([^"']+)["']""", setup_py.read_text(encoding="utf-8"))
    except OSError:
        m = None
    if m:
        return m.group(1)
    from . import __version__

    return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lsr", description="Learned sparse retrieval with Lucene impact indexes.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

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

    p = sub.add_parser("search", help="search an impact index, writing a TREC run")
    p.add_argument("--index", required=True,
                   help="Lucene index directory (`lsr index`), or milvus://HOST:PORT/COLLECTION (`lsr export`)")
    add_model_args(p, required=False, batch_size=True)
    p.add_argument("--queries", help="BEIR queries.jsonl (_id, text); needs --model")
    p.add_argument("--query-vectors", help="integer query vectors, no model needed: a vector directory "
                   "(`lsr encode --role query`) or a JSONL file of {id, vector} lines")
    p.add_argument("--output", required=True, help="TREC run file to write")
    p.add_argument("--k", type=int, default=1000)
    p.add_argument("--scale", type=float, default=None,
                   help="an index built by Anserini or Pyserini (no lsr-index.json): the scale its impacts were "
                        "quantized with, used to quantize the queries (default 100)")
    p.add_argument("--bm25-k1", type=float, default=0.9, help="BM25 index: k1 (default 0.9)")
    p.add_argument("--bm25-b", type=float, default=0.4, help="BM25 index: b (default 0.4)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--query-mode", choices=["model", "inference-free"], default="model",
                   help="model: encode queries with --model; inference-free: no forward pass, the query's own word "
                        "pieces (--model's tokenizer, no weights) weighted by their IDF in the index (for indexes "
                        "built with document-side expansion)")
    h = p.add_argument_group("hybrid reranking (dense or MLLM models over the sparse candidates)")
    h.add_argument("--rerank", action="append", default=[], metavar="STORE|MODEL=STORE",
                   help="an embedding store built by `lsr embed` (its model encodes the queries), or MODEL=STORE "
                        "to name the model (it must be the store's); repeat for several rerankers")
    add_fusion_args(h, "interp: fused = alpha * sparse + (1 - alpha) * dense (normalised scores)")
    h.add_argument("--k0", type=int, default=100, help="first-stage candidates reranked per query")
    h.add_argument("--dense-candidates", type=int, default=0,
                   help="also add each reranker's own top N documents (exhaustive search over its store)")
    h.add_argument("--rerank-missing", choices=["error", "skip"], default="error",
                   help="candidates missing from a store: stop with an error, or leave them out of that dense run")
    h.add_argument("--verbose", action="store_true", help="print the per-query latency breakdown")

    p = sub.add_parser("eval", help="evaluate a TREC run against qrels")
    p.add_argument("--run", required=True)
    p.add_argument("--qrels", required=True, help="BEIR qrels TSV (with header) or TREC qrels")
    p.add_argument("--metrics", nargs="+", default=["ndcg@10", "recall@100"])
    p.add_argument("--json", action="store_true", help="print one JSON object {metric: value}")

    for module in _command_modules():
        COMMANDS.update(module.register(sub))
    return parser


def _command_modules():
    import importlib
    import pkgutil

    from . import commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):  # helpers, e.g. the shared flags in _options
            yield importlib.import_module(f"{commands.__name__}.{info.name}")


# ------------------------------------------------------------------ commands
def cmd_encode(args) -> int:
    from encoders.pipeline import encode_to_dir
    from .io import read_corpus, read_queries
    from .quantize import Quantizer

    from .commands.inspect import check_sparse_model
    from .vectors import check_new_output

    # everything that can be checked before the model loads (which takes seconds)
    check_new_output(Path(args.output), args.overwrite, args.shard_size)
    check_sparse_model(args.model)
    quantizer = Quantizer(args.scale, args.max_value)
    records = read_corpus(args.input) if args.role == "document" else read_queries(args.input)
    shard, total = None, len(records)
    if args.shard:
        from .engines import parse_shard

        shard = parse_shard(args.shard)
        records = shard.select(records)
        print(f"shard {shard}: {len(records)} of {total} records", file=sys.stderr)
    encoder = _load_encoder(args)
    t0 = time.perf_counter()
    info = encode_to_dir(encoder, records, args.output, quantizer, role=args.role, shard_size=args.shard_size,
                         overwrite=args.overwrite)
    dt = time.perf_counter() - t0
    if shard is not None:  # record the split, so that `lsr index` can check the shards fit together
        from .engines import shard_info
        from .meta import write_meta
        from .vectors import META_FILE

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


def cmd_index(args) -> int:
    from anserini_bridge.index import build_index

    if args.bm25:
        from anserini_bridge.bm25 import build_bm25_index
        from .errors import InputError

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


def _open_retriever(spec: str, scale: float | None = None, bm25: tuple[float, float] | None = None):
    """The index named by ``--index``: an engine collection (``milvus://...``), an embedding store
    (``lsr embed``), a BM25 index (``lsr index --bm25``) or a Lucene impact index directory."""
    from .engines import is_engine_uri, open_engine
    from .quantize import Quantizer

    if is_engine_uri(spec):
        return open_engine(spec)
    from .embstore import STORE_META, EmbeddingStore

    if (Path(spec) / STORE_META).is_file():
        return EmbeddingStore(spec)
    if _index_kind(spec) == "bm25":
        from anserini_bridge.bm25 import BM25Searcher

        return BM25Searcher(spec, *(bm25 or ()))
    from anserini_bridge.search import ImpactSearcher

    return ImpactSearcher(spec, quantizer=Quantizer(scale) if scale else None)


def _index_kind(spec: str) -> str | None:
    """``retriever`` recorded in a Lucene index's ``lsr-index.json`` (``impact``, ``bm25``), if there is one."""
    meta = Path(spec) / "lsr-index.json"
    try:
        return json.loads(meta.read_text(encoding="utf-8")).get("retriever", "impact")
    except (OSError, ValueError, AttributeError):
        return None


def cmd_search(args) -> int:
    from .errors import InputError
    from .io import read_queries, write_run
    from .retrieval import check_query_vectors
    from .vectors import read_query_vectors

    if bool(args.queries) == bool(args.query_vectors):
        raise InputError("give either --queries (with --model) or --query-vectors")
    if args.query_mode == "inference-free" and not args.queries:
        raise InputError("--query-mode inference-free encodes query texts: give --queries and --model (for its "
                         "tokenizer) instead of --query-vectors")
    _check_search_args(args)
    searcher = _open_retriever(args.index, args.scale, (args.bm25_k1, args.bm25_b))
    from .embstore import EmbeddingStore

    if isinstance(searcher, EmbeddingStore) or getattr(searcher, "meta", None) is not None and \
            getattr(searcher.meta, "retriever", "impact") == "bm25":
        return _text_search(args, searcher)
    if args.queries:
        if not args.model:
            raise InputError("--queries needs --model (the encoder the index was built with)")
        from encoders.pipeline import record_inputs

        records = read_queries(args.queries)
        encoder = _load_query_encoder(args, searcher)
        searcher.check_encoder(encoder.name, encoder.vocab.fingerprint)
        inputs = record_inputs(encoder, records)
        qids = [r.id for r in records]
        # hybrid search encodes each query as it searches it, so its latency breakdown includes the encoding
        queries = None if args.rerank else encoder.encode_queries(inputs, ids=qids)
    else:
        qids, queries, qinfo = read_query_vectors(args.query_vectors)
        check_query_vectors(searcher.meta, qinfo, str(args.index), str(args.query_vectors))
    if args.rerank:
        if not args.queries:
            raise InputError("--rerank needs the query texts (--queries with --model), not --query-vectors")
        return _hybrid_search(args, searcher, encoder, qids, inputs)
    t0 = time.perf_counter()
    results = searcher.batch_search(queries, qids, k=args.k, threads=args.threads)
    dt = time.perf_counter() - t0
    write_run(args.output, results)
    empty = [q for q, hits in results.items() if not hits]
    print(f"searched {len(qids)} queries in {dt:.2f}s ({len(qids) / max(dt, 1e-9):.0f} queries/s) -> {args.output}",
          file=sys.stderr)
    if empty:
        print(f"{len(empty)} queries matched nothing (e.g. {', '.join(empty[:5])})", file=sys.stderr)
    return 0


def _text_search(args, searcher) -> int:
    """Search with query texts and no sparse model: a BM25 index, or an embedding store searched exhaustively."""
    from .embstore import EmbeddingStore
    from .errors import InputError
    from .io import Hit, read_queries, write_run

    kind = "an embedding store (its own model encodes the queries)" if isinstance(searcher, EmbeddingStore) \
        else "a BM25 index"
    if not args.queries:
        raise InputError(f"{args.index} is {kind}: give the query texts with --queries (not --query-vectors)")
    if args.model:
        raise InputError(f"{args.index} is {kind}: it needs no --model; leave it out")
    records = read_queries(args.queries)
    qids, texts = [r.id for r in records], [r.text for r in records]
    if isinstance(searcher, EmbeddingStore):
        import numpy as np

        from encoders.dense import embedder_for_store

        if args.rerank:
            raise InputError("--rerank reranks a sparse or BM25 first stage; an embedding store is searched "
                             "exhaustively already (fuse runs with `lsr fuse`)")
        encoder = embedder_for_store(searcher, None, device=args.device, batch_size=args.batch_size or 32)
        t0 = time.perf_counter()
        qv = np.asarray(encoder.encode_queries(texts), dtype=np.float32)
        found = searcher.search(qv, k=min(args.k, len(searcher)))
        results = {q: [Hit(d, float(s), r) for r, (d, s) in enumerate(hits, 1)] for q, hits in zip(qids, found)}
        what = f"exhaustive dense search of {searcher.path} ({encoder.name})"
    else:
        if args.rerank:
            return _hybrid_search(args, searcher, None, qids, texts, queries=texts)
        t0 = time.perf_counter()
        results = searcher.batch_search(texts, qids, k=args.k, threads=args.threads)
        what = f"BM25 k1={searcher.k1:g} b={searcher.b:g}"
    dt = time.perf_counter() - t0
    write_run(args.output, results)
    print(f"searched {len(qids)} queries in {dt:.2f}s ({what}) -> {args.output}", file=sys.stderr)
    return 0


def _load_query_encoder(args, searcher):
    """``--model``'s encoder, or with ``--query-mode inference-free`` its tokenizer weighted by the index's IDF."""
    if args.query_mode != "inference-free":
        return _load_encoder(args)
    from .errors import InputError

    if not hasattr(searcher, "document_frequencies"):
        raise InputError(f"--query-mode inference-free reads document frequencies from a Lucene index; {args.index} "
                         "is not one (search it with --query-mode model)")
    from encoders.inference_free import InferenceFreeEncoder

    return InferenceFreeEncoder(args.model, doc_freqs=searcher.document_frequencies, num_docs=searcher.num_docs,
                                max_length=args.max_length or 256)


def _check_search_args(args) -> None:
    """What ``lsr search`` can check before opening the index or loading a model."""
    from .errors import InputError

    from .embstore import STORE_META

    # an embedding store (searched densely with its own model) and a BM25 index take query texts, no --model
    text_only = (Path(args.index) / STORE_META).is_file() or _index_kind(args.index) == "bm25"
    if args.queries and not args.model and not text_only:
        raise InputError("--queries needs --model (the encoder the index was built with)")
    if args.queries:
        from .commands.inspect import check_sparse_model

        if args.model and not text_only:
            check_sparse_model(args.model)
        if not Path(args.queries).is_file():
            raise InputError(f"{args.queries}: queries file not found")
    if args.rerank and not args.queries:
        raise InputError("--rerank needs the query texts (--queries with --model), not --query-vectors")
    for spec in args.rerank:
        _rerank_spec(spec)


def _rerank_spec(spec: str) -> tuple[str | None, str]:
    """``(model or None, store directory)`` of a ``--rerank`` value; the store must exist."""
    from .errors import InputError

    if Path(spec).is_dir():
        return None, spec
    if "=" in spec:
        model, _, store_path = spec.partition("=")
        if not Path(store_path).is_dir():
            raise InputError(f"--rerank {spec}: embedding store {store_path!r} not found; build it with `lsr embed "
                             f"--model {model} --input corpus.jsonl --output {store_path}`")
        return model, store_path
    raise InputError(f"--rerank {spec!r} is not an embedding store directory; build one with `lsr embed "
                     f"--model {spec} --input corpus.jsonl --output STORE` and pass --rerank STORE "
                     f"(or --rerank {spec}=STORE)")


def _load_reranker(spec: str, args):
    from encoders.dense import embedder_for_store
    from .embstore import EmbeddingStore
    from .hybrid import Reranker

    model, store_path = _rerank_spec(spec)
    store = EmbeddingStore(store_path)
    encoder = embedder_for_store(store, model or None, device=args.device, batch_size=args.batch_size or 32)
    return Reranker(encoder, store, missing=args.rerank_missing)


def _hybrid_search(args, searcher, encoder, qids, inputs, queries=None) -> int:
    """Hybrid search; the first stage's queries are encoded one at a time by ``encoder``, or given (BM25 texts)."""
    from .hybrid import STAGES, HybridSearcher
    from .io import write_run

    rerankers = [_load_reranker(spec, args) for spec in args.rerank]
    if encoder is not None:
        encoder.progress = False  # one query at a time: the hybrid search has its own progress bar
    hybrid = HybridSearcher(searcher, rerankers, args.fusion, k0=args.k0, rrf_k=args.rrf_k, alpha=args.alpha,
                            norm=args.norm, dense_candidates=args.dense_candidates, progress=True,
                            sparse_encoder=encoder)
    t0 = time.perf_counter()
    results = hybrid.batch_search(queries, qids, inputs, k=args.k, threads=args.threads)
    dt = time.perf_counter() - t0
    write_run(args.output, results)
    how = f"rrf k={args.rrf_k:g}" if args.fusion == "rrf" else \
        f"interp alpha={args.alpha:g} ({args.norm}; alpha weighs the sparse run)"
    extra = f" + {args.dense_candidates} dense candidates per reranker" if args.dense_candidates else ""
    print(f"hybrid search of {len(qids)} queries in {dt:.2f}s: first stage k0={args.k0}{extra}, "
          f"{len(rerankers)} reranker(s) ({', '.join(r.name for r in rerankers)}), {how} -> {args.output}",
          file=sys.stderr)
    if args.verbose:
        cols = ["qid", *STAGES, "total", "candidates"]
        print("per-query latency (ms): " + " ".join(cols), file=sys.stderr)
        for t in hybrid.timings:
            ms = " ".join(f"{getattr(t, s) * 1e3:.2f}" for s in (*STAGES, "total"))
            print(f"  {t.qid} {ms} {t.candidates}", file=sys.stderr)
        med = hybrid.timing_medians()
        print("median per query (ms): " + ", ".join(f"{s} {v * 1e3:.2f}" for s, v in med.items()), file=sys.stderr)
    return 0


def cmd_eval(args) -> int:
    from .evaluate import evaluate
    from .io import read_qrels, read_run

    scores = evaluate(read_run(args.run), read_qrels(args.qrels), args.metrics)
    if args.json:
        print(json.dumps(scores))
    else:
        for name, value in scores.items():
            print(f"{name:<14}{value:.4f}")
    return 0


COMMANDS = {"encode": cmd_encode, "index": cmd_index, "search": cmd_search, "eval": cmd_eval}


def main(argv=None) -> int:
    from .errors import use_command_line_wording

    args = build_parser().parse_args(argv)
    use_command_line_wording()
    try:
        return COMMANDS[args.command](args)
    except LsrError as e:
        print(f"lsr {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lsr {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        use_command_line_wording(False)


if __name__ == "__main__":
    sys.exit(main())
