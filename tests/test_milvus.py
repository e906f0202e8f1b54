"""Milvus through pymilvus, against a real Milvus Lite server on 127.0.0.1.

The fixture starts the Milvus Lite that is installed (``pip install -e
".[milvus,dev]"`` brings the version the ``milvus`` extra resolves) in server
mode on a free local port (HOME and TMPDIR in a temporary directory), and
stops it by pid. The code under test only sees ``http://127.0.0.1:PORT``,
exactly as it would see a Milvus cluster.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lsr import EnvironmentProblem, IndexMismatchError, InputError, Quantizer, SparseBatch
from lsr.exhaustive import exhaustive_search
from lsr.fixtures.synthetic import random_vectors, synthetic_vocab
from lsr.retrieval import Retriever
from lsr.vectors import VectorWriter
from tests.reference import signature_problems

# Milvus Lite 2 imports pkg_resources, which warns on import
pytestmark = pytest.mark.filterwarnings("ignore:pkg_resources is deprecated:UserWarning")

INTEGER = Quantizer(scale=1, max_value=100_000)  # integer weights pass unchanged
VOCAB = synthetic_vocab(3000)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _milvus_lite_command(home: Path, port: int) -> tuple[list[str], dict]:
    """The command line (and environment) that runs the installed Milvus Lite as a server on ``port``.

    Milvus Lite 3 (what ``pymilvus`` resolves today) is started with ``python -m milvus_lite server``;
    Milvus Lite 2 ships a ``milvus`` binary that takes ``DB_FILE ADDRESS LOG_LEVEL``.
    """
    from importlib.metadata import version

    env = {k: v for k, v in os.environ.items() if k not in ("LD_LIBRARY_PATH", "DYLD_LIBRARY_PATH")}
    env.update(HOME=str(home), TMPDIR=str(home))
    if int(version("milvus-lite").split(".")[0]) >= 3:
        return [sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(home / "data"),
                "--host", "127.0.0.1", "--port", str(port)], env
    from milvus_lite.server import BIN_PATH  # the folder holding the `milvus` binary and its libraries

    env["LD_LIBRARY_PATH"] = BIN_PATH
    return [os.path.join(BIN_PATH, "milvus"), str(home / "lsr.db"), f"127.0.0.1:{port}", "ERROR"], env


@pytest.fixture(scope="module")
def milvus_uri(tmp_path_factory):
    """``http://127.0.0.1:PORT`` of a Milvus Lite server running for this module."""
    try:
        import milvus_lite  # noqa: F401
        import pymilvus  # noqa: F401
    except ImportError as e:
        pytest.fail(f"Milvus tests need milvus-lite and pymilvus ({e}): pip install -e '.[milvus,dev]'")
    home = tmp_path_factory.mktemp("milvus-home")
    port = _free_port()
    cmd, env = _milvus_lite_command(home, port)
    log = open(home / "milvus.log", "wb")
    proc = subprocess.Popen(cmd, cwd=home, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"milvus exited with {proc.returncode}: {(home / 'milvus.log').read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("milvus did not listen within 90 s")
                time.sleep(0.2)
        yield uri
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)
        log.close()


@pytest.fixture(scope="module")
def corpus():
    docs = random_vectors(2000, 40, VOCAB, max_weight=255, seed=11)
    queries = random_vectors(100, 12, VOCAB, max_weight=100, seed=12, prefix="q")
    return docs, queries


def _as_dicts(batch: SparseBatch) -> list[dict[str, int]]:
    return [{t: int(v) for t, v in batch.to_dict(i).items()} for i in range(len(batch))]


def _key(results: dict) -> dict:
    return {q: [(h.docid, h.impact_score, h.rank) for h in hits] for q, hits in results.items()}


def test_protocol_is_shared_with_the_lucene_searcher():
    from anserini_bridge.search import ImpactSearcher
    from lsr.engines.milvus import MilvusCollection

    assert signature_problems(ImpactSearcher) == []
    assert signature_problems(MilvusCollection) == []


@pytest.mark.slow
def test_top10_equals_exhaustive_and_lucene(milvus_uri, corpus, tmp_path):
    """2,000 documents, 100 queries: Milvus top-10 == exact dot product == Lucene impact index."""
    from anserini_bridge.index import build_index
    from anserini_bridge.search import ImpactSearcher
    from lsr.engines.milvus import CollectionMeta, MilvusCollection

    docs, queries = corpus
    col = MilvusCollection(milvus_uri, "exact")
    assert isinstance(col, Retriever)
    assert col.create(CollectionMeta.for_vocabulary(VOCAB, INTEGER, "synthetic"), VOCAB.tokens) == "created"
    report = col.insert(docs, batch_size=500)
    assert report.ok and report.inserted == 2000
    col.flush()
    assert col.count() == 2000
    assert col.doc_vector("d7") == {t: int(v) for t, v in docs.to_dict(7).items()}

    got = col.batch_search(queries, k=10)
    expected = exhaustive_search(queries, docs, k=10)
    assert list(got) == list(queries.ids)
    for qid in queries.ids:
        assert len(got[qid]) == 10
        assert [(h.docid, h.score) for h in got[qid]] == [(h.docid, h.score) for h in expected[qid]], qid
        assert all(h.impact_score == h.score for h in got[qid])  # scale 1: score == integer score

    with VectorWriter(tmp_path / "vec", INTEGER, encoder="synthetic", vocab=VOCAB) as w:
        w.write(docs)
    build_index(tmp_path / "vec", tmp_path / "idx", threads=2, progress=False)
    with ImpactSearcher(tmp_path / "idx") as lucene:
        assert _key(lucene.batch_search(queries, k=10, threads=2)) == _key(got)

    # integer {token: int} queries and the one-query path agree with the batch of float queries
    dict_results = col.batch_search(_as_dicts(queries), qids=list(queries.ids), k=10)
    assert _key(dict_results) == _key(got)
    assert _key({"q5": col.search(queries.select([5]), k=10)}) == {"q5": _key(got)["q5"]}


def test_ties_at_the_cut_are_broken_by_docid(milvus_uri):
    from lsr.engines.milvus import CollectionMeta, MilvusCollection

    vocab = synthetic_vocab(10)
    # 30 documents with the same score for the query {t1: 1}, inserted in reverse id order
    ids = [f"doc{i:02d}" for i in range(30)][::-1]
    docs = SparseBatch.from_dicts([{"t1": 2.0, "t2": float(i % 3 + 1)} for i in range(30)], vocab, ids)
    col = MilvusCollection(milvus_uri, "ties")
    col.create(CollectionMeta.for_vocabulary(vocab, INTEGER), vocab.tokens, replace=True)
    assert col.insert(docs).inserted == 30
    col.flush()
    hits = col.search({"t1": 1}, k=5)
    assert [h.docid for h in hits] == ["doc00", "doc01", "doc02", "doc03", "doc04"]
    assert [h.score for h in hits] == [2.0] * 5
    assert col.search({"t9": 3}, k=5) == []  # a token no document has
    assert col.search({"not-a-token": 3}, k=5) == []


def test_long_token_lists_fit_the_varchar_limit(milvus_uri):
    """A 30,522-token vocabulary of short word pieces (BERT-sized) is stored and read back whole.

    Milvus enforces VARCHAR max_length (65,535 bytes) on Milvus Lite 3 and on servers; the token list is
    chunked by the bytes of its compact JSON text.
    """
    from lsr.engines.milvus import MAX_VARCHAR_BYTES, CollectionMeta, MilvusCollection
    from lsr.vocab import Vocabulary

    vocab = Vocabulary(tuple([f"w{i}" for i in range(30_000)] + ["\u00e9t\u00e9", "##s", '"q"', "\\"]))
    col = MilvusCollection(milvus_uri, "long_tokens")
    assert col.create(CollectionMeta.for_vocabulary(vocab, INTEGER), vocab.tokens, replace=True) == "created"
    rows = col._client.query(col.vocab_name, filter="chunk >= 0", output_fields=["chunk", "tokens"],
                             consistency_level="Strong")
    sizes = [len(r["tokens"].encode("utf-8")) for r in rows]
    assert len(rows) >= 4 and max(sizes) <= MAX_VARCHAR_BYTES
    assert MilvusCollection(milvus_uri, "long_tokens").tokens == list(vocab.tokens)


def _write_vecdir(path: Path, batch: SparseBatch, vocab, quantizer=INTEGER, encoder="synthetic", role="document"):
    with VectorWriter(path, quantizer, encoder=encoder, vocab=vocab, role=role) as w:
        w.write(batch)
    return path


def test_vector_dirs_with_derived_ids_fill_one_collection(milvus_uri, corpus, tmp_path):
    """Two vector directories exported one after the other (as from two machines) into one collection."""
    from lsr.engines.milvus import MilvusCollection, export_vector_dirs

    docs, queries = corpus
    a = _write_vecdir(tmp_path / "a", docs.select(range(0, 300)), VOCAB)
    b = _write_vecdir(tmp_path / "b", docs.select(range(300, 600)), VOCAB)
    action, report = export_vector_dirs([a], milvus_uri, "derived", progress=False)
    assert (action, report.inserted, report.failed) == ("created", 300, [])
    action, report = export_vector_dirs([b], milvus_uri, "derived", progress=False)
    assert (action, report.inserted, report.failed) == ("appending", 300, [])

    col = MilvusCollection(milvus_uri, "derived")
    assert col.meta.ids == "derived" and col.meta.vocab_fingerprint == VOCAB.fingerprint
    assert col.meta.quantization == INTEGER
    used = {VOCAB.tokens[j] for j in np.unique(docs.select(range(600)).indices)}
    assert set(col.tokens) == used and len(col.tokens) == len(used)  # only tokens in use, each once
    assert col.count() == 600
    expected = exhaustive_search(queries, docs.select(range(600)), k=10)
    want = {q: [(h.docid, h.score) for h in hits] for q, hits in expected.items()}
    # float queries in the encoder's vocabulary are mapped through the stored token list
    assert {q: [(h.docid, h.score) for h in hits] for q, hits in col.batch_search(queries, k=10).items()} == want
    by_dicts = col.batch_search(_as_dicts(queries), qids=list(queries.ids), k=10)
    assert {q: [(h.docid, h.score) for h in hits] for q, hits in by_dicts.items()} == want

    # exporting the same directory again replaces its documents instead of duplicating them
    export_vector_dirs([b], milvus_uri, "derived", progress=False)
    assert MilvusCollection(milvus_uri, "derived").count() == 600


def test_refuses_another_model_dimension_or_quantization_unless_replace(milvus_uri, corpus, tmp_path):
    from lsr.engines.milvus import CollectionMeta, MilvusCollection, export_vector_dirs

    docs, _ = corpus
    col = MilvusCollection(milvus_uri, "guarded")
    col.create(CollectionMeta.for_vocabulary(VOCAB, INTEGER, "synthetic"), VOCAB.tokens, replace=True)
    col.insert(docs.select(range(50)))
    col.flush()

    other = synthetic_vocab(4000)
    with pytest.raises(IndexMismatchError) as e:
        MilvusCollection(milvus_uri, "guarded").create(CollectionMeta.for_vocabulary(other, INTEGER, "other"),
                                                       other.tokens)
    msg = str(e.value)
    assert "guarded" in msg and milvus_uri in msg and "'other'" in msg and "dimension: 3000 vs 4000" in msg
    assert "--replace" in msg
    with pytest.raises(IndexMismatchError, match="quantization"):
        MilvusCollection(milvus_uri, "guarded").create(
            CollectionMeta.for_vocabulary(VOCAB, Quantizer(scale=50), "synthetic"), VOCAB.tokens)
    # queries from another vocabulary are refused too
    with pytest.raises(IndexMismatchError, match="vocabulary"):
        MilvusCollection(milvus_uri, "guarded").search(SparseBatch.from_dicts([{"t1": 1.0}], other), k=3)
    with pytest.raises(IndexMismatchError, match="'other'"):
        MilvusCollection(milvus_uri, "guarded").check_encoder("other", other.fingerprint)
    MilvusCollection(milvus_uri, "guarded").check_encoder("synthetic", VOCAB.fingerprint)
    assert MilvusCollection(milvus_uri, "guarded").count() == 50  # nothing was touched

    # a vector directory of another model: refused, then replaced on request
    vec = _write_vecdir(tmp_path / "other", SparseBatch.from_dicts([{"t3999": 3.0}], other, ["x1"]), other,
                        encoder="other")
    with pytest.raises(IndexMismatchError, match="--replace"):
        export_vector_dirs([vec], milvus_uri, "guarded", progress=False)
    action, report = export_vector_dirs([vec], milvus_uri, "guarded", replace=True, progress=False)
    assert (action, report.inserted) == ("replaced", 1)
    col = MilvusCollection(milvus_uri, "guarded")
    assert col.count() == 1 and col.meta.encoder == "other" and col.tokens == ["t3999"]

    # a collection that lsr did not create is never reused silently
    from pymilvus import DataType, MilvusClient

    client = MilvusClient(uri=milvus_uri)
    if client.has_collection("foreign"):
        client.drop_collection("foreign")
    client.create_collection("foreign", dimension=4)
    with pytest.raises(IndexMismatchError, match="not created by `lsr export`"):
        MilvusCollection(milvus_uri, "foreign").create(CollectionMeta.for_vocabulary(VOCAB, INTEGER), VOCAB.tokens)
    assert MilvusCollection(milvus_uri, "foreign").create(
        CollectionMeta.for_vocabulary(VOCAB, INTEGER), VOCAB.tokens, replace=True) == "replaced"
    assert any(f["type"] == DataType.SPARSE_FLOAT_VECTOR for f in client.describe_collection("foreign")["fields"])


def test_partial_bulk_failure_is_reported_per_document(milvus_uri, tmp_path):
    from lsr.engines.milvus import MAX_ID_BYTES, CollectionMeta, MilvusCollection

    vocab = synthetic_vocab(50)
    good = [f"ok{i}" for i in range(30)]
    rows = [{f"t{i % 50}": 3.0, f"t{(i * 7) % 50}": 2.0} for i in range(30)]
    bad_ids = ["empty-vector", "x" * (MAX_ID_BYTES + 1), "bad\ud800id", "ok3"]
    batch = SparseBatch.from_dicts(rows + [{"t1": 0.2}, {"t1": 1.0}, {"t2": 1.0}, {"t3": 1.0}], vocab,
                                   good + bad_ids)
    col = MilvusCollection(milvus_uri, "partial")
    col.create(CollectionMeta.for_vocabulary(vocab, INTEGER), vocab.tokens, replace=True)
    report = col.insert(batch, batch_size=8)  # the row Milvus refuses shares its batch with good rows
    assert report.inserted == 30
    reasons = dict(report.failed)
    assert sorted(reasons) == sorted(bad_ids)
    assert reasons["empty-vector"] == "empty vector after quantization"
    assert f"at most {MAX_ID_BYTES}" in reasons["x" * (MAX_ID_BYTES + 1)]
    assert reasons["bad\ud800id"].startswith("refused by Milvus")  # found by splitting the refused batch
    assert reasons["ok3"] == "duplicate id in this insert"
    assert "4 failed" in report.summary()
    col.flush()
    assert col.count() == 30
    assert {h.docid for h in col.search({"t3": 1}, k=50)} == {g for g, r in zip(good, rows) if "t3" in r}

    # a vector file with a token outside the collection's vocabulary fails that document only
    vecdir = tmp_path / "foreign"
    vecdir.mkdir()
    (vecdir / "part-00000.jsonl").write_text(
        json.dumps({"id": "f1", "contents": "", "vector": {"t1": 4, "t2": 1}}) + "\n"
        + json.dumps({"id": "f2", "contents": "", "vector": {"t1": 4, "zzz": 9}}) + "\n")
    report = col.insert_vector_dir(vecdir, progress=False)
    assert report.inserted == 1 and [d for d, _ in report.failed] == ["f2"]
    assert "'zzz'" in report.failed[0][1]


def test_unreachable_engine_names_the_uri():
    from lsr.engines.milvus import MilvusCollection

    uri = f"http://127.0.0.1:{_free_port()}"
    t0 = time.monotonic()
    with pytest.raises(EnvironmentProblem) as e:
        MilvusCollection(uri, "anything", timeout=2)
    assert uri in str(e.value) and "start the server" in str(e.value)
    assert time.monotonic() - t0 < 30


def test_bad_uris_and_names():
    from lsr.engines.milvus import parse_milvus_uri

    assert parse_milvus_uri("milvus://db.example:19531/docs") == ("http://db.example:19531", "docs")
    assert parse_milvus_uri("milvus+https://db.example/docs") == ("https://db.example:19530", "docs")
    for bad in ("milvus://host:1", "http://host:1/docs", "milvus://host:1/my-docs", "milvus://host:1/9docs"):
        with pytest.raises(InputError):
            parse_milvus_uri(bad)


def _lsr(*args):
    return subprocess.run([sys.executable, "-m", "lsr.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow
def test_cli_export(milvus_uri, corpus, tmp_path):
    from lsr.engines.milvus import MilvusCollection

    docs, queries = corpus
    vec = _write_vecdir(tmp_path / "vec", docs.select(range(200)), VOCAB)
    target = milvus_uri.replace("http://", "milvus://") + "/cli_docs"
    out = _lsr("export", "--to", target, "--input", vec)
    assert out.returncode == 0, out.stderr
    assert "created collection cli_docs" in out.stderr and "inserted 200 documents, 0 failed" in out.stderr
    col = MilvusCollection(milvus_uri, "cli_docs")
    assert col.count() == 200
    expected = exhaustive_search(queries, docs.select(range(200)), k=10)
    assert {q: [h.docid for h in hits] for q, hits in col.batch_search(queries, k=10).items()} == \
        {q: [h.docid for h in hits] for q, hits in expected.items()}

    # the same collection searched from the command line gives the exhaustive top-10, scores included
    qdir = _write_vecdir(tmp_path / "queries", queries, VOCAB, role="query")
    out = _lsr("search", "--index", target, "--query-vectors", qdir / "part-00000.jsonl", "--k", "10",
               "--output", tmp_path / "run.txt")
    assert out.returncode == 0, out.stderr
    run = {}
    for line in (tmp_path / "run.txt").read_text().splitlines():
        qid, _, docid, rank, score, _ = line.split()
        run.setdefault(qid, []).append((docid, float(score)))
    assert run == {q: [(h.docid, round(float(h.score), 6)) for h in hits] for q, hits in expected.items() if hits}

    other = synthetic_vocab(10)
    vec2 = _write_vecdir(tmp_path / "vec2", SparseBatch.from_dicts([{"t1": 3.0}], other, ["z"]), other,
                         encoder="other")
    out = _lsr("export", "--to", target, "--input", vec2)
    assert out.returncode == 2 and "--replace" in out.stderr and "cli_docs" in out.stderr
    out = _lsr("export", "--to", target, "--input", vec2, "--replace")
    assert out.returncode == 0, out.stderr
    assert MilvusCollection(milvus_uri, "cli_docs").count() == 1

    closed = f"milvus://127.0.0.1:{_free_port()}/x"
    out = _lsr("export", "--to", closed, "--input", vec, "--timeout", "2")
    assert out.returncode == 2
    assert closed.replace("milvus://", "http://").rsplit("/", 1)[0] in out.stderr and "Traceback" not in out.stderr


@pytest.mark.slow
def test_cranfield_export_gives_the_lucene_runs(milvus_uri, cranfield, tmp_path):
    """Cranfield encoded by SPLADE-tiny, exported with `lsr export` and searched with `lsr search`: the runs of
    the Milvus collection equal the Lucene index's for all 225 queries (docids, ranks and scores)."""
    vec, qvec = tmp_path / "vec", tmp_path / "qvec"
    for args in (("encode", "--model", "splade-tiny", "--input", cranfield / "corpus.jsonl", "--output", vec,
                  "--device", "cpu"),
                 ("encode", "--model", "splade-tiny", "--input", cranfield / "queries.jsonl", "--output", qvec,
                  "--role", "query", "--device", "cpu"),
                 ("index", "--input", vec, "--index", tmp_path / "idx"),
                 ("export", "--to", milvus_uri.replace("http://", "milvus://") + "/cranfield", "--input", vec)):
        out = _lsr(*args)
        assert out.returncode == 0, out.stderr[-3000:]
    runs = {}
    for name, index in (("lucene", tmp_path / "idx"), ("milvus", milvus_uri.replace("http://", "milvus://") +
                                                        "/cranfield")):
        out = _lsr("search", "--index", index, "--query-vectors", qvec, "--k", "100", "--output",
                   tmp_path / f"{name}.trec")
        assert out.returncode == 0, out.stderr[-3000:]
        runs[name] = [line.split()[:5] for line in (tmp_path / f"{name}.trec").read_text().splitlines()]
    assert len({r[0] for r in runs["lucene"]}) == 225
    assert runs["milvus"] == runs["lucene"]
