import json
import subprocess
import sys

import pytest

from anserini_bridge.index import IndexMeta, build_index
from anserini_bridge.search import ImpactSearcher
from lsr import IndexMismatchError, InputError, Quantizer, SparseBatch
from lsr.exhaustive import exhaustive_search
from lsr.fixtures.synthetic import random_vectors, synthetic_vocab
from lsr.io import read_run
from lsr.vectors import VectorWriter

INTEGER = Quantizer(scale=1, max_value=100_000)  # writes integer weights unchanged
VOCAB = synthetic_vocab(5000)


@pytest.fixture(scope="module")
def exact_setup(tmp_path_factory):
    """20,000 random integer documents (80 terms) and 200 queries (30 terms), indexed once."""
    root = tmp_path_factory.mktemp("exact")
    docs = random_vectors(20_000, 80, VOCAB, max_weight=255, seed=1)
    queries = random_vectors(200, 30, VOCAB, max_weight=100, seed=2, prefix="q")
    with VectorWriter(root / "vec", INTEGER, encoder="synthetic", vocab=VOCAB, shard_size=5000) as w:
        w.write(docs)
    meta = build_index(root / "vec", root / "idx", threads=2, progress=False)
    qfile = root / "queries.jsonl"
    with open(qfile, "w") as fh:
        for i, qid in enumerate(queries.ids):
            fh.write(json.dumps({"id": qid, "vector": {k: int(v) for k, v in queries.to_dict(i).items()}}) + "\n")
    return root, docs, queries, meta, qfile


def assert_same_top_scores(got: dict, expected: dict, k: int = 10):
    assert set(got) == set(expected)
    for qid in expected:
        want = [h.score for h in expected[qid][:k]]
        have = [h.score for h in got[qid][:k]]
        assert have == want, f"query {qid}: {have} != {want}"
        # same scores; a doc may only differ from the exhaustive one where scores tie
        for g, e in zip(got[qid][:k], expected[qid][:k]):
            if g.docid != e.docid:
                assert g.score == e.score


@pytest.mark.slow
def test_python_batch_search_equals_exhaustive_dot_product(exact_setup):
    root, docs, queries, meta, _ = exact_setup
    assert meta.documents == 20_000 and meta.counters["indexed"] == 20_000
    expected = exhaustive_search(queries, docs, k=10)
    with ImpactSearcher(root / "idx") as s:
        assert s.num_docs == 20_000
        got = s.batch_search(queries, k=10, threads=2)
        assert_same_top_scores({q: [h.__class__(h.docid, float(h.impact_score), h.rank) for h in hits]
                                for q, hits in got.items()}, expected)
        # single-query path agrees with the batch path
        one = s.search({k: int(v) for k, v in queries.to_dict(0).items()}, k=10)
        assert [h.impact_score for h in one] == [h.impact_score for h in got["q0"]]


@pytest.mark.slow
def test_cli_search_with_query_vectors_equals_exhaustive(exact_setup, tmp_path):
    root, docs, queries, _, qfile = exact_setup
    run = tmp_path / "run.trec"
    out = subprocess.run([sys.executable, "-m", "lsr.cli", "search", "--index", str(root / "idx"),
                          "--query-vectors", str(qfile), "--output", str(run), "--k", "10", "--threads", "2"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    expected = exhaustive_search(queries, docs, k=10)
    got = read_run(run)
    # the run holds float scores = integer score / scale**2 with scale 1
    assert_same_top_scores(got, expected)


def test_metadata_doc_vectors_and_counters(exact_setup):
    root, docs, *_ = exact_setup
    meta = IndexMeta.load(root / "idx")
    assert meta.encoder == "synthetic" and meta.vocab_fingerprint == VOCAB.fingerprint
    assert meta.quantization == INTEGER
    assert set(meta.counters) >= {"indexed", "empty", "unindexable", "skipped", "errors"}
    with ImpactSearcher(root / "idx") as s:
        assert s.doc_vector("d7") == {k: int(v) for k, v in docs.to_dict(7).items()}
        with pytest.raises(InputError, match="'nope' is not in the index"):
            s.doc_vector("nope")


def test_existing_index_directory_is_refused(exact_setup):
    root, *_ = exact_setup
    with pytest.raises(InputError, match="already exists"):
        build_index(root / "vec", root / "idx", progress=False)


def test_query_from_another_vocabulary_is_refused(exact_setup):
    root, *_ = exact_setup
    other = synthetic_vocab(10)
    with ImpactSearcher(root / "idx") as s:
        with pytest.raises(IndexMismatchError, match="was built with encoder 'synthetic'"):
            s.search(SparseBatch.from_dicts([{"t1": 1.0}], other))
        with pytest.raises(IndexMismatchError, match="vocabulary"):
            s.check_encoder("other-model", other.fingerprint)


def test_empty_query_vector_returns_no_hits(exact_setup):
    root, *_ = exact_setup
    with ImpactSearcher(root / "idx") as s:
        assert s.search({}, k=5) == []
        res = s.batch_search([{}, {"t1": 3}], qids=["empty", "one"], k=5)
        assert res["empty"] == [] and len(res["one"]) > 0


def test_not_an_index(tmp_path):
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "x.txt").write_text("hello")
    with pytest.raises(InputError, match="not an index"):
        ImpactSearcher(tmp_path / "foreign")
    with pytest.raises(InputError, match="index directory not found"):
        ImpactSearcher(tmp_path / "missing")


def test_failed_build_leaves_no_index(tmp_path):
    vec = tmp_path / "vec"
    with VectorWriter(vec, INTEGER, vocab=VOCAB) as w:
        w.write(random_vectors(10, 5, VOCAB, 9, seed=3))
    # corrupt the count: metadata promises more documents than the files hold
    meta = json.loads((vec / "lsr-vectors.json").read_text())
    meta["documents_written"] = 11
    (vec / "lsr-vectors.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="indexed 10 of 11"):
        build_index(vec, tmp_path / "idx", progress=False)
    assert not (tmp_path / "idx").exists()
    assert not list(tmp_path.glob(".idx.building-*"))


def test_foreign_vector_files_are_validated_and_indexed(tmp_path):
    vec = tmp_path / "vec"
    vec.mkdir()
    (vec / "part-00000.jsonl").write_text('{"id": "a", "contents": "", "vector": {"x": 3, "y": 1}}\n'
                                          '{"id": "b", "contents": "", "vector": {"y": 5}}\n')
    meta = build_index(vec, tmp_path / "idx", progress=False)
    assert meta.documents == 2 and meta.quantization is None
    with ImpactSearcher(tmp_path / "idx") as s:
        hits = s.search({"y": 2}, k=5)
        assert [(h.docid, h.impact_score) for h in hits] == [("b", 10), ("a", 2)]
        assert s.doc_vector("a") == {"x": 3, "y": 1}
    (vec / "part-00001.jsonl").write_text('{"id": "c", "contents": "", "vector": {"x": -1}}\n')
    with pytest.raises(InputError, match="part-00001.jsonl:1"):
        build_index(vec, tmp_path / "idx2", progress=False)


def test_queries_longer_than_lucenes_clause_limit(exact_setup):
    root, docs, *_ = exact_setup
    long_query = random_vectors(1, 1500, VOCAB, max_weight=9, seed=11, prefix="long")
    expected = exhaustive_search(long_query, docs, k=10)["long0"]
    with ImpactSearcher(root / "idx") as s:
        got = s.batch_search([{k: int(v) for k, v in long_query.to_dict(0).items()}], qids=["long0"], k=10)
    assert [h.impact_score for h in got["long0"]] == [int(h.score) for h in expected]
