import json

import numpy as np
import pytest

from lsr import InputError, Quantizer, SparseBatch, Vocabulary
from lsr.vectors import VectorDirInfo, VectorStore, VectorWriter, read_vector_file, write_offsets

VOCAB = Vocabulary(("[CLS]", "wing", "drag", "##ing", "flow", "heat"), frozenset({0}))


def test_quantization_golden_values():
    q = Quantizer(scale=100, max_value=1000)
    # by hand: 1.234*100+0.5 = 123.9 -> 123; 0.005 -> 1.0 -> 1; 0.0049 -> 0.99 -> 0 (dropped);
    # 12.3456 -> 1235.06 -> 1235, capped at 1000; 0.125 -> 13.0 -> 13
    assert q.impacts(np.array([1.234, 0.005, 0.0049, 12.3456, 0.125])).tolist() == [123, 1, 0, 1000, 13]
    # SparseBatch holds float32: 0.005 is 0.00499999988 there and rounds to 0, so use 0.006 -> 1.1 -> 1
    b = SparseBatch.from_dicts([{"wing": 1.234, "drag": 0.006, "flow": 0.0049, "heat": 12.3456, "##ing": 0.125}],
                               VOCAB, ids=["doc-1"])
    qb = q.quantize(b)
    assert qb.to_dict(0) == {"wing": 123.0, "drag": 1.0, "##ing": 13.0, "heat": 1000.0}
    assert q.to_float_score(123 * 2) == pytest.approx(0.0246)


def test_jsonl_line_golden(tmp_path):
    b = SparseBatch.from_dicts([{"wing": 1.234, "drag": 0.006, "flow": 0.0049, "heat": 12.3456, "##ing": 0.125}],
                               VOCAB, ids=["doc-1"])
    with VectorWriter(tmp_path / "v", Quantizer(100, 1000), encoder="toy", vocab=VOCAB) as w:
        w.write(b, contents=["A wing"])
    line = (tmp_path / "v" / "part-00000.jsonl").read_text(encoding="utf-8")
    assert line == '{"id": "doc-1", "contents": "A wing", "vector": {"wing": 123, "drag": 1, "##ing": 13, "heat": 1000}}\n'
    info = VectorDirInfo.load(tmp_path / "v")
    assert info.quantization == Quantizer(100, 1000) and info.vocab_fingerprint == VOCAB.fingerprint
    assert (info.documents_read, info.documents_written, info.documents_reported) == (1, 1, 0)


def test_empty_vectors_are_reported_and_counted(tmp_path):
    b = SparseBatch.from_dicts([{"wing": 1.0}, {"drag": 0.001}, {}], VOCAB, ids=["a", "b", "c"])
    with VectorWriter(tmp_path / "v", Quantizer(), vocab=VOCAB, shard_size=1) as w:
        w.write(b)
    info = VectorDirInfo.load(tmp_path / "v")
    assert (info.documents_read, info.documents_written, info.documents_reported) == (3, 1, 2)
    reported = [json.loads(l) for l in (tmp_path / "v" / "report.jsonl").read_text().splitlines()]
    assert [r["id"] for r in reported] == ["b", "c"]
    assert info.documents_read == info.documents_written + info.documents_reported


def test_shards_offsets_and_store(tmp_path):
    b = SparseBatch.from_dicts([{"wing": 1.0}, {"drag": 2.0}, {"heat": 0.5, "flow": 0.25}], VOCAB, ids=["a", "b", "c"])
    with VectorWriter(tmp_path / "v", Quantizer(), vocab=VOCAB, shard_size=2) as w:
        w.write(b, contents=["x", "y", "z"])
    parts = sorted(p.name for p in (tmp_path / "v").glob("part-*.jsonl"))
    assert parts == ["part-00000.jsonl", "part-00001.jsonl"]
    store = VectorStore(tmp_path / "v")
    assert store.vector("c") == {"flow": 25, "heat": 50} and store.get("b")["contents"] == "y"
    before = (tmp_path / "v" / "offsets.tsv").read_text()
    write_offsets(tmp_path / "v")
    assert (tmp_path / "v" / "offsets.tsv").read_text() == before
    with pytest.raises(InputError, match="not in"):
        store.vector("zzz")


def test_writer_refuses_existing_output_and_cleans_up_on_failure(tmp_path):
    out = tmp_path / "v"
    out.mkdir()
    (out / "something").write_text("x")
    with pytest.raises(InputError, match="exists"):
        VectorWriter(out, Quantizer())
    fresh = tmp_path / "w"
    with pytest.raises(RuntimeError):
        with VectorWriter(fresh, Quantizer(), vocab=VOCAB) as w:
            w.write(SparseBatch.from_dicts([{"wing": 1.0}], VOCAB, ids=["a"]))
            raise RuntimeError("boom")
    assert not fresh.exists()


@pytest.mark.parametrize("line, match", [
    ('{"id": "a", "vector": {"wing": NaN}}', "positive integers"),
    ('{"id": "a", "vector": {"wing": -3}}', "positive integers"),
    ('{"id": "a", "vector": {"wing": 1.5}}', "positive integers"),
    ('{"id": "a", "vector": {"two words": 1}}', "whitespace"),
    ('{"id": "a", "vector": {"tab\\there": 1}}', "whitespace"),
    ('{"id": 7, "vector": {"wing": 1}}', "'id'"),
    ('{"id": "a"}', "missing 'vector'"),
    ('{"id": "a", "vector": {"wing": true}}', "positive integer"),
])
def test_vector_files_are_validated_with_file_and_line(tmp_path, line, match):
    f = tmp_path / "q.jsonl"
    f.write_text('{"id": "ok", "vector": {"wing": 2}}\n' + line + "\n")
    with pytest.raises(InputError, match=match) as e:
        read_vector_file(f)
    assert f"{f}:2" in str(e.value)


def test_bad_quantizer_settings():
    with pytest.raises(InputError):
        Quantizer(scale=0)
    with pytest.raises(InputError):
        Quantizer(max_value=0)
    with pytest.raises(InputError):
        Quantizer().impacts(np.array([-1.0]))
