import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# What a Java 22+ runtime prints about the bundled Lucene unless told otherwise (see anserini_bridge/jvm.py).
JVM_NOTICES = re.compile(r"MMapDirectory|sun\.misc\.Unsafe|invokeCleaner|terminally deprecated|"
                         r"enable-native-access|restricted method|^WARNING", re.M)


def run_lsr(*args, env=None):
    return subprocess.run([sys.executable, "-m", "lsr.cli", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


def test_demo_prints_ranked_hits_with_matching_tokens(tmp_path):
    out = run_lsr("demo", "--workdir", tmp_path / "demo")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    # the first line, printed before anything loads, says what is loading
    assert text.splitlines()[0] == "loading PyTorch, transformers and the splade-tiny model ..."
    # the index is opened in-process and built by a Java subprocess: neither prints JVM notices
    assert not JVM_NOTICES.search(out.stderr), out.stderr
    assert not JVM_NOTICES.search(text)
    assert "encoded 24 documents" in text and "indexed 24 documents" in text
    # the supersonic-wing query finds the supersonic-wing document first, and says why
    block = text.split("query q1")[1].split("query q2")[0]
    first = block.splitlines()[1]
    assert "aero-1" in first
    assert "matched:" in block and "supersonic" in block
    assert "aero" not in text.split("query q3")[1].split("query q4")[0].splitlines()[1]


def test_a_closed_output_pipe_ends_the_command_quietly(tmp_path):
    """`lsr ... | head`: the reader goes away before the command writes; no traceback, the status of SIGPIPE."""
    (tmp_path / "run.trec").write_text("1 Q0 a 1 2.0 x\n1 Q0 b 2 1.0 x\n")
    (tmp_path / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n1\tb\t1\n")
    proc = subprocess.Popen([sys.executable, "-m", "lsr.cli", "eval", "--run", str(tmp_path / "run.trec"),
                             "--qrels", str(tmp_path / "qrels.tsv")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # before the child has started Python, so its first write meets a closed pipe
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 141, err
    assert "Traceback" not in err and "BrokenPipe" not in err, err


def test_eval_json_output(tmp_path):
    (tmp_path / "run.trec").write_text("1 Q0 a 1 2.0 x\n1 Q0 b 2 1.0 x\n")
    (tmp_path / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n1\tb\t1\n")
    out = run_lsr("eval", "--run", tmp_path / "run.trec", "--qrels", tmp_path / "qrels.tsv", "--metrics",
                  "mrr@10", "recall@100", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == pytest.approx({"mrr@10": 0.5, "recall@100": 1.0})


def test_bad_input_exits_2_with_a_message(tmp_path):
    bad = tmp_path / "corpus.jsonl"
    bad.write_bytes(b'{"_id": "1", "text": "ok"}\n{"_id": "1", "text": "dup"}\n')
    out = run_lsr("encode", "--model", "splade-tiny", "--input", bad, "--output", tmp_path / "v")
    assert out.returncode == 2
    assert "duplicate ids: '1' (lines 1 and 2)" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "v").exists()

    out = run_lsr("search", "--index", tmp_path / "nothing", "--query-vectors", bad, "--output", tmp_path / "r")
    assert out.returncode == 2 and "index directory not found" in out.stderr

    good = tmp_path / "good.jsonl"
    good.write_text('{"_id": "1", "text": "ok"}\n')
    out = run_lsr("encode", "--model", "no-such-model", "--input", good, "--output", tmp_path / "v")
    assert out.returncode == 2 and "neither a known alias" in out.stderr


def test_encode_index_refuses_existing_outputs(tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"_id": "a", "text": "supersonic wing"}\n{"_id": "b", "text": ""}\n')
    out = run_lsr("encode", "--model", "splade-tiny", "--input", corpus, "--output", tmp_path / "v")
    assert out.returncode == 0, out.stderr
    assert "read 2, written 1, reported 1" in out.stderr
    assert json.loads((tmp_path / "v" / "report.jsonl").read_text()) == {"id": "b", "reason": "empty text"}
    again = run_lsr("encode", "--model", "splade-tiny", "--input", corpus, "--output", tmp_path / "v")
    assert again.returncode == 2 and "--overwrite" in again.stderr
    assert run_lsr("index", "--input", tmp_path / "v", "--index", tmp_path / "i").returncode == 0
    again = run_lsr("index", "--input", tmp_path / "v", "--index", tmp_path / "i")
    assert again.returncode == 2 and "already exists" in again.stderr


@pytest.mark.parametrize("data, message", [
    (b'{"_id": "1", "text": "ok"}\n{"_id": "2", "text": "caf\xe9"}\n', "corpus.jsonl:2: not valid UTF-8"),
    (b'{"_id": "1", "text": "ok"}\n{"_id": "2", "text": \n', "corpus.jsonl:2: malformed JSON"),
    (b'{"text": "no id"}\n', "corpus.jsonl:1: missing '_id'"),
    (b'{"_id": 7, "text": "int id"}\n', "corpus.jsonl:1: '_id' must be a string"),
])
def test_cli_names_file_and_line_of_bad_records(tmp_path, data, message):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_bytes(data)
    out = run_lsr("encode", "--model", "splade-tiny", "--input", corpus, "--output", tmp_path / "v")
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "v").exists()


def test_encode_accepts_a_stair_model_directory(tmp_path):
    from encoders.stair import StairEncoder

    StairEncoder.create(image_model="stair-tiny-vit", text_model="splade-tiny", device="cpu").save(tmp_path / "stair")
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"_id": "a", "text": "a red circle on the left"}\n')
    out = run_lsr("encode", "--model", tmp_path / "stair", "--input", corpus, "--output", tmp_path / "v")
    assert out.returncode == 0, out.stderr
    line = json.loads((tmp_path / "v" / "part-00000.jsonl").read_text())
    assert {"red", "circle"} <= set(line["vector"])
    meta = json.loads((tmp_path / "v" / "lsr-vectors.json").read_text())
    assert meta["encoder"] == str(tmp_path / "stair")
    refused = run_lsr("encode", "--model", tmp_path / "stair", "--input", corpus, "--output", tmp_path / "v2",
                      "--cuda-graphs")
    assert refused.returncode == 2 and "--cuda-graphs is for SPLADE" in refused.stderr
    assert not (tmp_path / "v2").exists()


def test_encode_with_cuda_graphs_on_the_cpu_writes_the_same_vectors(tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"_id": f"d{i}", "text": f"lift and drag of wing {i} " * (i % 7 + 1)}) + "\n"
                              for i in range(40)))
    for name, extra in (("plain", ()), ("graphs", ("--cuda-graphs",))):
        out = run_lsr("encode", "--model", "splade-tiny", "--device", "cpu", "--batch-size", "8", "--input", corpus,
                      "--output", tmp_path / name, *extra)
        assert out.returncode == 0, out.stderr
    assert "cuda graphs: not used (not on a CUDA device (cpu))" in out.stderr
    plain = (tmp_path / "plain" / "part-00000.jsonl").read_text().splitlines()
    graphs = (tmp_path / "graphs" / "part-00000.jsonl").read_text().splitlines()
    assert len(plain) == 40 and plain == graphs


def test_image_corpus_through_encode_index_and_search(tmp_path):
    """Text, image and image+text records (image paths relative to the JSONL file) with a STAIR model."""
    from PIL import Image

    from anserini_bridge.search import ImpactSearcher
    from encoders.stair import StairEncoder
    from lsr import Quantizer
    from lsr.inputs import Input

    model = tmp_path / "stair"
    StairEncoder.create(image_model="stair-tiny-vit", text_model="splade-tiny", device="cpu").save(model)
    (tmp_path / "img").mkdir()
    for name, colour in (("red", (220, 30, 30)), ("blue", (30, 30, 220))):
        Image.new("RGB", (40, 40), colour).save(tmp_path / "img" / f"{name}.png")
    rows = [{"_id": "t", "text": "a wing in supersonic flow"},
            {"_id": "i", "image": "img/red.png"},
            {"_id": "p", "text": "a blue square", "image": "img/blue.png"},
            {"_id": "e", "text": "  "}]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = run_lsr("encode", "--model", model, "--input", corpus, "--output", tmp_path / "vec")
    assert out.returncode == 0, out.stderr
    assert "read 4, written 3, reported 1" in out.stderr
    lines = [json.loads(x) for x in (tmp_path / "vec" / "part-00000.jsonl").read_text().splitlines()]
    assert [x["id"] for x in lines] == ["t", "i", "p"]
    assert lines[1]["contents"] == str(tmp_path / "img" / "red.png") and lines[2]["contents"] == "a blue square"

    stair = StairEncoder.load(model, device="cpu")
    want = stair.encode_documents([Input(text="a wing in supersonic flow"),
                                   Input(image=str(tmp_path / "img" / "red.png")),
                                   Input(text="a blue square", image=str(tmp_path / "img" / "blue.png"))])
    quantized = Quantizer().quantize(want)  # lsr encode's default quantization
    assert [x["vector"] for x in lines] == [{k: int(v) for k, v in quantized.to_dict(i).items()} for i in range(3)]

    assert run_lsr("index", "--input", tmp_path / "vec", "--index", tmp_path / "idx").returncode == 0
    queries = tmp_path / "queries.jsonl"
    queries.write_text(json.dumps({"_id": "qi", "image": "img/red.png"}) + "\n" +
                       json.dumps({"_id": "qt", "text": "supersonic wing"}) + "\n")
    out = run_lsr("search", "--index", tmp_path / "idx", "--model", model, "--queries", queries, "--k", "3",
                  "--output", tmp_path / "run.txt")
    assert out.returncode == 0, out.stderr
    run = {}
    for line in (tmp_path / "run.txt").read_text().splitlines():
        qid, _, docid, *_ = line.split()
        run.setdefault(qid, []).append(docid)
    qvec = stair.encode_queries([Input(image=str(tmp_path / "img" / "red.png")), Input(text="supersonic wing")],
                                ids=["qi", "qt"])
    with ImpactSearcher(tmp_path / "idx") as searcher:
        expected = searcher.batch_search(qvec, k=3)
    assert run == {qid: [h.docid for h in hits] for qid, hits in expected.items() if hits}

    text_only = run_lsr("encode", "--model", "splade-tiny", "--input", corpus, "--output", tmp_path / "v2")
    assert text_only.returncode == 2 and "record 'i' (line 2)" in text_only.stderr and "STAIR" in text_only.stderr


def test_version_is_the_package_version():
    out = run_lsr("--version")
    assert out.returncode == 0
    setup_version = re.search(r'version="([^"]+)"', (REPO / "setup.py").read_text()).group(1)
    assert out.stdout.strip() == f"lsr {setup_version}"


def test_tsv_input_says_jsonl_is_expected(tmp_path):
    tsv = tmp_path / "corpus.tsv"
    tsv.write_text("1\tWing flutter\tFlutter of a swept wing\n")
    out = run_lsr("encode", "--model", "splade-tiny", "--input", tsv, "--output", tmp_path / "v")
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "corpus.tsv:1: malformed JSON" in out.stderr and "tab-separated" in out.stderr
    assert 'expected JSONL: one JSON object per line, e.g. {"_id": "doc1", "title":' in out.stderr
    queries = tmp_path / "queries.tsv"
    queries.write_text("q1\twhat causes wing flutter\n")
    out = run_lsr("encode", "--model", "splade-tiny", "--role", "query", "--input", queries, "--output",
                  tmp_path / "q")
    assert out.returncode == 2 and 'e.g. {"_id": "q1", "text":' in out.stderr


def test_arguments_are_checked_before_a_model_loads(tmp_path):
    """Each refusal names the argument, not the model: the model (a folder holding no model) was never loaded."""
    no_model = tmp_path / "not-a-model"
    no_model.mkdir()
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"_id": "a", "text": "supersonic wing"}\n')
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "part-00000.jsonl").write_text("")
    out = run_lsr("encode", "--model", no_model, "--input", corpus, "--output", taken)
    assert out.returncode == 2 and "output directory exists" in out.stderr and "--overwrite" in out.stderr, out.stderr
    assert "overwrite=True" not in out.stderr
    out = run_lsr("encode", "--model", no_model, "--input", tmp_path / "missing.jsonl", "--output", tmp_path / "v")
    assert out.returncode == 2 and "missing.jsonl: file not found" in out.stderr, out.stderr
    out = run_lsr("embed", "--model", no_model, "--input", corpus, "--output", taken)
    assert out.returncode == 2 and "already exists" in out.stderr and "--overwrite" in out.stderr, out.stderr
    out = run_lsr("search", "--index", tmp_path / "no-index", "--model", no_model, "--queries", corpus,
                  "--output", tmp_path / "run")
    assert out.returncode == 2 and "index directory not found" in out.stderr, out.stderr
    out = run_lsr("search", "--index", tmp_path / "no-index", "--model", no_model, "--queries", tmp_path / "q.jsonl",
                  "--output", tmp_path / "run")
    assert out.returncode == 2 and "q.jsonl: queries file not found" in out.stderr, out.stderr
    out = run_lsr("search", "--index", tmp_path / "no-index", "--model", no_model, "--queries", corpus,
                  "--rerank", f"minilm={tmp_path / 'no-store'}", "--output", tmp_path / "run")
    assert out.returncode == 2 and "embedding store" in out.stderr and "not found" in out.stderr, out.stderr
    assert not (tmp_path / "v").exists() and not (tmp_path / "run").exists()


def test_a_dense_model_as_search_model_points_to_rerank(tmp_path):
    queries = tmp_path / "q.jsonl"
    queries.write_text('{"_id": "q1", "text": "wing flutter"}\n')
    out = run_lsr("search", "--index", tmp_path / "idx", "--model", "minilm", "--queries", queries,
                  "--output", tmp_path / "run")
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "'minilm' is a dense embedder, not a sparse encoder" in out.stderr
    assert "lsr embed --model minilm" in out.stderr and "--rerank STORE" in out.stderr
    assert "not a known alias" not in out.stderr
    out = run_lsr("encode", "--model", "open_clip:ViT-B-32@openai", "--input", queries, "--output", tmp_path / "v")
    assert out.returncode == 2 and "is a dense embedder" in out.stderr
    out = run_lsr("search", "--index", tmp_path / "idx", "--model", "no-such-model", "--queries", queries,
                  "--output", tmp_path / "run")
    assert out.returncode == 2 and "neither a known alias" in out.stderr


def test_python_api_errors_name_keywords_and_the_cli_names_flags(tmp_path):
    from anserini_bridge.index import build_index
    from lsr import InputError, Quantizer
    from lsr.fixtures.synthetic import random_vectors, synthetic_vocab
    from lsr.vectors import VectorWriter

    vocab = synthetic_vocab(30)
    with VectorWriter(tmp_path / "vec", Quantizer(1, 1000), encoder="synthetic", vocab=vocab) as w:
        w.write(random_vectors(5, 4, vocab, 9, seed=1))
    with pytest.raises(InputError) as e:
        VectorWriter(tmp_path / "vec", Quantizer(1, 1000), encoder="synthetic", vocab=vocab)
    assert "overwrite=True" in str(e.value) and "--overwrite" not in str(e.value)
    (tmp_path / "idx").mkdir()
    with pytest.raises(InputError) as e:
        build_index(tmp_path / "vec", tmp_path / "idx")
    assert "overwrite=True" in str(e.value) and "--overwrite" not in str(e.value)
    out = run_lsr("index", "--input", tmp_path / "vec", "--index", tmp_path / "idx")
    assert out.returncode == 2 and "--overwrite" in out.stderr and "overwrite=True" not in out.stderr


@pytest.mark.slow
def test_readme_python_example_prints_what_the_readme_shows(tmp_path, cranfield):
    """The "From Python" block of README.md, run as written from a fresh folder, twice."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("### From Python", 1)[1]
    code, after = section.split("```python\n", 1)[1].split("```", 1)
    expected = after.split("```\n", 1)[1].split("```", 1)[0]
    (tmp_path / "cranfield").symlink_to(cranfield)
    (tmp_path / "example.py").write_text(code)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for _ in range(2):  # the second run replaces the first run's vectors and index (overwrite=True)
        out = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, capture_output=True, text=True, env=env)
        assert out.returncode == 0, out.stderr
        assert out.stdout == expected


def test_search_encode_and_inspect_use_a_stair_directorys_saved_max_length(tmp_path):
    """A flag the user did not give must not override what a saved model records."""
    from encoders.stair import StairEncoder

    StairEncoder.create(image_model="stair-tiny-vit", text_model="splade-tiny", device="cpu", max_length=8).save(
        tmp_path / "stair")
    assert json.loads((tmp_path / "stair" / "lsr-stair.json").read_text())["max_length"] == 8
    corpus = tmp_path / "c.jsonl"
    long_text = "a red circle on the left of a blue square above a green triangle near the edge of the page"
    corpus.write_text(json.dumps({"_id": "a", "text": long_text}) + "\n")
    out = run_lsr("encode", "--model", tmp_path / "stair", "--input", corpus, "--output", tmp_path / "v")
    assert out.returncode == 0, out.stderr
    assert "longer than 8 word pieces" in out.stderr
    out = run_lsr("encode", "--model", tmp_path / "stair", "--input", corpus, "--output", tmp_path / "v2",
                  "--max-length", "12")
    assert out.returncode == 0, out.stderr
    assert "longer than 12 word pieces" in out.stderr
    inspected = run_lsr("inspect", "--model", tmp_path / "stair", "--text", long_text, "--role", "document",
                        "--top", "0", "--json")
    assert inspected.returncode == 0, inspected.stderr
    encoded = json.loads((tmp_path / "v" / "part-00000.jsonl").read_text())["vector"]
    assert {t["token"] for t in json.loads(inspected.stdout)["tokens"]} == set(encoded)
    from encoders.registry import load

    assert load(str(tmp_path / "stair"), device="cpu", max_length=None).max_length == 8
    assert load(str(tmp_path / "stair"), device="cpu", max_length=12).max_length == 12
    assert load("splade-tiny", device="cpu", max_length=None).max_length == 256


def test_public_faces_import_nothing_heavy_until_used():
    code = ("import sys, lsr, encoders, anserini_bridge\n"
            "heavy = [m for m in ('torch', 'transformers', 'jnius', 'encoders.splade', 'anserini_bridge.search') "
            "if m in sys.modules]\n"
            "assert not heavy, heavy\n"
            "for face in (lsr, encoders, anserini_bridge):\n"
            "    for name in face.__all__:\n"
            "        assert getattr(face, name) is not None, (face.__name__, name)\n"
            "    assert set(face.__all__) <= set(dir(face))\n"
            "assert 'jnius' not in sys.modules  # the JVM starts with the first index or search\n"
            "import anserini_bridge.explain as m\n"
            "assert m.explain and m.__name__ == 'anserini_bridge.explain'\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
