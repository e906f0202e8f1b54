"""STAIR encoder: image vectors, fusion, save/load, open_clip checkpoints, bad images, one Lucene index for all."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from lsr import InputError, Quantizer
from lsr.inputs import Input
from lsr.sparse import max_fuse


@pytest.fixture(scope="module")
def stair():
    """Tiny random open_clip ViT + token head, real SPLADE-tiny text side.

    The head's bias is lowered so that a random image activates a few hundred
    tokens rather than most of the vocabulary (as a trained, regularized model does).
    """
    from encoders.stair import StairEncoder

    torch.manual_seed(0)
    enc = StairEncoder.create(image_model="stair-tiny-vit", text_model="splade-tiny", device="cpu")
    with torch.no_grad():
        enc.model.head.decoder.bias.fill_(-1.6)
    return enc


def _image(colour=(200, 30, 30), size=(32, 32), mode="RGB"):
    im = Image.new("RGB", size, (20, 20, 20))
    im.paste(colour, (4, 4, size[0] // 2, size[1] // 2))
    return im.convert(mode) if mode != "RGB" else im


def _dense(batch):
    return batch.to_torch(layout="dense")


def test_many_batches_in_flight_keep_every_image_in_its_row(stair):
    rng = np.random.default_rng(5)
    images = [_image(tuple(int(c) for c in rng.integers(0, 255, 3))) for _ in range(11)]
    inputs = [Input(image=im) if i % 4 else Input(text="a square", image=im) for i, im in enumerate(images)]
    one_by_one = torch.cat([_dense(stair.encode_documents([x])) for x in inputs])
    saved = stair.batch_size
    try:
        stair.batch_size = 3  # four image batches, one launched while the previous one is collected
        batched = _dense(stair.encode_documents(inputs))
    finally:
        stair.batch_size = saved
    assert torch.allclose(batched, one_by_one, atol=1e-5)
    assert len({tuple(row.nonzero().flatten().tolist()) for row in batched}) == len(images)


def test_vectors_share_the_text_vocabulary_and_text_side_is_splade(stair, splade_tiny):
    assert stair.vocab == splade_tiny.vocab and len(stair.vocab) == 30522
    texts = ["a red circle on the left", "wing flutter at supersonic speed"]
    ours = stair.encode_documents(texts)
    ref = splade_tiny.encode_documents(texts)
    assert torch.allclose(_dense(ours), _dense(ref), atol=1e-5)


def test_image_vector_is_log_saturated_max_over_positions(stair):
    images = [_image(), _image((30, 30, 200))]
    got = _dense(stair.encode_documents([Input(image=im) for im in images]))
    with torch.no_grad():
        logits = stair.model.image_logits(stair.pixels(images))  # [2, positions, vocab]
        assert logits.shape[1] == 17  # 16 patches + the class token of the 32x32 / patch 8 tower
        ref = torch.log1p(torch.relu(logits.amax(dim=1)))
        ref[:, sorted(stair.vocab.special_ids)] = 0
    assert torch.allclose(got, ref, atol=1e-5)
    nnz = (got > 0).sum(dim=1)
    assert (nnz > 10).all() and (nnz < 5000).all()
    assert not got[:, sorted(stair.vocab.special_ids)].any()


def test_mixed_inputs_are_the_elementwise_max_and_instructions_are_prepended(stair):
    im = _image()
    text = stair.encode_queries(["a red square"])
    image = stair.encode_queries([Input(image=im)])
    both = stair.encode_queries([Input(text="a red square", image=im)])
    assert torch.equal(_dense(both), _dense(max_fuse(text, image)))
    assert both.nnz[0] > max(text.nnz[0], image.nnz[0])

    instructed = stair.encode_queries([Input(text="a red square", instruction="Find an image that matches the caption.")])
    manual = stair.encode_queries(["Find an image that matches the caption. a red square"])
    assert torch.equal(_dense(instructed), _dense(manual))
    assert not torch.equal(_dense(instructed), _dense(text))


def test_training_forward_matches_the_inference_path_and_masks_text(stair):
    im = _image((40, 200, 40))
    inputs = [Input(text="a green cross at the top"), Input(image=im), Input(text="a green cross", image=im)]
    with torch.no_grad():
        train_vecs = stair.forward_inputs(inputs)
        masked = stair.forward_inputs(inputs, mask_text_to_input=True)
    assert torch.allclose(train_vecs, _dense(stair.encode_documents(inputs)), atol=1e-5)
    # masking keeps only the word pieces of the text; the image part is untouched
    allowed = set(stair.tokenizer("a green cross at the top")["input_ids"])
    assert set(torch.nonzero(masked[0]).flatten().tolist()) <= allowed
    assert (train_vecs[0] > 0).sum() > (masked[0] > 0).sum()
    assert torch.equal(masked[1], train_vecs[1])
    # (the text's own word pieces are projected on their own when masked: equal up to float rounding)
    assert set(torch.nonzero((masked[2] - train_vecs[2]).abs() > 1e-5).flatten().tolist()).isdisjoint(
        set(stair.tokenizer("a green cross")["input_ids"]))


def test_save_load_roundtrip_and_registry(tmp_path, stair):
    from encoders.registry import resolve
    from encoders.stair import StairEncoder

    path = stair.save(tmp_path / "model")
    assert json.loads((path / "lsr-stair.json").read_text())["image_model"] == "stair-tiny-vit"
    loc = resolve(str(path))
    assert loc.kind == "stair" and loc.is_local
    loaded = StairEncoder.load(str(path), device="cpu")
    inputs = [Input(text="a blue star"), Input(image=_image((30, 30, 200))), Input(text="x", image=_image())]
    assert torch.equal(_dense(loaded.encode_documents(inputs)), _dense(stair.encode_documents(inputs)))
    with pytest.raises(InputError, match="not a STAIR directory"):
        StairEncoder.load("splade-tiny")


def test_load_and_create_take_only_the_arguments_that_apply(tmp_path, stair):
    from encoders.registry import load
    from encoders.stair import StairEncoder

    path = stair.save(tmp_path / "model")
    # what a saved model is was recorded with it: load refuses the arguments that build a new model
    for option in ({"image_model": "ViT-B-16"}, {"pretrained": "x.pt"}, {"text_model": "splade-tiny"},
                   {"head_vocab": [1000, 1001]}, {"head_init": "mlm"}, {"image_positions": "mean"},
                   {"image_config": {}}, {"text_expansion": False}):
        (name,) = option
        with pytest.raises(InputError, match=rf"StairEncoder.load does not take {name} \(it takes device, dtype, "
                                             r"max_length, batch_size, progress\); .*recorded in its lsr-stair.json"):
            StairEncoder.load(path, device="cpu", **option)
    with pytest.raises(InputError, match=r"does not take cuda_graphs \(it takes [^)]*\)$"):
        StairEncoder.load(path, device="cpu", cuda_graphs=True)
    # the runtime options apply; max_length=None keeps the saved one
    loaded = StairEncoder.load(path, device="cpu", dtype="float32", max_length=12, batch_size=3, progress=False)
    assert (loaded.max_length, loaded.text_encoder.max_length, loaded.batch_size) == (12, 12, 3)
    saved12 = loaded.save(tmp_path / "model-12")
    assert StairEncoder.load(saved12, device="cpu", max_length=None).max_length == 12
    via_registry = load(str(path), device="cpu", max_length=20, batch_size=None)
    assert isinstance(via_registry, StairEncoder) and via_registry.max_length == 20
    # create builds from towers: a saved model's path is not among its arguments
    for option in ({"model": str(path)}, {"path": str(path)}):
        with pytest.raises(InputError, match=r"StairEncoder.create does not take (model|path) .*"
                                             r"a saved model is opened with StairEncoder.load\(path\)"):
            StairEncoder.create(image_model="stair-tiny-vit", device="cpu", **option)
    with pytest.raises(InputError, match="does not take cuda_graphs"):
        StairEncoder.create(image_model="stair-tiny-vit", device="cpu", cuda_graphs=True)
    with pytest.raises(TypeError):
        StairEncoder.create(str(path))  # keywords only: no positional model or path
    with pytest.raises(InputError, match=r"takes built modules: open a saved model with StairEncoder.load\(path\)"):
        StairEncoder(str(path), device="cpu")
    with pytest.raises(InputError, match="head_init must be"):
        StairEncoder.create(image_model="stair-tiny-vit", head_init="copy", device="cpu")


def test_text_expansion_off_keeps_text_vectors_to_their_own_tokens(stair):
    stair.text_expansion = False
    try:
        b = stair.encode_queries(["supersonic wing flutter"])
    finally:
        stair.text_expansion = True
    allowed = {stair.vocab.tokens[i] for i in stair.tokenizer("supersonic wing flutter")["input_ids"]}
    assert 0 < len(b.to_dict(0)) and set(b.to_dict(0)) <= allowed
    assert len(stair.encode_queries(["supersonic wing flutter"]).to_dict(0)) > len(b.to_dict(0))


def test_open_clip_checkpoint_from_a_local_file(tmp_path):
    import open_clip
    from safetensors.torch import save_file

    from encoders.stair import StairEncoder, build_image_tower, register_image_config, TINY_IMAGE_CONFIGS

    register_image_config("stair-tiny-vit", TINY_IMAGE_CONFIGS["stair-tiny-vit"])
    torch.manual_seed(123)
    clip = open_clip.create_model("stair-tiny-vit")
    full = tmp_path / "open_clip_model.pt"
    torch.save(clip.state_dict(), full)  # a full CLIP state dict, as open_clip training writes
    enc = StairEncoder.create(image_model="stair-tiny-vit", pretrained=str(full), device="cpu")
    for name, p in clip.visual.state_dict().items():
        assert torch.equal(enc.model.visual.state_dict()[name], p), name

    # the image tower alone, in safetensors, without the "visual." prefix
    tower = tmp_path / "tower.safetensors"
    save_file({k: v.contiguous() for k, v in clip.visual.state_dict().items()}, str(tower))
    visual, cfg, pre = build_image_tower("stair-tiny-vit", str(tower))
    assert torch.equal(visual.conv1.weight, clip.visual.conv1.weight) and pre["size"] in (32, [32, 32])

    # a checkpoint of another architecture, a corrupt file, a missing file, an unknown tag
    register_image_config("stair-tiny-vit-wide", {**TINY_IMAGE_CONFIGS["stair-tiny-vit"],
                                                   "vision_cfg": {"image_size": 32, "layers": 1, "width": 64,
                                                                  "head_width": 32, "patch_size": 8}})
    with pytest.raises(InputError, match="does not fit open_clip model stair-tiny-vit-wide"):
        build_image_tower("stair-tiny-vit-wide", str(full))
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(InputError, match="broken.pt: not a readable"):
        build_image_tower("stair-tiny-vit", str(bad))
    with pytest.raises(InputError, match="file not found"):
        build_image_tower("stair-tiny-vit", str(tmp_path / "missing.pt"))
    with pytest.raises(InputError, match="neither a local checkpoint file nor a known tag"):
        build_image_tower("ViT-B-16", "no-such-tag")
    with pytest.raises(InputError, match="open_clip has no model 'ViT-Q-99'"):
        build_image_tower("ViT-Q-99")


def test_bad_and_unusual_images(tmp_path, stair):
    rgb = _image()
    ref = _dense(stair.encode_documents([Input(image=rgb)]))
    # grayscale, RGBA and palette files are converted to RGB, paths and PIL images agree
    gray = tmp_path / "gray.png"
    _image(mode="L").save(gray)
    rgba = tmp_path / "rgba.png"
    _image(mode="RGBA").save(rgba)
    pal = tmp_path / "pal.png"
    _image(mode="P").save(pal)
    got = stair.encode_documents([Input(image=str(gray)), Input(image=str(rgba)), Input(image=str(pal))])
    assert (got.nnz > 0).all()
    assert torch.allclose(_dense(got)[1:2], ref, atol=1e-5)  # RGBA with an opaque alpha is the same picture
    # a uint8 tensor at the model's size takes the fast path and gives the same vector
    t = torch.from_numpy(np.array(rgb)).permute(2, 0, 1).contiguous()
    assert torch.allclose(_dense(stair.encode_documents([Input(image=t)])), ref, atol=1e-4)
    # large images are resized to the model's input
    big = tmp_path / "big.jpg"
    _image(size=(640, 480)).save(big)
    assert stair.encode_documents([Input(image=str(big))]).nnz[0] > 0

    missing = tmp_path / "nowhere" / "cat.jpg"
    with pytest.raises(InputError, match=r"cat\.jpg: file not found"):
        stair.encode_documents([Input(image=str(missing))])
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    with pytest.raises(InputError, match=r"corrupt\.png"):
        stair.encode_documents([Input(image=str(corrupt))])
    truncated = tmp_path / "truncated.jpg"
    full = tmp_path / "full.jpg"
    _image(size=(256, 256)).save(full)
    truncated.write_bytes(full.read_bytes()[:300])
    with pytest.raises(InputError, match=r"truncated\.jpg"):
        stair.encode_documents([Input(image=str(truncated))])
    text_file = tmp_path / "notes.png"
    text_file.write_text("just text")
    with pytest.raises(InputError, match=r"notes\.png: not a readable image"):
        stair.encode_documents([Input(image=str(text_file))])
    huge = tmp_path / "huge.png"
    Image.new("L", (4100, 4000)).save(huge)  # 16.4 million pixels, over the 16 million limit
    with pytest.raises(InputError, match=r"huge\.png: 4100x4000 pixels exceeds"):
        stair.encode_documents([Input(image=str(huge))])
    with pytest.raises(InputError, match="cannot use int as an image"):
        stair.encode_documents([Input(image=7)])


def test_texts_images_and_pairs_in_one_lucene_index(tmp_path, stair):
    from anserini_bridge.index import build_index
    from anserini_bridge.search import ImpactSearcher
    from encoders.stair import encode_inputs_to_dir
    from lsr.exhaustive import exhaustive_search

    paths = {}
    for name, colour in (("red", (220, 30, 30)), ("blue", (30, 30, 220)), ("green", (30, 200, 30))):
        paths[name] = tmp_path / f"{name}.png"
        _image(colour).save(paths[name])
    docs = {
        "t-wing": Input(text="flutter of a swept wing at supersonic speed"),
        "t-heat": Input(text="heat transfer in a laminar boundary layer"),
        "i-red": Input(image=str(paths["red"])),
        "i-blue": Input(image=str(paths["blue"])),
        "p-green": Input(text="a green square on a dark background", image=str(paths["green"])),
        "p-red": Input(text="a red square", image=str(paths["red"])),
    }
    ids = list(docs)
    quantizer = Quantizer(scale=100, max_value=1000)
    info = encode_inputs_to_dir(stair, list(docs.values()), ids, tmp_path / "vec", quantizer)
    assert info.documents_written == len(docs)
    build_index(tmp_path / "vec", tmp_path / "idx", progress=False)

    queries = {
        "by-text": Input(text="supersonic wing flutter"),
        "by-image": Input(image=str(paths["blue"])),
        "by-both": Input(text="a red square", image=str(paths["red"])),
    }
    qvec = stair.encode_queries(list(queries.values()), ids=list(queries))
    dvec = stair.encode_documents(list(docs.values()), ids=ids)
    with ImpactSearcher(tmp_path / "idx") as searcher:
        assert searcher.num_docs == len(docs)
        lucene = searcher.batch_search(qvec, k=len(docs), threads=1)
        stored = {d: searcher.doc_vector(d) for d in ids}
    qi, di = quantizer.quantize(qvec), quantizer.quantize(dvec)
    exact = exhaustive_search(qi, di, k=len(docs))
    for qid in queries:
        assert [(h.docid, h.impact_score) for h in lucene[qid]] == [(h.docid, int(h.score)) for h in exact[qid]], qid
        assert len(lucene[qid]) > 0
    assert lucene["by-text"][0].docid == "t-wing"
    assert lucene["by-image"][0].docid == "i-blue"
    assert lucene["by-both"][0].docid == "p-red"
    for i, d in enumerate(ids):  # what was indexed is exactly the quantized vector
        assert stored[d] == {k: int(v) for k, v in di.to_dict(i).items()}


def test_text_corpus_through_the_shared_pipeline(tmp_path, stair):
    from encoders.pipeline import encode_to_dir
    from lsr.io import Record
    from lsr.vectors import VectorDirInfo

    records = [Record("a", "boundary layer transition"), Record("b", "   "), Record("c", "shock wave")]
    info = encode_to_dir(stair, records, tmp_path / "v")
    assert (info.documents_written, info.documents_reported) == (2, 1)
    assert VectorDirInfo.load(tmp_path / "v").vocab_fingerprint == stair.vocab.fingerprint


def test_gpu_benchmark_script_runs_on_cpu_at_toy_size(tmp_path):
    from benchmarks import stair_gpu

    assert stair_gpu.main(["--device", "cpu", "--tiny", "--json", str(tmp_path / "out.json")]) == 0
    res = json.loads((tmp_path / "out.json").read_text())
    for key in ("tower", "tower+head", "encode_documents", "encode_documents (PIL)"):
        assert res[key]["images_per_s"] > 0
    assert res["train_step"]["finite"] and res["train_step"]["bf16_autocast"] is True
    assert res["image_model"] == "stair-tiny-vit" and res["dtype"] == "torch.bfloat16"


def test_training_text_pooling_equals_the_textbook_in_values_and_gradients(stair):
    """text_pooled_logits (no [batch, positions, vocab] logits) == masked max of the full logits, and so are the
    gradients; with only_input_tokens the text's own word pieces are exact."""
    import torch

    from lsr.pooling import masked_max_pool

    enc = stair.tokenizer(["a dog runs on the grass", "two children", "a man in a red shirt climbs a rock wall"],
                          padding=True, return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    weight = stair.model.text.get_output_embeddings().weight
    probe = torch.linspace(0, 1, weight.shape[0])
    for only in (False, True):
        with torch.enable_grad():
            ref = masked_max_pool(stair.model.text_logits(ids, mask), mask)
            new = stair.model.text_pooled_logits(ids, mask, only_input_tokens=only)
            keep = (torch.zeros_like(ref).scatter_add_(1, ids, mask.float()) > 0) if only else torch.ones_like(ref).bool()
            assert torch.allclose(ref[keep], new[keep], atol=1e-5)
            g_ref = torch.autograd.grad((ref * keep * probe).sum(), weight)[0]
            g_new = torch.autograd.grad((new * keep * probe).sum(), weight)[0]
        assert torch.allclose(g_ref, g_new, atol=1e-5)


def test_image_positions_and_head_width_are_chosen_at_creation_and_kept_in_the_saved_model(tmp_path):
    """``image_positions`` picks what the head reads (the tower's tokens, plus their average, or the average
    alone); it, ``head_hidden`` and ``head_dropout`` are saved with the model, and a directory written with the older
    ``global_token`` flag loads as the same choice."""
    from encoders.stair import StairEncoder

    torch.manual_seed(0)
    tokens = torch.randn(2, 5, 8)
    built = {}
    for choice in ("tokens", "tokens+mean", "mean"):
        enc = StairEncoder.create(image_model="stair-tiny-vit", text_model="splade-tiny", image_positions=choice,
                                  head_hidden=16, head_dropout=0.5, device="cpu")
        assert enc.model.head.dense.out_features == 16
        built[choice] = enc
        got = enc.model.head_positions(tokens)
        want = {"tokens": tokens, "mean": tokens.mean(1, keepdim=True),
                "tokens+mean": torch.cat([tokens.mean(1, keepdim=True), tokens], 1)}[choice]
        assert torch.equal(got, want)
    enc = built["mean"]
    img = _image()
    with torch.no_grad():
        # the average alone: one position, so the vector is the head at the mean token (no max)
        mean_token = enc.model.image_tokens(enc.pixels([img], enc.device)).mean(1)
        want = torch.log1p(torch.relu(enc.model.head(mean_token)))
        want[:, enc._excluded] = 0
    assert torch.allclose(_dense(enc.encode_documents([Input(image=img)])), want, atol=1e-5)
    path = enc.save(tmp_path / "m")
    again = StairEncoder.load(path, device="cpu")
    assert again.model.image_positions == "mean" and again.model.head.dense.out_features == 16
    assert again.model.head.dropout.p == 0.5  # in training only: the encodings below are deterministic
    assert torch.equal(_dense(again.encode_documents([Input(image=img)])), _dense(enc.encode_documents([Input(image=img)])))
    # a directory from before the option: global_token true means the tokens and their average
    cfg = json.loads((path / "lsr-stair.json").read_text())
    for old, expected in ((True, "tokens+mean"), (False, "tokens")):
        legacy = {k: v for k, v in cfg.items() if k != "image_positions"} | {"global_token": old}
        (path / "lsr-stair.json").write_text(json.dumps(legacy))
        assert StairEncoder.load(path, device="cpu").model.image_positions == expected
    (path / "lsr-stair.json").write_text(json.dumps(cfg | {"image_positions": "corners"}))
    with pytest.raises(InputError, match=r"lsr-stair.json: image_positions 'corners' is not one of tokens, "
                                         r"tokens\+mean, mean; save the model again"):
        StairEncoder.load(path, device="cpu")
    with pytest.raises(InputError, match=r"image_positions must be one of tokens, tokens\+mean, mean, not 'max'"):
        StairEncoder.create(image_model="stair-tiny-vit", text_model="splade-tiny", image_positions="max")
    with pytest.raises(InputError, match=r"head_init='mlm' copies the text model's head, whose width is 128; "
                                         r"leave head_hidden unset"):
        StairEncoder.create(image_model="stair-tiny-vit", text_model="splade-tiny", head_init="mlm", head_hidden=16)
