"""The single-query paths give the results of the batch paths: SPLADE's encode_query, the direct Lucene search,
the sentence embedder's one-query path; inference-free queries are IDF weights read from the index."""

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest

from anserini_bridge.index import build_index
from anserini_bridge.search import ImpactSearcher
from encoders.inference_free import InferenceFreeEncoder
from encoders.pipeline import encode_to_dir
from encoders.splade import SpladeEncoder
from lsr import InputError, SparseBatch
from lsr.cli import main
from lsr.evaluate import evaluate
from lsr.io import read_corpus, read_qrels, read_queries, read_run
from tests.reference import splade_textbook as textbook


@pytest.fixture(scope="module")
def small(cranfield, splade_tiny, tmp_path_factory):
    """The first 80 Cranfield documents in an impact index, and 10 queries."""
    root = tmp_path_factory.mktemp("small-query")
    docs = read_corpus(cranfield / "corpus.jsonl")[:80]
    encode_to_dir(splade_tiny, docs, root / "vec")
    build_index(root / "vec", root / "idx", progress=False)
    queries = read_queries(cranfield / "queries.jsonl")[:10]
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": q.id, "text": q.text}) + "\n" for q in queries))
    return SimpleNamespace(root=root, idx=root / "idx", queries=queries)


# ------------------------------------------------------------ encoding
def test_encode_query_is_the_textbook_pooling_and_the_batch_of_one(tiny_bert):
    model, tok = tiny_bert
    enc = SpladeEncoder("tiny-random-bert", hf_model=model, tokenizer=tok, device="cpu", max_length=40)
    texts = ["supersonic wing drag", "naïve 東京 boundary layer 😀", "lift " * 80]
    want = textbook(enc, texts)
    for i, t in enumerate(texts):
        one = enc.encode_query(t, f"q{i}")
        assert one.ids == (f"q{i}",) and len(one) == 1
        np.testing.assert_allclose(one.to_scipy().toarray()[0], want[i], atol=1e-5)
        same = enc.encode_queries([t], ids=[f"q{i}"])  # a batch of one takes the same path
        assert same.ids == one.ids and same.to_dict(0) == one.to_dict(0)
    assert enc.encode_query("lift " * 80).nnz_total > 0 and enc.last_stats.truncated == 1
    empty = enc.encode_query("   ")
    assert len(empty) == 1 and empty.nnz_total == 0 and enc.last_stats.empty == 1
    with pytest.raises(InputError, match="expected a text"):
        enc.encode_query(["a list"])
    with pytest.raises(InputError, match="query_threads"):
        SpladeEncoder("tiny-random-bert", hf_model=model, tokenizer=tok, device="cpu", query_threads=0)


def test_encode_query_restores_torch_threads(tiny_bert):
    import torch

    model, tok = tiny_bert
    before = torch.get_num_threads()
    enc = SpladeEncoder("tiny-random-bert", hf_model=model, tokenizer=tok, device="cpu", query_threads=1)
    enc.encode_query("wing")
    assert torch.get_num_threads() == before


def test_bounded_projection_gives_the_full_projections_weights(tiny_bert, splade_tiny, cranfield):
    """The bfloat16 bound only rules word pieces out; the weights are the float32 projection's, bit for bit."""
    model, tok = tiny_bert
    texts = ["supersonic wing drag", "naïve 東京 boundary layer 😀", "lift " * 80, "x"]
    pairs = [(SpladeEncoder("tiny-random-bert", hf_model=model, tokenizer=tok, device="cpu", query_projection=mode)
              for mode in ("full", "bounded"))]
    queries = [q.text for q in read_queries(cranfield / "queries.jsonl")]
    pairs.append((SpladeEncoder("splade-tiny", hf_model=splade_tiny.model, tokenizer=splade_tiny.tokenizer,
                                device="cpu", query_projection="full"),
                  SpladeEncoder("splade-tiny", hf_model=splade_tiny.model, tokenizer=splade_tiny.tokenizer,
                                device="cpu", query_projection="bounded")))
    for (full, bounded), inputs in zip(pairs, (texts, queries)):
        assert bounded._bounded_queries and not full._bounded_queries
        for t in inputs:
            a, b = full.encode_query(t), bounded.encode_query(t)
            assert a.nnz_total > 0
            np.testing.assert_array_equal(a.indices, b.indices)
            np.testing.assert_array_equal(a.values, b.values)
    with pytest.raises(InputError, match="query_projection"):
        SpladeEncoder("tiny-random-bert", hf_model=model, tokenizer=tok, device="cpu", query_projection="bf16")


def test_bounded_max_never_misses_a_positive_logit():
    """Logits placed within a hair of zero on both sides (bias = minus the true max, nudged): every positive max
    is found with its float32 value, and nothing the bound ruled out was positive. After an in-place update of
    the weights (training) the bfloat16 copy follows."""
    import torch

    from encoders.pooled_decoder import PooledDecoder

    torch.manual_seed(0)
    holder = torch.nn.Module()
    holder.decoder = torch.nn.Linear(48, 6000)
    holder.get_output_embeddings = lambda: holder.decoder
    pooled = PooledDecoder(holder)
    with torch.inference_mode():
        for scale, nudge in ((1.0, 1e-3), (30.0, 1e-2), (0.01, 1e-7)):
            holder.decoder.weight.normal_(0, scale)
            hidden = torch.randn(9, 48) * 40
            true_max = (hidden @ holder.decoder.weight.t()).amax(dim=0)
            holder.decoder.bias.copy_(-true_max + (torch.rand(6000) * 2 - 1) * nudge * true_max.abs())
            full = torch.addmm(holder.decoder.bias, hidden, holder.decoder.weight.t()).amax(dim=0)
            got = pooled.bounded_max(hidden)
            positive = full > 0
            assert 1000 < int(positive.sum()) < 5000
            assert torch.equal(got[positive], full[positive])
            assert bool((got[~positive] <= 0).all())
        assert pooled.bounded_max(torch.full((2, 48), float("nan"))) is None


# ------------------------------------------------------------- search
def test_direct_search_and_anserinis_search_agree(small, splade_tiny):
    qvecs = splade_tiny.encode_queries([q.text for q in small.queries], ids=[q.id for q in small.queries])
    with ImpactSearcher(small.idx) as s:
        assert s._direct_search() is not None
        for k in (1, 10, 79, 80, 1000):
            direct = s.batch_search(qvecs, k=k)
            one = [s.search(qvecs.select([i]), k=k) for i in range(len(qvecs))]
            saved, s._direct = s._direct, False
            anserini = s.batch_search(qvecs, k=k, threads=2)
            s._direct = saved
            assert direct == anserini, k
            assert one == [direct[q] for q in qvecs.ids], k
        assert len(direct[small.queries[0].id]) == 80  # k beyond the index: every matching document
        assert s.document_frequencies(["wing", "the", "zzzznotatoken"]) == [
            sum("wing" in v for v in _doc_vectors(small)), sum("the" in v for v in _doc_vectors(small)), 0]


def _doc_vectors(small):
    from lsr.vectors import VectorStore

    store = VectorStore(small.idx / "docvectors")
    return [store.vector(d) for d in store._load()]


# ------------------------------------------------------- inference-free
def test_inference_free_queries_are_idf_weights_from_the_index(small):
    docs = _doc_vectors(small)
    n = len(docs)
    with ImpactSearcher(small.idx) as s:
        enc = InferenceFreeEncoder("splade-tiny", doc_freqs=s.document_frequencies, num_docs=s.num_docs)
        s.check_encoder(enc.name, enc.vocab.fingerprint)  # the model's vocabulary, from its tokenizer alone
        text = "the wing wing of a supersonic aircraft zzyzx"
        q = enc.encode_query(text, "q")
        pieces = enc.tokenizer(text)["input_ids"]
        want = {}
        for i in set(pieces) - set(enc.vocab.special_ids):
            tok = enc.vocab.tokens[i]
            df = sum(tok in v for v in docs)
            if df:
                want[tok] = math.log(1 + (n - df + 0.5) / (df + 0.5))
        got = q.to_dict(0)
        assert set(got) == set(want) and "wing" in got and "[CLS]" not in got
        assert all(got[t] == pytest.approx(w, rel=1e-6) for t, w in want.items())
        batch = enc.encode_queries([text, ""], ids=["a", "b"])
        assert batch.ids == ("a", "b") and batch.to_dict(0) == got and batch.to_dict(1) == {}
        hits = s.search(q, k=5)
    assert hits and hits[0].score > 0


def test_search_command_inference_free_mode(small, capsys):
    out = small.root / "free.trec"
    assert main(["search", "--index", str(small.idx), "--model", "splade-tiny", "--queries",
                 str(small.root / "queries.jsonl"), "--output", str(out), "--query-mode", "inference-free",
                 "--k", "20"]) == 0
    run = read_run(out)
    assert set(run) == {q.id for q in small.queries} and all(0 < len(h) <= 20 for h in run.values())
    capsys.readouterr()
    assert main(["search", "--index", str(small.idx), "--model", "splade-tiny", "--query-vectors", str(out),
                 "--output", str(small.root / "x.trec"), "--query-mode", "inference-free"]) == 2
    err = capsys.readouterr().err
    assert "--query-mode inference-free encodes query texts" in err and len(err.strip().splitlines()) == 1


# ---------------------------------------------------------------- dense
def test_sentence_embedder_single_query_equals_its_batch_path():
    from encoders.dense import SentenceEmbedder

    emb = SentenceEmbedder("minilm", device="cpu")
    texts = ["supersonic wing drag", "what similarity laws must be obeyed when constructing aeroelastic models"]
    one = np.concatenate([emb.encode_queries([t]) for t in texts])
    batch = emb.encode_queries(texts)
    assert one.shape == (2, emb.dim) and one.dtype == np.float32
    np.testing.assert_allclose(one, batch, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(one, axis=1), 1.0, atol=1e-5)


# ------------------------------------------------------------ Cranfield
@pytest.fixture(scope="module")
def cran(cranfield, splade_tiny, tmp_path_factory):
    root = tmp_path_factory.mktemp("cran-query")
    encode_to_dir(splade_tiny, read_corpus(cranfield / "corpus.jsonl"), root / "vec")
    build_index(root / "vec", root / "idx", progress=False)
    return SimpleNamespace(idx=root / "idx", queries=read_queries(cranfield / "queries.jsonl"),
                           qrels=read_qrels(cranfield / "qrels" / "test.tsv"))


@pytest.mark.slow
def test_fast_single_query_path_equals_batch_path_on_cranfield(cran, splade_tiny):
    """encode_query + search against encode_queries + batch_search (k = 1000) on all 225 queries.

    The search is exact: the same integer query gives the same docids and scores on both paths. The float
    weights agree to float32 rounding; a matrix product's sums round differently for different batch shapes,
    which can move an integer impact by one unit in a rare query (README: "What is exact").
    """
    texts, qids = [q.text for q in cran.queries], [q.id for q in cran.queries]
    batch = splade_tiny.encode_queries(texts, ids=qids)
    with ImpactSearcher(cran.idx) as s:
        batch_run = s.batch_search(batch, k=1000, threads=2)
        single = [splade_tiny.encode_query(t, q) for t, q in zip(texts, qids)]
        single_run = {q: s.search(v, k=1000) for q, v in zip(qids, single)}
        batch_ints = s.quantized_queries(batch)
        single_ints = [s.quantized_queries(v)[0] for v in single]
        # the search itself, on the very same integer queries
        assert {q: s.search(i, k=1000) for q, i in zip(qids, single_ints)} == single_run
        saved, s._direct = s._direct, False
        assert {q: s.search(i, k=1000) for q, i in zip(qids, single_ints)} == single_run
        s._direct = saved
    same_vector = 0
    for i, q in enumerate(qids):
        a, b = batch.to_dict(i), single[i].to_dict(0)
        assert set(a) == set(b) and max(abs(a[t] - b[t]) for t in a) < 1e-4
        if batch_ints[i] == single_ints[i]:
            same_vector += 1
            assert single_run[q] == batch_run[q], q  # same docids, scores and ranks
        else:
            diff = {t: (batch_ints[i][t], single_ints[i].get(t)) for t in batch_ints[i]
                    if batch_ints[i][t] != single_ints[i].get(t)}
            assert all(w2 is not None and abs(w1 - w2) == 1 for w1, w2 in diff.values()), diff
    assert same_vector >= len(qids) - 3
    qual = evaluate(single_run, cran.qrels, ["ndcg@10"])["ndcg@10"]
    assert qual == pytest.approx(evaluate(batch_run, cran.qrels, ["ndcg@10"])["ndcg@10"], abs=0.002)


@pytest.mark.slow
def test_inference_free_quality_next_to_the_model_on_cranfield(cran, splade_tiny):
    texts, qids = [q.text for q in cran.queries], [q.id for q in cran.queries]
    with ImpactSearcher(cran.idx) as s:
        free = InferenceFreeEncoder("splade-tiny", doc_freqs=s.document_frequencies, num_docs=s.num_docs)
        free_run = s.batch_search(free.encode_queries(texts, ids=qids), k=1000)
        model_run = s.batch_search(splade_tiny.encode_queries(texts, ids=qids), k=1000)
    free_q = evaluate(free_run, cran.qrels, ["ndcg@10"])["ndcg@10"]
    model_q = evaluate(model_run, cran.qrels, ["ndcg@10"])["ndcg@10"]
    print(f"\nnDCG@10 inference-free {free_q:.4f}, SPLADE-tiny queries {model_q:.4f}")
    assert free_q >= 0.30 and model_q >= 0.35


def test_sparse_batch_queries_still_refuse_other_vocabularies(small):
    from lsr import Vocabulary
    from lsr.errors import IndexMismatchError

    other = SparseBatch.from_dicts([{"wing": 1.0}], Vocabulary(("wing", "lift")), ["q"])
    with ImpactSearcher(small.idx) as s, pytest.raises(IndexMismatchError):
        s.search(other, k=5)
