import pytest

from lsr import InputError
from lsr.evaluate import evaluate, parse_metric
from lsr.io import Hit, read_corpus, read_qrels, read_queries, read_run, write_run


def write(tmp_path, name, data: bytes):
    p = tmp_path / name
    p.write_bytes(data)
    return p


def test_corpus_text_is_title_plus_text(tmp_path):
    p = write(tmp_path, "c.jsonl", b'{"_id": "1", "title": "Wings", "text": "lift and drag"}\n\n{"_id": "2", "text": "x"}\n')
    recs = read_corpus(p)
    assert [(r.id, r.text, r.line) for r in recs] == [("1", "Wings lift and drag", 1), ("2", "x", 3)]


@pytest.mark.parametrize("data, match", [
    (b'{"_id": "1", "text": "ok"}\n{"_id": "2", "text": "caf\xe9"}\n', r"c.jsonl:2: not valid UTF-8"),
    (b'{"_id": "1", "text": "ok"}\n{"_id": "2", "text": \n', r"c.jsonl:2: malformed JSON"),
    (b'{"text": "no id"}\n', r"c.jsonl:1: missing '_id'"),
    (b'{"_id": 5, "text": "int id"}\n', r"c.jsonl:1: '_id' must be a string"),
    (b'{"_id": "a b", "text": "space"}\n', r"c.jsonl:1: '_id' 'a b' is empty or contains whitespace"),
    (b'[1, 2]\n', r"c.jsonl:1: expected a JSON object"),
    (b'{"_id": "1", "text": 3}\n', r"c.jsonl:1: 'text' must be a string"),
])
def test_bad_corpus_lines_name_file_and_line(tmp_path, data, match):
    p = write(tmp_path, "c.jsonl", data)
    with pytest.raises(InputError, match=match):
        read_corpus(p)


def test_duplicate_ids_are_refused_with_the_ids_listed(tmp_path):
    p = write(tmp_path, "c.jsonl", b'{"_id": "a", "text": "1"}\n{"_id": "b", "text": "2"}\n{"_id": "a", "text": "3"}\n')
    with pytest.raises(InputError, match=r"duplicate ids: 'a' \(lines 1 and 3\)"):
        read_corpus(p)


def test_empty_queries_are_refused(tmp_path):
    p = write(tmp_path, "q.jsonl", b'{"_id": "q1", "text": "wings"}\n{"_id": "q2", "text": "   "}\n')
    with pytest.raises(InputError, match=r"q.jsonl:2: query 'q2' is empty"):
        read_queries(p)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        read_corpus(tmp_path / "nope.jsonl")


def test_qrels_beir_and_trec_formats(tmp_path):
    beir = write(tmp_path, "q.tsv", b"query-id\tcorpus-id\tscore\n1\t184\t2\n1\t29\t4\n2\t12\t3\n")
    trec = write(tmp_path, "q.trec", b"1 0 184 2\n1 0 29 4\n2 0 12 3\n")
    assert read_qrels(beir) == read_qrels(trec) == {"1": {"184": 2, "29": 4}, "2": {"12": 3}}
    bad = write(tmp_path, "bad.tsv", b"1 184\n")
    with pytest.raises(InputError, match="bad.tsv:1"):
        read_qrels(bad)


def test_run_round_trip_and_evaluation(tmp_path):
    run = {"1": [Hit("29", 2.0, 1), Hit("184", 1.0, 2)], "2": [Hit("7", 1.0, 1)]}
    path = tmp_path / "run.trec"
    write_run(path, run)
    assert path.read_text().splitlines()[0] == "1 Q0 29 1 2.000000 lsr"
    back = read_run(path)
    assert [h.docid for h in back["1"]] == ["29", "184"]
    qrels = {"1": {"184": 2, "29": 4}, "2": {"12": 3}}
    scores = evaluate(back, qrels, ["ndcg@10", "recall@100", "map"])
    # query 1 is ranked ideally (nDCG 1), query 2 retrieves nothing relevant (0): mean 0.5
    assert scores["ndcg@10"] == pytest.approx(0.5)
    assert scores["recall@100"] == pytest.approx(0.5)
    assert set(scores) == {"ndcg@10", "recall@100", "map"}


def test_queries_missing_from_the_run_count_as_zero():
    qrels = {"1": {"a": 1}, "2": {"b": 1}}
    assert evaluate({"1": [Hit("a", 1.0, 1)]}, qrels, ["ndcg@10"])["ndcg@10"] == pytest.approx(0.5)


def test_unknown_metric():
    with pytest.raises(InputError, match="not understood"):
        parse_metric("bogus@@3")
