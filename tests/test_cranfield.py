"""Real weights on real data: SPLADE-tiny on Cranfield through the command line and Lucene."""

import json
import subprocess
import sys

import pytest

from lsr.evaluate import evaluate
from lsr.exhaustive import exhaustive_search
from lsr.io import read_corpus, read_qrels, read_queries, read_run

pytestmark = pytest.mark.slow


def lsr(*args):
    out = subprocess.run([sys.executable, "-m", "lsr.cli", *map(str, args)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def lucene_run(cranfield, tmp_path_factory):
    root = tmp_path_factory.mktemp("cran")
    enc = lsr("encode", "--model", "splade-tiny", "--input", cranfield / "corpus.jsonl", "--output", root / "vec",
              "--device", "cpu")
    idx = lsr("index", "--input", root / "vec", "--index", root / "idx")
    lsr("search", "--index", root / "idx", "--model", "splade-tiny", "--queries", cranfield / "queries.jsonl",
        "--output", root / "run.trec", "--device", "cpu")
    return root, enc.stderr, idx.stderr


def test_lucene_run_reaches_reference_quality(lucene_run, cranfield):
    root, enc_log, idx_log = lucene_run
    # every document is indexed or reported (Cranfield has two documents with empty text)
    assert "read 1400, written 1398, reported 2" in enc_log
    assert "indexed=1398" in idx_log and "reported before indexing: 2" in idx_log
    out = lsr("eval", "--run", root / "run.trec", "--qrels", cranfield / "qrels" / "test.tsv",
              "--metrics", "ndcg@10", "recall@100", "--json")
    scores = json.loads(out.stdout)
    assert scores["ndcg@10"] >= 0.35, scores
    assert scores["recall@100"] >= 0.72, scores


def test_lucene_run_matches_float_exhaustive_ranking(lucene_run, cranfield, splade_tiny):
    root, *_ = lucene_run
    corpus = read_corpus(cranfield / "corpus.jsonl")
    queries = read_queries(cranfield / "queries.jsonl")
    docs = splade_tiny.encode_documents([r.text for r in corpus], ids=[r.id for r in corpus])
    qs = splade_tiny.encode_queries([r.text for r in queries], ids=[r.id for r in queries])
    qrels = read_qrels(cranfield / "qrels" / "test.tsv")
    exact = evaluate(exhaustive_search(qs, docs, k=1000), qrels, ["ndcg@10"])["ndcg@10"]
    lucene = evaluate(read_run(root / "run.trec"), qrels, ["ndcg@10"])["ndcg@10"]
    assert abs(lucene - exact) <= 0.003, (lucene, exact)
