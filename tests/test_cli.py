import json
import subprocess
import sys

import pytest


def run_lsr(*args):
    return subprocess.run([sys.executable, "-m", "lsr.cli", *map(str, args)], capture_output=True, text=True)


def test_demo_prints_ranked_hits_with_matching_tokens(tmp_path):
    out = run_lsr("demo", "--workdir", tmp_path / "demo")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "encoded 24 documents" in text and "indexed 24 documents" in text
    # the supersonic-wing query finds the supersonic-wing document first, and says why
    block = text.split("query q1")[1].split("query q2")[0]
    first = block.splitlines()[1]
    assert "aero-1" in first
    assert "matched:" in block and "supersonic" in block
    assert "aero" not in text.split("query q3")[1].split("query q4")[0].splitlines()[1]


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

    StairEncoder(image_model="stair-tiny-vit", text_model="splade-tiny", device="cpu").save(tmp_path / "stair")
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
    StairEncoder(image_model="stair-tiny-vit", text_model="splade-tiny", device="cpu").save(model)
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

    stair = StairEncoder(model, device="cpu")
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
