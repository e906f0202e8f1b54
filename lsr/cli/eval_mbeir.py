"""``lsr eval-mbeir``: evaluate an encoder on data in the M-BEIR format, per task, local and global pools.

Sparse encoders (SPLADE, STAIR, anything with ``name``, ``vocab`` and
``encode_queries`` / ``encode_documents`` returning a
:class:`~lsr.sparse.SparseBatch`) are evaluated through a real Lucene impact
index: the whole pool is encoded, quantized, indexed with Anserini and
searched; a local pool's ranking is the index's ranking restricted to that
pool (impact scores do not depend on the rest of the collection, so this is
exactly the ranking of an index holding only the local pool; the search
depth grows until enough local candidates are found). Dense encoders
(``encode_*`` returning ``[n, d]`` float arrays) are searched exhaustively by
cosine similarity. ``--rerank`` models are evaluated the same way and fused
with the main model's results by :mod:`lsr.fusion` (RRF or interpolation).

The Lucene side lives in :mod:`anserini_bridge.mbeir`, the data, metrics and
runs in :mod:`lsr.mbeir`; this module loads the models (``encoders``) and
wires them together, importing both inside its functions.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from lsr.mbeir.metrics import DENSE, SPARSE

from ._options import add_fusion_args, add_model_args


def register(sub) -> dict:
    p = sub.add_parser("eval-mbeir", help="evaluate a model on M-BEIR-format data (Recall@k per task, "
                                          "local and global pools)")
    p.add_argument("--data", required=True, help="M-BEIR data root; image paths in the records are relative to it")
    p.add_argument("--queries", required=True, nargs="+",
                   help="query JSONL files or directories (e.g. query/test); relative paths may be under --data")
    p.add_argument("--pool", required=True, nargs="+",
                   help="candidate pool JSONL files or directories (cand_pool/global/... or cand_pool/local)")
    p.add_argument("--qrels", nargs="+", default=None,
                   help="qrels files or directories ('qid 0 did rel task_id'); default: from pos_cand_list")
    p.add_argument("--model-kind", choices=["auto", SPARSE, DENSE], default="auto",
                   help="how to evaluate --model (auto: from the name or directory)")
    p.add_argument("--rerank", action="append", default=[], metavar="MODEL",
                   help="another model (usually dense) whose results are fused with --model's; repeatable")
    add_fusion_args(p, "interp: fused = alpha * first model + (1 - alpha) * mean of the --rerank models")
    p.add_argument("--k0", type=int, default=100, help="results per model that enter the fusion")
    p.add_argument("--scope", nargs="+", choices=["local", "global"], default=["local", "global"],
                   help="local: each task's own pool; global: the whole pool given")
    p.add_argument("--instructions", default=None,
                   help="instructions TSV (default: DATA/instructions/query_instructions.tsv)")
    p.add_argument("--instruction-mode", choices=["fixed", "random", "none"], default="fixed",
                   help="fixed: prompt number --prompt for every query; random: a prompt drawn per query "
                        "(seeded); none: no instructions")
    p.add_argument("--prompt", type=int, default=1, help="fixed mode: which prompt column (1-4)")
    p.add_argument("--seed", type=int, default=0, help="random mode: seed of the per-query draw")
    add_model_args(p, model_help="sparse: splade-tiny, a STAIR or masked-LM directory; dense: minilm, "
                                 "open_clip:MODEL[@WEIGHTS], e5v:SOURCE", batch_size=True, batch_default=32,
                   batch_help="inputs per model call")
    p.add_argument("--scale", type=float, default=100.0, help="sparse: impact = round(weight * scale)")
    p.add_argument("--max-value", type=int, default=1000, help="sparse: largest integer impact")
    p.add_argument("--max-query-terms", type=int, default=None,
                   help="sparse: keep each query's N largest weights (default: all)")
    p.add_argument("--max-doc-terms", type=int, default=None,
                   help="sparse: keep each candidate's N largest weights (default: all)")
    p.add_argument("--threads", type=int, default=None, help="Lucene indexing and search threads")
    p.add_argument("--workdir", default=None, help="keep vectors, index and embeddings here (default: a temp dir)")
    p.add_argument("--no-check-images", action="store_true",
                   help="do not check that every image file exists before encoding")
    p.add_argument("--json", default=None, metavar="OUT", help="also write the results as JSON to OUT")
    return {"eval-mbeir": cmd_eval_mbeir}


# ------------------------------------------------------------------ models
class TextOnlyDense:
    """A text-only dense encoder (a sentence embedder) applied to M-BEIR inputs.

    Each input is embedded without its image (:func:`lsr.inputs.without_images`:
    its text with the instruction in front), and an input left without text
    (an image-only candidate) gets a zero vector, so its cosine score is 0 for
    every query.
    """

    kind = "sentence-text-only"
    takes_images = False

    def __init__(self, encoder):
        self.encoder = encoder
        self.name = encoder.name
        self.dim = encoder.dim

    def _embed(self, fn, inputs):
        import numpy as np

        from lsr.inputs import without_images

        items = without_images(inputs)
        out = np.zeros((len(items), self.dim), dtype=np.float32)
        rows = [i for i, x in enumerate(items) if not isinstance(x, str) or x.strip()]
        if rows:
            out[rows] = fn([items[i] for i in rows])
        return out

    def encode_queries(self, inputs):
        return self._embed(self.encoder.encode_queries, inputs)

    def encode_documents(self, inputs):
        return self._embed(self.encoder.encode_documents, inputs)


def ignored_images(mset, query_inputs) -> int:
    """How many images a text-only model leaves out: those of the candidates and of the queries."""
    return sum(c.image is not None for c in mset.pool) + sum(x.image is not None for x in query_inputs)


def model_kind(name: str) -> str:
    """``sparse`` or ``dense`` for a model name (see :func:`encoders.registry.family`)."""
    from encoders.registry import family

    return family(name)


def load_model(name: str, kind: str = "auto", *, device: str | None = None, dtype: str = "auto",
               batch_size: int = 32, max_length: int | None = None, progress: bool = True):
    """``(encoder, kind)`` for a model name; sentence embedders are wrapped in :class:`TextOnlyDense`
    (a SPLADE model takes the inputs without their images as they are, see :func:`lsr.inputs.text_only`)."""
    from encoders.registry import load

    kind = model_kind(name) if kind == "auto" else kind
    model = load(name, kind=kind, device=device, dtype=dtype, batch_size=batch_size, max_length=max_length,
                 progress=progress)
    if kind == DENSE:
        return (TextOnlyDense(model) if getattr(model, "kind", "") == "sentence" else model), DENSE
    return model, SPARSE


# ------------------------------------------------------------------- command
def _find(path: str, root: Path, what: str) -> str:
    from lsr.errors import InputError

    p = Path(path)
    if p.exists():
        return str(p)
    if not p.is_absolute() and (root / p).exists():
        return str(root / p)
    raise InputError(f"{what} {path!r} not found (also looked under --data {root})")


def cmd_eval_mbeir(args) -> int:
    from anserini_bridge.mbeir import evaluate_model
    from lsr.errors import InputError
    from lsr.inputs import text_only
    from lsr.mbeir import Runs, evaluate, fuse_runs, load_set, read_instructions
    from lsr.quantize import Quantizer

    root = Path(args.data)
    if not root.is_dir():
        raise InputError(f"--data {root}: not a directory (the M-BEIR data root)")
    if args.k0 < 1:
        raise InputError(f"--k0 must be at least 1, got {args.k0}")
    for flag, value in (("--max-query-terms", args.max_query_terms), ("--max-doc-terms", args.max_doc_terms)):
        if value is not None and value < 1:
            raise InputError(f"{flag} must be at least 1, got {value}")
    queries = [_find(p, root, "query file") for p in args.queries]
    pool = [_find(p, root, "candidate pool") for p in args.pool]
    qrels = [_find(p, root, "qrels file") for p in args.qrels] if args.qrels else None
    t0 = time.perf_counter()
    mset = load_set(root, queries, pool, qrels, check_images=not args.no_check_images)
    instructions = None
    if args.instruction_mode != "none":
        path = Path(args.instructions) if args.instructions else root / "instructions" / "query_instructions.tsv"
        if not path.is_file():
            raise InputError(f"instructions file {path} not found; pass --instructions FILE or evaluate without "
                             "instructions (--instruction-mode none)")
        instructions = read_instructions(path)
    query_inputs = mset.query_inputs(instructions, args.instruction_mode, args.prompt, args.seed)
    how = {"fixed": f"fixed prompt {args.prompt}", "random": f"random prompt per query (seed {args.seed})",
           "none": "none"}[args.instruction_mode]
    print(f"read {len(mset.queries)} queries in {len(mset.rows)} task rows and {len(mset.pool)} candidates "
          f"in {time.perf_counter() - t0:.1f}s; instructions: {how}", file=sys.stderr)

    scopes = [s for s in ("local", "global") if s in args.scope]
    depth = max(50, args.k0) if args.rerank else 50
    quantizer = Quantizer(args.scale, args.max_value)
    tmp = None
    if args.workdir:
        work = Path(args.workdir)
        work.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="lsr-mbeir-")
        work = Path(tmp.name)
    try:
        systems = []
        for i, name in enumerate([args.model, *args.rerank]):
            kind = args.model_kind if i == 0 else "auto"
            encoder, kind = load_model(name, kind, device=args.device, dtype=args.dtype, batch_size=args.batch_size,
                                       max_length=args.max_length)
            t1 = time.perf_counter()
            runs = evaluate_model(encoder, kind, mset, query_inputs, work / f"model-{i}", depth, scopes, quantizer,
                                  args.threads, chunk_size=max(args.batch_size, 256),
                                  max_query_terms=args.max_query_terms, max_doc_terms=args.max_doc_terms)
            runs.name = name
            where = "Lucene impact index" if kind == SPARSE else "exhaustive cosine"
            note = ""
            if "query_terms_mean" in runs.info:
                note += f"; {runs.info['indexed']} candidates indexed, {runs.info['query_terms_mean']:.0f} terms " \
                        "per query on average"
            ignored = ignored_images(mset, query_inputs) if text_only(encoder) else 0
            if ignored:
                note += f"; text-only model, {ignored} images ignored"
            print(f"{name}: {kind}, {where}, {time.perf_counter() - t1:.1f}s{note}", file=sys.stderr)
            what = f"{kind}, {where}"
            if kind == SPARSE and (args.max_query_terms or args.max_doc_terms):
                what += f", pruned to {args.max_query_terms or 'all'} query / {args.max_doc_terms or 'all'} " \
                        "candidate terms"
            if text_only(encoder):
                what += ", text only"
            systems.append((runs, what))
        if args.rerank:
            top = [Runs(r.name, {s: {q: hits[:args.k0] for q, hits in run.items()} for s, run in r.scopes.items()},
                        r.kind) for r, _ in systems]
            fused = fuse_runs(top, args.fusion, rrf_k=args.rrf_k, alpha=args.alpha, norm=args.norm, depth=depth,
                              weights=args.weights, name="fused: " + " + ".join(r.name for r in top))
            systems.append((fused, f"hybrid, {fused.info['fusion']} over the top {args.k0} of each"))
    finally:
        if tmp is not None:
            tmp.cleanup()
    reports = []
    for runs, what in systems:
        report = evaluate(mset, runs, {"model": runs.name, "evaluated_as": what, "instructions": how, **runs.info})
        reports.append(report)
        print(f"\n{runs.name} ({what}); instructions: {how}")
        print(report.table())
    if args.json:
        out = {"data": str(root), "queries": len(mset.queries), "candidates": len(mset.pool), "instructions": how,
               "systems": [r.to_dict() for r in reports]}
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
        print(f"\nwrote {args.json}", file=sys.stderr)
    return 0
