"""Retrievers without a sparse model: BM25 (Anserini) and dense-only search of an embedding store."""

import json

import numpy as np
import pytest

from lsr.cli import main
from lsr.embstore import EmbeddingStore, build_store
from lsr.errors import InputError
from lsr.fusion import rrf
from lsr.io import Hit, read_corpus, read_queries, read_run
from tests.reference import signature_problems

EXP_GAINS = {1: 1, 2: 3, 3: 7, 4: 15}  # 2**grade - 1


def _ndcg10_exp(run, qrels_path):
    """nDCG@10 with exponential gains (2^grade - 1), the form the Cranfield reference figures use."""
    import ir_measures

    qrels = [ir_measures.Qrel(*line.split("\t")[:2], int(line.split("\t")[2]))
             for line in open(qrels_path).read().splitlines()[1:]]
    scored = [ir_measures.ScoredDoc(q, h.docid, h.score) for q, hits in run.items() for h in hits]
    return ir_measures.calc_aggregate([ir_measures.nDCG(gains=EXP_GAINS) @ 10], qrels, scored)[
        ir_measures.nDCG(gains=EXP_GAINS) @ 10]


@pytest.fixture(scope="module")
def bm25_cran(cranfield, tmp_path_factory):
    root = tmp_path_factory.mktemp("bm25")
    assert main(["index", "--bm25", "--input", str(cranfield / "corpus.jsonl"), "--index", str(root / "idx")]) == 0
    return root


@pytest.mark.slow
def test_bm25_on_cranfield_through_lsr(bm25_cran, cranfield, capsys):
    """`lsr index --bm25` + `lsr search` without a model reach the Anserini reference (0.341 / 0.722)."""
    from anserini_bridge.bm25 import BM25Searcher
    from lsr.evaluate import evaluate
    from lsr.io import read_qrels

    run_path = bm25_cran / "bm25.trec"
    assert main(["search", "--index", str(bm25_cran / "idx"), "--queries", str(cranfield / "queries.jsonl"),
                 "--output", str(run_path)]) == 0
    assert "BM25 k1=0.9 b=0.4" in capsys.readouterr().err
    run = read_run(run_path)
    assert len(run) == 225
    qrels = cranfield / "qrels" / "test.tsv"
    assert abs(_ndcg10_exp(run, qrels) - 0.341) <= 0.005
    scores = evaluate(run, read_qrels(qrels), ["ndcg@10", "recall@100"])  # the project's usual (linear) gains
    assert abs(scores["recall@100"] - 0.722) <= 0.005 and scores["ndcg@10"] > 0.34, scores

    assert signature_problems(BM25Searcher) == []
    queries = read_queries(cranfield / "queries.jsonl")
    with BM25Searcher(bm25_cran / "idx") as s:
        hits = s.batch_search([q.text for q in queries[:5]], [q.id for q in queries[:5]], k=1000, threads=2)
        assert all(isinstance(h, Hit) and h.impact_score is None for h in hits["1"])
        for q in queries[:5]:  # the run file holds what the Python searcher returns
            assert [(h.docid, h.rank) for h in hits[q.id]] == [(h.docid, h.rank) for h in run[q.id]]
        assert [(h.docid, h.rank) for h in s.search(queries[0].text, k=10)] == \
            [(h.docid, h.rank) for h in hits["1"][:10]]
        with BM25Searcher(bm25_cran / "idx", k1=1.2, b=0.75) as other:
            assert [h.score for h in other.search(queries[0].text, k=3)] != [h.score for h in hits["1"][:3]]
        with pytest.raises(InputError, match="texts"):
            s.batch_search([{"wing": 3}], ["q"], k=5)


def test_bm25_index_refusals(tmp_path, cranfield, capsys):
    assert main(["index", "--bm25", "--input", str(tmp_path), "--index", str(tmp_path / "i")]) == 2
    assert "is a directory; --bm25 takes a BEIR corpus.jsonl" in capsys.readouterr().err
    (tmp_path / "bad.jsonl").write_text('{"_id": "1", "text": "a"}\n{"text": "no id"}\n')
    assert main(["index", "--bm25", "--input", str(tmp_path / "bad.jsonl"), "--index", str(tmp_path / "i")]) == 2
    assert "bad.jsonl:2" in capsys.readouterr().err
    assert not (tmp_path / "i").exists()
    (tmp_path / "good.jsonl").write_text('{"_id": "1", "text": "wing lift"}\n')
    assert main(["index", "--bm25", "--input", str(tmp_path / "good.jsonl"), "--index", str(tmp_path / "i")]) == 0
    for seg in (tmp_path / "i").glob("segments_*"):
        seg.write_bytes(b"garbage")
    from anserini_bridge.bm25 import BM25Searcher

    with pytest.raises(InputError, match=r"Lucene cannot open this index .*rebuild it with `lsr index --bm25`"):
        BM25Searcher(tmp_path / "i")


@pytest.fixture(scope="module")
def small(cranfield, tmp_path_factory):
    """The first 150 Cranfield documents: a BM25 index and a MiniLM store (built by `lsr embed`)."""
    root = tmp_path_factory.mktemp("small-retrievers")
    docs = read_corpus(cranfield / "corpus.jsonl")[:150]
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": r.id, "text": r.text}) + "\n" for r in docs))
    queries = read_queries(cranfield / "queries.jsonl")[:10]
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": q.id, "text": q.text}) + "\n" for q in queries))
    assert main(["index", "--bm25", "--input", str(root / "corpus.jsonl"), "--index", str(root / "bm25")]) == 0
    assert main(["embed", "--model", "minilm", "--input", str(root / "corpus.jsonl"), "--output",
                 str(root / "minilm"), "--device", "cpu", "--batch-size", "64"]) == 0
    return root, docs, queries


@pytest.mark.slow
def test_dense_only_bm25_rerank_and_fusion_from_the_command_line(small, capsys):
    from encoders.dense import embedder_for_store

    root, docs, queries = small
    store = EmbeddingStore(root / "minilm")
    qv = np.asarray(embedder_for_store(store).encode_queries([q.text for q in queries]), dtype=np.float32)

    # dense only: the store knows its model; an exhaustive search of it
    assert main(["search", "--index", str(root / "minilm"), "--queries", str(root / "queries.jsonl"),
                 "--output", str(root / "dense.trec"), "--k", "50"]) == 0
    dense = read_run(root / "dense.trec")
    expected = store.search(qv, k=50)
    for q, want in zip(queries, expected):
        assert [h.docid for h in dense[q.id]] == [d for d, _ in want]
        assert np.allclose([h.score for h in dense[q.id]], [s for _, s in want], atol=1e-5)

    # BM25 as the first stage of a hybrid search: RRF of the BM25 top 20 and MiniLM's scores of those candidates
    assert main(["search", "--index", str(root / "bm25"), "--queries", str(root / "queries.jsonl"), "--output",
                 str(root / "bm25.trec"), "--k", "20"]) == 0
    bm25 = read_run(root / "bm25.trec")
    assert main(["search", "--index", str(root / "bm25"), "--queries", str(root / "queries.jsonl"), "--output",
                 str(root / "hybrid.trec"), "--rerank", str(root / "minilm"), "--k0", "20", "--k", "20"]) == 0
    hybrid = read_run(root / "hybrid.trec")
    dense_of_candidates = {q.id: store.score(qv[i], [h.docid for h in bm25[q.id]]) for i, q in enumerate(queries)}
    want = rrf([bm25, dense_of_candidates], k=60)
    assert {q: [h.docid for h in hits] for q, hits in hybrid.items()} == \
        {q: [h.docid for h in hits[:20]] for q, hits in want.items() if hits}

    # whole runs fuse with `lsr fuse`
    assert main(["fuse", "--runs", str(root / "bm25.trec"), str(root / "dense.trec"), "--output",
                 str(root / "fused.trec")]) == 0
    fused = read_run(root / "fused.trec")
    assert {q: [h.docid for h in hits] for q, hits in fused.items()} == \
        {q: [h.docid for h in hits] for q, hits in rrf([bm25, dense], k=60, depth=1000).items()}
    capsys.readouterr()

    # what does not fit is refused with one line
    assert main(["search", "--index", str(root / "bm25"), "--model", "splade-tiny", "--queries",
                 str(root / "queries.jsonl"), "--output", str(root / "x.trec")]) == 2
    assert "needs no --model" in capsys.readouterr().err
    assert main(["search", "--index", str(root / "minilm"), "--query-vectors", str(root / "queries.jsonl"),
                 "--output", str(root / "x.trec")]) == 2
    assert "--queries" in capsys.readouterr().err


def test_flickr8k_caption_collection_for_the_recipe_benchmark(tmp_path):
    """The second collection of benchmarks/hybrid_recipe.py: BEIR layout, one relevant image per query,
    whose query caption is not among the document's captions."""
    from pathlib import Path

    from benchmarks.hybrid_recipe import build_flickr8k_captions
    from lsr.io import read_qrels

    src = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "flickr8k"
    if not (src / "captions_dev.jsonl").is_file():
        pytest.fail(f"Flickr8k captions not found at {src}")
    out = build_flickr8k_captions(src, tmp_path / "f8k")
    docs = {r.id: r.text for r in read_corpus(out / "corpus.jsonl")}
    queries = read_queries(out / "queries.jsonl")
    qrels = read_qrels(out / "qrels" / "test.tsv")
    assert len(docs) == 7000 and len(queries) == 1000
    for q in queries:
        (doc, grade), = qrels[q.id].items()
        assert grade == 1 and doc in docs and q.text not in docs[doc]
