"""Dense models that fuse an image and a text on frozen towers: UniIR score fusion, UniIR feature fusion, VISTA."""

import json

import numpy as np
import pytest

from lsr.errors import IndexMismatchError, InputError

KINDS = {
    "score": ("encoders.image_text", "TowerEmbedder", {"dim": 32}),
    "feature": ("encoders.feature_fusion", "FeatureFusionEmbedder", {"dim": 32, "width": 64, "visual_grid": 2}),
    "vista": ("encoders.vista", "VistaEmbedder", {"visual_grid": 2}),
}


def build(kind: str, **extra):
    import importlib

    import torch

    module, cls, options = KINDS[kind]
    torch.manual_seed(0)
    return getattr(importlib.import_module(module), cls)(image_tower="efficientnet-lite0", text_model="minilm",
                                                          **options, **extra)


@pytest.fixture(scope="module")
def minilm():
    from encoders.dense import SentenceEmbedder

    return SentenceEmbedder("minilm")


# ------------------------------------------------------------ composed task
def test_composed_task_and_pairs(dev_small):
    from lsr.captions import composed_pairs, composed_task, partial_caption

    assert partial_caption("a dog runs on the beach .") == "a dog runs on"
    assert partial_caption("dog") == "dog"
    task = composed_task(dev_small)
    n_images = len(dev_small.image_ids)
    assert len(task.queries) == n_images and len(task.candidates) == len(dev_small.captions) - n_images
    first = task.query_ids[0]
    rows = dev_small.image_captions[0]
    assert task.relevant[first] == {dev_small.caption_ids[j] for j in rows[1:]}
    assert task.queries[0].image == dev_small.images[0]
    assert task.queries[0].text == partial_caption(dev_small.captions[rows[0]])
    assert dev_small.caption_ids[rows[0]] not in task.candidate_ids  # the query's own caption is no candidate
    perfect = {q: sorted(task.relevant[q]) for q in task.query_ids}
    assert task.recall(perfect) == {"R@1": 1.0, "R@5": 1.0, "R@10": 1.0}
    assert task.recall({}) == {"R@1": 0.0, "R@5": 0.0, "R@10": 0.0}
    q, d, g = composed_pairs(dev_small)
    assert len(q) == len(d) == len(g) == len(dev_small.captions)
    q1, d1, g1 = composed_pairs(dev_small, per_image=1)
    assert len(q1) == n_images and len(set(g1)) == n_images
    assert all(x.image is not None and x.text for x in q1) and all(x.image is None for x in d1)


# ------------------------------------------------------ train, save, serve
@pytest.mark.parametrize("kind", list(KINDS))
def test_trains_saves_and_serves_as_a_dense_model(tmp_path, dev_small, kind):
    from encoders.dense import load_embedder
    from lsr.inputs import Input

    model = build(kind)
    assert model.fusion == kind
    images = [Input(image=p) for p in dev_small.images]
    score = lambda m: m.encode_queries(dev_small.captions) @ m.encode_documents(images).T  # noqa: E731
    gold = dev_small.caption_image
    hit = lambda s: float((s.argmax(1) == gold).mean())  # noqa: E731
    before = hit(score(model))
    model.fit(dev_small.captions, [dev_small.images[int(i)] for i in gold], steps=40, batch_size=30,
              learning_rate=3e-3, cache_dir=tmp_path / "cache")
    model.use_features(model.compute_features(dev_small.images, tmp_path / "cache", progress=False))
    after = hit(score(model))
    assert after > max(0.4, before + 0.2)  # training data: learned well beyond chance (1/12)
    model.save(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "lsr-towers.json").read_text())
    assert config["fusion"] == kind
    loaded = load_embedder(str(tmp_path / "m"))
    assert type(loaded) is type(model) and loaded.dim == model.dim
    mixed = [Input(text=dev_small.captions[0], image=dev_small.images[0]), Input(image=dev_small.images[1]),
             "a dog", Input(image=dev_small.images[2], instruction="find a caption")]
    a, b = model.encode_documents(mixed), loaded.encode_documents(mixed)
    assert a.shape == (4, model.dim) and np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert np.allclose(a, b, atol=1e-4)  # loaded model (tower run again, not cached) gives the same vectors
    # a batch of mixed modalities gives each input the vector it gets alone
    alone = np.vstack([model.encode_documents([x]) for x in mixed])
    assert np.allclose(a, alone, atol=1e-5)


def test_vista_keeps_the_text_encoder_untouched(tmp_path, dev_small, minilm):
    """VISTA's premise: a text alone is the frozen sentence encoder's own vector, before and after training;
    images and image+text inputs do change with training."""
    from lsr.inputs import Input

    vista = build("vista")
    texts = dev_small.captions[:6] + ["search: an instruction-prefixed query"]
    assert np.array_equal(vista.encode_queries(texts), minilm.encode_documents(texts))
    mixed = [Input(image=dev_small.images[0]), Input(text="a dog", image=dev_small.images[1])]
    before = vista.encode_documents(mixed)
    vista.fit(dev_small.captions, [dev_small.images[int(i)] for i in dev_small.caption_image], steps=5,
              batch_size=20, cache_dir=tmp_path / "cache")
    assert np.array_equal(vista.encode_queries(texts), minilm.encode_documents(texts))
    assert not np.allclose(vista.encode_documents(mixed), before, atol=1e-3)
    assert all(not p.requires_grad for p in vista.transformer.parameters())


def test_composed_training_with_fit_pairs(tmp_path, dev_small):
    """fit_pairs takes any mix of query/document modalities; composed pairs teach image + half caption ->
    the image's other captions."""
    from lsr.captions import composed_pairs, composed_task, rank_by_scores

    model = build("feature")
    task = composed_task(dev_small)
    q, d, g = composed_pairs(dev_small)

    def recall():
        cand = model.encode_documents(task.candidates)
        return task.recall(rank_by_scores(model.encode_queries(task.queries) @ cand.T, task.query_ids,
                                          task.candidate_ids, 10))["R@1"]

    before = recall()
    model.fit_pairs(q, d, g, steps=40, batch_size=30, learning_rate=3e-3, cache_dir=tmp_path / "cache")
    assert recall() > max(0.5, before + 0.2)


# ------------------------------------------------------------- bad input
def test_bad_input_is_named(tmp_path, dev_small):
    from encoders.dense import embedder_for_store, load_embedder
    from encoders.feature_fusion import FeatureFusionEmbedder
    from encoders.vista import VistaEmbedder
    from lsr.embstore import build_store
    from lsr.inputs import Input

    vista = build("vista")
    vista.save(tmp_path / "vista")
    with pytest.raises(InputError, match="'vista'-fusion model.*VistaEmbedder"):
        FeatureFusionEmbedder(str(tmp_path / "vista"))
    with pytest.raises(InputError, match="has no option"):
        load_embedder(str(tmp_path / "vista"), dim=12)
    with pytest.raises(InputError, match="width 30 is not a multiple of heads 4"):
        FeatureFusionEmbedder(width=30)
    with pytest.raises(InputError, match="training images must be file paths"):
        vista.fit_pairs(["a dog"], [Input(image=np.zeros((3, 8, 8), dtype=np.float32))], steps=1)
    with pytest.raises(InputError, match="2 queries for 1 documents"):
        vista.fit_pairs(["a", "b"], ["c"], steps=1)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "lsr-towers.json").write_text(json.dumps({"format": "lsr-towers/1", "fusion": "late"}))
    with pytest.raises(InputError, match="unknown fusion 'late'"):
        load_embedder(str(bad))
    (tmp_path / "vista" / "model.safetensors").unlink()
    with pytest.raises(InputError, match="model.safetensors: file not found"):
        VistaEmbedder(str(tmp_path / "vista"))
    # a store of one fusion model is not searched with another (different vectors, here also another size)
    vista.save(tmp_path / "vista")
    vista = load_embedder(str(tmp_path / "vista"))  # a store records the model by its path
    store = build_store(vista, [Input(image=p) for p in dev_small.images[:3]], ["a", "b", "c"], tmp_path / "store",
                        progress=False)
    build("feature").save(tmp_path / "ff")
    with pytest.raises(IndexMismatchError):
        embedder_for_store(store, str(tmp_path / "ff"))
    assert type(embedder_for_store(store)) is VistaEmbedder


# ---------------------------------------------------------- the benchmark
@pytest.mark.slow
def test_benchmark_reports_the_fusion_rows(tmp_path, flickr8k):
    from benchmarks import flickr8k as bench

    out = tmp_path / "out.json"
    assert bench.main(["--data", str(flickr8k), "--train-images", "40", "--eval-images", "20", "--skip-stair",
                       "--skip-dense", "--fusion-steps", "6", "--json", str(out), "--cache",
                       str(tmp_path / "cache")]) == 0
    res = json.loads(out.read_text())
    assert "stair" not in res and "dense" not in res
    for system in ("uniir_sf", "uniir_ff", "vista"):
        for way in ("t2i", "i2t"):
            assert set(res[system][way]) == {"R@1", "R@5", "R@10"}
        assert set(res["composed"][system]) == {"fused", "image_only", "text_only"}
    assert res["composed_task"]["queries"] == 20 and res["composed_task"]["candidates"] == 80
    check = res["vista_text_check"]
    assert check["vista"] == check["minilm"] > 0.2  # Cranfield nDCG@10 of the frozen encoder, unchanged


@pytest.mark.slow
def test_eval_mbeir_takes_a_saved_fusion_model(tmp_path, capsys):
    """A saved VISTA directory is a dense model for eval-mbeir: every M-BEIR task row, composed queries included."""
    from lsr.cli import main
    from lsr.fixtures.mbeir import build_fixture
    from lsr.mbeir import BENCHMARK_ROWS

    fixture = build_fixture(tmp_path / "mbeir")
    build("vista").save(tmp_path / "vista")
    rc = main(["eval-mbeir", "--data", str(fixture.root), "--queries", "query/test", "--pool", "cand_pool/local",
               "--qrels", "qrels/test", "--model", str(tmp_path / "vista"), "--device", "cpu",
               "--json", str(tmp_path / "r.json")])
    assert rc == 0, capsys.readouterr().err
    (system,) = json.loads((tmp_path / "r.json").read_text())["systems"]
    assert [(r["task_id"], r["dataset_id"]) for r in system["rows"]] == list(BENCHMARK_ROWS)
    assert all(0.0 <= r["local"] <= 1.0 for r in system["rows"])
