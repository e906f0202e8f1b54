import numpy as np
import pytest
import torch

from encoders.registry import resolve
from encoders.splade import SpladeEncoder
from lsr import InputError
from lsr.pooling import splade_pool
from tests.reference import splade_textbook as textbook

TEXTS = [
    "Supersonic flow over a swept wing raises the drag.",
    "heat",
    "The boundary layer on a flat plate becomes turbulent as the Reynolds number grows with distance.",
    "   ",
    "What similarity laws must be obeyed when constructing aeroelastic models of heated high speed aircraft?",
]


@pytest.fixture(scope="module")
def tiny(tiny_bert):
    model, tok = tiny_bert
    return SpladeEncoder("tiny-random-bert", hf_model=model, tokenizer=tok, device="cpu", batch_size=2, max_length=32)


def test_batched_sorted_encoding_equals_textbook_pooling(tiny):
    got = tiny.encode_documents(TEXTS, ids=[f"d{i}" for i in range(len(TEXTS))])
    assert got.ids == tuple(f"d{i}" for i in range(len(TEXTS)))
    np.testing.assert_allclose(got.to_scipy().toarray(), textbook(tiny, TEXTS), atol=1e-5)


def test_pool_then_saturate_equals_saturate_then_pool():
    torch.manual_seed(1)
    logits = torch.randn(3, 7, 50)
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3, [1] * 2 + [0] * 5])
    textbook = torch.log1p(torch.relu(logits)).masked_fill(~mask.bool()[..., None], 0).amax(1)
    torch.testing.assert_close(splade_pool(logits, mask), textbook)


def test_special_tokens_never_appear(tiny):
    got = tiny.encode_queries(TEXTS)
    special = np.array(sorted(tiny.vocab.special_ids))
    assert not np.isin(got.indices, special).any()
    assert {"[CLS]", "[SEP]", "[PAD]"} <= {tiny.vocab.tokens[i] for i in special}


def test_empty_text_gives_empty_vector_and_is_counted(tiny):
    got = tiny.encode_documents(TEXTS)
    assert got.nnz[3] == 0 and (got.nnz[[0, 1, 2, 4]] > 0).all()
    assert tiny.last_stats.empty == 1 and tiny.last_stats.inputs == len(TEXTS)


def test_truncation_is_counted(tiny):
    long = " ".join(["aerodynamics"] * 500)
    tiny.encode_documents([long, "short text"])
    assert tiny.last_stats.truncated == 1
    # a truncated text encodes exactly like its first max_length word pieces
    ids = tiny.tokenizer([long], truncation=True, max_length=tiny.max_length)["input_ids"][0]
    assert len(ids) == tiny.max_length


def test_hundred_thousand_word_document_is_truncated_not_dropped(tiny):
    got = tiny.encode_documents(["lift " * 100_000])
    assert len(got) == 1 and got.nnz[0] > 0 and tiny.last_stats.truncated == 1


def test_bad_arguments(tiny):
    with pytest.raises(InputError, match="single string"):
        tiny.encode_documents("not a list")
    with pytest.raises(InputError, match="expected str"):
        tiny.encode_documents(["ok", 3])
    with pytest.raises(InputError, match="ids for"):
        tiny.encode_documents(["a", "b"], ids=["x"])


def test_an_input_is_encoded_as_its_text_with_the_instruction_in_front(tiny):
    from lsr.inputs import Input

    instruction = "Retrieve a passage that answers this question."
    text = "How does the drag of a swept wing change at supersonic speed?"
    item = Input(text=text, instruction=instruction)
    want = tiny.encode_documents([f"{instruction} {text}", "heat"]).to_scipy().toarray()
    # texts and Inputs mix in one batch; the batch, the chunked iterator and the single-query path agree
    got = tiny.encode_documents([item, Input(text="heat")]).to_scipy().toarray()
    assert np.array_equal(got, want)
    # (a batch of one pads differently from a batch of two: equal up to float32 rounding)
    chunks = [c.to_scipy().toarray() for c in tiny.iter_encode([item, text], chunk_size=1)]
    np.testing.assert_allclose(chunks[0], want[:1], atol=1e-5)
    assert np.abs(chunks[1] - want[:1]).max() > 0.01  # the instruction changes the vector
    one = tiny.encode_query(item, "q")
    assert one.ids == ("q",)
    np.testing.assert_allclose(one.to_scipy().toarray(), want[:1], atol=1e-5)
    assert tiny.encode_queries([item]).to_dict(0) == tiny.encode_query(f"{instruction} {text}").to_dict(0)
    assert tiny.encode_query(Input(text="heat", instruction="  ")).to_dict(0) == tiny.encode_query("heat").to_dict(0)


def test_an_input_with_an_image_is_refused_naming_it(tiny):
    from lsr.inputs import Input

    items = ["heat", Input(text="a cat on a mat", image="img/cat.jpg")]
    message = (r"input #1 has an image \(img/cat\.jpg\), but 'tiny-random-bert' is a text-only SPLADE model; use a "
               r"STAIR model for images, or drop the image from the input")
    for encode in (tiny.encode_documents, tiny.encode_queries, lambda xs: list(tiny.iter_encode(xs))):
        with pytest.raises(InputError, match=message):
            encode(items)
    with pytest.raises(InputError, match=r"input #0 has an image, but 'tiny-random-bert' is a text-only SPLADE"):
        tiny.encode_query(Input(image=np.zeros((8, 8, 3), np.uint8)))
    with pytest.raises(InputError, match="got a single Input"):
        tiny.encode_queries(Input(text="heat"))
    with pytest.raises(InputError, match=r"text #1 is int, expected str or lsr.inputs.Input"):
        tiny.encode_queries(["heat", 3])


def test_registry():
    loc = resolve("splade-tiny")
    assert loc.kind == "splade" and loc.is_local
    assert resolve("hf:naver/splade-cocondenser-ensembledistil").source == "naver/splade-cocondenser-ensembledistil"
    with pytest.raises(InputError, match="neither a known alias"):
        resolve("splade")  # no substring guessing


def test_real_splade_tiny_activates_readable_terms(splade_tiny):
    vec = splade_tiny.encode_documents(["aerodynamic heating of a supersonic wing"]).to_dict(0)
    top = sorted(vec, key=vec.get, reverse=True)[:8]
    assert {"aerodynamic", "wing"} <= set(top)
    assert splade_tiny.vocab.fingerprint == "sha256:0f052197aac305fe"


def test_bfloat16_matches_float32_ranking(tiny_bert):
    model, tok = tiny_bert
    import copy

    f32 = SpladeEncoder("t", hf_model=copy.deepcopy(model), tokenizer=tok, device="cpu", dtype="float32")
    bf16 = SpladeEncoder("t", hf_model=copy.deepcopy(model), tokenizer=tok, device="cpu", dtype="bfloat16")
    a = f32.encode_documents(TEXTS[:3]).to_scipy().toarray()
    b = bf16.encode_documents(TEXTS[:3]).to_scipy().toarray()
    assert bf16.model.dtype == torch.bfloat16
    np.testing.assert_allclose(a, b, atol=0.05)


def _varied_texts(n):
    rng = np.random.default_rng(3)
    words = ["wing", "lift", "drag", "supersonic", "boundary", "layer", "naïve", "東京", "x"]
    return [" ".join(rng.choice(words, int(rng.integers(1, 28)))) for _ in range(n)]


@pytest.mark.parametrize("multiple", [1, 5, 16])
def test_padding_to_a_multiple_does_not_change_vectors(tiny_bert, multiple):
    model, tok = tiny_bert
    texts = _varied_texts(60)
    plain = SpladeEncoder("tiny", hf_model=model, tokenizer=tok, device="cpu", batch_size=4, max_length=32)
    padded = SpladeEncoder("tiny", hf_model=model, tokenizer=tok, device="cpu", batch_size=4, max_length=32,
                           pad_multiple=multiple)
    want = textbook(plain, texts)
    np.testing.assert_allclose(padded.encode_documents(texts).to_scipy().toarray(), want, atol=1e-5)
    np.testing.assert_allclose(plain.encode_documents(texts).to_scipy().toarray(), want, atol=1e-5)


def test_cuda_graphs_asked_for_on_the_cpu_say_why_they_are_off(tiny_bert):
    model, tok = tiny_bert
    enc = SpladeEncoder("tiny", hf_model=model, tokenizer=tok, device="cpu", batch_size=4, max_length=32,
                        cuda_graphs=True)
    status = enc.cuda_graphs_status
    assert status["requested"] and not status["active"] and "not on a CUDA device" in status["reason"]
    texts = _varied_texts(20)
    np.testing.assert_allclose(enc.encode_documents(texts).to_scipy().toarray(), textbook(enc, texts), atol=1e-5)
    with pytest.raises(InputError, match="pad_multiple"):
        SpladeEncoder("tiny", hf_model=model, tokenizer=tok, device="cpu", pad_multiple=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graphs_give_the_eager_vectors(tiny_bert):
    model, tok = tiny_bert
    texts = _varied_texts(700)
    graphs = SpladeEncoder("tiny", hf_model=model, tokenizer=tok, device="cuda", dtype="float32", batch_size=16,
                           max_length=64, cuda_graphs=True)
    got = graphs.encode_documents(texts).to_scipy().toarray()
    status = graphs.cuda_graphs_status
    assert status["active"], status["reason"]
    assert 1 <= status["graphs"] <= 4 and status["replays"] >= 30
    assert all(w % 16 == 0 for w in status["padded_lengths"])
    eager = SpladeEncoder("tiny", hf_model=model, tokenizer=tok, device="cuda", dtype="float32", batch_size=16,
                          max_length=64)
    np.testing.assert_allclose(got, eager.encode_documents(texts).to_scipy().toarray(), atol=1e-4)
    np.testing.assert_allclose(got, textbook(eager, texts), atol=1e-4)


def test_default_batch_size_follows_the_device(tiny_bert):
    from encoders.base import default_batch_size

    model, tok = tiny_bert
    assert SpladeEncoder("tiny", hf_model=model, tokenizer=tok, device="cpu").batch_size == 32
    assert SpladeEncoder("tiny", hf_model=model, tokenizer=tok, device="cpu", batch_size=5).batch_size == 5
    assert default_batch_size(torch.device("cuda")) == 128 and default_batch_size(torch.device("cpu")) == 32
