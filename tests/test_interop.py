"""Working with what other tools made: vector files and Lucene impact indexes from Anserini or Pyserini."""

import gzip
import json
import subprocess
import sys

import pytest

from anserini_bridge.index import build_index
from anserini_bridge.search import ImpactSearcher
from lsr import InputError
from lsr.vectors import part_files, read_query_vectors

DOCS = [
    {"id": "a", "contents": "alpha", "vector": {"x": 3, "y": 1}},
    {"id": "b", "contents": "beta", "vector": {"y": 5}},
    {"id": "c", "contents": "gamma", "vector": {"x": 1, "z": 7}},
    {"id": "d", "contents": "delta", "vector": {"z": 2, "y": 2}},
    {"id": "e", "contents": "", "vector": {"x": 4}},
]


def _lines(docs) -> str:
    return "".join(json.dumps(d) + "\n" for d in docs)


def _foreign_dir(root):
    """The documents spread over the file layouts Anserini's JsonVectorCollection reads."""
    root.mkdir()
    (root / "docs.jsonl").write_text(_lines(DOCS[:1]))  # JSON lines, any name
    with gzip.open(root / "embeddings.jsonl.gz", "wt") as fh:  # gzip-compressed JSON lines
        fh.write(_lines(DOCS[1:2]))
    (root / "more.json").write_text(json.dumps(DOCS[2:3] + DOCS[3:4], indent=2))  # one JSON array, pretty
    (root / "sub").mkdir()
    (root / "sub" / "last.json").write_text(json.dumps(DOCS[4], indent=1))  # one pretty-printed object
    (root / "README.txt").write_text("not read")
    (root / ".hidden.jsonl").write_text("not read either")
    return root


def test_foreign_layouts_are_listed_as_anserini_reads_them(tmp_path):
    vec = _foreign_dir(tmp_path / "vec")
    assert [p.relative_to(vec).as_posix() for p in part_files(vec)] == \
        ["docs.jsonl", "embeddings.jsonl.gz", "more.json", "sub/last.json"]
    ids, vecs, info = read_query_vectors(vec)
    assert info is None and sorted(ids) == ["a", "b", "c", "d", "e"]
    assert dict(zip(ids, vecs)) == {d["id"]: d["vector"] for d in DOCS}


def test_foreign_layouts_index_search_and_explain(tmp_path):
    vec = _foreign_dir(tmp_path / "vec")
    meta = build_index(vec, tmp_path / "idx", progress=False)
    assert meta.documents == 5 and meta.encoder is None and meta.quantization is None
    with ImpactSearcher(tmp_path / "idx") as s:
        hits = s.search({"y": 2, "z": 1}, k=5)
        assert [(h.docid, h.impact_score) for h in hits] == [("b", 10), ("c", 7), ("d", 6), ("a", 2)]
        for d in DOCS:  # every document's vector and text is found again, gzip and arrays included
            assert s.doc_vector(d["id"]) == d["vector"]
            assert s.doc_contents(d["id"]) == d["contents"]


def test_foreign_files_are_validated_with_file_and_position(tmp_path):
    vec = tmp_path / "vec"
    vec.mkdir()
    with gzip.open(vec / "bad.jsonl.gz", "wt") as fh:
        fh.write(_lines(DOCS[:1]) + json.dumps({"id": "z", "vector": {"x": 1.5}}) + "\n")
    with pytest.raises(InputError, match=r"bad.jsonl.gz:2: weight of 'x' is 1.5"):
        build_index(vec, tmp_path / "idx", progress=False)
    (vec / "bad.jsonl.gz").write_bytes(b"not gzip at all")
    with pytest.raises(InputError, match="bad.jsonl.gz: not a readable gzip file"):
        build_index(vec, tmp_path / "idx", progress=False)
    assert not (tmp_path / "idx").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("x")
    with pytest.raises(InputError, match=r"no vector files \(part-\*.jsonl"):
        build_index(empty, tmp_path / "idx", progress=False)


def _lsr(*args, env=None):
    return subprocess.run([sys.executable, "-m", "lsr.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=600, env=env)


def test_cli_index_and_export_accept_foreign_files_and_say_what_is_not_checked(tmp_path):
    vec = _foreign_dir(tmp_path / "vec")
    out = _lsr("index", "--input", vec, "--index", tmp_path / "idx")
    assert out.returncode == 0, out.stderr
    assert "has no lsr-vectors.json" in out.stderr and "not checked" in out.stderr
    assert "indexed 5 documents" in out.stderr
    out = _lsr("export", "--to", f"opensearch-bulk:{tmp_path / 'bulk.ndjson'}", "--input", vec)
    assert out.returncode == 0, out.stderr
    assert "wrote 5 documents" in out.stderr and "not checked" in out.stderr
    ids = [json.loads(line)["index"]["_id"] for line in (tmp_path / "bulk.ndjson").read_text().splitlines()[::2]]
    assert sorted(ids) == ["a", "b", "c", "d", "e"]
