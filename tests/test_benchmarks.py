"""The benchmarks run end to end at a tiny size, and the fast paths they measure give the same results as the
plain ones: pipelined encoding, the writer process, the JSONL formatter, JSON-bridged batch search and the
single-pass validation of foreign vector files. No timing thresholds: CI machines are slow and shared."""

import json
import os
import threading
import time

import numpy as np
import pytest

from anserini_bridge.index import build_index
from anserini_bridge.search import ImpactSearcher
from encoders.base import EncodeStats
from encoders.encode_run import plan_windows
from encoders.pipeline import ProcessVectorWriter, encode_to_dir, select_rows
from encoders.splade import SpladeEncoder
from lsr import InputError, Quantizer, SparseBatch, Vocabulary
from lsr.fixtures.synthetic import random_vectors, synthetic_vocab
from lsr.io import Record
from lsr.vectors import VectorDirInfo, VectorStore, VectorWriter
from tests.reference import splade_textbook as textbook

WORDS = ["wing", "lift", "über", "drag", "the", "naïve", "東京", "supersonic", "flow", "x", "😀", "boundary"]


def _texts(n, seed=0, empty_every=11):
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, int(rng.integers(1, 60)))) if i % empty_every else "  "
            for i in range(n)]


@pytest.fixture(scope="module")
def tiny(tiny_bert):
    model, tok = tiny_bert
    return SpladeEncoder("tiny-random-bert", hf_model=model, tokenizer=tok, device="cpu", batch_size=7, max_length=40)


# ------------------------------------------------------------ encoding
def test_sort_windows_ramp_up_and_down_and_cover_the_input():
    w = plan_windows(32768, 8192, 1024)
    sizes = [e - s for s, e in w]
    assert w[0][0] == 0 and w[-1][1] == 32768 and all(a[1] == b[0] for a, b in zip(w, w[1:]))
    assert sizes[:2] == [1024, 4096] and sizes[-2:] == [4096, 1024] and max(sizes) <= 8192
    assert plan_windows(100, 8192, 256) == [(0, 100)]
    assert plan_windows(0, 10, 4) == []
    for n in range(1, 300, 7):
        for sw in (1, 5, 64):
            got = plan_windows(n, sw, 4)
            assert got[0][0] == 0 and got[-1][1] == n and max(e - s for s, e in got) <= max(sw, 4)


@pytest.fixture(scope="module")
def reference(tiny):
    texts = _texts(150)
    return texts, textbook(tiny, texts)


@pytest.mark.parametrize("chunk_size, sort_window", [(8192, None), (20, 50), (33, 8), (1, 5000)])
def test_pipelined_chunks_equal_textbook_pooling_in_input_order(tiny, reference, chunk_size, sort_window):
    texts, want = reference
    ids = [f"d{i}" for i in range(len(texts))]
    stats = EncodeStats()
    parts = list(tiny.iter_encode(texts, ids, chunk_size=chunk_size, stats=stats, sort_window=sort_window))
    assert [len(p) for p in parts] == [min(chunk_size, len(texts) - i * chunk_size) for i in range(len(parts))]
    got = SparseBatch.concat(parts)
    assert got.ids == tuple(ids)
    np.testing.assert_allclose(got.to_scipy().toarray(), want, atol=1e-5)
    assert stats.inputs == 150 and stats.empty == sum(1 for t in texts if not t.strip())
    assert stats.truncated == sum(1 for t in texts if t.strip() and len(tiny.tokenizer(t)["input_ids"]) > 40)
    assert tiny._tokenizer_for_batches().fast is not None  # the background tokenizer path was used


def test_any_number_of_tokenizer_threads_gives_the_same_chunks_and_stats(tiny_bert):
    model, tok = tiny_bert
    texts = _texts(150)
    ids = [f"d{i}" for i in range(len(texts))]
    got = {}
    for threads in (0, 2):
        enc = SpladeEncoder("tiny-random-bert", hf_model=model, tokenizer=tok, device="cpu", batch_size=7,
                            max_length=40, tokenizer_threads=threads)
        assert enc.tokenizer_threads == threads
        real, names = enc._tokenizer_for_batches(), set()

        def recording(batch, real=real, names=names):
            names.add(threading.current_thread().name)
            return real(batch)

        enc._tokenizer_for_batches = lambda recording=recording: recording
        stats = EncodeStats()
        parts = list(enc.iter_encode(texts, ids, chunk_size=20, stats=stats, sort_window=50))
        got[threads] = parts, (stats.inputs, stats.empty, stats.truncated)
        if threads:
            assert names and all(n.startswith("lsr-tokenize") for n in names)
        else:
            assert names == {threading.current_thread().name}
    (a, a_stats), (b, b_stats) = got[0], got[2]
    assert [len(p) for p in a] == [len(p) for p in b] and a_stats == b_stats
    for x, y in zip(a, b):
        assert x.ids == y.ids
        np.testing.assert_array_equal(x.indptr, y.indptr)
        np.testing.assert_array_equal(x.indices, y.indices)
        np.testing.assert_array_equal(x.values, y.values)


def test_tokenizer_threads_default_and_check(tiny_bert):
    model, tok = tiny_bert
    assert SpladeEncoder("t", hf_model=model, tokenizer=tok, device="cpu").tokenizer_threads in (1, 2)
    with pytest.raises(InputError, match="tokenizer_threads"):
        SpladeEncoder("t", hf_model=model, tokenizer=tok, device="cpu", tokenizer_threads=-1)


def test_stopping_early_leaves_no_work_behind(tiny):
    it = tiny.iter_encode(_texts(120), chunk_size=10, sort_window=40)
    first = next(it)
    it.close()
    assert len(first) == 10
    deadline = time.monotonic() + 10
    while any(t.name.startswith("lsr-tokenize") for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(t.name.startswith("lsr-tokenize") for t in threading.enumerate())


def test_errors_on_background_threads_reach_the_caller(tiny, monkeypatch):
    calls = {"n": 0}
    real = tiny._collect

    def failing(job):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("collect failed")
        return real(job)

    monkeypatch.setattr(tiny, "_collect", failing)
    with pytest.raises(RuntimeError, match="collect failed"):
        list(tiny.iter_encode(_texts(120), chunk_size=10, sort_window=40))
    monkeypatch.setattr(tiny, "_collect", real)

    def bad_tokenizer(texts):
        raise ValueError("tokenizer failed")

    monkeypatch.setattr(tiny, "_tokenizer_for_batches", lambda: bad_tokenizer)
    with pytest.raises(ValueError, match="tokenizer failed"):
        list(tiny.iter_encode(_texts(120), chunk_size=10, sort_window=40))


# ------------------------------------------------------------- writing
def test_jsonl_lines_are_json_dumps_byte_for_byte(tmp_path):
    toks = ["wing", 'dr"ag', "über", "東京", "😀x", "back\\slash", "##ing", "a" * 40] + [f"t{i}" for i in range(100)]
    vocab = Vocabulary(tuple(toks))
    rng = np.random.default_rng(3)
    dense = rng.random((40, len(toks))) * (rng.random((40, len(toks))) < 0.08) * 9
    dense[::9] = 0  # empty rows are reported, not written
    ids = [f"d{i}" if i % 5 else f"dö\"c{i}" for i in range(40)]
    contents = [str(rng.choice(["", 'a "quote"\n', "😀 ünï", "x" * 30])) for _ in range(40)]
    batch = SparseBatch.from_dense(dense.astype(np.float32), vocab, ids)
    q = Quantizer(scale=1000, max_value=100_000)  # values above the formatter's table, too
    with VectorWriter(tmp_path / "v", q, vocab=vocab, shard_size=7) as w:
        w.write(batch, contents)
    quantized = q.quantize(batch)
    want = [json.dumps({"id": ids[i], "contents": contents[i],
                        "vector": {toks[j]: int(v) for j, v in zip(*quantized.row(i))}}, ensure_ascii=False) + "\n"
            for i in range(40) if quantized.nnz[i]]
    parts = sorted((tmp_path / "v").glob("part-*.jsonl"))
    assert len(parts) == -(-len(want) // 7)
    assert "".join(p.read_text(encoding="utf-8") for p in parts) == "".join(want)
    store = VectorStore(tmp_path / "v")
    assert store.get(ids[1])["contents"] == contents[1] and len(store) == len(want)


def test_writer_process_writes_the_same_files_as_the_inline_writer(tiny, tmp_path):
    records = [Record(f"d{i}", t) for i, t in enumerate(_texts(120))]
    a = encode_to_dir(tiny, records, tmp_path / "a", writer="inline", chunk_size=32)
    b = encode_to_dir(tiny, records, tmp_path / "b", writer="process", chunk_size=32)
    assert a.to_dict() == b.to_dict()
    assert a.documents_read == 120 and a.documents_reported == sum(1 for r in records if not r.text.strip())
    for f in sorted(os.listdir(tmp_path / "a")):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    assert VectorDirInfo.load(tmp_path / "b").documents_written == a.documents_written


def test_writer_process_reports_errors_and_removes_partial_output(tmp_path):
    vocab = Vocabulary(("a", "b"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="cannot create the output directory"):
        with ProcessVectorWriter(tmp_path / "file" / "vec", Quantizer(), vocab=vocab) as w:
            w.write(SparseBatch.from_dicts([{"a": 1.0}], vocab, ["x"]))
    with pytest.raises(RuntimeError, match="boom"):
        with ProcessVectorWriter(tmp_path / "v", Quantizer(), vocab=vocab) as w:
            w.write(SparseBatch.from_dicts([{"a": 1.0}], vocab, ["x"]))
            raise RuntimeError("boom")
    assert not (tmp_path / "v").exists()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "something").write_text("x")
    with pytest.raises(InputError, match="exists and is not empty"):
        ProcessVectorWriter(tmp_path / "full", Quantizer(), vocab=vocab)


def test_select_rows_keeps_rows_and_ids():
    vocab = Vocabulary(("a", "b", "c"))
    b = SparseBatch.from_dicts([{"a": 1.0}, {}, {"b": 2.0, "c": 3.0}, {"c": 4.0}], vocab, ["w", "x", "y", "z"])
    got = select_rows(b, [3, 0, 2])
    assert got.ids == ("z", "w", "y")
    assert [got.to_dict(i) for i in range(3)] == [{"c": 4.0}, {"a": 1.0}, {"b": 2.0, "c": 3.0}]


# --------------------------------------------------------------- search
@pytest.fixture(scope="module")
def unicode_index(tmp_path_factory):
    """A small impact index whose tokens and document ids include non-ASCII and non-BMP characters."""
    root = tmp_path_factory.mktemp("unicode")
    base = synthetic_vocab(300)
    vocab = Vocabulary(("über", "東京", "😀", "naïve") + base.tokens[4:])
    docs = random_vectors(500, 12, vocab, max_weight=50, seed=4)
    docs = docs.with_ids([f"d{i}" if i % 3 else f"dé😀{i}" for i in range(500)])
    with VectorWriter(root / "vec", Quantizer(1, 100_000), encoder="synthetic", vocab=vocab) as w:
        w.write(docs)
    build_index(root / "vec", root / "idx", threads=2, progress=False)
    return root, vocab, docs


def test_direct_search_equals_json_bridged_search(unicode_index):
    root, vocab, docs = unicode_index
    queries = random_vectors(30, 6, vocab, max_weight=20, seed=5, prefix="q")
    ints = [{t: int(v) for t, v in queries.to_dict(i).items()} for i in range(30)]
    ints[0] = {"über": 3, "東京": 2, "😀": 5}
    ints[1] = {}
    with ImpactSearcher(root / "idx") as s:
        assert s._json is not None and s._json.docid_first is not None
        assert s._direct_search() is not None
        fast = s.batch_search(ints, [f"q{i}" for i in range(30)], k=20, threads=2)
        one = s.search(ints[0], k=20)
        direct, s._direct = s._direct, False  # Anserini's own search, results read through JSON
        bridged = s.batch_search(ints, [f"q{i}" for i in range(30)], k=20, threads=2)
        s._direct = direct
    assert fast == bridged and fast["q1"] == []
    assert one == fast["q0"] and any("😀" in h.docid for h in one)
    # scores are the exact integer dot products
    dense = docs.to_scipy()
    col = {t: vocab.id_of(t) for t in ints[0]}
    for h in one:
        row = dense[docs.ids.index(h.docid)].toarray()[0]
        assert h.impact_score == sum(int(row[col[t]]) * w for t, w in ints[0].items())


@pytest.mark.parametrize("id_table", [True, False], ids=["id-table", "ids-per-hit"])
def test_direct_search_keeps_anserinis_order_of_tied_scores(unicode_index, id_table, monkeypatch):
    """Lucene's plain top-k breaks ties by internal doc; Anserini sorts them by id. Small integer weights tie
    often, also across the k-th hit, where the direct path has to ask Lucene for more. Both ways of reading
    ids (a table read once, or per hit for indexes too large for it) give Anserini's order."""
    import anserini_bridge.search as search_mod

    if not id_table:
        monkeypatch.setattr(search_mod, "_DOCID_TABLE_MAX_DOCS", 0)
    root, vocab, docs = unicode_index
    queries = random_vectors(40, 3, vocab, max_weight=2, seed=9, prefix="q")
    ints = [{t: int(v) for t, v in queries.to_dict(i).items()} for i in range(40)]
    with ImpactSearcher(root / "idx") as s:
        for k in (1, 7, 20, 499, 600):
            direct = [s.search(q, k=k) for q in ints]
            saved, s._direct = s._direct, False
            anserini = [s.search(q, k=k) for q in ints]
            s._direct = saved
            assert direct == anserini, k
        scores = [h.impact_score for h in s.search(ints[0], k=600)]
    assert len(scores) > len(set(scores))  # the queries do produce ties


def test_foreign_files_are_validated_and_offsets_noted_in_one_pass(tmp_path):
    vec = tmp_path / "vec"
    vec.mkdir()
    (vec / "part-00000.jsonl").write_text('{"id": "a", "contents": "", "vector": {"x": 3}}\n\n'
                                          '{"id": "b", "contents": "é", "vector": {"y": 5, "x": 1}}\n',
                                          encoding="utf-8")
    build_index(vec, tmp_path / "idx", progress=False)
    store = VectorStore(tmp_path / "idx" / "docvectors")
    assert store.vector("b") == {"y": 5, "x": 1} and store.get("b")["contents"] == "é" and len(store) == 2
    assert not list(tmp_path.glob(".lsr-offsets-*"))
    (vec / "part-00001.jsonl").write_text('{"id": "c", "vector": {"x": 0}}\n')
    with pytest.raises(InputError, match="part-00001.jsonl:1"):
        build_index(vec, tmp_path / "idx2", progress=False)
    assert not list(tmp_path.glob(".lsr-offsets-*")) and not (tmp_path / "idx2").exists()


# ----------------------------------------------------------- benchmarks
@pytest.mark.slow
def test_encode_benchmark(tmp_path):
    from benchmarks import encode

    out = tmp_path / "encode.json"
    assert encode.main(["--device", "cpu", "--model", "bert-tiny-random", "--docs", "48", "--batch-size", "8",
                        "--repeats", "1", "--check", "16", "--breakdown", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    for key in ("project_docs_per_s", "raw_forward_docs_per_s", "ratio_to_raw", "st_docs_per_s", "ratio_to_st",
                "encode_only_docs_per_s"):
        assert r[key] > 0, key
    assert r["ratio_to_raw"] == pytest.approx(r["project_docs_per_s"] / r["raw_forward_docs_per_s"], rel=0.01)
    assert r["device"] == "cpu" and r["docs"] == 48 and r["batch_size"] == 8
    assert 40 < r["mean_word_pieces"] < 100 and 100 < r["mean_nnz"] < 600  # calibrated towards 300 terms
    assert r["check"]["max_abs_diff"] < 1e-4 and r["check"]["support_jaccard"] == 1.0
    assert r["machine"]["cpu_cores"] >= 1


@pytest.mark.slow
def test_search_benchmark(tmp_path):
    from benchmarks import search

    out = tmp_path / "search.json"
    assert search.main(["--docs", "2000", "--queries", "20", "--repeats", "1", "--warmup", "0",
                        "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    for key in ("project_qps", "anserini_qps", "ratio_to_anserini", "scipy_qps", "anserini_maps_qps",
                "anserini_strings_qps"):
        assert r[key] > 0, key
    assert r["anserini_qps"] == max(r["anserini_maps_qps"], r["anserini_strings_qps"])
    assert r["exact"] is True and all(r["exact_by_path"].values())


@pytest.mark.slow
def test_query_latency_benchmark(tmp_path, cranfield):
    from benchmarks import query_latency

    out = tmp_path / "latency.json"
    assert query_latency.main(["--build-docs", "80", "--limit", "8", "--warmup", "2", "--batch-repeats", "1",
                               "--k", "50", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["built_cranfield_index"] is True and r["queries"] == 8 and r["k"] == 50
    for key in ("project_p50_ms", "project_p99_ms", "floor_p50_ms", "pyserini_p50_ms", "inference_free_p50_ms",
                "project_batch_qps", "pyserini_batch_qps", "bare_search_p50_ms", "forward_1thread_p50_ms",
                "forward_default_threads_p50_ms", "project_encode_p50_ms", "project_search_p50_ms"):
        assert r[key] > 0, key
    assert r["project_p99_ms"] >= r["project_p50_ms"]
    assert r["floor_p50_ms"] >= r["bare_search_p50_ms"]
    # exactness, not speed: the direct search returns Anserini's hits for every query
    assert r["search_exact"] == 8
    assert 0 <= r["single_equals_batch"] <= 8
    assert set(r["ndcg@10"]) == {"project", "project_single", "inference_free", "pyserini"}
    assert all(0 <= v <= 1 for v in r["ndcg@10"].values())


@pytest.mark.slow
def test_index_benchmark(tmp_path):
    from benchmarks import index

    out = tmp_path / "index.json"
    assert index.main(["--docs", "1000", "--rss-docs", "20000", "--repeats", "1", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    for key in ("export_docs_per_s", "index_docs_per_s", "export_plus_index_docs_per_s", "bare_index_docs_per_s",
                "ratio_to_bare", "index_ratio_to_bare", "rss_export_docs_per_s"):
        assert r[key] > 0, key
    assert 0 < r["export_share"] < 1
    assert 0 < r["peak_rss_mb_small"] <= r["peak_rss_mb"] < 2048
