"""Sharded encoding: ``lsr encode --shard I/N`` on a slice of Cranfield, shards indexed together."""

import json
from pathlib import Path

import pytest

from lsr import IndexMismatchError, InputError, Quantizer
from lsr.cli import main as lsr_main
from lsr.engines import check_vector_dirs, parse_shard, shard_of
from lsr.fixtures.synthetic import random_vectors, synthetic_vocab
from lsr.vectors import META_FILE, VectorDirInfo, VectorWriter

N_DOCS = 120


def test_shard_of_is_stable_and_partitions():
    # golden values: the split must not change between machines, processes or releases
    assert [shard_of(x, 3) for x in ["1", "2", "3", "doc-42", "\u00e9"]] == [2, 2, 1, 2, 0]
    assert [shard_of(x, 1000) for x in ["1", "2", "3", "doc-42", "\u00e9"]] == [910, 100, 561, 295, 743]
    ids = [f"doc{i}" for i in range(3000)]
    parts = [[d for d in ids if parse_shard(f"{i}/3").contains(d)] for i in range(3)]
    assert sorted(d for p in parts for d in p) == sorted(ids)  # every id in exactly one shard
    assert all(900 < len(p) < 1100 for p in parts)  # and the shards are balanced
    assert parse_shard(" 2/5 ").count == 5 and str(parse_shard("0/1")) == "0/1"
    for bad in ("3/3", "1", "a/b", "-1/3", "0/0", ""):
        with pytest.raises(InputError, match="shard"):
            parse_shard(bad)


@pytest.fixture(scope="module")
def sharded(cranfield, tmp_path_factory):
    """120 Cranfield documents encoded with SPLADE-tiny in one run and as shards 0/3, 1/3, 2/3.

    One document per forward pass (``--batch-size 1``): a document's float
    weights then do not depend on which other documents share its padded
    batch, so the shards must reproduce the single run bit for bit. (With
    batching, the last float bit can differ between batch compositions and
    move a rare impact by one: 4 of 300,231 values on all of Cranfield.)
    """
    root = tmp_path_factory.mktemp("shards")
    corpus = root / "corpus.jsonl"
    with open(cranfield / "corpus.jsonl", encoding="utf-8") as src, open(corpus, "w", encoding="utf-8") as dst:
        for _, line in zip(range(N_DOCS), src):
            dst.write(line)
    common = ["encode", "--model", "splade-tiny", "--device", "cpu", "--max-length", "128",
              "--batch-size", "1", "--input", str(corpus)]
    assert lsr_main(common + ["--output", str(root / "full")]) == 0
    for i in range(3):
        assert lsr_main(common + ["--output", str(root / f"s{i}"), "--shard", f"{i}/3"]) == 0
    return root


def _vectors(vecdir: Path) -> dict:
    out = {}
    for part in sorted(vecdir.glob("part-*.jsonl")):
        for line in part.read_text(encoding="utf-8").splitlines():
            obj = json.loads(line)
            out[obj["id"]] = (obj["vector"], obj["contents"])
    return out


@pytest.mark.slow
def test_shards_index_like_one_run(sharded, cranfield, splade_tiny):
    from anserini_bridge.index import IndexMeta, build_index
    from anserini_bridge.search import ImpactSearcher
    from lsr.io import read_queries

    root = sharded
    shards = [root / f"s{i}" for i in range(3)]
    infos = [VectorDirInfo.load(d) for d in shards]
    assert [i.extra["shard"]["index"] for i in infos] == [0, 1, 2]
    assert all(i.extra["shard"]["count"] == 3 and i.extra["shard"]["corpus_records"] == N_DOCS for i in infos)
    assert sum(i.documents_read for i in infos) == N_DOCS
    assert all(i.documents_read > 25 for i in infos)

    # the shards hold exactly the documents (vectors and text) of the single run
    full = _vectors(root / "full")
    union = {}
    for d in shards:
        part = _vectors(d)
        assert not set(part) & set(union)
        union.update(part)
    assert union == full

    build_index(root / "full", root / "idx-full", threads=2, progress=False)
    assert lsr_main(["index", "--input", *map(str, shards), "--index", str(root / "idx-shards"),
                     "--threads", "2"]) == 0
    m_full, m_shards = IndexMeta.load(root / "idx-full"), IndexMeta.load(root / "idx-shards")
    assert m_shards.documents == m_full.documents == len(full)
    assert (m_shards.encoder, m_shards.vocab_fingerprint, m_shards.quantization) == \
        (m_full.encoder, m_full.vocab_fingerprint, m_full.quantization)
    assert m_shards.source.split() == [str(d.resolve()) for d in shards]

    queries = read_queries(cranfield / "queries.jsonl")[:40]
    qv = splade_tiny.encode_queries([q.text for q in queries], ids=[q.id for q in queries])
    with ImpactSearcher(root / "idx-full") as a, ImpactSearcher(root / "idx-shards") as b:
        assert a.num_docs == b.num_docs == len(full)
        for docid, (vector, contents) in full.items():  # index contents, document by document
            assert b.doc_vector(docid) == a.doc_vector(docid) == vector
            assert b.doc_contents(docid) == contents
        ra, rb = a.batch_search(qv, k=20, threads=2), b.batch_search(qv, k=20, threads=2)
    assert {q: [(h.docid, h.impact_score) for h in hits] for q, hits in rb.items()} == \
        {q: [(h.docid, h.impact_score) for h in hits] for q, hits in ra.items()}
    assert sum(len(h) for h in ra.values()) > 300  # the queries do match documents


def test_incomplete_or_mismatched_shards_are_refused(sharded, tmp_path):
    from anserini_bridge.index import build_index

    root = sharded
    with pytest.raises(InputError, match="1/3 missing"):
        build_index([root / "s0", root / "s2"], tmp_path / "idx", progress=False)
    assert not (tmp_path / "idx").exists()
    with pytest.raises(InputError, match="given twice"):
        check_vector_dirs([root / "s0", root / "s0"])
    # the same shard under two names
    copy = tmp_path / "s0-copy"
    copy.mkdir()
    for f in (root / "s0").iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    with pytest.raises(InputError, match="both shard 0/3"):
        check_vector_dirs([root / "s0", copy, root / "s1", root / "s2"])
    # a shard of another split (4 shards) does not fit
    meta = json.loads((copy / META_FILE).read_text())
    meta["shard"].update(count=4, index=3)
    (copy / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(IndexMismatchError, match="shard 3/4"):
        check_vector_dirs([root / "s0", root / "s1", root / "s2", copy])
    assert check_vector_dirs([root / "s0", root / "s2"], allow_partial=True)[0].extra["shard"]["index"] == 0


def test_vector_dirs_that_do_not_fit_together(tmp_path):
    vocab = synthetic_vocab(100)
    docs = random_vectors(20, 5, vocab, max_weight=50, seed=3)

    def write(name, batch, quantizer=Quantizer(scale=1, max_value=1000), v=vocab, encoder="synthetic"):
        with VectorWriter(tmp_path / name, quantizer, encoder=encoder, vocab=v) as w:
            w.write(batch)
        return tmp_path / name

    a = write("a", docs.select(range(10)))
    b = write("b", docs.select(range(10, 20)))
    assert len(check_vector_dirs([a, b])) == 2
    overlap = write("overlap", docs.select(range(5, 12)))
    with pytest.raises(InputError, match="'d5' is in both"):
        check_vector_dirs([a, overlap])
    other_q = write("q", docs.select(range(10, 20)), Quantizer(scale=2, max_value=1000))
    with pytest.raises(IndexMismatchError, match="quantized"):
        check_vector_dirs([a, other_q])
    other_v = synthetic_vocab(101)
    other = write("v", random_vectors(3, 2, other_v, 9, prefix="x"), v=other_v, encoder="other")
    with pytest.raises(IndexMismatchError, match="same model"):
        check_vector_dirs([a, other])
    with pytest.raises(InputError, match="no vector files"):
        check_vector_dirs([a, tmp_path / "missing"])
