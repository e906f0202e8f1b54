"""OpenSearch / Elasticsearch formats: precision, query rescaling, mappings, bulk files, query bodies.

No engine runs on these machines; ``test_live_engine`` runs against one when
``OPENSEARCH_URL`` or ``ELASTICSEARCH_URL`` is set (e.g. http://localhost:9200).
"""

import json
import os
import subprocess
import sys
import uuid

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from lsr import InputError, Quantizer, SparseBatch, Vocabulary
from lsr.engines.opensearch import (
    EXACT_INTEGER_LIMIT, MAX_QUERY_WEIGHT, BulkWriter, HttpEngine, bulk_failures, feature_name, hits_from_response,
    index_body, query_body, rescale_query, stored_feature_values, write_bulk,
)
from lsr.exhaustive import exhaustive_search
from lsr.fixtures.synthetic import random_vectors, synthetic_vocab
from lsr.vectors import VectorWriter

INTEGER = Quantizer(scale=1, max_value=100_000)


def test_nine_significant_bits_keep_integers_up_to_512():
    ints = np.arange(1, EXACT_INTEGER_LIMIT + 1)
    assert np.array_equal(stored_feature_values(ints), ints)
    assert stored_feature_values([513, 1000, 1001, 1023, 70_000]).tolist() == [512, 1000, 1000, 1022, 69_888]
    x = np.random.default_rng(0).uniform(0.01, 1e6, 10_000)
    rel = (x - stored_feature_values(x)) / x
    assert rel.min() >= 0 and rel.max() < 2.0 ** -8  # truncation: relative error below 0.4%
    with pytest.raises(InputError):
        stored_feature_values([0.0])


def test_query_rescaling_is_a_power_of_two_and_keeps_the_ranking():
    assert rescale_query({"a": 64, "b": 3}) == ({"a": 64.0, "b": 3.0}, 1.0)
    assert rescale_query({"a": 65}) == ({"a": 32.5}, 2.0)
    assert rescale_query({"a": 1000, "b": 1}) == ({"a": 62.5, "b": 0.0625}, 16.0)
    assert rescale_query({}) == ({}, 1.0)

    # engine scoring: float32 sum of (rescaled query weight * stored document value)
    vocab = synthetic_vocab(400)
    docs = random_vectors(3000, 30, vocab, max_weight=EXACT_INTEGER_LIMIT, seed=5)
    queries = random_vectors(60, 10, vocab, max_weight=1000, seed=6, prefix="q")
    stored = sp.csr_matrix((stored_feature_values(docs.values), docs.indices, docs.indptr), shape=docs.shape)
    expected = exhaustive_search(queries, docs, k=10)
    for i, qid in enumerate(queries.ids):
        weights, factor = rescale_query(queries.to_dict(i))
        assert max(weights.values()) <= MAX_QUERY_WEIGHT < max(queries.to_dict(i).values())
        qvec = np.zeros(len(vocab), np.float32)
        for t, w in weights.items():
            qvec[vocab.id_of(t)] = w
        scores = (stored @ qvec).astype(np.float32)
        order = sorted(range(len(docs)), key=lambda j: (-scores[j], docs.ids[j]))[:10]
        got = [(docs.ids[j], float(scores[j]) * factor) for j in order]
        assert got == [(h.docid, h.score) for h in expected[qid]], qid


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from([f"t{i}" for i in range(50)]), st.integers(1, 2**20), min_size=1))
def test_rescaled_weights_are_exact_and_within_the_limit(vector):
    weights, factor = rescale_query(vector)
    assert max(weights.values()) <= MAX_QUERY_WEIGHT
    assert factor == 1.0 or max(weights.values()) > MAX_QUERY_WEIGHT / 2  # the smallest power of two
    assert {t: w * factor for t, w in weights.items()} == {t: float(w) for t, w in vector.items()}


def test_mappings():
    meta = {"format": "x"}
    os_body = index_body("opensearch", meta)
    es_body = index_body("elasticsearch", meta, field="sv", contents=False)
    assert os_body["mappings"]["properties"]["vector"] == {"type": "rank_features"}
    assert os_body["mappings"]["properties"]["docid"] == {"type": "keyword"}
    assert os_body["mappings"]["properties"]["contents"] == {"type": "text"}
    assert os_body["mappings"]["_meta"] == meta
    assert es_body["mappings"]["properties"] == {"sv": {"type": "sparse_vector"}, "docid": {"type": "keyword"}}
    with pytest.raises(InputError, match="engine"):
        index_body("solr")


def test_query_bodies():
    body, factor = query_body("opensearch", {"wing": 100, "u.s.": 2}, k=7)
    assert factor == 2.0 and body["size"] == 7 and body["_source"] is False
    assert body["query"] == {"neural_sparse": {"vector": {"query_tokens": {"wing": 50.0, "u__s__": 1.0}}}}
    assert body["sort"] == [{"_score": {"order": "desc"}}, {"docid": {"order": "asc"}}]
    body, factor = query_body("elasticsearch", {"wing": 10}, k=3, field="sv")
    assert factor == 1.0
    assert body["query"] == {"sparse_vector": {"field": "sv", "query_vector": {"wing": 10.0}}}


def test_feature_names_are_one_to_one_on_the_bert_vocabulary(splade_tiny):
    tokens = [t for i, t in enumerate(splade_tiny.vocab.tokens) if i not in splade_tiny.vocab.special_ids]
    names = [feature_name(t) for t in tokens]
    assert len(set(names)) == len(tokens)
    assert not any("." in n for n in names)
    assert feature_name("...") == "______" and feature_name("##.") == "##__"


def _write_vecdir(path, batch, vocab, quantizer=INTEGER):
    with VectorWriter(path, quantizer, encoder="synthetic", vocab=vocab) as w:
        w.write(batch, [f"text of {d}" for d in batch.ids])
    return path


@pytest.mark.parametrize("engine", ["opensearch", "elasticsearch"])
def test_bulk_file_from_vector_dirs(engine, tmp_path):
    vocab = Vocabulary(("wing", "u.s.", "flow", "##.", "mach"))
    docs = SparseBatch.from_dicts([{"wing": 3, "u.s.": 601}, {"flow": 1, "##.": 2}, {"mach": 512}], vocab,
                                  ["d1", "d2", "d3"])
    a = _write_vecdir(tmp_path / "a", docs.select([0, 1]), vocab)
    b = _write_vecdir(tmp_path / "b", docs.select([2]), vocab)
    stats, body_path = write_bulk([a, b], tmp_path / "bulk.ndjson", engine, index="lsr-test", progress=False)
    lines = [json.loads(x) for x in (tmp_path / "bulk.ndjson").read_text().splitlines()]
    assert len(lines) == 6
    assert lines[0] == {"index": {"_index": "lsr-test", "_id": "d1"}}
    assert lines[1] == {"docid": "d1", "vector": {"wing": 3, "u__s__": 601}, "contents": "text of d1"}
    assert lines[3]["vector"] == {"flow": 1, "##__": 2}
    assert [x["index"]["_id"] for x in lines[0::2]] == ["d1", "d2", "d3"]
    assert (stats.documents, stats.values, stats.inexact_values) == (3, 5, 1)  # 601 needs 10 significant bits
    assert stats.max_value == 601 and "--max-value 512" in stats.precision_note()
    body = json.loads(body_path.read_text())
    assert body["mappings"]["properties"]["vector"]["type"] == ("rank_features" if engine == "opensearch"
                                                               else "sparse_vector")
    assert body["mappings"]["_meta"]["vocab_fingerprint"] == vocab.fingerprint
    assert body["mappings"]["_meta"]["quantization"] == INTEGER.to_dict()


def test_bulk_writer_refuses_colliding_names_and_empty_vectors(tmp_path):
    with pytest.raises(InputError, match="both become feature 'a__b'"):
        with BulkWriter(tmp_path / "x.ndjson", "opensearch") as w:
            w.write("d1", {"a.b": 1})
            w.write("d2", {"a__b": 1})
    assert not (tmp_path / "x.ndjson").exists()  # a failed write leaves no half file
    with pytest.raises(InputError, match="empty vector"):
        with BulkWriter(tmp_path / "y.ndjson", "opensearch") as w:
            w.write("d1", {})


def test_bulk_response_failures_and_hits():
    response = {"took": 3, "errors": True, "items": [
        {"index": {"_index": "i", "_id": "d1", "status": 201, "result": "created"}},
        {"index": {"_index": "i", "_id": "d2", "status": 400, "error": {
            "type": "document_parsing_exception",
            "reason": "[1:40] failed to parse: [rank_features] fields do not support dots in feature names"}}},
        {"index": {"_index": "i", "_id": "d3", "status": 429, "error": {
            "type": "es_rejected_execution_exception", "reason": "rejected execution"}}},
    ]}
    assert bulk_failures(response) == [
        ("d2", "status 400: document_parsing_exception: [1:40] failed to parse: [rank_features] fields do not "
               "support dots in feature names"),
        ("d3", "status 429: es_rejected_execution_exception: rejected execution")]
    assert bulk_failures({"errors": False, "items": response["items"][:1]}) == []
    search = {"hits": {"hits": [{"_id": "d9", "_score": 62.5}, {"_id": "d1", "_score": 0.0625}]}}
    hits = hits_from_response(search, 16.0, Quantizer(scale=100))
    assert [(h.docid, h.impact_score, h.rank) for h in hits] == [("d9", 1000, 1), ("d1", 1, 2)]
    assert hits[0].score == pytest.approx(0.1)


def test_cli_writes_bulk_files(tmp_path):
    vocab = synthetic_vocab(30)
    vec = _write_vecdir(tmp_path / "vec", random_vectors(12, 4, vocab, 900, seed=1), vocab)
    out = tmp_path / "os.ndjson"
    run = subprocess.run([sys.executable, "-m", "lsr.cli", "export", "--to", f"opensearch-bulk:{out}", "--input",
                          str(vec)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert len(out.read_text().splitlines()) == 24 and (tmp_path / "os.ndjson.index.json").is_file()
    assert "wrote 12 documents" in run.stderr and "--max-value 512" in run.stderr and "_bulk" in run.stderr
    again = subprocess.run([sys.executable, "-m", "lsr.cli", "export", "--to", f"opensearch-bulk:{out}", "--input",
                            str(vec)], capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "--replace" in again.stderr
    bad = subprocess.run([sys.executable, "-m", "lsr.cli", "export", "--to", f"solr:{out}", "--input", str(vec)],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "milvus://HOST:PORT/COLLECTION" in bad.stderr


LIVE = [(e, os.environ.get(v)) for e, v in (("opensearch", "OPENSEARCH_URL"), ("elasticsearch", "ELASTICSEARCH_URL"))]


@pytest.mark.parametrize("engine,url", LIVE, ids=[e for e, _ in LIVE])
def test_live_engine(engine, url, tmp_path):
    """Against a running engine: bulk upload, per-document failures, search == exact dot product."""
    if not url:
        pytest.skip(f"set {engine.upper()}_URL to run against a live {engine}")
    vocab = synthetic_vocab(300)
    docs = random_vectors(500, 20, vocab, max_weight=EXACT_INTEGER_LIMIT, seed=8)
    queries = random_vectors(20, 8, vocab, max_weight=1000, seed=9, prefix="q")
    vec = _write_vecdir(tmp_path / "vec", docs, vocab)
    stats, body_path = write_bulk([vec], tmp_path / "bulk.ndjson", engine, progress=False)
    assert stats.inexact_values == 0
    client = HttpEngine(url, f"lsr-test-{uuid.uuid4().hex[:8]}", engine=engine)
    meta = json.loads(body_path.read_text())["mappings"]["_meta"]
    assert client.create(meta) == "created"
    try:
        with open(tmp_path / "bulk.ndjson", "a") as fh:  # one document the engine must refuse
            fh.write(json.dumps({"index": {"_id": "broken"}}) + "\n")
            fh.write(json.dumps({"docid": "broken", "vector": {"t1": "not a number"}}) + "\n")
        report = client.send_bulk(tmp_path / "bulk.ndjson", chunk_docs=100, progress=False)
        assert report.inserted == 500 and [d for d, _ in report.failed] == ["broken"]
        client.flush()
        got = client.batch_search(queries, k=10)
        expected = exhaustive_search(queries, docs, k=10)
        assert {q: [(h.docid, h.impact_score) for h in hits] for q, hits in got.items()} == \
            {q: [(h.docid, int(h.score)) for h in hits] for q, hits in expected.items()}
    finally:
        client.drop()


class _InMemoryEngine(HttpEngine):
    """HttpEngine against an in-memory stand-in for the REST API: mappings, _bulk, _msearch (exact scores)."""

    def __init__(self, engine: str, field: str = "vector"):
        self.url, self.index, self.field, self.timeout, self._auth = "http://fake:9200", "idx", field, 1.0, None
        self.engine, self._meta = engine, None
        self.body, self.docs = None, {}

    def _request(self, method, path, body=None, ndjson=False, ok=(200, 201)):
        if method == "HEAD":
            if self.body is None:
                raise InputError(f"{self.engine} at {self.url} refused HEAD {path}: HTTP 404 {{}}")
            return {}
        if method == "GET" and path.endswith("/_mapping"):
            return {self.index: {"mappings": self.body["mappings"]}}
        if method == "PUT":
            self.body, self.docs = body, {}
            return {}
        if method == "DELETE":
            self.body, self.docs = None, {}
            return {}
        if path.endswith("/_refresh"):
            return {}
        lines = [json.loads(x) for x in body.decode().splitlines() if x.strip()]
        if path.endswith("/_bulk"):
            items = []
            for action, source in zip(lines[::2], lines[1::2]):
                docid = action["index"]["_id"]
                vec = source[self.field]
                if all(isinstance(w, (int, float)) for w in vec.values()):
                    self.docs[docid] = {t: float(w) for t, w in vec.items()}
                    items.append({"index": {"_id": docid, "status": 201}})
                else:
                    items.append({"index": {"_id": docid, "status": 400, "error": {"type": "parse", "reason": "x"}}})
            return {"items": items}
        responses = []
        for _, search in zip(lines[::2], lines[1::2]):
            q = search["query"]
            tokens = (q["neural_sparse"][self.field]["query_tokens"] if self.engine == "opensearch"
                      else q["sparse_vector"]["query_vector"])
            scored = [(sum(w * doc.get(t, 0.0) for t, w in tokens.items()), d) for d, doc in self.docs.items()]
            ranked = sorted(((s, d) for s, d in scored if s > 0), key=lambda x: (-x[0], x[1]))[:search["size"]]
            responses.append({"hits": {"hits": [{"_id": d, "_score": s} for s, d in ranked]}})
        return {"responses": responses}


@pytest.mark.parametrize("engine", ["opensearch", "elasticsearch"])
def test_http_engine_lifecycle_and_search_against_an_in_memory_api(engine, tmp_path):
    vocab = synthetic_vocab(300)
    docs = random_vectors(200, 20, vocab, max_weight=EXACT_INTEGER_LIMIT, seed=8)
    queries = random_vectors(12, 8, vocab, max_weight=1000, seed=9, prefix="q")
    vec = _write_vecdir(tmp_path / "vec", docs, vocab)
    _, body_path = write_bulk([vec], tmp_path / "bulk.ndjson", engine, progress=False)
    client = _InMemoryEngine(engine)
    meta = json.loads(body_path.read_text())["mappings"]["_meta"]
    assert client.create(meta) == "created" and client.create(meta) == "appending"
    report = client.send_bulk(tmp_path / "bulk.ndjson", chunk_docs=50, progress=False)
    assert report.inserted == 200 and not report.failed
    expected = exhaustive_search(queries, docs, k=10)
    want = {q: [(h.docid, int(h.score)) for h in hits] for q, hits in expected.items()}
    got = client.batch_search(queries, k=10)
    assert {q: [(h.docid, h.impact_score) for h in hits] for q, hits in got.items()} == want
    assert [(h.docid, h.impact_score) for h in client.search(queries.select([3]), k=10)] == want["q3"]
    ints = {t: int(round(w)) for t, w in queries.to_dict(3).items() if round(w) > 0}
    assert [(h.docid, h.impact_score) for h in client.search(ints, k=10)] == want["q3"]
    with client:
        assert client.batch_search([{}], ["empty"], k=5) == {"empty": []}
    with pytest.raises(InputError, match="k must be at least 1"):
        client.batch_search(queries, k=0)
    with pytest.raises(InputError, match="query #1"):
        client.batch_search([{"t1": -3}], ["bad"], k=5)
    client.drop()
    assert not client.exists
