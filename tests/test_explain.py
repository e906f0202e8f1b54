"""Token decoding, match explanations against a real Lucene index, and the inspect/explain commands."""

import json
from html import escape

import numpy as np
import pytest

from anserini_bridge.explain import explain, lucene_score_of
from anserini_bridge.index import build_index
from anserini_bridge.search import ImpactSearcher
from encoders.pipeline import encode_to_dir
from lsr import InputError, SparseBatch, Vocabulary
from lsr.cli import main
from lsr.explain import Contribution, TokenWeight, contributions, decode, explain_vectors, inspect_input
from lsr.inputs import Input
from lsr.io import read_corpus, read_queries

VOCAB = Vocabulary.from_tokens(["[PAD]", "[CLS]", "[SEP]", "plane", "wing", "##ing", "lift", "flow"],
                               special_tokens=["[PAD]", "[CLS]", "[SEP]"])
JSON_KEYS = {"docid", "lucene_score", "sum_of_contributions", "contributions"}
CONTRIBUTION_KEYS = {"token", "query_weight", "doc_weight", "contribution"}


# ------------------------------------------------------------------ decode
def test_decode_sparse_batch_orders_by_weight_and_hides_special_tokens():
    b = SparseBatch.from_dicts([{"[CLS]": 9.0, "wing": 1.5, "##ing": 2.0, "lift": 1.5, "flow": 0.2}], VOCAB)
    got = decode(b, top_k=3)
    assert got == [("##ing", 2.0), ("lift", 1.5), ("wing", 1.5)]  # ties ordered by token
    assert all(isinstance(t, TokenWeight) for t in got)
    assert [t.display for t in got] == ["\u2026ing", "lift", "wing"]
    assert [t.token for t in decode(b, None)] == ["##ing", "lift", "wing", "flow"]
    assert decode(b, 0) == []


def test_decode_dict_and_dense_array():
    d = {"[SEP]": 5, "<s>": 3, "plane": 2, "flow": 7, "wing": 0}
    assert decode(d, 10) == [("flow", 7.0), ("plane", 2.0)]  # special spellings and zeros are skipped
    dense = np.zeros(len(VOCAB), np.float32)
    dense[[1, 3, 6]] = [4.0, 0.5, 1.0]  # id 1 is [CLS]
    assert decode(dense, 5, vocab=VOCAB) == [("lift", 1.0), ("plane", 0.5)]
    with pytest.raises(InputError, match="vocab"):
        decode(dense, 5)
    with pytest.raises(InputError, match="top_k"):
        decode(d, -1)
    with pytest.raises(InputError, match="outside the batch"):
        decode(SparseBatch.from_dicts([{"flow": 1.0}], VOCAB), 3, row=2)


def test_splade_tiny_inspection_is_readable(splade_tiny):
    tokens = inspect_input(splade_tiny, "supersonic flow over a swept wing", top_k=10)
    assert len(tokens) == 10
    names = [t.token for t in tokens]
    assert "wing" in names and "flow" in names
    special = {splade_tiny.vocab.tokens[i] for i in splade_tiny.vocab.special_ids}
    assert not special & set(names)
    weights = [t.weight for t in tokens]
    assert weights == sorted(weights, reverse=True) and weights[-1] > 0
    # a word piece continuation is displayed as such
    pieces = inspect_input(splade_tiny, "supersonic flow over a swept wing", top_k=None)
    assert len(pieces) > 10
    cont = [t for t in pieces if t.token.startswith("##")]
    assert cont and all(t.display == "\u2026" + t.token[2:] for t in cont)
    with pytest.raises(InputError, match="text-only SPLADE"):
        inspect_input(splade_tiny, Input(image=np.zeros((8, 8, 3), np.uint8)))
    with pytest.raises(InputError, match="empty"):
        inspect_input(splade_tiny, "   ")


def test_explain_vectors_and_json_form():
    e = explain_vectors({"wing": 3, "lift": 2, "flow": 1}, {"lift": 10, "wing": 5, "plane": 7}, "d1",
                        lucene_score=35, scale=10.0, rank=1)
    assert e.contributions == [Contribution("lift", 2, 10), Contribution("wing", 3, 5)]
    assert e.contributions == contributions(e.query, e.document)
    assert e.sum_of_contributions == 35 and e.matches_lucene and e.score == pytest.approx(0.35)
    d = e.to_dict()
    assert JSON_KEYS <= set(d) and d["lucene_score"] == d["sum_of_contributions"] == 35
    assert d["contributions"][0]["token"] == "lift" and d["contributions"][0]["contribution"] == 20
    assert d["contributions"][0]["contribution_float"] == pytest.approx(0.2)
    assert [t.token for t in e.query_only()] == ["flow"]
    assert "sum of contributions 35, Lucene score 35 (equal" in e.format_text()
    # --top applies to the JSON form too: the largest N, with the rest counted, the sum still complete
    assert d["shared_tokens"] == 2 and "omitted" not in d
    top1 = e.to_dict(1)
    assert [c["token"] for c in top1["contributions"]] == ["lift"]
    assert top1["shared_tokens"] == 2 and top1["omitted"] == {"tokens": 1, "contribution": 15}
    assert top1["sum_of_contributions"] == top1["lucene_score"] == 35


# -------------------------------------------------------- a real Cranfield index
@pytest.fixture(scope="module")
def cranfield_index(cranfield, splade_tiny, tmp_path_factory):
    """All 1,400 Cranfield documents encoded with SPLADE-tiny and indexed with stored vectors."""
    root = tmp_path_factory.mktemp("explain-cranfield")
    encode_to_dir(splade_tiny, read_corpus(cranfield / "corpus.jsonl"), root / "vec")
    build_index(root / "vec", root / "idx", threads=2, progress=False)
    return root


@pytest.fixture(scope="module")
def searcher(cranfield_index):
    with ImpactSearcher(cranfield_index / "idx") as s:
        yield s


@pytest.fixture(scope="module")
def queries(cranfield, splade_tiny):
    records = read_queries(cranfield / "queries.jsonl")[:50]
    return records, splade_tiny.encode_queries([r.text for r in records], ids=[r.id for r in records])


@pytest.mark.slow
def test_contributions_sum_to_lucene_score_for_50_queries_top3(searcher, queries):
    records, batch = queries
    checked = multi_token = 0
    for i in range(len(records)):
        row = batch.select([i])
        hits = searcher.search(row, k=3)
        assert len(hits) == 3
        for hit in hits:
            e = explain(searcher, row, hit.docid)
            assert e.sum_of_contributions == hit.impact_score, (records[i].id, hit.docid)
            assert e.lucene_score == hit.impact_score and e.matches_lucene
            assert e.score == pytest.approx(hit.score)
            tied = [h for h in hits if h.impact_score == hit.impact_score]
            assert e.rank == hit.rank or len(tied) > 1
            # the float views divide the same integers back
            assert sum(c["contribution_float"] for c in e.to_dict()["contributions"]) == pytest.approx(e.score)
            checked += 1
            multi_token += len(e.contributions) > 1
    assert checked == 150 and multi_token > 140


def has_vector(searcher, docid):
    try:
        searcher.doc_vector(docid)
        return True
    except InputError:  # documents with an empty vector are reported by the encoder, not indexed
        return False


@pytest.mark.slow
def test_explain_reaches_documents_outside_the_top_k(searcher, queries):
    records, batch = queries
    row = batch.select([0])
    hits = searcher.search(row, k=1400)
    deep = hits[min(len(hits) - 1, 500)]
    assert deep.rank > 100  # beyond the first search of lucene_score_of
    e = explain(searcher, row, deep.docid)
    assert (e.lucene_score, e.rank, e.sum_of_contributions) == (deep.impact_score, deep.rank, deep.impact_score)
    # a document that shares no token with the query: Lucene does not match it and the sum is 0
    q = {k: int(v) for k, v in searcher.meta.quantization.quantize(row).to_dict(0).items()}
    matched = {h.docid for h in hits}
    unmatched = [d for d in map(str, range(1, 1401)) if d not in matched and has_vector(searcher, d)]
    assert unmatched, "query 1 matches every document; pick another query"
    e = explain(searcher, q, unmatched[0])
    assert (e.lucene_score, e.rank, e.sum_of_contributions, e.contributions) == (0, None, 0, [])
    assert lucene_score_of(searcher, q, hits[0].docid) == (hits[0].impact_score, 1)


@pytest.mark.slow
def test_text_float_and_integer_queries_explain_alike(cranfield_index, searcher, queries, splade_tiny):
    records, batch = queries
    text = records[1].text
    top = searcher.search(batch.select([1]), k=1)[0]
    by_text = explain(cranfield_index / "idx", text, top.docid, encoder=splade_tiny)  # opens its own searcher
    ints = {k: int(v) for k, v in searcher.meta.quantization.quantize(batch.select([1])).to_dict(0).items()}
    by_ints = explain(searcher, ints, top.docid)
    assert by_text.contributions == by_ints.contributions
    assert by_text.lucene_score == by_ints.lucene_score == top.impact_score
    assert by_text.query_text == text and by_text.doc_text  # the stored document text comes along
    assert by_text.document == searcher.doc_vector(top.docid)


@pytest.mark.slow
def test_cli_explain_json_and_html(cranfield_index, searcher, queries, tmp_path, capsys):
    records, batch = queries
    top = searcher.search(batch.select([2]), k=2)[1]
    idx = str(cranfield_index / "idx")
    html = tmp_path / "why.html"
    rc = main(["explain", "--index", idx, "--model", "splade-tiny", "--device", "cpu", "--query", records[2].text,
               "--docid", top.docid, "--json", "--html", str(html)])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert JSON_KEYS <= set(out) and out["docid"] == top.docid
    assert out["lucene_score"] == out["sum_of_contributions"] == top.impact_score
    assert all(isinstance(out[k], int) for k in ("lucene_score", "sum_of_contributions"))
    for c in out["contributions"]:
        assert CONTRIBUTION_KEYS <= set(c)
        assert all(isinstance(c[k], int) for k in ("query_weight", "doc_weight", "contribution"))
        assert c["contribution"] == c["query_weight"] * c["doc_weight"]
    assert sum(c["contribution"] for c in out["contributions"]) == top.impact_score
    page = html.read_text()
    assert f'id="lucene-score">{top.impact_score}<' in page and 'class="chip match"' in page

    # the same through an integer query vector file, as a text table
    qfile = tmp_path / "q.json"
    qfile.write_text(json.dumps({k: int(v) for k, v in searcher.meta.quantization.quantize(
        batch.select([2])).to_dict(0).items()}))
    assert main(["explain", "--index", idx, "--query-vector", str(qfile), "--docid", top.docid, "--top", "3"]) == 0
    text = capsys.readouterr().out
    assert f"sum of contributions {top.impact_score}, Lucene score {top.impact_score} (equal" in text

    # --top with --json lists the largest N contributions, as the text table does
    assert main(["explain", "--index", idx, "--query-vector", str(qfile), "--docid", top.docid, "--top", "2",
                 "--json"]) == 0
    short = json.loads(capsys.readouterr().out)
    assert [c["token"] for c in short["contributions"]] == [c["token"] for c in out["contributions"][:2]]
    assert short["shared_tokens"] == len(out["contributions"]) > 2
    assert short["omitted"] == {"tokens": len(out["contributions"]) - 2,
                                "contribution": sum(c["contribution"] for c in out["contributions"][2:])}
    assert short["sum_of_contributions"] == top.impact_score


# ------------------------------------------------------------------ bad input
@pytest.mark.slow
def test_unknown_docid_is_refused(cranfield_index, searcher, queries, capsys):
    _, batch = queries
    with pytest.raises(InputError, match="document 'no-such-doc' is not in the index"):
        explain(searcher, batch.select([0]), "no-such-doc")
    rc = main(["explain", "--index", str(cranfield_index / "idx"), "--query-vector", "/nonexistent.json",
               "--docid", "no-such-doc"])
    assert rc == 2 and "'no-such-doc' is not in the index" in capsys.readouterr().err


@pytest.mark.slow
def test_empty_queries_are_refused(cranfield_index, searcher, splade_tiny, capsys):
    for query in ("", "   ", {}, SparseBatch.empty(splade_tiny.vocab, 1)):
        with pytest.raises(InputError, match="empty"):
            explain(searcher, query, "1", encoder=splade_tiny)
    tiny = SparseBatch.from_dicts([{"wing": 0.001}], splade_tiny.vocab)  # rounds to 0 impact
    with pytest.raises(InputError, match="empty after quantization"):
        explain(searcher, tiny, "1")
    with pytest.raises(InputError, match="needs the index's encoder"):
        explain(searcher, "wing flutter", "1")
    rc = main(["explain", "--index", str(cranfield_index / "idx"), "--model", "splade-tiny", "--query", " ",
               "--docid", "1"])
    assert rc == 2 and "--query is empty" in capsys.readouterr().err


@pytest.mark.slow
def test_index_without_stored_vectors_says_how_to_rebuild(cranfield_index, tmp_path, capsys):
    bare = tmp_path / "bare"
    build_index(cranfield_index / "vec", bare, threads=2, store_vectors=False, progress=False)
    with pytest.raises(InputError) as err:
        explain(bare, {"wing": 100}, "1")
    msg = str(err.value)
    assert "without stored vectors" in msg and f"lsr index --input {cranfield_index / 'vec'}" in msg
    rc = main(["explain", "--index", str(bare), "--query-vector", "/nonexistent.json", "--docid", "1"])
    assert rc == 2 and "without stored vectors" in capsys.readouterr().err


# ------------------------------------------------------------------ lsr inspect
def test_cli_inspect_text(capsys, tmp_path):
    html = tmp_path / "tokens.html"
    rc = main(["inspect", "--model", "splade-tiny", "--device", "cpu", "--text", "shock waves on a blunt body",
               "--top", "5", "--json", "--html", str(html)])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["tokens"]) == 5 and out["nnz"] >= 5
    assert not any(t["token"].startswith("[") for t in out["tokens"])
    assert [t["weight"] for t in out["tokens"]] == sorted((t["weight"] for t in out["tokens"]), reverse=True)
    page = html.read_text()
    assert all(f'data-token="{escape(t["token"])}"' in page for t in out["tokens"])
    assert main(["inspect", "--model", "splade-tiny", "--device", "cpu", "--text", "shock waves", "--top", "3"]) == 0
    assert "top 3:" in capsys.readouterr().out


def test_cli_inspect_bad_input(capsys, tmp_path):
    assert main(["inspect", "--model", "splade-tiny"]) == 2
    assert "give --text, --image, or both" in capsys.readouterr().err
    assert main(["inspect", "--model", "splade-tiny", "--text", "  "]) == 2
    assert "--text is empty" in capsys.readouterr().err
    assert main(["inspect", "--model", "splade-tiny", "--image", str(tmp_path / "missing.png")]) == 2
    assert "file not found" in capsys.readouterr().err
    # a real image with a text-only model: refused with a message naming the image encoder it needs
    from PIL import Image
    from skimage import data

    path = tmp_path / "astronaut.png"
    Image.fromarray(data.astronaut()).save(path)
    assert main(["inspect", "--model", "splade-tiny", "--device", "cpu", "--image", str(path)]) == 2
    assert "STAIR" in capsys.readouterr().err



@pytest.mark.slow
def test_cli_inspect_image(tmp_path, capsys):
    """An image's tokens come out of a STAIR model (with the picture in the page)."""
    from PIL import Image
    from skimage import data

    path = tmp_path / "astronaut.png"
    Image.fromarray(data.astronaut()).save(path)
    from encoders.stair import StairEncoder

    # a randomly initialised small STAIR model (no image weights are available offline), saved and loaded by path
    StairEncoder.create(image_model="stair-tiny-vit", text_model="splade-tiny", device="cpu").save(tmp_path / "stair")
    html = tmp_path / "image.html"
    rc = main(["inspect", "--model", str(tmp_path / "stair"), "--device", "cpu", "--image", str(path),
               "--text", "an astronaut", "--top", "6", "--json", "--html", str(html)])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["tokens"]) == 6 and out["nnz"] >= 6 and out["image"] == str(path)
    assert not any(t["token"].startswith("[") for t in out["tokens"])
    page = html.read_text()
    assert '<img src="data:image/png;base64,' in page
    assert all(f'data-token="{escape(t["token"])}"' in page for t in out["tokens"])
