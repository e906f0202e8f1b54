"""``lsr demo``: encode a built-in document set, index it and run a few queries, showing why each hit matched."""

from __future__ import annotations

import tempfile
from pathlib import Path


def register(sub) -> dict:
    p = sub.add_parser("demo", help="encode a built-in document set, index it and run a few queries")
    p.add_argument("--model", default="splade-tiny")
    p.add_argument("--workdir", default=None, help="keep the vectors and index here (default: a temp dir)")
    return {"demo": cmd_demo}


def cmd_demo(args) -> int:
    # the imports and the model take several seconds: say so before they start
    print(f"loading PyTorch, transformers and the {args.model} model ...", flush=True)
    from anserini_bridge.index import build_index
    from anserini_bridge.search import ImpactSearcher
    from encoders.pipeline import encode_to_dir
    from encoders.splade import SpladeEncoder
    from ..explain import contributions
    from ..fixtures.demo import DEMO_DOCUMENTS, DEMO_QUERIES
    from ..io import Record

    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="lsr-demo-"))
    vecdir, idxdir = work / "vectors", work / "index"
    encoder = SpladeEncoder(args.model, progress=False)
    print(f"model {args.model}: {len(encoder.vocab)} tokens, device {encoder.device}")
    records = [Record(d, f"{t} {x}") for d, t, x in DEMO_DOCUMENTS]
    info = encode_to_dir(encoder, records, vecdir, overwrite=True)
    print(f"encoded {info.documents_written} documents -> {vecdir}")
    meta = build_index(vecdir, idxdir, overwrite=True, progress=False)
    print(f"indexed {meta.counters['indexed']} documents -> {idxdir}\n")
    with ImpactSearcher(idxdir) as searcher:
        qvecs = encoder.encode_queries([q for _, q in DEMO_QUERIES], ids=[i for i, _ in DEMO_QUERIES])
        quantizer = searcher.meta.quantization
        for i, (qid, text) in enumerate(DEMO_QUERIES):
            q_int = {t: int(v) for t, v in quantizer.quantize(qvecs.select([i])).to_dict(0).items()}
            print(f"query {qid}: {text!r}")
            for hit in searcher.search(q_int, k=3):
                parts = contributions(q_int, searcher.doc_vector(hit.docid))[:5]
                why = ", ".join(f"{c.display}({c.contribution})" for c in parts)
                title = next(t for d, t, _ in DEMO_DOCUMENTS if d == hit.docid)
                print(f"  {hit.rank}. {hit.docid:<8} {hit.score:7.3f}  {title}")
                print(f"     matched: {why}")
            print()
    print(f"vectors and index kept in {work}")
    return 0
