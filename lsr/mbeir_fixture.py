"""A tiny data set in the M-BEIR layout, for tests and for trying ``lsr eval-mbeir``.

``build_fixture(root)`` writes every one of the sixteen (task, dataset) rows
of the benchmark, so all eight query/candidate modality combinations of
M-BEIR are present, in M-BEIR's files and field names::

    ROOT/query/test/mbeir_<dataset>_task<N>_test.jsonl             2 queries per row
    ROOT/cand_pool/local/mbeir_<dataset>_task<N>_cand_pool.jsonl   10 to 14 candidates per row
    ROOT/cand_pool/global/mbeir_union_test_cand_pool.jsonl         the union (176 candidates)
    ROOT/qrels/test/mbeir_<dataset>_task<N>_test_qrels.txt         qid 0 did 1 task_id
    ROOT/instructions/query_instructions.tsv                        4 prompts per row
    ROOT/mbeir_images/<dataset>_images/*.jpg                        64x64 JPEGs

The photographs are the real ones shipped with scikit-image (astronaut,
Chelsea the cat, coffee, a rocket launch, ...), each file a different crop;
garments and shape scenes are drawn with PIL. Captions, headlines, passages
and questions are written by hand and describe what the pictures show.

Run ``python -m lsr.mbeir_fixture ROOT`` to write it from the command line.
"""

from __future__ import annotations

import json
import os
import random
import sys
from dataclasses import dataclass
from pathlib import Path

from .errors import EnvironmentProblem
from .mbeir import BENCHMARK_ROWS, DATASETS, TASKS, file_stem

SIZE = 64  # pixels per side of every image written

# One entry per photograph: the scikit-image loader and hand-written texts about it.
# caption: a plain description; headline: a news-style caption; fact: an encyclopaedia-style
# passage; entity: a short article about what is shown ("Title. text"); question / answer: a
# knowledge question about the picture and the passage that answers it; ask: a question whose
# answer is the fact passage.
PHOTOS: list[dict] = [
    {
        "key": "astronaut", "loader": "astronaut",
        "caption": "An astronaut in a white spacesuit stands in front of an American flag.",
        "headline": "Astronaut poses with the flag before a shuttle mission",
        "fact": "Spacesuits are pressurised garments that keep astronauts alive during walks outside the spacecraft.",
        "entity": "Astronaut. A person trained to command, pilot or serve as a crew member of a spacecraft.",
        "question": "What garment is the person in this photo wearing?",
        "answer": "The person wears a white pressurised spacesuit with a mission patch.",
        "ask": "What keeps astronauts alive during a spacewalk?",
    },
    {
        "key": "cat", "loader": "chelsea",
        "caption": "A ginger tabby cat looks sideways with green eyes.",
        "headline": "Local tabby named Chelsea becomes the star of the neighbourhood",
        "fact": "Tabby cats are not a breed; the word names a coat with stripes, swirls or spots.",
        "entity": "Tabby cat. A domestic cat with a coat of stripes, dots or swirls and an M on the forehead.",
        "question": "What kind of coat pattern does this animal have?",
        "answer": "The cat has an orange tabby coat with dark stripes.",
        "ask": "Is a tabby a breed of cat?",
    },
    {
        "key": "coffee", "loader": "coffee",
        "caption": "A cup of coffee with latte art on a saucer with a spoon.",
        "headline": "Cafe owners say latte art keeps customers coming back",
        "fact": "Latte art is made by pouring steamed milk into espresso so that the foam forms a pattern.",
        "entity": "Latte art. A method of preparing coffee by pouring microfoam into espresso to draw a pattern.",
        "question": "What drink is served in this cup?",
        "answer": "The cup holds a cappuccino topped with a foam pattern.",
        "ask": "How is latte art made?",
    },
    {
        "key": "rocket", "loader": "rocket",
        "caption": "A rocket lifts off from the launch pad with a bright flame.",
        "headline": "Rocket launch lights up the evening sky over the coast",
        "fact": "A rocket carries both its fuel and oxidiser, so its engines also work in the vacuum of space.",
        "entity": "Launch vehicle. A rocket that carries a payload from the surface of the Earth into space.",
        "question": "What vehicle is leaving the ground in this picture?",
        "answer": "A launch vehicle rising from the pad on a column of exhaust.",
        "ask": "Why can rocket engines work in space?",
    },
    {
        "key": "motorcycle", "loader": "stereo_motorcycle",
        "caption": "A red sports motorcycle parked indoors in front of a dark wall.",
        "headline": "Motorcycle show draws crowds to the exhibition hall",
        "fact": "Sport bikes put the rider in a forward lean so that the machine handles well at high speed.",
        "entity": "Sport bike. A motorcycle designed for speed, acceleration and cornering on paved roads.",
        "question": "What type of motorcycle is this?",
        "answer": "It is a sport bike with a full fairing.",
        "ask": "Why do sport bike riders lean forward?",
    },
    {
        "key": "galaxies", "loader": "hubble_deep_field",
        "caption": "Hundreds of distant galaxies scattered across a black sky.",
        "headline": "Telescope image reveals thousands of faint galaxies",
        "fact": "The deep field pictures were taken by pointing a space telescope at one dark patch of sky for days.",
        "entity": "Hubble Deep Field. An image of a small region of the sky built from many Hubble exposures.",
        "question": "Which telescope took this picture of the sky?",
        "answer": "The image was taken by the Hubble Space Telescope.",
        "ask": "How were the deep field pictures taken?",
    },
    {
        "key": "coins", "loader": "coins",
        "caption": "Old coins of different sizes laid out in rows on a table.",
        "headline": "Museum displays coins found in a Greek excavation",
        "fact": "Ancient Greek coins were struck by hand between two engraved dies.",
        "entity": "Coin. A flat piece of metal issued by an authority and used as money.",
        "question": "How many rows of coins are there in this picture?",
        "answer": "The coins lie in four rows of six.",
        "ask": "How were ancient Greek coins made?",
    },
    {
        "key": "moon", "loader": "moon",
        "caption": "A grey close-up of the cratered surface of the moon.",
        "headline": "Lunar mission returns sharp pictures of old craters",
        "fact": "Most lunar craters were made by impacts long ago and survive because the moon has no weather.",
        "entity": "Moon. The only natural satellite of the Earth, covered in craters and dark plains of old lava.",
        "question": "What surface features are visible here?",
        "answer": "The surface is covered with impact craters.",
        "ask": "Why do craters last so long on the moon?",
    },
    {
        "key": "clock", "loader": "clock",
        "caption": "A black and white picture of a wall clock with a round face.",
        "headline": "Town hall clock restored after years of silence",
        "fact": "Wall clocks with hands show the hour on a dial divided into twelve.",
        "entity": "Clock. A device that measures and shows the time, usually on a dial with hands.",
        "question": "What object is shown in this photo?",
        "answer": "A round wall clock with hour and minute hands.",
        "ask": "How many hours does a clock dial show?",
    },
    {
        "key": "retina", "loader": "retina",
        "caption": "A photograph of the back of a human eye with red blood vessels.",
        "headline": "Eye scans could warn of heart disease, doctors say",
        "fact": "Doctors photograph the retina to check the blood vessels and the optic nerve.",
        "entity": "Retina. The light-sensitive layer of tissue at the back of the inner eye.",
        "question": "Which part of the body does this medical image show?",
        "answer": "It shows the retina at the back of the eye.",
        "ask": "Why do doctors photograph the retina?",
    },
]

# Photographs used only as extra image distractors (with a hand-written caption).
EXTRA_PHOTOS: list[tuple[str, str]] = [
    ("camera", "A man with a camera on a tripod in a field."),
    ("colorwheel", "A colour wheel with every hue around a circle."),
    ("immunohistochemistry", "A stained tissue sample under a microscope."),
    ("brick", "A grey brick wall seen straight on."),
    ("grass", "A close-up of green grass blades."),
    ("gravel", "A patch of grey gravel stones."),
    ("page", "A scanned page of printed text."),
    ("cell", "A microscope image of a single cell."),
]

COLORS = {
    "red": (200, 30, 40), "blue": (40, 70, 200), "green": (40, 150, 60), "black": (20, 20, 20),
    "white": (245, 245, 245), "yellow": (235, 205, 40), "pink": (235, 130, 170), "grey": (130, 130, 130),
}
PATTERNS = ("solid", "striped", "dotted", "checked")
GARMENTS = ("shirt", "dress", "skirt")
SHAPES = ("circle", "square", "triangle")
BACKGROUNDS = {"white": (250, 250, 250), "black": (15, 15, 15), "sky blue": (150, 200, 240),
               "sand": (220, 200, 150), "green": (120, 180, 110)}

# Hand-written prompts, four per task (they follow M-BEIR's intent: say what to retrieve).
PROMPTS: dict[int, tuple[str, str, str, str]] = {
    0: ("Find the picture that this description is about.", "Retrieve an image that matches the caption.",
        "Show me a photo for this text.", "Which image does this sentence describe?"),
    1: ("Find a passage that answers the question.", "Retrieve text that responds to this query.",
        "Look for a paragraph with the answer.", "Which passage answers this?"),
    2: ("Find a picture with a caption that answers the query.", "Retrieve an image and its text for this query.",
        "Show an illustrated passage about this.", "Which captioned image matches the query?"),
    3: ("Find the caption of this picture.", "Retrieve a description of the image.",
        "Write down what this photo shows by finding its text.", "Which sentence describes this image?"),
    4: ("Find a picture that looks almost the same as this one.", "Retrieve the most similar image.",
        "Which image is a near copy of this one?", "Show the picture that is closest to this one."),
    6: ("Answer the question about this picture with a passage.", "Retrieve text about what this image shows.",
        "Find an article that answers the question on the photo.", "Which passage explains this picture?"),
    7: ("Find the picture that this image becomes after the change described.",
        "Retrieve an image like this one but with the requested change.",
        "Apply the change in the text to the picture and find the result.",
        "Which image shows this one modified as described?"),
    8: ("Find an illustrated article that answers the question about this picture.",
        "Retrieve an image and passage about what this photo shows.",
        "Look up this picture together with its question.", "Which captioned image answers this?"),
}


@dataclass(frozen=True)
class FixturePaths:
    """Where :func:`build_fixture` wrote each part."""

    root: Path
    queries: Path  # directory of query files
    local_pools: Path  # directory of per-row pool files
    global_pool: Path  # the union pool file
    qrels: Path  # directory of qrels files
    instructions: Path
    rows: tuple[tuple[int, int], ...]
    n_queries: int
    n_candidates: int


class _Writer:
    """Collects records and images while the fixture is assembled."""

    def __init__(self, root: Path, seed: int):
        self.root = root
        self.rng = random.Random(seed)
        self.photo_cache: dict[str, object] = {}
        self.counters: dict[int, int] = {}
        self.qcounters: dict[int, int] = {}
        self.images = 0

    # ----------------------------------------------------------- identifiers
    def did(self, dataset: int) -> str:
        self.counters[dataset] = self.counters.get(dataset, 0) + 1
        return f"{dataset}:{self.counters[dataset]}"

    def qid(self, dataset: int) -> str:
        self.qcounters[dataset] = self.qcounters.get(dataset, 0) + 1
        return f"{dataset}:{self.qcounters[dataset]}"

    # ---------------------------------------------------------------- images
    def _save(self, image, dataset: int, stem: str) -> str:
        rel = Path("mbeir_images") / f"{DATASETS[dataset].lower()}_images" / f"{stem}.jpg"
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        image.convert("RGB").resize((SIZE, SIZE)).save(path, "JPEG", quality=90)
        self.images += 1
        return rel.as_posix()

    def photo(self, loader: str, dataset: int, variant: int) -> str:
        """A crop of a scikit-image photograph; ``variant`` picks the crop window."""
        from PIL import Image

        if loader not in self.photo_cache:
            try:
                import numpy as np
                import skimage.data
            except ImportError:
                raise EnvironmentProblem("the M-BEIR fixture uses scikit-image's photographs: "
                                         "pip install scikit-image") from None
            arr = getattr(skimage.data, loader)()
            arr = arr[0] if isinstance(arr, tuple) else arr
            arr = np.asarray(arr)
            if arr.dtype == bool:
                arr = arr.astype(np.uint8) * 255
            if arr.ndim == 3 and arr.shape[-1] == 4:
                arr = arr[..., :3]
            self.photo_cache[loader] = Image.fromarray(arr).convert("RGB")
        img = self.photo_cache[loader]
        w, h = img.size
        frac = 0.9 - 0.04 * (variant % 5)  # crop 90% .. 74% of the picture
        cw, ch = int(w * frac), int(h * frac)
        x = int((w - cw) * ((variant * 37) % 11) / 10)
        y = int((h - ch) * ((variant * 53) % 7) / 6)
        return self._save(img.crop((x, y, x + cw, y + ch)), dataset, f"{loader}_{variant:02d}")

    def garment(self, color: str, pattern: str, kind: str, dataset: int, stem: str) -> str:
        """A garment silhouette in one colour and pattern on a white background."""
        from PIL import Image, ImageDraw

        big = 256
        img = Image.new("RGB", (big, big), (250, 250, 250))
        mask = Image.new("L", (big, big), 0)
        d = ImageDraw.Draw(mask)
        if kind == "shirt":
            d.polygon([(70, 40), (186, 40), (236, 90), (206, 120), (186, 100), (186, 220), (70, 220), (70, 100),
                       (50, 120), (20, 90)], fill=255)
        elif kind == "dress":
            d.polygon([(100, 30), (156, 30), (170, 100), (215, 225), (41, 225), (86, 100)], fill=255)
        else:
            d.polygon([(80, 60), (176, 60), (215, 200), (41, 200)], fill=255)
        fabric = Image.new("RGB", (big, big), COLORS[color])
        fd = ImageDraw.Draw(fabric)
        accent = (250, 250, 250) if color != "white" else (30, 30, 30)
        if pattern == "striped":
            for y in range(0, big, 24):
                fd.rectangle([0, y, big, y + 9], fill=accent)
        elif pattern == "dotted":
            for y in range(10, big, 30):
                for x in range(10, big, 30):
                    fd.ellipse([x, y, x + 10, y + 10], fill=accent)
        elif pattern == "checked":
            for y in range(0, big, 32):
                for x in range(0, big, 32):
                    if (x // 32 + y // 32) % 2 == 0:
                        fd.rectangle([x, y, x + 31, y + 31], fill=accent)
        img.paste(fabric, (0, 0), mask)
        return self._save(img, dataset, stem)

    def scene(self, spec: dict, dataset: int, stem: str, jitter: int = 0) -> str:
        """Coloured shapes on a background; ``jitter`` moves them by a few pixels and shifts brightness."""
        from PIL import Image, ImageDraw, ImageEnhance

        big = 256
        img = Image.new("RGB", (big, big), BACKGROUNDS[spec["background"]])
        d = ImageDraw.Draw(img)
        for shape, color, (x, y, r) in spec["items"]:
            x, y = x + jitter, y - jitter
            fill = COLORS[color]
            if shape == "circle":
                d.ellipse([x - r, y - r, x + r, y + r], fill=fill)
            elif shape == "square":
                d.rectangle([x - r, y - r, x + r, y + r], fill=fill)
            else:
                d.polygon([(x, y - r), (x + r, y + r), (x - r, y + r)], fill=fill)
        if jitter:
            img = ImageEnhance.Brightness(img).enhance(1.0 + 0.02 * jitter)
        return self._save(img, dataset, stem)


def _scene_text(spec: dict) -> str:
    things = " and ".join(f"a {c} {s}" for s, c, _ in spec["items"])
    return f"{things[0].upper()}{things[1:]} on a {spec['background']} background."


def _random_scene(rng: random.Random, background: str | None = None) -> dict:
    n = rng.choice((1, 2))
    items = []
    for i in range(n):
        items.append((rng.choice(SHAPES), rng.choice([c for c in COLORS if c not in ("white", "black")]),
                      (70 + 110 * i + rng.randint(-10, 10), 128 + rng.randint(-40, 40), rng.randint(28, 44))))
    return {"background": background or rng.choice(list(BACKGROUNDS)), "items": items}


def build_fixture(root: str | os.PathLike, seed: int = 0) -> FixturePaths:
    """Write the fixture under ``root`` (created if needed) and return where each part went."""
    root = Path(root)
    w = _Writer(root, seed)
    rng = w.rng
    pools: dict[tuple[int, int], list[dict]] = {}
    queries: dict[tuple[int, int], list[dict]] = {}

    def cand(row, dataset, txt=None, img=None, src=None) -> dict:
        modality = ",".join(m for m, v in (("image", img), ("text", txt)) if v)
        rec = {"txt": txt, "img_path": img, "modality": modality, "did": w.did(dataset),
               "src_content": json.dumps(src) if src else None}
        pools.setdefault(row, []).append(rec)
        return rec

    def query(row, txt=None, img=None, positives=(), src=None) -> None:
        task, dataset = row
        modality = ",".join(m for m, v in (("image", img), ("text", txt)) if v)
        assert modality == TASKS[task].query_modality, (row, modality)
        queries.setdefault(row, []).append({
            "qid": w.qid(dataset), "query_txt": txt, "query_img_path": img, "query_modality": modality,
            "query_src_content": json.dumps(src) if src else None,
            "pos_cand_list": [p["did"] for p in positives], "neg_cand_list": [], "task_id": task,
        })

    variant = {p["key"]: 0 for p in PHOTOS}

    def photo(p: dict, dataset: int) -> str:
        variant[p["key"]] += 1
        return w.photo(p["loader"], dataset, variant[p["key"]])

    n_photos = len(PHOTOS)
    for r, row in enumerate(BENCHMARK_ROWS):
        task, dataset = row
        chosen = [PHOTOS[(2 * r) % n_photos], PHOTOS[(2 * r + 1) % n_photos]]
        src = lambda p: {"photo": f"skimage.data.{p['loader']}"}  # noqa: E731
        if dataset in (1, 7):  # fashion rows: garments drawn with PIL
            _fashion_row(w, rng, row, cand, query)
        elif dataset in (4, 8):  # NIGHTS and CIRR: shape scenes
            _scene_row(w, rng, row, cand, query)
        elif task == 0:  # text -> image
            text_key = "headline" if dataset == 0 else "caption"
            pos = {p["key"]: cand(row, dataset, img=photo(p, dataset), src=src(p)) for p in PHOTOS}
            for p in chosen:
                query(row, txt=p[text_key], positives=[pos[p["key"]]])
        elif task == 1:  # text -> text (WebQA)
            pos = {p["key"]: cand(row, dataset, txt=p["fact"]) for p in PHOTOS}
            for p in chosen:
                query(row, txt=p["ask"], positives=[pos[p["key"]]])
        elif task == 2:  # text -> image,text (EDIS headlines, WebQA facts)
            text_key, ask_key = ("headline", "caption") if dataset == 3 else ("fact", "ask")
            pos = {p["key"]: cand(row, dataset, txt=p[text_key], img=photo(p, dataset), src=src(p)) for p in PHOTOS}
            for p in chosen:
                query(row, txt=p[ask_key], positives=[pos[p["key"]]])
        elif task == 3:  # image -> text
            text_key = "headline" if dataset == 0 else "caption"
            pos = {p["key"]: cand(row, dataset, txt=p[text_key]) for p in PHOTOS}
            for p in chosen:
                query(row, img=photo(p, dataset), positives=[pos[p["key"]]], src=src(p))
        elif task == 6:  # image,text -> text (OVEN: entity articles; InfoSeek: answers)
            text_key = "entity" if dataset == 5 else "answer"
            pos = {p["key"]: cand(row, dataset, txt=p[text_key]) for p in PHOTOS}
            for p in chosen:
                query(row, txt=p["question"], img=photo(p, dataset), positives=[pos[p["key"]]], src=src(p))
        elif task == 8:  # image,text -> image,text
            text_key = "entity" if dataset == 5 else "answer"
            pos = {p["key"]: cand(row, dataset, txt=p[text_key], img=photo(p, dataset), src=src(p)) for p in PHOTOS}
            for p in chosen:
                query(row, txt=p["question"], img=photo(p, dataset), positives=[pos[p["key"]]], src=src(p))
        else:  # pragma: no cover - every benchmark row is handled above
            raise AssertionError(row)
        # image pools get two extra real photographs as distractors
        if TASKS[task].cand_modality == "image" and dataset not in (1, 4, 7, 8):
            for j, (loader, caption) in enumerate(EXTRA_PHOTOS[:2] if r % 2 else EXTRA_PHOTOS[2:4]):
                cand(row, dataset, img=w.photo(loader, dataset, 40 + r), src={"photo": f"skimage.data.{loader}",
                                                                               "caption": caption})

    return _write(root, pools, queries, w)


def _fashion_row(w: _Writer, rng: random.Random, row, cand, query) -> None:
    """Fashion200K (text <-> image) and FashionIQ (image + change -> image) with drawn garments."""
    task, dataset = row
    combos = [(c, p, k) for c in COLORS for p in PATTERNS for k in GARMENTS]
    rng.shuffle(combos)
    items = combos[:14]
    stem = f"t{task}"
    describe = lambda c, p, k: f"A {c} {p} {k}." if p != "solid" else f"A plain {c} {k}."  # noqa: E731
    if task == 7:  # query garment + "change the colour" -> target garment
        targets = items[:2]
        pool = {}
        for i, (c, p, k) in enumerate(items):
            pool[i] = cand(row, dataset, img=w.garment(c, p, k, dataset, f"{stem}_{i:02d}"),
                           src={"garment": [c, p, k]})
        for i, (c, p, k) in enumerate(targets):
            other = next(x for x in COLORS if x != c and (x, p, k) not in items)
            img = w.garment(other, p, k, dataset, f"{stem}_query_{i}")
            query(row, txt=f"Is {c} instead of {other}.", img=img, positives=[pool[i]],
                  src={"garment": [other, p, k], "change": f"colour to {c}"})
        return
    pool = {}
    for i, (c, p, k) in enumerate(items):
        if task == 0:
            pool[i] = cand(row, dataset, img=w.garment(c, p, k, dataset, f"{stem}_{i:02d}"), src={"garment": [c, p, k]})
        else:
            pool[i] = cand(row, dataset, txt=describe(c, p, k))
    for i, (c, p, k) in enumerate(items[:2]):
        if task == 0:
            query(row, txt=describe(c, p, k), positives=[pool[i]])
        else:
            query(row, img=w.garment(c, p, k, dataset, f"{stem}_query_{i}"), positives=[pool[i]],
                  src={"garment": [c, p, k]})


def _scene_row(w: _Writer, rng: random.Random, row, cand, query) -> None:
    """NIGHTS (image -> near-identical image) and CIRR (image + change -> image) with shape scenes."""
    task, dataset = row
    scenes = [_random_scene(rng) for _ in range(10)]
    stem = f"t{task}"
    if task == 4:
        pool = [cand(row, dataset, img=w.scene(s, dataset, f"{stem}_{i:02d}", jitter=3), src={"scene": _scene_text(s)})
                for i, s in enumerate(scenes)]
        for i in range(2):
            query(row, img=w.scene(scenes[i], dataset, f"{stem}_query_{i}"), positives=[pool[i]],
                  src={"scene": _scene_text(scenes[i])})
        return
    pool = [cand(row, dataset, img=w.scene(s, dataset, f"{stem}_{i:02d}"), src={"scene": _scene_text(s)})
            for i, s in enumerate(scenes)]
    for i in range(2):
        target = scenes[i]
        before = dict(target, background=next(b for b in BACKGROUNDS if b != target["background"]))
        query(row, txt=f"The same shapes but on a {target['background']} background.",
              img=w.scene(before, dataset, f"{stem}_query_{i}"), positives=[pool[i]],
              src={"scene": _scene_text(before)})


def _write(root: Path, pools, queries, w: _Writer) -> FixturePaths:
    qdir, ldir, gdir = root / "query" / "test", root / "cand_pool" / "local", root / "cand_pool" / "global"
    rdir, idir = root / "qrels" / "test", root / "instructions"
    for d in (qdir, ldir, gdir, rdir, idir):
        d.mkdir(parents=True, exist_ok=True)

    def dump(path: Path, rows) -> None:
        with open(path, "w", encoding="utf-8") as fh:
            for r in rows:
                fh.write(json.dumps(r) + "\n")

    union = []
    for row in BENCHMARK_ROWS:
        task, dataset = row
        stem = file_stem(task, dataset)
        dump(qdir / f"{stem}_test.jsonl", queries[row])
        dump(ldir / f"{stem}_cand_pool.jsonl", pools[row])
        union.extend(pools[row])
        with open(rdir / f"{stem}_test_qrels.txt", "w", encoding="utf-8") as fh:
            for q in queries[row]:
                for did in q["pos_cand_list"]:
                    fh.write(f"{q['qid']} 0 {did} 1 {task}\n")
    union.sort(key=lambda c: tuple(int(x) for x in c["did"].split(":")))
    dump(gdir / "mbeir_union_test_cand_pool.jsonl", union)
    with open(idir / "query_instructions.tsv", "w", encoding="utf-8") as fh:
        fh.write("\t".join(["query_modality", "cand_modality", "dataset_name", "dataset_id",
                            "prompt_1", "prompt_2", "prompt_3", "prompt_4"]) + "\n")
        for task, dataset in BENCHMARK_ROWS:
            t = TASKS[task]
            fh.write("\t".join([t.query_modality, t.cand_modality, DATASETS[dataset], str(dataset),
                                *PROMPTS[task]]) + "\n")
    return FixturePaths(root, qdir, ldir, gdir / "mbeir_union_test_cand_pool.jsonl", rdir,
                        idir / "query_instructions.tsv", BENCHMARK_ROWS,
                        sum(len(q) for q in queries.values()), len(union))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m lsr.mbeir_fixture ROOT", file=sys.stderr)
        return 2
    paths = build_fixture(argv[0])
    print(f"wrote {paths.n_queries} queries, {paths.n_candidates} candidates and {len(paths.rows)} rows "
          f"under {paths.root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
