"""Real photographs: the offline ImageNet tower, caption readers, the retrieval protocol, frozen-tower training."""

import json
import shutil
import sys

import numpy as np
import pytest


# ---------------------------------------------------------------- the tower
def test_offline_tower_classifies_a_known_photo():
    """The packaged EfficientNet-Lite0 weights map onto timm's model: skimage's coffee photo is an espresso."""
    import torch
    from skimage import data

    from encoders.towers import IMAGENET_MEAN, IMAGENET_STD, TOWER_ALIASES, load_timm_checkpoint
    from PIL import Image

    alias = TOWER_ALIASES["efficientnet-lite0"]
    model = load_timm_checkpoint(alias.timm_name, alias.locate(), classifier=True)
    img = Image.fromarray(data.coffee()).convert("RGB").resize((224, 224), Image.BICUBIC)
    x = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 255
    x = (x - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)
    with torch.no_grad():
        p = model(x[None]).softmax(-1)[0]
    assert int(p.argmax()) == 967  # ImageNet class 967: espresso
    assert float(p[967]) > 0.5


def test_timm_tower_by_name_and_bad_checkpoint(tmp_path):
    from encoders.towers import build_timm_tower
    from lsr.errors import InputError

    tower = build_timm_tower("timm:efficientnet_lite0")
    assert tower.width == 1280 and tower.positions == 49 and tower.spatial
    with pytest.raises(InputError, match="timm has no model"):
        build_timm_tower("timm:no_such_net")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="bad.pth"):
        build_timm_tower("timm:efficientnet_lite0", str(bad))


# ------------------------------------------------------------------ readers
def _write_formats(root, flickr8k, n_images=4):
    """The same captions as JSONL, token file + split list, and Karpathy JSON (images copied under root)."""
    lines = [json.loads(l) for l in (flickr8k / "captions_dev.jsonl").read_text().splitlines()[:5 * n_images]]
    (root / "images").mkdir()
    for rec in lines:
        if not (root / rec["image"]).exists():
            shutil.copy(flickr8k / rec["image"], root / rec["image"])
    (root / "c.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    (root / "tokens.txt").write_text("".join(f"{r['caption_id']}\t{r['caption']}\n" for r in lines))
    names = list(dict.fromkeys(r["image"].split("/")[-1] for r in lines))
    (root / "split.txt").write_text("\n".join(names) + "\n")
    images = []
    for name in names:
        sents = [{"raw": r["caption"], "sentid": r["caption_id"].split("#")[1]} for r in lines
                 if r["image"].endswith(name)]
        images.append({"filename": name, "filepath": "images", "split": "val", "sentences": sents})
    images.append({"filename": "other.jpg", "split": "train", "sentences": [{"raw": "x"}]})
    (root / "dataset_flickr8k.json").write_text(json.dumps({"images": images}))
    return lines, names


def test_readers_agree(tmp_path, flickr8k):
    from lsr.captions import read_captions

    lines, names = _write_formats(tmp_path, flickr8k)
    a = read_captions(tmp_path / "c.jsonl")
    b = read_captions(tmp_path / "tokens.txt", split=tmp_path / "split.txt")
    c = read_captions(tmp_path / "dataset_flickr8k.json", split="val")
    for cs in (a, b, c):
        assert cs.image_ids == names
        assert cs.captions == [r["caption"].strip() for r in lines]
        assert cs.caption_ids == [r["caption_id"] for r in lines]
        assert cs.image_captions == [list(range(5 * i, 5 * i + 5)) for i in range(len(names))]
        assert [p.split("/")[-1] for p in cs.images] == names
    pairs = a.pairs()
    assert pairs[7].query.text == lines[7]["caption"] and pairs[7].document.image == a.images[1]


def test_reader_errors_name_file_and_line(tmp_path, flickr8k):
    from lsr.captions import read_captions
    from lsr.errors import InputError

    _write_formats(tmp_path, flickr8k)
    bad = tmp_path / "missing.jsonl"
    bad.write_text('{"image": "images/%s", "caption": "fine"}\n{"image": "images/nope.jpg", "caption": "a dog"}\n'
                   % (tmp_path / "images").iterdir().__next__().name)
    with pytest.raises(InputError, match=r"missing.jsonl:2: image .*nope.jpg does not exist"):
        read_captions(bad)
    split = tmp_path / "split2.txt"
    split.write_text("%s\nabsent_123.jpg\n" % (tmp_path / "split.txt").read_text().split()[0])
    with pytest.raises(InputError, match=r"split2.txt:2: image absent_123.jpg has no captions"):
        read_captions(tmp_path / "tokens.txt", split=split)
    (tmp_path / "tokens.txt").open("a").write("absent_123.jpg#0\ta cat\n")
    with pytest.raises(InputError, match=r"split2.txt:2: image .*absent_123.jpg does not exist"):
        read_captions(tmp_path / "tokens.txt", split=split)
    with pytest.raises(InputError, match="no image in split"):
        read_captions(tmp_path / "dataset_flickr8k.json", split="test")


def test_undecodable_image_is_named(tmp_path, flickr8k):
    from encoders.image_text import TowerEmbedder
    from lsr.errors import InputError

    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 definitely not a jpeg")
    emb = TowerEmbedder(image_tower="efficientnet-lite0", text_model="minilm", dim=8)
    with pytest.raises(InputError, match="broken.jpg"):
        emb.compute_features([str(broken)], tmp_path / "cache", progress=False)


# ----------------------------------------------------------------- protocol
def _toy(n_images=50, per=5):
    from lsr.captions import CaptionSet

    image_ids = [f"img{i}" for i in range(n_images)]
    caption_ids = [f"img{i}#{j}" for i in range(n_images) for j in range(per)]
    return CaptionSet(image_ids, image_ids, caption_ids, ["c"] * len(caption_ids),
                      np.repeat(np.arange(n_images), per))


def test_protocol_perfect_and_chance():
    from lsr.captions import image_to_text_recall, text_to_image_recall

    cs = _toy()
    perfect_t2i = {c: [cs.image_ids[int(i)]] + [x for x in cs.image_ids if x != cs.image_ids[int(i)]]
                   for c, i in zip(cs.caption_ids, cs.caption_image)}
    perfect_i2t = {im: [cs.caption_ids[j] for j in cs.image_captions[i]][::-1] + ["zzz"]
                   for i, im in enumerate(cs.image_ids)}
    assert text_to_image_recall(perfect_t2i, cs) == {"R@1": 1.0, "R@5": 1.0, "R@10": 1.0}
    assert image_to_text_recall(perfect_i2t, cs) == {"R@1": 1.0, "R@5": 1.0, "R@10": 1.0}
    assert text_to_image_recall({}, cs)["R@10"] == 0.0
    # random rankings: text->image R@k is k / images on average; image->text R@1 is 5 / 250 captions
    rng = np.random.default_rng(0)
    t2i = [text_to_image_recall({c: list(rng.permutation(cs.image_ids)) for c in cs.caption_ids}, cs)
           for _ in range(40)]
    i2t = [image_to_text_recall({im: list(rng.permutation(cs.caption_ids)) for im in cs.image_ids}, cs)
           for _ in range(40)]
    assert abs(np.mean([r["R@1"] for r in t2i]) - 1 / 50) < 0.006
    assert abs(np.mean([r["R@10"] for r in t2i]) - 10 / 50) < 0.02
    assert abs(np.mean([r["R@1"] for r in i2t]) - 5 / 250) < 0.01


def test_rank_by_scores_orders_and_breaks_ties():
    from lsr.captions import rank_by_scores

    s = np.array([[0.1, 0.9, 0.9, 0.3], [1.0, 0.0, 0.5, 0.2]])
    assert rank_by_scores(s, ["a", "b"], ["w", "x", "y", "z"], k=3) == {"a": ["x", "y", "z"], "b": ["w", "y", "z"]}
    assert rank_by_scores(s, ["a", "b"], ["w", "x", "y", "z"], k=10)["b"] == ["w", "y", "z", "x"]


# --------------------------------------------------- frozen tower, features
def test_cached_features_give_the_tower_vectors(tmp_path, dev_small):
    import torch

    from encoders.stair import StairEncoder, caption_vocabulary
    from lsr.inputs import Input

    torch.manual_seed(0)
    vocab = caption_vocabulary("splade-tiny", dev_small.captions)
    enc = StairEncoder.create(image_model="efficientnet-lite0", text_model="splade-tiny", head_vocab=vocab,
                              batch_size=4)
    assert enc.model.head.decoder.weight.shape[0] == len(vocab) < 1000
    images = [Input(image=p) for p in dev_small.images]
    direct = enc.encode_documents(images)
    feats = enc.compute_features(dev_small.images, tmp_path / "cache", progress=False)
    assert feats.tokens.shape == (12, 49, 1280)
    again = enc.compute_features(dev_small.images[:5], tmp_path / "cache", progress=False)
    assert again.path == feats.path  # a cache of more images serves a subset
    enc.use_features(feats)
    cached = enc.encode_documents(images)
    assert np.abs((direct.to_scipy() - cached.to_scipy()).toarray()).max() < 5e-3  # float16 features
    assert set(direct.indices.tolist()) <= set(vocab)  # only the head's word pieces
    # saved and loaded: the same model and vectors
    enc.save(tmp_path / "stair")
    back = StairEncoder.load(str(tmp_path / "stair"))
    back.use_features(feats)
    assert np.array_equal(back.encode_documents(images).to_scipy().toarray(), cached.to_scipy().toarray())


def test_embed_store_and_rerank_refuse_another_model(tmp_path, dev_small):
    """`lsr embed` builds a store with the tower embedder; searching it with another model is refused."""
    import subprocess

    from encoders.image_text import TowerEmbedder

    TowerEmbedder(image_tower="efficientnet-lite0", text_model="minilm", dim=16).save(tmp_path / "dense")
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": f"i{k}", "image": p}) + "\n"
                              for k, p in enumerate(dev_small.images[:4])))
    run = lambda *a: subprocess.run([sys.executable, "-m", "lsr.cli", *map(str, a)],  # noqa: E731
                                    capture_output=True, text=True)
    r = run("embed", "--model", tmp_path / "dense", "--input", corpus, "--output", tmp_path / "store")
    assert r.returncode == 0, r.stderr
    from lsr.embstore import EmbeddingStore

    store = EmbeddingStore(tmp_path / "store")
    assert len(store) == 4 and store.dim == 16
    from encoders.dense import embedder_for_store
    from lsr.errors import IndexMismatchError

    with pytest.raises(IndexMismatchError):
        embedder_for_store(store, "minilm")


# ------------------------------------------------------------- end to end
@pytest.mark.slow
def test_quick_benchmark_beats_chance_and_matches_lsr_search(tmp_path, flickr8k):
    """`python -m benchmarks.flickr8k --quick`: trains on 300 photographs, evaluates 100; the STAIR runs
    come from Lucene and equal `lsr search` over an index of the same vectors."""
    import subprocess

    from benchmarks import flickr8k as bench
    from lsr.captions import read_caption_jsonl, text_to_image_recall

    out = tmp_path / "out.json"
    work = tmp_path / "work"
    assert bench.main(["--data", str(flickr8k), "--quick", "--json", str(out), "--cache", str(tmp_path / "cache"),
                       "--workdir", str(work), "--fusion", ""]) == 0
    res = json.loads(out.read_text())
    assert res["eval_images"] == 100 and res["eval_captions"] == 500
    for system in ("stair", "dense", "hybrid", "hybrid_rrf"):
        for way in ("t2i", "i2t"):
            assert set(res[system][way]) == {"R@1", "R@5", "R@10"}
    # chance: text->image R@10 = 0.10 over 100 images, image->text R@10 about 0.10 too
    assert res["stair"]["t2i"]["R@10"] >= 0.2 and res["stair"]["i2t"]["R@10"] >= 0.15
    assert res["dense"]["t2i"]["R@10"] >= 0.3 and res["dense"]["i2t"]["R@10"] >= 0.3
    assert 0 < res["stair"]["nnz_per_image"] < 6640
    # the same vectors through the command line give the same text->image numbers
    ev = read_caption_jsonl(flickr8k / "captions_dev.jsonl").head(100)
    queries = tmp_path / "q.jsonl"
    run = tmp_path / "run.trec"
    r = subprocess.run([sys.executable, "-m", "lsr.cli", "search", "--index", str(work / "idx-images"),
                        "--query-vectors", str(work / "vec-captions"), "--output", str(run), "--k", "10"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    ranked: dict = {}
    for line in run.read_text().splitlines():
        qid, _, docid, rank, *_ = line.split()
        ranked.setdefault(qid, []).append((int(rank), docid))
    cli = {q: [d for _, d in sorted(v)] for q, v in ranked.items()}
    assert text_to_image_recall(cli, ev) == res["stair"]["t2i"]
    del queries


def test_mined_negatives_are_the_top_wrong_documents(tmp_path):
    """Mining searches a real Lucene impact index and drops each query's own positives."""
    import scipy.sparse as sp

    from anserini_bridge.mining import mine_negatives
    from lsr.sparse import SparseBatch, Vocabulary

    vocab = Vocabulary(tuple(f"t{i}" for i in range(6)))
    docs = SparseBatch.from_scipy(sp.csr_matrix(np.array([[3, 0, 0, 0, 0, 1], [2, 2, 0, 0, 0, 0],
                                                          [1, 0, 0, 3, 0, 0], [0, 0, 2, 0, 0, 0]], float)),
                                  vocab).with_ids(["a", "b", "c", "d"])
    queries = SparseBatch.from_scipy(sp.csr_matrix(np.array([[1, 1, 0, 0, 0, 0], [0, 0, 0, 1, 0, 0]], float)),
                                     vocab).with_ids(["q1", "q2"])
    got = mine_negatives(docs, queries, {"q1": {"b"}, "q2": {"c"}}, k=2, workdir=tmp_path)
    # q1 scores b 4, a 3, c 1 -> without its positive b: a, c.  q2 matches only c (its positive): nothing left
    assert got == {"q1": ["a", "c"], "q2": []}


@pytest.mark.slow
def test_user_path_train_encode_index_search_eval(tmp_path, flickr8k):
    """README's path on a few photographs: lsr captions -> lsr train (frozen tower) -> encode -> index -> search ->
    eval, and lsr inspect --image on a real photograph."""
    import subprocess

    lines = (flickr8k / "captions_dev.jsonl").read_text().splitlines()[:40]  # 8 images x 5 captions
    (tmp_path / "caps.jsonl").write_text("".join(
        json.dumps(dict(json.loads(l), image=str(flickr8k / json.loads(l)["image"]))) + "\n" for l in lines))
    (tmp_path / "stair.toml").write_text(
        'data = "caps.jsonl"\nimage_model = "efficientnet-lite0"\nhead_vocab = "captions"\nfreeze_tower = true\n'
        'feature_cache = "cache"\noutput_dir = "run"\nsteps = 4\nbatch_size = 8\nlearning_rate = 1e-3\n'
        'lambda_d = 1e-3\nprogress = false\nimage_positions = "mean"\nhead_dropout = 0.5\n')

    def run(*a):
        r = subprocess.run([sys.executable, "-m", "lsr.cli", *map(str, a)], capture_output=True, text=True,
                           cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        return r

    run("captions", "--input", "caps.jsonl", "--output", "beir")
    r = run("train", "--config", "stair.toml")
    assert "training stage 1 on 40 pairs" in r.stdout and (tmp_path / "run" / "final" / "lsr-stair.json").is_file()
    saved = json.loads((tmp_path / "run" / "final" / "lsr-stair.json").read_text())
    assert (saved["image_positions"], saved["head_dropout"]) == ("mean", 0.5)  # the config's head settings apply
    run("encode", "--model", "run/final", "--input", "beir/corpus.jsonl", "--output", "vec")
    run("index", "--input", "vec", "--index", "idx")
    run("search", "--index", "idx", "--model", "run/final", "--queries", "beir/queries.jsonl", "--output", "run.trec",
        "--k", "8")
    r = run("eval", "--run", "run.trec", "--qrels", "beir/qrels/test.tsv", "--metrics", "recall@8", "--json")
    assert json.loads(r.stdout)["recall@8"] == pytest.approx(1.0)  # 8 candidate images: all found by rank 8
    photo = json.loads(lines[0])["image"]
    r = run("inspect", "--model", "run/final", "--image", flickr8k / photo, "--top", "5", "--json")
    tokens = json.loads(r.stdout)["tokens"]
    assert len(tokens) == 5 and all(t["weight"] > 0 for t in tokens)
