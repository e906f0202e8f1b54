"""Captioned image collections (Flickr8k, Flickr30k, COCO) and their retrieval protocol.

Three file formats are read into one :class:`CaptionSet`:

* JSONL, one caption a line: ``{"image": "images/<name>.jpg", "caption": "...", "caption_id"?: "..."}``
  (image paths relative to the file, or absolute);
* the original Flickr token file, ``<name>#<n>\\t<caption>`` a line, with an
  optional split list (one image file name a line, e.g. ``Flickr_8k.devImages.txt``)
  and the folder that holds the images;
* Karpathy-style ``dataset_flickr8k.json`` / ``dataset_coco.json``
  (``{"images": [{"filename", "filepath"?, "split", "sentences": [{"raw"}]}]}``)
  with a split name (``train``, ``val``, ``test``, ``restval``).

The standard protocol (Hodosh et al. 2013; Karpathy and Fei-Fei 2015):
text→image ranks every image of the set for each caption (one correct image);
image→text ranks every caption for each image, and a hit is any of that
image's captions within the top ``k``. Recall@1/5/10 both ways.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .errors import InputError
from .inputs import Input
from .io import iter_jsonl
from .pairs import Pair

#: Recall cut-offs of the standard protocol.
RECALL_CUTOFFS = (1, 5, 10)


@dataclass
class CaptionSet:
    """Images and their captions, in file order.

    ``image_ids`` are the image file names (``"1000268201_693b08cb0e.jpg"``),
    ``images`` their resolved paths, ``caption_image[j]`` the index of caption
    ``j``'s image.
    """

    image_ids: list[str]
    images: list[str]
    caption_ids: list[str]
    captions: list[str]
    caption_image: np.ndarray
    source: str = ""
    _by_image: list[list[int]] | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.captions)

    @property
    def image_captions(self) -> list[list[int]]:
        """For each image, the indices of its captions."""
        if self._by_image is None:
            by: list[list[int]] = [[] for _ in self.image_ids]
            for j, i in enumerate(self.caption_image):
                by[int(i)].append(j)
            self._by_image = by
        return self._by_image

    def image_of(self) -> dict[str, str]:
        """``{caption_id: image_id}``."""
        return {c: self.image_ids[int(i)] for c, i in zip(self.caption_ids, self.caption_image)}

    def pairs(self) -> list[Pair]:
        """Training pairs: the caption as the query, its image as the document."""
        docs = [Input(image=p) for p in self.images]
        return [Pair(Input(text=t), docs[int(i)], cid, self.image_ids[int(i)])
                for cid, t, i in zip(self.caption_ids, self.captions, self.caption_image)]

    def head(self, n_images: int) -> "CaptionSet":
        """The first ``n_images`` images with all their captions (small runs, tests)."""
        n_images = max(0, min(n_images, len(self.image_ids)))
        keep = [j for j, i in enumerate(self.caption_image) if i < n_images]
        return CaptionSet(self.image_ids[:n_images], self.images[:n_images], [self.caption_ids[j] for j in keep],
                          [self.captions[j] for j in keep], self.caption_image[keep].copy(), self.source)


class _Builder:
    def __init__(self, source: str):
        self.source = source
        self.index: dict[str, int] = {}
        self.image_ids: list[str] = []
        self.images: list[str] = []
        self.caption_ids: list[str] = []
        self.captions: list[str] = []
        self.caption_image: list[int] = []
        self.seen_captions: set[str] = set()

    def add(self, where: str, image_id: str, image_path: Path, caption: str, caption_id: str | None,
            check: bool) -> None:
        if not isinstance(caption, str) or not caption.strip():
            raise InputError(f"{where}: empty caption")
        i = self.index.get(image_id)
        if i is None:
            if check and not image_path.is_file():
                raise InputError(f"{where}: image {image_path} does not exist")
            i = self.index[image_id] = len(self.image_ids)
            self.image_ids.append(image_id)
            self.images.append(str(image_path))
        cid = caption_id or f"{image_id}#{len(self.caption_ids)}"
        if cid in self.seen_captions:
            raise InputError(f"{where}: duplicate caption id {cid!r}")
        self.seen_captions.add(cid)
        self.caption_ids.append(cid)
        self.captions.append(caption.strip())
        self.caption_image.append(i)

    def build(self) -> CaptionSet:
        if not self.captions:
            raise InputError(f"{self.source}: no captions")
        return CaptionSet(self.image_ids, self.images, self.caption_ids, self.captions,
                          np.asarray(self.caption_image, dtype=np.int64), self.source)


def _resolve(root: Path, rel: str) -> Path:
    p = Path(os.path.expanduser(rel))
    return p if p.is_absolute() else root / p


def read_caption_jsonl(path: str | os.PathLike, image_root: str | os.PathLike | None = None,
                       check_images: bool = True) -> CaptionSet:
    """Read ``{"image", "caption", "caption_id"?}`` lines; image paths are relative to the file (or ``image_root``)."""
    path = Path(path)
    root = Path(image_root) if image_root is not None else path.parent
    b = _Builder(str(path))
    for n, obj in iter_jsonl(path):
        where = f"{path}:{n}"
        image, caption = obj.get("image"), obj.get("caption")
        if not isinstance(image, str) or not image.strip():
            raise InputError(f"{where}: 'image' must be an image path, got {image!r} "
                             '(a line looks like {"image": "images/1.jpg", "caption": "a dog runs"})')
        if not isinstance(caption, str):
            raise InputError(f"{where}: 'caption' must be a string, got {caption!r}")
        cid = obj.get("caption_id")
        if cid is not None and not isinstance(cid, str):
            cid = str(cid)
        b.add(where, Path(image).name, _resolve(root, image), caption, cid, check_images)
    return b.build()


def read_flickr_tokens(token_file: str | os.PathLike, split_list: str | os.PathLike | None = None,
                       image_dir: str | os.PathLike | None = None, check_images: bool = True) -> CaptionSet:
    """Read Flickr's ``<name>#<n>\\t<caption>`` token file, restricted to the images of ``split_list``.

    ``image_dir`` defaults to ``images/`` beside the token file. Images keep
    the split list's order; every image named by the split list must have
    captions in the token file and exist on disk.
    """
    token_file = Path(token_file)
    root = Path(image_dir) if image_dir is not None else token_file.parent / "images"
    by_image: dict[str, list[tuple[int, str, str]]] = {}
    try:
        lines = token_file.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise InputError(f"{token_file}: file not found") from None
    except UnicodeDecodeError as e:
        raise InputError(f"{token_file}: not valid UTF-8 ({e})") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        key, sep, caption = line.partition("\t")
        name, hash_, _ = key.partition("#")
        if not sep or not hash_ or not name:
            raise InputError(f"{token_file}:{n}: expected '<image name>#<n><TAB><caption>', got {line[:80]!r}")
        by_image.setdefault(name, []).append((n, key, caption))
    if split_list is not None:
        split_list = Path(split_list)
        try:
            names = [(n, s.strip()) for n, s in enumerate(split_list.read_text(encoding="utf-8").splitlines(), 1)
                     if s.strip()]
        except FileNotFoundError:
            raise InputError(f"{split_list}: file not found") from None
        for n, name in names:
            if name not in by_image:
                raise InputError(f"{split_list}:{n}: image {name} has no captions in {token_file}")
            if check_images and not (root / name).is_file():
                raise InputError(f"{split_list}:{n}: image {root / name} does not exist (image_dir={root})")
    else:
        names = [(0, name) for name in by_image]
    b = _Builder(str(token_file))
    for _, name in names:
        for n, key, caption in by_image[name]:
            b.add(f"{token_file}:{n}", name, root / name, caption, key, check_images)
    return b.build()


def read_karpathy_json(path: str | os.PathLike, split: str | Sequence[str] = "test",
                       image_root: str | os.PathLike | None = None, check_images: bool = True) -> CaptionSet:
    """Read a Karpathy-style ``dataset_*.json``: the images of ``split`` (a name or several) with their sentences.

    Image paths are ``image_root/filepath/filename`` (``filepath`` when the
    file has it, as COCO's does); ``image_root`` defaults to the JSON file's folder.
    """
    path = Path(path)
    root = Path(image_root) if image_root is not None else path.parent
    splits = {split} if isinstance(split, str) else set(split)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not valid JSON ({e})") from None
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list):
        raise InputError(f"{path}: expected an object with an 'images' list (Karpathy's dataset_*.json)")
    b = _Builder(str(path))
    for k, img in enumerate(images):
        where = f"{path}: images[{k}]"
        if not isinstance(img, dict) or not isinstance(img.get("filename"), str):
            raise InputError(f"{where}: expected an object with 'filename'")
        if img.get("split") not in splits:
            continue
        rel = os.path.join(img.get("filepath") or "", img["filename"])
        sentences = img.get("sentences")
        if not isinstance(sentences, list) or not sentences:
            raise InputError(f"{where} ({img['filename']}): no sentences")
        for s in sentences:
            raw = s.get("raw") if isinstance(s, dict) else None
            if not isinstance(raw, str):
                raise InputError(f"{where} ({img['filename']}): a sentence without 'raw' text")
            sid = s.get("sentid")
            b.add(where, img["filename"], _resolve(root, rel), raw,
                  f"{img['filename']}#{sid}" if sid is not None else None, check_images)
    if not b.captions:
        raise InputError(f"{path}: no image in split {sorted(splits)}; "
                         f"splits present: {sorted({str(i.get('split')) for i in images if isinstance(i, dict)})}")
    return b.build()


def read_captions(path: str | os.PathLike, split: str | None = None, image_root: str | os.PathLike | None = None,
                  check_images: bool = True) -> CaptionSet:
    """Read any of the three formats, chosen by the file: ``.jsonl``, ``.json`` (Karpathy) or a token file.

    For a token file, ``split`` is the path of a split list; for a Karpathy
    file, a split name (default ``test``).
    """
    path = Path(path)
    if path.suffix == ".jsonl":
        return read_caption_jsonl(path, image_root, check_images)
    if path.suffix == ".json":
        return read_karpathy_json(path, split or "test", image_root, check_images)
    return read_flickr_tokens(path, split, image_root, check_images)


# ----------------------------------------------------------------- protocol
def text_to_image_recall(run: Mapping[str, Sequence[str]], captions: CaptionSet,
                         cutoffs: Sequence[int] = RECALL_CUTOFFS) -> dict[str, float]:
    """Recall@k of ranked image ids per caption id: the share of captions whose image is in the top ``k``.

    Captions missing from ``run`` count as misses.
    """
    gold = captions.image_of()
    ranks = [_rank_of(run.get(cid, ()), {image}) for cid, image in gold.items()]
    return _recalls(ranks, cutoffs)


def image_to_text_recall(run: Mapping[str, Sequence[str]], captions: CaptionSet,
                         cutoffs: Sequence[int] = RECALL_CUTOFFS) -> dict[str, float]:
    """Recall@k of ranked caption ids per image id: a hit when any of the image's captions is in the top ``k``."""
    ranks = []
    for i, image_id in enumerate(captions.image_ids):
        own = {captions.caption_ids[j] for j in captions.image_captions[i]}
        ranks.append(_rank_of(run.get(image_id, ()), own))
    return _recalls(ranks, cutoffs)


def _rank_of(ranked: Sequence[str], relevant: set[str]) -> int:
    for r, docid in enumerate(ranked, 1):
        if docid in relevant:
            return r
    return 0  # not retrieved


def _recalls(ranks: list[int], cutoffs: Sequence[int]) -> dict[str, float]:
    r = np.asarray(ranks)
    n = max(1, len(r))
    return {f"R@{k}": round(float(((r >= 1) & (r <= k)).sum()) / n, 4) for k in cutoffs}


def partial_caption(text: str, keep: float = 0.5) -> str:
    """The first ``keep`` share of a caption's words (at least one word)."""
    words = text.split()
    return " ".join(words[:max(1, int(np.ceil(len(words) * keep)))])


@dataclass
class ComposedTask:
    """Image + partial caption -> the image's other captions (a composed query built from a caption set).

    For each image with two or more captions, the query is the image with the
    first half of its first caption; the candidates are every other caption of
    the set (first captions left out); a hit is any of the query image's other
    captions. Neither half alone suffices: the image does not say which words
    a captioner chose, the partial caption names only part of the scene.
    """

    query_ids: list[str]
    queries: list[Input]
    candidate_ids: list[str]
    candidates: list[str]
    relevant: dict[str, set[str]]

    def recall(self, run: Mapping[str, Sequence[str]], cutoffs: Sequence[int] = RECALL_CUTOFFS) -> dict[str, float]:
        """Recall@k: the share of queries with any relevant caption in the top ``k``."""
        return _recalls([_rank_of(run.get(q, ()), self.relevant[q]) for q in self.query_ids], cutoffs)


def composed_task(captions: CaptionSet, keep: float = 0.5) -> ComposedTask:
    """The composed task of ``captions`` (see :class:`ComposedTask`)."""
    query_ids, queries, relevant, first = [], [], {}, set()
    for i, rows in enumerate(captions.image_captions):
        if len(rows) < 2:
            continue
        head = rows[0]
        first.add(head)
        qid = f"{captions.image_ids[i]}+{captions.caption_ids[head]}"
        query_ids.append(qid)
        queries.append(Input(text=partial_caption(captions.captions[head], keep), image=captions.images[i]))
        relevant[qid] = {captions.caption_ids[j] for j in rows[1:]}
    keep_rows = [j for j in range(len(captions.captions)) if j not in first]
    return ComposedTask(query_ids, queries, [captions.caption_ids[j] for j in keep_rows],
                        [captions.captions[j] for j in keep_rows], relevant)


def composed_pairs(captions: CaptionSet, keep: float = 0.5, per_image: int | None = None
                   ) -> tuple[list[Input], list[Input], list[str]]:
    """Training pairs of the composed task: (image + partial caption j) -> caption j+1 of the same image, for
    every image with two or more captions; ``(queries, documents, groups)``, the group being the image (its
    captions are not negatives of each other). ``per_image`` pairs per image (default: one per caption),
    starting at a different caption for each image."""
    queries, docs, groups = [], [], []
    for i, rows in enumerate(captions.image_captions):
        if len(rows) < 2:
            continue
        count = len(rows) if per_image is None else min(per_image, len(rows))
        for n in range(i, i + count):
            j, other = rows[n % len(rows)], rows[(n + 1) % len(rows)]
            queries.append(Input(text=partial_caption(captions.captions[j], keep), image=captions.images[i]))
            docs.append(Input(text=captions.captions[other]))
            groups.append(captions.image_ids[i])
    return queries, docs, groups


def rank_by_scores(scores: np.ndarray, query_ids: Sequence[str], candidate_ids: Sequence[str],
                   k: int = 10) -> dict[str, list[str]]:
    """Top-``k`` candidate ids per query of a ``[queries, candidates]`` score matrix (ties: lower index first)."""
    k = min(k, scores.shape[1])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < scores.shape[1] else np.tile(
        np.arange(scores.shape[1]), (scores.shape[0], 1))
    out = {}
    for qi, qid in enumerate(query_ids):
        row = top[qi]
        order = row[np.lexsort((row, -scores[qi, row]))]
        out[qid] = [candidate_ids[j] for j in order]
    return out


__all__ = ["RECALL_CUTOFFS", "CaptionSet", "ComposedTask", "composed_pairs", "composed_task", "image_to_text_recall",
           "partial_caption", "rank_by_scores", "read_caption_jsonl", "read_captions", "read_flickr_tokens",
           "read_karpathy_json", "text_to_image_recall", "write_beir"]


# ------------------------------------------------------------ BEIR layout
def write_beir(captions: CaptionSet, out: str | os.PathLike, direction: str = "t2i", split: str = "test",
               overwrite: bool = False) -> Path:
    """Write a caption set as a BEIR-style directory that ``lsr encode/index/search/eval`` and ``lsr train`` read.

    ``t2i``: the corpus holds the images (``{"_id", "image"}``), the queries the
    captions, and qrels link each caption to its image. ``i2t``: the corpus
    holds the captions, the queries the images, and qrels link each image to
    its captions. Image paths are absolute. Recall@k of ``lsr eval`` on a
    ``t2i`` directory is the protocol's text->image Recall@k (one relevant image
    per caption); on ``i2t`` it counts every caption, so use
    :func:`image_to_text_recall` for the protocol's image->text figure.
    """
    if direction not in ("t2i", "i2t"):
        raise InputError(f"direction must be 't2i' or 'i2t', not {direction!r}")
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise InputError(f"{out} already exists and is not empty; choose another directory or pass overwrite")
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    images = [{"_id": i, "image": os.path.abspath(p)} for i, p in zip(captions.image_ids, captions.images)]
    texts = [{"_id": c, "text": t} for c, t in zip(captions.caption_ids, captions.captions)]
    corpus, queries = (images, texts) if direction == "t2i" else (texts, images)
    for name, rows in (("corpus.jsonl", corpus), ("queries.jsonl", queries)):
        with open(out / name, "w", encoding="utf-8") as fh:
            for r in rows:
                fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    with open(out / "qrels" / f"{split}.tsv", "w", encoding="utf-8") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        for c, i in zip(captions.caption_ids, captions.caption_image):
            q, d = (c, captions.image_ids[int(i)]) if direction == "t2i" else (captions.image_ids[int(i)], c)
            fh.write(f"{q}\t{d}\t1\n")
    return out
