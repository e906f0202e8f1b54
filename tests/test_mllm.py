"""E5-V style MLLM embeddings, checked on a tiny randomly initialised LLaVA model built from a config."""

import numpy as np
import pytest
import torch

from encoders.mllm import CHAT_TEMPLATES, PROMPTS, E5VEmbedder, build_prompt
from lsr.errors import InputError
from lsr.inputs import Input

@pytest.fixture(scope="module")
def tiny_llava():
    """LLaVA with a 1-layer CLIP vision tower (16 px, 8 px patches) and a 2-layer Llama, random weights;
    the processor uses the offline MiniLM word-piece tokenizer plus an ``<image>`` token."""
    from transformers import (AutoTokenizer, CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor)

    from encoders.registry import resolve
    import encoders.dense  # noqa: F401  (registers the minilm alias)

    tok = AutoTokenizer.from_pretrained(resolve("minilm").source)
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    image_id = tok.convert_tokens_to_ids("<image>")
    vision = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                              image_size=16, patch_size=8, projection_dim=16)
    text = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                       pad_token_id=tok.pad_token_id)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=image_id, image_seq_length=4,
                         vision_feature_layer=-1)
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config).eval()
    image_processor = CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tok, patch_size=8,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1,
                               image_token="<image>")
    return model, processor


def images(n, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=(20 + 3 * i, 24, 3), dtype=np.uint8) for i in range(n)]


def inputs():
    a, b = images(2)
    return [Input(text="supersonic flow past a thin wing at high mach number"), Input(image=a),
            Input(text="boundary layer", image=b), "heat transfer",
            Input(text="shock waves", instruction="Summary the above caption in one word to help find a matching image:")]


def embedder(tiny_llava, **kw):
    model, processor = tiny_llava
    return E5VEmbedder(hf_model=model, processor=processor, device="cpu", dtype="float32", name="tiny-llava", **kw)


# ----------------------------------------------------------------- prompts
def test_prompts_per_modality_come_from_the_table():
    assert build_prompt(Input(text="a wing")) == "a wing\nSummary above sentence in one word:"
    assert build_prompt(Input(image="x.png")) == "<image>\nSummary above image in one word:"
    assert build_prompt(Input(text="a wing", image="x.png")) == \
        "<image>\na wing\nDescribe the above image and text in one word:"
    assert build_prompt(Input(text="a wing"), task="caption_to_image") == \
        "a wing\nSummary the above caption in one word to help find a matching image:"
    # the input's own instruction replaces the table's
    assert build_prompt(Input(text="a wing", instruction="Find the paper in one word:")) == \
        "a wing\nFind the paper in one word:"
    # braces in user text are kept verbatim; the chat template wraps the whole prompt
    wrapped = build_prompt(Input(text="{x} {prompt}"), chat_template=CHAT_TEMPLATES["llama3"])
    assert wrapped.startswith("<|start_header_id|>user<|end_header_id|>\n\n{x} {prompt}\nSummary above sentence")
    assert wrapped.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n \n")
    with pytest.raises(InputError, match="prompt task 'nope'"):
        build_prompt(Input(text="a"), task="nope")
    with pytest.raises(InputError, match="image token"):
        build_prompt(Input(text="look at <image> here"))
    assert all(set(m) == {"text", "image", "image,text"} for m in PROMPTS.values())


def test_embedder_uses_its_prompts_and_custom_tables(tiny_llava):
    table = {"qa": {"text": "One word for the question:", "image": "One word:", "image,text": "One word:"}}
    e = embedder(tiny_llava, prompts=table, task="qa", chat_template="[{prompt}]")
    assert e.prompt("lift") == "[lift\nOne word for the question:]"
    with pytest.raises(InputError, match="chat_template"):
        embedder(tiny_llava, chat_template="no placeholder")
    with pytest.raises(InputError, match="prompt task"):
        embedder(tiny_llava, task="default", prompts=table)


# -------------------------------------------------------------- embeddings
def reference_last_token(tiny_llava, prompt, image=None):
    """The final hidden state of the last token, from one unpadded forward of the plain model."""
    from lsr.inputs import load_image

    model, processor = tiny_llava
    kw = {"text": [prompt], "return_tensors": "pt"}
    if image is not None:
        kw["images"] = [load_image(image)]
    batch = processor(**kw)
    batch.pop("token_type_ids", None)
    assert int(batch["attention_mask"].sum()) == batch["input_ids"].shape[1]  # no padding at all
    with torch.no_grad():
        out = model(**batch, output_hidden_states=True)
    return out.hidden_states[-1][0, -1].float().numpy()


def test_embedding_is_the_last_tokens_final_hidden_state(tiny_llava):
    e = embedder(tiny_llava)
    for x in inputs():
        x = x if isinstance(x, Input) else Input(text=x)
        got = e.encode([x], normalize=False)[0]
        want = reference_last_token(tiny_llava, e.prompt(x), x.image)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        normed = e.encode([x])[0]
        np.testing.assert_allclose(normed, want / np.linalg.norm(want), rtol=1e-5, atol=1e-6)
    assert e.dim == 32


@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_batches_equal_single_unpadded_runs(tiny_llava, side):
    e = embedder(tiny_llava, padding_side=side, batch_size=8)
    xs = inputs()
    batched = e.encode(xs, normalize=False)
    singles = np.stack([e.encode([x], normalize=False)[0] for x in xs])
    np.testing.assert_allclose(batched, singles, rtol=1e-4, atol=1e-5)
    # the batch really was padded: the texts differ in length
    lengths = {len(e.tokenizer(e.prompt(x))["input_ids"]) for x in xs if getattr(x, "image", None) is None}
    assert len(lengths) > 1


def test_reading_the_last_position_under_right_padding_would_be_wrong(tiny_llava):
    """Guards the test above: the naive ``hidden[:, -1]`` differs from the correct embedding."""
    e = embedder(tiny_llava, padding_side="right")
    model, processor = tiny_llava
    texts = [e.prompt("a long text about compressible flow over a swept wing"), e.prompt("short")]
    processor.tokenizer.padding_side = "right"
    batch = processor(text=texts, return_tensors="pt", padding="longest")
    batch.pop("token_type_ids", None)
    with torch.no_grad():
        naive = model(**batch, output_hidden_states=True).hidden_states[-1][1, -1].numpy()
    correct = e.encode(["short"], normalize=False)[0]
    assert not np.allclose(naive, correct, atol=1e-3)


def test_queries_and_documents_use_their_tasks(tiny_llava):
    e = embedder(tiny_llava, task="default", query_task="caption_to_image")
    q = e.encode_queries(["a wing"])[0]
    d = e.encode_documents(["a wing"])[0]
    assert not np.allclose(q, d)
    np.testing.assert_allclose(q, e.encode(["a wing"], task="caption_to_image")[0], atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(e.encode_documents(inputs()), axis=1), 1.0, atol=1e-5)


def test_saved_model_loads_through_the_auto_classes_and_fills_a_store(tiny_llava, tmp_path):
    from encoders.dense import embedder_for_store, load_embedder
    from lsr.embstore import EmbeddingStore, build_store
    from lsr.errors import IndexMismatchError

    model, processor = tiny_llava
    model.save_pretrained(tmp_path / "llava")
    processor.save_pretrained(tmp_path / "llava")
    loaded = load_embedder(str(tmp_path / "llava"), device="cpu")
    assert isinstance(loaded, E5VEmbedder) and loaded.dim == 32
    direct = embedder(tiny_llava)
    xs = inputs()
    np.testing.assert_allclose(loaded.encode_documents(xs), direct.encode_documents(xs), atol=1e-5)

    docs = xs[:3]
    store = build_store(loaded, docs, ["d1", "d2", "d3"], tmp_path / "store", progress=False)
    store.check_encoder(loaded)
    # the store records the prompts; the query encoder made for it uses the same ones
    table = {"papers": {"text": "Summary the above paper in one word:", "image": "One word:", "image,text": "One:"},
             "questions": {"text": "Summary the above question in one word:", "image": "-", "image,text": "-"}}
    tuned = load_embedder(str(tmp_path / "llava"), device="cpu", prompts=table, task="papers",
                          query_task="questions", chat_template="llama3")
    tuned_store = build_store(tuned, docs, ["d1", "d2", "d3"], tmp_path / "tuned", progress=False)
    again = embedder_for_store(EmbeddingStore(tmp_path / "tuned"), device="cpu")
    assert again.prompt("lift", task=again.query_task) == tuned.prompt("lift", task="questions")
    assert "<|start_header_id|>user" in again.prompt("lift")
    np.testing.assert_allclose(again.encode_queries(["lift"]), tuned.encode_queries(["lift"]), atol=1e-6)
    np.testing.assert_allclose(tuned_store.lookup(["d1"])[0], again.encode_documents(docs[:1]), atol=1e-5)
    with pytest.raises(IndexMismatchError, match="was built with model"):
        store.check_encoder(direct)  # another name and no shared source
    reopened = EmbeddingStore(tmp_path / "store")
    q = loaded.encode_queries(["boundary layer"])
    scores = reopened.score(q[0], ["d3", "d1"])
    np.testing.assert_allclose([scores["d3"], scores["d1"]], loaded.encode_documents([docs[2], docs[0]]) @ q[0],
                               atol=1e-5)
