"""Metadata of vector directories, indexes, embedding stores and engine collections: the files written before
the shared metadata base still load, round trips keep every key, and unknown or newer formats are refused."""

import json
from dataclasses import dataclass

import pytest

from anserini_bridge.index import INDEX_META, IndexMeta
from lsr.embstore import STORE_META, StoreMeta
from lsr.engines.milvus import CollectionMeta
from lsr.engines.opensearch import FeatureIndexMeta
from lsr.errors import InputError
from lsr.meta import Meta, meta_field
from lsr.quantize import Quantizer
from lsr.vectors import META_FILE, VectorDirInfo

# ------------------------------------------------- files in the form written so far
OLD_VECTORS = """{
  "format": "lsr-vectors/1",
  "encoder": "splade-tiny",
  "vocab_fingerprint": "3f2a",
  "quantization": {
    "scale": 50.0,
    "max_value": 512
  },
  "role": "query",
  "documents_read": 12,
  "documents_written": 10,
  "documents_reported": 2,
  "truncated": 1,
  "max_length": 256,
  "shard": {
    "index": 1,
    "count": 2,
    "hash": "sha1-mod",
    "corpus": "corpus.jsonl",
    "corpus_records": 24
  }
}
"""

OLD_INDEX = """{
  "retriever": "impact",
  "format": "lsr-impact-index/1",
  "encoder": "splade-tiny",
  "vocab_fingerprint": "3f2a",
  "quantization": {
    "scale": 50.0,
    "max_value": 512
  },
  "documents": 10,
  "counters": {
    "indexed": 10,
    "unindexable": 0,
    "empty": 0,
    "skipped": 0,
    "errors": 0,
    "reported_by_encoder": 2
  },
  "stored_vectors": true,
  "source": "/data/vec"
}
"""

OLD_STORE = """{
  "format": "lsr-embeddings/1",
  "model": "all-MiniLM-L6-v2",
  "source": "/models/minilm",
  "kind": "sentence",
  "dim": 384,
  "count": 3,
  "dtype": "float32",
  "normalized": true,
  "empty": 1,
  "input": "corpus.jsonl",
  "settings": {
    "max_length": 128
  },
  "created": 1700000000.5
}
"""

OLD_MILVUS = ('{"format":"lsr-milvus/1","encoder":"splade-tiny","vocab_fingerprint":"3f2a","dimension":30522,'
              '"quantization":{"scale":100.0,"max_value":1000},"ids":"derived"}')

OLD_FEATURE_INDEX = ('{"format": "lsr-feature-index/1", "encoder": "splade-tiny", "vocab_fingerprint": "3f2a", '
                     '"quantization": {"scale": 50.0, "max_value": 512}, "feature_names": "dots as __"}')


def test_an_old_vector_directory_file_loads_and_writes_back_the_same_keys(tmp_path):
    (tmp_path / META_FILE).write_text(OLD_VECTORS)
    info = VectorDirInfo.load(tmp_path)
    assert (info.encoder, info.vocab_fingerprint, info.quantization, info.role) == \
        ("splade-tiny", "3f2a", Quantizer(50, 512), "query")
    assert (info.documents_read, info.documents_written, info.documents_reported, info.truncated) == (12, 10, 2, 1)
    assert info.extra == {"max_length": 256, "shard": json.loads(OLD_VECTORS)["shard"]}
    assert info.to_dict() == json.loads(OLD_VECTORS)
    info.write(tmp_path / "again.json")
    assert json.loads((tmp_path / "again.json").read_text()) == json.loads(OLD_VECTORS)
    assert not list(tmp_path.glob("*.tmp"))
    assert VectorDirInfo.load(tmp_path / "nothing-here") is None


def test_an_old_index_file_loads_and_a_missing_stored_vectors_reads_as_false(tmp_path):
    (tmp_path / INDEX_META).write_text(OLD_INDEX)
    meta = IndexMeta.load(tmp_path)
    assert (meta.encoder, meta.quantization, meta.documents, meta.stored_vectors, meta.source, meta.retriever) == \
        ("splade-tiny", Quantizer(50, 512), 10, True, "/data/vec", "impact")
    assert meta.counters["reported_by_encoder"] == 2
    assert meta.to_dict() == json.loads(OLD_INDEX)

    bm25 = {"retriever": "bm25", "format": "lsr-impact-index/1", "encoder": "bm25", "quantization": None,
            "documents": 4}
    (tmp_path / INDEX_META).write_text(json.dumps(bm25))
    meta = IndexMeta.load(tmp_path)
    assert (meta.retriever, meta.quantization, meta.stored_vectors, meta.counters) == ("bm25", None, False, {})
    assert IndexMeta("e", None, None, 1, {}).stored_vectors is True  # built in code: the default


def test_an_old_store_file_loads(tmp_path):
    (tmp_path / STORE_META).write_text(OLD_STORE)
    meta = StoreMeta.read(tmp_path / STORE_META)
    assert meta == StoreMeta("all-MiniLM-L6-v2", "/models/minilm", "sentence", 384, 3, True, 1, "corpus.jsonl",
                             {"max_length": 128}, 1700000000.5)
    assert meta.to_dict() == json.loads(OLD_STORE)
    short = {"format": "lsr-embeddings/1", "model": "m", "dim": "8", "count": 2}
    assert StoreMeta.from_dict(short) == StoreMeta("m", None, "dense", 8, 2)


def test_old_engine_metadata_loads():
    col = CollectionMeta.from_description(OLD_MILVUS)
    assert col == CollectionMeta("splade-tiny", "3f2a", 30522, Quantizer(), "derived")
    assert col.to_description() == OLD_MILVUS
    assert CollectionMeta.from_description("a collection of someone else's") is None
    assert CollectionMeta.from_description(json.dumps({"format": "other/1"})) is None
    feat = FeatureIndexMeta.from_dict(json.loads(OLD_FEATURE_INDEX))
    assert feat == FeatureIndexMeta("splade-tiny", "3f2a", Quantizer(50, 512))
    assert feat.to_dict() == json.loads(OLD_FEATURE_INDEX)


def test_a_long_encoder_name_is_cut_to_fit_a_milvus_description():
    text = CollectionMeta("/models/" + "x" * 2000 + "/splade", "3f2a", 30522, Quantizer()).to_description()
    assert len(text.encode("utf-8")) <= 1024
    assert CollectionMeta.from_description(text).encoder.endswith("x/splade")


# ------------------------------------------------------------------- refusals
def test_a_newer_version_is_refused_naming_the_file_and_the_fix(tmp_path):
    d = json.loads(OLD_INDEX)
    d["format"] = "lsr-impact-index/2"
    (tmp_path / INDEX_META).write_text(json.dumps(d))
    with pytest.raises(InputError, match=r"lsr-index\.json: format 'lsr-impact-index/2' was written by a newer "
                                         r"version of lsr.*upgrade lsr to read it, or rebuild the index"):
        IndexMeta.load(tmp_path)
    d = json.loads(OLD_VECTORS)
    d["format"] = "lsr-vectors/7"
    (tmp_path / META_FILE).write_text(json.dumps(d))
    with pytest.raises(InputError, match=r"lsr-vectors\.json: .*newer.*encode the vectors again with `lsr encode`"):
        VectorDirInfo.load(tmp_path)
    newer = OLD_MILVUS.replace("lsr-milvus/1", "lsr-milvus/2")
    with pytest.raises(InputError, match="collection 'c' at http://h: format 'lsr-milvus/2' was written by a newer"):
        CollectionMeta.from_description(newer, "collection 'c' at http://h")


def test_another_format_or_a_damaged_file_is_refused(tmp_path):
    (tmp_path / STORE_META).write_text(OLD_INDEX)
    with pytest.raises(InputError, match=r"lsr-embeddings\.json: format 'lsr-impact-index/1' is not store metadata "
                                         r"\(expected 'lsr-embeddings/1'\); rebuild the store with `lsr embed`"):
        StoreMeta.read(tmp_path / STORE_META)
    (tmp_path / STORE_META).write_text("{not json")
    with pytest.raises(InputError, match=r"lsr-embeddings\.json: corrupted store metadata"):
        StoreMeta.read(tmp_path / STORE_META)
    d = json.loads(OLD_STORE)
    del d["dim"]
    (tmp_path / STORE_META).write_text(json.dumps(d))
    with pytest.raises(InputError, match=r"corrupted store metadata \('dim' is missing\)"):
        StoreMeta.read(tmp_path / STORE_META)
    d = json.loads(OLD_VECTORS)
    d["quantization"] = {"scale": -1, "max_value": 10}
    (tmp_path / META_FILE).write_text(json.dumps(d))
    with pytest.raises(InputError, match=r"lsr-vectors\.json: corrupted vector directory metadata \(quantization"):
        VectorDirInfo.load(tmp_path)
    with pytest.raises(InputError, match=r"here: corrupted index metadata \(expected a JSON object, got list\)"):
        IndexMeta.from_dict([], "here")


# ---------------------------------------------------------------- the base
@dataclass
class _Versioned(Meta, format="test-versioned", version=2, what="test metadata"):
    width: int
    label: str | None = None
    tags: dict = meta_field(default_factory=dict, absent={"empty": True})

    @classmethod
    def upgrade(cls, d: dict, version: int) -> dict:
        if version == 1:  # version 1 called the width "size"
            d["width"] = d.pop("size")
        return d


def test_older_versions_are_upgraded_and_absent_values_are_fresh_copies():
    a = _Versioned.from_dict({"format": "test-versioned/1", "size": "3"})
    b = _Versioned.from_dict({"format": "test-versioned/2", "width": 4, "label": None})
    assert (a.width, a.label, a.tags) == (3, None, {"empty": True}) and b.width == 4
    a.tags["changed"] = 1
    assert b.tags == {"empty": True}
    assert a.to_dict() == {"format": "test-versioned/2", "width": 3, "label": None,
                           "tags": {"empty": True, "changed": 1}}
    with pytest.raises(InputError, match="test-versioned/3"):
        _Versioned.from_dict({"format": "test-versioned/3", "width": 1})
    with pytest.raises(InputError, match=r"format 'test-versioned' is not test metadata"):
        _Versioned.from_dict({"format": "test-versioned", "width": 1})


def test_an_old_stair_configuration_loads_and_writes_back_unchanged(tmp_path):
    from encoders.stair_config import StairConfig, read_config

    # as lsr-stair.json was written before it became a Meta class (abridged to a few keys)
    old = {"format": "lsr-stair/1", "image_model": "efficientnet-lite0", "pretrained": None,
           "image_config": {"timm_model": "efficientnet_lite0"}, "text_model": "splade-tiny", "max_length": 64,
           "head_vocab_size": 30522, "global_token": True}
    (tmp_path / "lsr-stair.json").write_text(json.dumps(old))
    assert read_config(tmp_path) == old
    StairConfig.from_dict(old).write(tmp_path / "again.json")
    assert json.loads((tmp_path / "again.json").read_text()) == old
    (tmp_path / "lsr-stair.json").write_text(json.dumps({**old, "format": "lsr-stair/9"}))
    with pytest.raises(InputError, match=r"lsr-stair.json: format 'lsr-stair/9' was written by a newer version"):
        read_config(tmp_path)
    (tmp_path / "lsr-stair.json").write_text(json.dumps({"format": "lsr-stair/1"}))
    with pytest.raises(InputError, match=r"corrupted STAIR configuration \('image_model' is missing\)"):
        read_config(tmp_path)
