"""Text <-> image retrieval on real photographs: Flickr8k, trained on frozen offline towers.

Trains, on the official train split (6,000 images x 5 captions), with the
ImageNet EfficientNet-Lite0 tower frozen and its features cached once:

* ``stair``: the STAIR sparse encoder (token head over the average of the
  tower's 7x7 feature map, see ``--image-positions``; SPLADE-tiny text side): stage 1 trains the head
  against caption vectors masked to their own word pieces, stage 2 trains the
  text side against the frozen image vectors;
* ``dense``: :class:`encoders.image_text.TowerEmbedder` (pooled tower features
  and all-MiniLM-L6-v2 with learned linear projections).

and three dense models that fuse an image and a text, on the same frozen
tower and the frozen all-MiniLM-L6-v2, trained on the caption -> image pairs
plus one composed pair per image (image + first half of caption j -> caption
j+1 of the same image, :func:`lsr.captions.composed_pairs`), the two kinds of
batch drawn equally often:

* ``uniir_sf``: UniIR score fusion (:class:`encoders.image_text.TowerEmbedder`);
* ``uniir_ff``: UniIR feature fusion
  (:class:`encoders.feature_fusion.FeatureFusionEmbedder`);
* ``vista``: VISTA (:class:`encoders.vista.VistaEmbedder`), whose text-only
  vectors are the frozen MiniLM's own (checked on Cranfield, nDCG@10).

Then evaluates on ``--eval`` (default: the dev split) in the standard protocol,
both ways, Recall@1/5/10: ``stair`` through real Lucene impact indexes (one of
images, one of captions), ``dense`` by exhaustive cosine, ``hybrid`` = STAIR's
top ``--k0`` from Lucene plus the dense model's own top ``--k0``, fused by
min-max interpolation with alpha 0.5 (``hybrid_rrf``: RRF, k = 60); both
fusions are fixed in advance, not tuned on the evaluation set. The fusion
models also meet the composed task (:func:`lsr.captions.composed_task`:
image + half a caption -> the image's other captions), with the image alone
and the half caption alone as controls.

    python -m benchmarks.flickr8k --data ../shared/data/flickr8k --json OUT [--eval FILE] [--quick]

Progress goes to stderr (log lines when it is not a terminal); the table to
stdout. Tower features are cached in ``--cache`` (default ~/.cache/lsr/features).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .common import describe, machine

DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "lsr", "features")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def train_stair(train, args, workdir: Path):
    from encoders.stair import StairEncoder, caption_vocabulary
    from lsr.training import TrainConfig, train as run_training

    head_vocab = caption_vocabulary(args.text_model, train.captions) if args.head_vocab == "captions" else None
    enc = StairEncoder.create(image_model=args.tower, text_model=args.text_model, max_length=64,
                              head_vocab=head_vocab, image_positions=args.image_positions,
                              head_hidden=args.head_hidden or None, head_dropout=args.head_dropout, device="cpu",
                              dtype="float32")
    pairs = train.pairs()
    base = TrainConfig(stage=1, steps=args.steps1, batch_size=args.batch_size, learning_rate=args.lr1,
                       weight_decay=args.weight_decay, grad_clip=args.grad_clip, lr_schedule=args.lr_schedule,
                       temperature=args.temperature, lambda_d=args.lambda_d, lambda_q=0.0,
                       lambda_warmup_steps=args.steps1 // 3, freeze_tower=True, feature_cache=args.cache,
                       output_dir=str(workdir / "stair-stage1"), log_every=20, seed=args.seed, progress=True,
                       max_length=64)
    t0 = time.perf_counter()
    log(f"STAIR stage 1: token head on {len(pairs)} captions, tower frozen, {args.steps1} steps")
    run_training(enc, pairs, base)
    negatives = mine(enc, train, args, workdir) if args.hard_negatives else None
    if args.steps2:
        log(f"STAIR stage 2: text side, image side frozen, {args.steps2} steps"
            + (f", {args.hard_negatives} mined hard negatives per caption" if negatives else ""))
        run_training(enc, pairs, base.replace(stage=2, steps=args.steps2, learning_rate=args.lr2,
                                              lambda_q=args.lambda_q, lambda_warmup_steps=args.steps2 // 3,
                                              output_dir=str(workdir / "stair-stage2")), negatives=negatives)
    return enc, time.perf_counter() - t0


def mine(enc, train, args, workdir: Path) -> dict:
    """The top-ranked wrong training images of each training caption, from an impact index of the current model."""
    from anserini_bridge.mining import mine_negatives
    from lsr.inputs import Input

    log(f"mining {args.hard_negatives} hard negatives per caption from an index of {len(train.images)} images")
    enc.use_features(enc.compute_features(train.images, args.cache))
    docs = enc.encode_documents([Input(image=p) for p in train.images], ids=train.image_ids)
    queries = enc.encode_queries(train.captions, ids=train.caption_ids)
    positives = {c: {train.image_ids[int(i)]} for c, i in zip(train.caption_ids, train.caption_image)}
    found = mine_negatives(docs, queries, positives, k=args.hard_negatives, workdir=workdir)
    enc.use_features(None)
    by_id = {i: Input(image=p) for i, p in zip(train.image_ids, train.images)}
    return {q: [(d, by_id[d]) for d in ds] for q, ds in found.items() if ds}


def stair_runs(enc, ev, workdir: Path, k: int):
    """Text->image and image->text runs of the STAIR model through Lucene impact indexes."""
    from anserini_bridge.index import build_index
    from anserini_bridge.search import ImpactSearcher
    from encoders.stair import encode_inputs_to_dir
    from lsr.inputs import Input
    from lsr.vectors import read_query_vectors

    img_dir, cap_dir = workdir / "vec-images", workdir / "vec-captions"
    log(f"encoding {len(ev.images)} images and {len(ev.captions)} captions")
    encode_inputs_to_dir(enc, [Input(image=p) for p in ev.images], ev.image_ids, img_dir, overwrite=True)
    # the captions are the queries of the main direction (text -> image) and the documents of the other
    encode_inputs_to_dir(enc, ev.captions, ev.caption_ids, cap_dir, overwrite=True, role="query")
    build_index(img_dir, workdir / "idx-images", overwrite=True, progress=False)
    build_index(cap_dir, workdir / "idx-captions", overwrite=True, progress=False)
    img_vecs = dict(zip(*read_query_vectors(img_dir)[:2]))
    cap_vecs = dict(zip(*read_query_vectors(cap_dir)[:2]))
    with ImpactSearcher(workdir / "idx-images") as s:
        t2i = s.batch_search([cap_vecs.get(c, {}) for c in ev.caption_ids], ev.caption_ids, k=k)
    with ImpactSearcher(workdir / "idx-captions") as s:
        i2t = s.batch_search([img_vecs.get(i, {}) for i in ev.image_ids], ev.image_ids, k=k)
    nnz = {"nnz_per_image": round(float(np.mean([len(img_vecs.get(i, {})) for i in ev.image_ids])), 1),
           "nnz_per_caption": round(float(np.mean([len(cap_vecs.get(c, {})) for c in ev.caption_ids])), 1)}
    return t2i, i2t, nnz


def top_tokens(enc, images, n_tokens: int = 6) -> list[dict]:
    from lsr.explain import decode
    from lsr.inputs import Input

    vecs = enc.encode_documents([Input(image=p) for p in images])
    out = []
    for i, p in enumerate(images):
        toks = decode(vecs, top_k=n_tokens, row=i)
        out.append({"image": Path(p).name, "tokens": [[t.token, round(t.weight, 2)] for t in toks]})
    return out


def recalls(t2i, i2t, ev) -> dict:
    from lsr.captions import image_to_text_recall, text_to_image_recall

    return {"t2i": text_to_image_recall(t2i, ev), "i2t": image_to_text_recall(i2t, ev)}


def ids_only(run: dict) -> dict[str, list[str]]:
    return {q: [h.docid if hasattr(h, "docid") else h for h in hits] for q, hits in run.items()}


def hybrid_runs(first: dict, query_vecs: np.ndarray, qids, cand_vecs: np.ndarray, cand_ids, alpha: float,
                k0: int, k: int) -> dict[str, dict]:
    """STAIR's top ``k0`` plus the dense model's own top ``k0``, fused; ``{"interp": run, "rrf": run}``.

    Interpolation is min-max ``alpha * sparse + (1 - alpha) * dense``; RRF uses k = 60. Both are fixed in
    advance, not tuned on the evaluation set.
    """
    from lsr.fusion import interpolate, rrf

    scores = query_vecs @ cand_vecs.T
    dense_top = np.argpartition(-scores, min(k0, scores.shape[1] - 1), axis=1)[:, :k0]
    sparse, dense = {}, {}
    for qi, q in enumerate(qids):
        hits = first.get(q, [])[:k0]
        sparse[q] = {h.docid: h.score for h in hits}
        cands = {h.docid for h in hits} | {cand_ids[j] for j in dense_top[qi]}
        row = {c: i for i, c in enumerate(cand_ids)}
        dense[q] = {c: float(scores[qi, row[c]]) for c in cands}
    return {"interp": ids_only(interpolate([sparse, dense], alpha=alpha, norm="minmax", depth=k)),
            "rrf": ids_only(rrf([sparse, dense], k=60, depth=k))}


FUSION_MODELS = ("uniir_sf", "uniir_ff", "vista")


def fusion_model(name: str, args):
    if name == "uniir_sf":
        from encoders.image_text import TowerEmbedder

        return TowerEmbedder(image_tower=args.tower, text_model=args.dense_text, dim=256, progress=True), 1e-3
    if name == "uniir_ff":
        from encoders.feature_fusion import FeatureFusionEmbedder

        return FeatureFusionEmbedder(image_tower=args.tower, text_model=args.dense_text, dim=256, width=256,
                                     layers=2, visual_grid=args.visual_grid, progress=True), 3e-4
    from encoders.vista import VistaEmbedder

    return VistaEmbedder(image_tower=args.tower, text_model=args.dense_text, visual_grid=args.visual_grid,
                         progress=True), 1e-3


def train_fusion(name: str, train, args, workdir: Path):
    """A fusion model trained on caption -> image and composed pairs (the same pairs and steps for each)."""
    from lsr.captions import composed_pairs
    from lsr.inputs import Input

    model, lr = fusion_model(name, args)
    cq, cd, cg = composed_pairs(train, per_image=1)
    queries = [Input(text=c) for c in train.captions] + cq
    docs = [Input(image=train.images[int(i)]) for i in train.caption_image] + cd
    groups = [train.image_ids[int(i)] for i in train.caption_image] + cg
    log(f"{name}: {len(queries)} pairs (captions -> images, composed), {args.fusion_steps} steps")
    t0 = time.perf_counter()
    model.fit_pairs(queries, docs, groups, steps=args.fusion_steps, batch_size=args.fusion_batch,
                    learning_rate=lr, seed=args.seed, cache_dir=args.cache)
    seconds = time.perf_counter() - t0
    model.save(workdir / f"{name}-model")
    return model, seconds


def dense_eval(model, ev, task, args) -> tuple[dict, dict, np.ndarray, np.ndarray]:
    """Text<->image recalls, the composed task (fused query, image alone, half caption alone), and the
    image and caption vectors they came from."""
    from lsr.captions import rank_by_scores
    from lsr.inputs import Input

    model.use_features(model.compute_features(ev.images, args.cache))
    img = model.encode_documents([Input(image=p) for p in ev.images])
    cap = model.encode_queries(ev.captions)
    scores = cap @ img.T
    row = recalls(rank_by_scores(scores, ev.caption_ids, ev.image_ids, 10),
                  rank_by_scores(scores.T, ev.image_ids, ev.caption_ids, 10), ev)
    cand = model.encode_documents(task.candidates)
    composed = {}
    for label, qs in (("fused", task.queries), ("image_only", [Input(image=q.image) for q in task.queries]),
                      ("text_only", [Input(text=q.text) for q in task.queries])):
        run = rank_by_scores(model.encode_queries(qs) @ cand.T, task.query_ids, task.candidate_ids, 10)
        composed[label] = task.recall(run)
    return row, composed, img, cap


def cranfield_ndcg(model, data: Path) -> float:
    """nDCG@10 of ``model``'s text vectors on Cranfield, by exhaustive cosine."""
    from lsr.captions import rank_by_scores
    from lsr.evaluate import evaluate
    from lsr.io import read_corpus, read_qrels, read_queries

    corpus, queries = read_corpus(data / "corpus.jsonl"), read_queries(data / "queries.jsonl")
    corpus = [d for d in corpus if d.text.strip()]  # Cranfield has a few empty documents
    scores = model.encode_queries([q.text for q in queries]) @ model.encode_documents([d.text for d in corpus]).T
    run = rank_by_scores(scores, [q.id for q in queries], [d.id for d in corpus], 10)
    ranked = {q: {d: 10.0 - r for r, d in enumerate(ds)} for q, ds in run.items()}
    return round(float(evaluate(ranked, read_qrels(data / "qrels" / "test.tsv"), ["ndcg@10"])["ndcg@10"]), 4)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=os.environ.get("LSR_FLICKR8K", "../shared/data/flickr8k"),
                    help="Flickr8k folder with captions_train.jsonl (and captions_dev.jsonl)")
    ap.add_argument("--eval", help="captions JSONL to evaluate on (default: DATA/captions_dev.jsonl)")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--quick", action="store_true", help="a small run: 300 train images, 100 eval images, few steps")
    ap.add_argument("--train-images", type=int, help="use only the first N train images")
    ap.add_argument("--eval-images", type=int, help="use only the first N eval images")
    ap.add_argument("--cache", default=DEFAULT_CACHE, help="tower feature cache directory")
    ap.add_argument("--workdir", help="keep models, vectors and indexes here (default: a temporary directory)")
    ap.add_argument("--tower", default="efficientnet-lite0")
    ap.add_argument("--text-model", default="splade-tiny")
    ap.add_argument("--dense-text", default="minilm")
    ap.add_argument("--steps1", type=int, default=None, help="STAIR stage 1 steps")
    ap.add_argument("--steps2", type=int, default=None, help="STAIR stage 2 steps (0: skip)")
    ap.add_argument("--dense-steps", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=256, help="STAIR training's batch (both stages)")
    ap.add_argument("--lr1", type=float, default=3e-4)
    ap.add_argument("--lr2", type=float, default=5e-5)
    ap.add_argument("--weight-decay", type=float, default=0.3, help="STAIR training's AdamW weight decay")
    ap.add_argument("--grad-clip", type=float, default=0.0, help="STAIR training's gradient-norm clip (0: none)")
    ap.add_argument("--lr-schedule", choices=["constant", "linear"], default="constant")
    ap.add_argument("--head-dropout", type=float, default=0.8, help="dropout on the tower features STAIR's head reads")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--lambda-d", type=float, default=1e-3, help="FLOPs weight on image vectors")
    ap.add_argument("--lambda-q", type=float, default=1e-3, help="FLOPs weight on caption vectors (stage 2)")
    ap.add_argument("--head-vocab", choices=["captions", "all"], default="captions")
    ap.add_argument("--image-positions", choices=["tokens", "tokens+mean", "mean"], default="mean",
                    help="what STAIR's head reads: the 7x7 cells (max over them), the cells and their average, "
                         "or the average alone")
    ap.add_argument("--head-hidden", type=int, default=256,
                    help="width of STAIR's head (0: the text model's hidden size)")
    ap.add_argument("--hard-negatives", type=int, default=0,
                    help="mine N wrong images per caption after stage 1 (Lucene index of the model) for stage 2")
    ap.add_argument("--k0", type=int, default=100, help="STAIR candidates reranked in the hybrid")
    ap.add_argument("--alpha", type=float, default=0.5, help="hybrid: weight of the sparse score")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-dense", action="store_true")
    ap.add_argument("--skip-stair", action="store_true", help="no STAIR and hybrid rows")
    ap.add_argument("--fusion", default=",".join(FUSION_MODELS),
                    help=f"fusion models to train and evaluate, comma-separated ({', '.join(FUSION_MODELS)}; "
                         "'' for none)")
    ap.add_argument("--fusion-steps", type=int, default=None, help="training steps of each fusion model")
    ap.add_argument("--fusion-batch", type=int, default=128)
    ap.add_argument("--visual-grid", type=int, default=2,
                    help="fusion models: the tower's 7x7 map averaged to GRID x GRID cells (+ its average)")
    ap.add_argument("--cranfield", default=os.environ.get("LSR_CRANFIELD", "../shared/data/cranfield"),
                    help="Cranfield folder, for VISTA's text-only check ('' to skip)")
    ap.add_argument("--reuse", action="store_true",
                    help="evaluate the models an earlier run saved in --workdir instead of training")
    args = ap.parse_args(argv)
    if args.reuse and not (args.workdir and (args.skip_stair or (Path(args.workdir) / "stair-model").is_dir())):
        ap.error("--reuse needs --workdir of an earlier run (with stair-model/)")
    if args.steps1 is None:
        args.steps1 = 40 if args.quick else 800
    if args.steps2 is None:
        args.steps2 = 20 if args.quick else 150
    if args.dense_steps is None:
        args.dense_steps = 150 if args.quick else 1500
    if args.fusion_steps is None:
        args.fusion_steps = 30 if args.quick else 600
    fusion = [f for f in args.fusion.split(",") if f]
    unknown = sorted(set(fusion) - set(FUSION_MODELS))
    if unknown:
        ap.error(f"--fusion: unknown model {', '.join(unknown)} (known: {', '.join(FUSION_MODELS)})")
    n_train = args.train_images or (300 if args.quick else None)
    n_eval = args.eval_images or (100 if args.quick else None)

    import torch

    from lsr.captions import read_caption_jsonl
    from lsr.errors import LsrError

    torch.manual_seed(args.seed)
    data = Path(args.data)
    try:
        train = read_caption_jsonl(data / "captions_train.jsonl")
        ev = read_caption_jsonl(Path(args.eval) if args.eval else data / "captions_dev.jsonl")
    except LsrError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if n_train:
        train = train.head(n_train)
    if n_eval:
        ev = ev.head(n_eval)
    log(f"train: {len(train.image_ids)} images, {len(train.captions)} captions; "
        f"eval: {len(ev.image_ids)} images, {len(ev.captions)} captions")
    t_start = time.perf_counter()
    tmp = tempfile.TemporaryDirectory(prefix="lsr-flickr8k-") if not args.workdir else None
    workdir = Path(args.workdir or tmp.name)
    workdir.mkdir(parents=True, exist_ok=True)
    k = max(10, args.k0)
    result: dict = {"eval_images": len(ev.image_ids), "eval_captions": len(ev.captions),
                    "train_images": len(train.image_ids), "train_captions": len(train.captions),
                    "settings": {k_: v for k_, v in vars(args).items() if k_ not in ("json",)}}

    train_seconds = 0.0
    t2i = i2t = None
    if not args.skip_stair:
        if args.reuse:
            from encoders.stair import StairEncoder

            log(f"reusing the models saved in {workdir} (no training)")
            enc = StairEncoder.load(str(workdir / "stair-model"), device="cpu", dtype="float32")
        else:
            enc, train_seconds = train_stair(train, args, workdir)
            enc.save(workdir / "stair-model")
        enc.use_features(enc.compute_features(ev.images, args.cache))
        t2i, i2t, nnz = stair_runs(enc, ev, workdir, k)
        result["stair"] = {**recalls(ids_only(t2i), ids_only(i2t), ev), **nnz}
        result["stair_examples"] = top_tokens(enc, ev.images[:5])

    from lsr.captions import composed_task

    task = composed_task(ev)
    if not args.skip_dense:
        from encoders.image_text import TowerEmbedder

        if args.reuse:
            dense = TowerEmbedder(str(workdir / "dense-model"), progress=True)
        else:
            dense = TowerEmbedder(image_tower=args.tower, text_model=args.dense_text, progress=True)
            log(f"dense: projections on {len(train.captions)} captions, {args.dense_steps} steps")
            t0 = time.perf_counter()
            dense.fit(train.captions, [train.images[int(i)] for i in train.caption_image], steps=args.dense_steps,
                      seed=args.seed, cache_dir=args.cache)
            train_seconds += time.perf_counter() - t0
            dense.save(workdir / "dense-model")
        result["dense"], result.setdefault("composed", {})["dense"], img, cap = dense_eval(dense, ev, task, args)
        if t2i is not None:
            h_t2i = hybrid_runs(t2i, cap, ev.caption_ids, img, ev.image_ids, args.alpha, args.k0, 10)
            h_i2t = hybrid_runs(i2t, img, ev.image_ids, cap, ev.caption_ids, args.alpha, args.k0, 10)
            result["hybrid"] = {**recalls(h_t2i["interp"], h_i2t["interp"], ev), "k0": args.k0,
                                "dense_candidates": args.k0, "fusion": "interp", "alpha": args.alpha,
                                "norm": "minmax"}
            result["hybrid_rrf"] = {**recalls(h_t2i["rrf"], h_i2t["rrf"], ev), "k0": args.k0,
                                    "dense_candidates": args.k0, "fusion": "rrf", "rrf_k": 60}
    for name in fusion:
        saved = workdir / f"{name}-model"
        if args.reuse and saved.is_dir():
            from encoders.dense import load_embedder

            model, seconds = load_embedder(str(saved), progress=True), 0.0
        else:
            model, seconds = train_fusion(name, train, args, workdir)
        result[name], result.setdefault("composed", {})[name], _, _ = dense_eval(model, ev, task, args)
        result[name]["train_seconds"] = round(seconds, 1)
        train_seconds += seconds
        if name == "vista" and args.cranfield and Path(args.cranfield).is_dir():
            from encoders.dense import SentenceEmbedder

            result["vista_text_check"] = {"collection": "cranfield", "metric": "ndcg@10",
                                          args.dense_text: cranfield_ndcg(SentenceEmbedder(args.dense_text),
                                                                          Path(args.cranfield)),
                                          "vista": cranfield_ndcg(model, Path(args.cranfield))}
    if "composed" in result:
        result["composed_task"] = {"queries": len(task.query_ids), "candidates": len(task.candidate_ids),
                                   "query": "image + first half of its first caption",
                                   "relevant": "the image's other captions"}
    result["train_seconds"] = round(train_seconds, 1)
    result["total_seconds"] = round(time.perf_counter() - t_start, 1)
    result["machine"] = machine()
    result["workdir"] = str(workdir) if args.workdir else None

    print(f"Flickr8k, {len(ev.image_ids)} eval images / {len(ev.captions)} captions; "
          f"trained on {len(train.image_ids)} images ({describe(result['machine'])})")
    print(f"{'system':10} {'t2i R@1':>8} {'R@5':>6} {'R@10':>6} {'i2t R@1':>8} {'R@5':>6} {'R@10':>6}")
    for name in ("stair", "dense", "hybrid", "hybrid_rrf", *FUSION_MODELS):
        if name in result:
            a, b = result[name]["t2i"], result[name]["i2t"]
            print(f"{name:10} {a['R@1']:8.3f} {a['R@5']:6.3f} {a['R@10']:6.3f} {b['R@1']:8.3f} {b['R@5']:6.3f} "
                  f"{b['R@10']:6.3f}")
    if "stair" in result:
        print(f"STAIR non-zeros: {result['stair']['nnz_per_image']} per image, "
              f"{result['stair']['nnz_per_caption']} per caption")
        for ex in result["stair_examples"][:3]:
            print(f"  {ex['image']}: " + ", ".join(f"{t} {w}" for t, w in ex["tokens"]))
    if "composed" in result:
        t = result["composed_task"]
        print(f"composed: image + half a caption -> its other captions ({t['queries']} queries, "
              f"{t['candidates']} candidate captions), R@1 / R@5 / R@10")
        print(f"{'model':10} {'fused':>20} {'image only':>20} {'half caption only':>20}")
        for name, row in result["composed"].items():
            cells = ["{R@1:.3f} {R@5:.3f} {R@10:.3f}".format(**row[c]) for c in ("fused", "image_only", "text_only")]
            print(f"{name:10} " + " ".join(f"{c:>20}" for c in cells))
    if "vista_text_check" in result:
        v = result["vista_text_check"]
        print(f"VISTA text-only vectors, Cranfield nDCG@10: {v['vista']:.4f} (frozen {args.dense_text}: "
              f"{v[args.dense_text]:.4f})")
    print(f"training {result['train_seconds']} s, total {result['total_seconds']} s")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
