"""Hybrid search: SPLADE-tiny impact index (Lucene) + MiniLM reranking from an embedding store."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

from lsr.cli import main
from lsr.embstore import EmbeddingStore, build_store
from lsr.errors import IndexMismatchError, InputError
from lsr.evaluate import evaluate
from lsr.fusion import interpolate, rrf
from lsr.hybrid import STAGES, HybridSearcher, Reranker
from lsr.io import read_corpus, read_qrels, read_queries, read_run


@pytest.fixture(scope="module")
def minilm():
    from encoders.dense import SentenceEmbedder

    return SentenceEmbedder("minilm", device="cpu", batch_size=64)


def tiny_sentence_model(path, hidden):
    """A randomly initialised 1-layer BERT saved as a plain transformers directory (mean pooling)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from encoders.registry import resolve

    tok = AutoTokenizer.from_pretrained(resolve("minilm").source)
    torch.manual_seed(hidden)
    BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=hidden, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=2 * hidden, max_position_embeddings=128)).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def build_index_of(splade_tiny, records, root):
    from anserini_bridge.index import build_index
    from encoders.pipeline import encode_to_dir

    encode_to_dir(splade_tiny, records, root / "vec")
    build_index(root / "vec", root / "idx", progress=False)
    return root / "idx"


@pytest.fixture(scope="module")
def small(cranfield, splade_tiny, minilm, tmp_path_factory):
    """The first 60 Cranfield documents: an impact index, a full MiniLM store, and a store of 30 of them."""
    root = tmp_path_factory.mktemp("small")
    docs = read_corpus(cranfield / "corpus.jsonl")[:60]
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": r.id, "text": r.text}) + "\n" for r in docs))
    queries = read_queries(cranfield / "queries.jsonl")[:8]
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": q.id, "text": q.text}) + "\n" for q in queries))
    idx = build_index_of(splade_tiny, docs, root)
    full = build_store(minilm, [r.text for r in docs], [r.id for r in docs], root / "minilm", progress=False)
    half = build_store(minilm, [r.text for r in docs[:30]], [r.id for r in docs[:30]], root / "half", progress=False)
    return SimpleNamespace(root=root, docs=docs, queries=queries, idx=idx, full=full, half=half)


@pytest.fixture(scope="module")
def cran(cranfield, splade_tiny, tmp_path_factory):
    """All of Cranfield: SPLADE-tiny impact index, MiniLM store built by `lsr embed`, SPLADE query vectors."""
    root = tmp_path_factory.mktemp("cran-hybrid")
    idx = build_index_of(splade_tiny, read_corpus(cranfield / "corpus.jsonl"), root)
    assert main(["embed", "--model", "minilm", "--input", str(cranfield / "corpus.jsonl"), "--output",
                 str(root / "minilm"), "--device", "cpu", "--batch-size", "64"]) == 0
    queries = read_queries(cranfield / "queries.jsonl")
    qvecs = splade_tiny.encode_queries([q.text for q in queries], ids=[q.id for q in queries])
    return SimpleNamespace(root=root, idx=idx, store=EmbeddingStore(root / "minilm"), queries=queries, qvecs=qvecs,
                           qrels=read_qrels(cranfield / "qrels" / "test.tsv"))


# ------------------------------------------------------------- Cranfield
@pytest.mark.slow
def test_splade_first_stage_plus_minilm_rerank_on_cranfield(cran, minilm):
    from anserini_bridge.search import ImpactSearcher

    metrics = ["ndcg@10", "recall@100"]
    texts, qids = [q.text for q in cran.queries], [q.id for q in cran.queries]
    with ImpactSearcher(cran.idx) as first:
        sparse = first.batch_search(cran.qvecs, qids, k=100)
        base = evaluate(sparse, cran.qrels, metrics)
        reranker = Reranker(minilm, cran.store)
        # k0 = 100 and nothing else: a pure rerank, so R@100 is the first stage's
        pure = HybridSearcher(first, [reranker], "rrf", k0=100, batch_size=75)
        pure_run = pure.batch_search(cran.qvecs, qids, texts, k=100)
        # k0 = 100 sparse candidates plus MiniLM's own top 100 from the store, interpolated
        hybrid = HybridSearcher(first, [reranker], "interp", alpha=0.3, norm="minmax", k0=100,
                                dense_candidates=100, batch_size=75)
        hybrid_run = hybrid.batch_search(cran.qvecs, qids, texts, k=100)
    pure_q, hybrid_q = evaluate(pure_run, cran.qrels, metrics), evaluate(hybrid_run, cran.qrels, metrics)
    print(f"\nSPLADE-tiny {base}\nrerank k0=100 rrf {pure_q}\nk0=100 + 100 dense, interp 0.3 {hybrid_q}")
    assert base["ndcg@10"] > 0.34
    assert pure_q["ndcg@10"] >= 0.40
    assert pure_q["recall@100"] == pytest.approx(base["recall@100"])
    assert hybrid_q["ndcg@10"] >= 0.40 and hybrid_q["recall@100"] >= 0.78

    # the searcher only composes: the same numbers from the fusion functions over hand-built runs
    q = minilm.encode_queries(texts)
    matrix = np.asarray(cran.store.matrix)
    row = {d: i for i, d in enumerate(cran.store.ids)}
    dense_top = np.argsort(-(matrix @ q.T), axis=0, kind="stable")[:100].T
    dense = {}
    for j, qid in enumerate(qids):
        cands = list(dict.fromkeys([h.docid for h in sparse[qid]] + [cran.store.ids[i] for i in dense_top[j]]))
        dense[qid] = {d: float(matrix[row[d]] @ q[j]) for d in cands}
    by_hand = interpolate([sparse, dense], alpha=0.3, norm="minmax", depth=100)
    same = sum([h.docid for h in by_hand[qid]] == [h.docid for h in hybrid_run[qid]] for qid in qids)
    assert same >= len(qids) - 2  # float ties at the boundary may differ
    assert len(hybrid.timings) == len(qids)
    assert all(getattr(t, s) >= 0 for t in hybrid.timings for s in STAGES)
    assert set(hybrid.timing_medians()) == {*STAGES, "total"}


@pytest.mark.slow
def test_search_command_reranks_and_prints_latencies(cran, cranfield, capsys):
    sub = cran.root / "queries20.jsonl"
    sub.write_text("".join(json.dumps({"_id": q.id, "text": q.text}) + "\n" for q in cran.queries[:20]))
    out = cran.root / "hybrid.trec"
    assert main(["search", "--index", str(cran.idx), "--model", "splade-tiny", "--queries", str(sub), "--output",
                 str(out), "--device", "cpu", "--k", "50", "--rerank", str(cran.root / "minilm"), "--fusion",
                 "interp", "--alpha", "0.3", "--k0", "100", "--dense-candidates", "100", "--verbose"]) == 0
    err = capsys.readouterr().err
    assert "first stage k0=100 + 100 dense candidates" in err and "alpha=0.3" in err
    assert "median per query (ms): sparse_encoding" in err and ", first_stage " in err
    lines = [ln for ln in err.splitlines() if ln.startswith("  ") and len(ln.split()) == 9]
    assert all(float(ln.split()[1]) > 0 for ln in lines)  # each query's own SPLADE encoding is timed
    assert {ln.split()[0] for ln in lines} == {q.id for q in cran.queries[:20]}
    run = read_run(out)
    assert set(run) == {q.id for q in cran.queries[:20]} and all(len(h) == 50 for h in run.values())


# ------------------------------------------------------------- bad input
def test_missing_docids_are_an_error_or_skipped(small, splade_tiny, minilm, capsys):
    from anserini_bridge.search import ImpactSearcher

    texts, qids = [q.text for q in small.queries], [q.id for q in small.queries]
    qvecs = splade_tiny.encode_queries(texts, ids=qids)
    with ImpactSearcher(small.idx) as first:
        strict = HybridSearcher(first, [Reranker(minilm, small.half)], "rrf", k0=60)
        with pytest.raises(InputError, match="docids are not in the embedding store") as info:
            strict.batch_search(qvecs, qids, texts, k=10)
        assert "Build the store from the same corpus" in str(info.value)
        lenient = HybridSearcher(first, [Reranker(minilm, small.half, missing="skip")], "rrf", k0=60)
        got = lenient.batch_search(qvecs, qids, texts, k=60)
        sparse = first.batch_search(qvecs, qids, k=60)
    stored = set(small.half.ids)
    for qid in qids:
        # every sparse candidate is kept; those outside the store only get the sparse contribution
        assert {h.docid for h in got[qid]} == {h.docid for h in sparse[qid]}
        scores = {h.docid: h.score for h in got[qid]}
        for rank, h in enumerate(sparse[qid], 1):
            if h.docid not in stored:
                assert scores[h.docid] == pytest.approx(1 / (60 + rank))
    args = ["search", "--index", str(small.idx), "--model", "splade-tiny", "--queries",
            str(small.root / "queries.jsonl"), "--output", str(small.root / "r.trec"), "--device", "cpu",
            "--rerank", str(small.root / "half")]
    assert main(args) == 2
    assert "docids are not in the embedding store" in capsys.readouterr().err
    assert main(args + ["--rerank-missing", "skip"]) == 0


def test_store_built_with_another_model_is_refused(small, tmp_path, capsys):
    from encoders.dense import SentenceEmbedder

    other = SentenceEmbedder(tiny_sentence_model(tmp_path / "tiny32", 32), device="cpu")
    with pytest.raises(IndexMismatchError, match="was built with model 'minilm'"):
        Reranker(other, small.full)
    base = ["search", "--index", str(small.idx), "--model", "splade-tiny", "--queries",
            str(small.root / "queries.jsonl"), "--output", str(tmp_path / "r.trec"), "--device", "cpu"]
    assert main(base + ["--rerank", f"{tmp_path / 'tiny32'}={small.root / 'minilm'}"]) == 2
    err = capsys.readouterr().err
    assert "was built with model 'minilm'" in err and "rebuild the store" in err
    # a model name alone is not a store: the message says how to build one
    assert main(base + ["--rerank", "minilm"]) == 2
    assert "lsr embed --model minilm" in capsys.readouterr().err
    # naming the store's own model is fine
    assert main(base + ["--rerank", f"minilm={small.root / 'minilm'}"]) == 0
    # reranking needs query texts
    vecs = tmp_path / "qv.jsonl"
    vecs.write_text(json.dumps({"id": "1", "vector": {"wing": 100}}) + "\n")
    assert main(["search", "--index", str(small.idx), "--query-vectors", str(vecs), "--output",
                 str(tmp_path / "r.trec"), "--rerank", str(small.root / "minilm")]) == 2
    assert "--rerank needs the query texts" in capsys.readouterr().err


def test_mismatched_dimensions_are_refused(small, tmp_path):
    from encoders.dense import SentenceEmbedder

    path = tiny_sentence_model(tmp_path / "model", 32)
    enc32 = SentenceEmbedder(path, device="cpu")
    store = build_store(enc32, [r.text for r in small.docs[:5]], [r.id for r in small.docs[:5]], tmp_path / "s",
                        progress=False)
    Reranker(enc32, store)  # fine
    # the directory now holds another model with a different width: same source, other dimension
    tiny_sentence_model(tmp_path / "model", 48)
    enc48 = SentenceEmbedder(path, device="cpu")
    with pytest.raises(IndexMismatchError, match="holds 32-dimensional embeddings but the query encoder"):
        Reranker(enc48, store)
    with pytest.raises(IndexMismatchError, match="query embeddings have shape"):
        store.score(np.ones(48, dtype=np.float32), [small.docs[0].id])
    with pytest.raises(IndexMismatchError, match="query embeddings have shape"):
        store.search(np.ones((2, 384), dtype=np.float32))
    # a matrix that does not match its metadata is reported as a broken store
    meta = json.loads((tmp_path / "s" / "lsr-embeddings.json").read_text())
    meta["dim"] = 48
    (tmp_path / "s" / "lsr-embeddings.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match=r"the matrix has shape \(5, 32\) but lsr-embeddings.json says 5 documents "
                                         r"of dimension 48"):
        EmbeddingStore(tmp_path / "s")


def test_store_lookup_search_and_broken_stores(small, minilm, tmp_path):
    store = small.full
    assert len(store) == 60 and store.dim == 384 and small.docs[3].id in store
    ids = [small.docs[5].id, small.docs[2].id]
    vecs, found = store.lookup(ids)
    np.testing.assert_allclose(vecs, minilm.encode_documents([small.docs[5].text, small.docs[2].text]), atol=1e-5)
    assert found == ids and isinstance(store.matrix, np.memmap)
    q = minilm.encode_queries([small.queries[0].text, small.queries[1].text])
    top = store.search(q, k=7, block=16)  # blocks smaller than the store
    brute = np.asarray(store.matrix) @ q.T
    for j in range(2):
        want = [store.ids[i] for i in np.argsort(-brute[:, j], kind="stable")[:7]]
        assert [d for d, _ in top[j]] == want
    with pytest.raises(InputError, match="not an embedding store"):
        EmbeddingStore(small.root)
    with pytest.raises(InputError, match="embedding store not found"):
        EmbeddingStore(tmp_path / "nowhere")
    broken = tmp_path / "broken"
    build_store(minilm, ["a", "b"], ["x", "y"], broken, progress=False)
    (broken / "ids.txt").write_text("x\n")
    with pytest.raises(InputError, match="lists 1 docids for 2 rows"):
        EmbeddingStore(broken)
    with pytest.raises(InputError, match="refusing to overwrite"):
        build_store(minilm, ["a"], ["x"], small.root, overwrite=True, progress=False)
    with pytest.raises(InputError, match="unique"):
        build_store(minilm, ["a", "b"], ["x", "x"], tmp_path / "dup", progress=False)
    assert not (tmp_path / "dup").exists()


def test_hybrid_searcher_arguments(small, minilm):
    from anserini_bridge.search import ImpactSearcher

    with ImpactSearcher(small.idx) as first:
        with pytest.raises(InputError, match="at least one reranker"):
            HybridSearcher(first, [])
        with pytest.raises(InputError, match="alpha"):
            HybridSearcher(first, [Reranker(minilm, small.full)], "interp", alpha=1.5)
        with pytest.raises(InputError, match="fusion 'max'"):
            HybridSearcher(first, [Reranker(minilm, small.full)], "max")
        h = HybridSearcher(first, [Reranker(minilm, small.full)], lambda runs: rrf(runs, k=1), k0=5)
        with pytest.raises(InputError, match="dense query inputs"):
            h.batch_search([{"wing": 10}], ["q"], [], k=3)
        got = h.batch_search([{"wing": 10}], ["q"], ["wing"], k=3)
    assert len(got["q"]) == 3 and [x.rank for x in got["q"]] == [1, 2, 3]
