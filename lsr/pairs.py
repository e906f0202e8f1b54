"""Training pairs (query, positive document) of any modality, read from BEIR-style or M-BEIR JSONL.

BEIR-style directory (``lsr train`` data format ``beir``)::

    DIR/corpus.jsonl     {"_id": str, "title"?: str, "text"?: str, "image"?: path}
    DIR/queries.jsonl    {"_id": str, "text"?: str, "image"?: path, "instruction"?: str}
    DIR/qrels/SPLIT.tsv  query-id, corpus-id, score (pairs with score > 0 are used)

Captioned images (format ``captions``, see :mod:`lsr.captions`): a captions
JSONL, a Flickr token file (``split`` the path of a split list) or a Karpathy
JSON (``split`` a split name); captions are the queries, their images the
documents.

M-BEIR (format ``mbeir``): a query file with ``qid``, ``query_txt``,
``query_img_path``, ``pos_cand_list`` (and optionally ``instruction``) per line,
and a candidate pool with ``did``, ``txt``, ``img_path`` per line, read by the
M-BEIR readers of :mod:`lsr.mbeir.records` under their lenient rule: ids are any
non-empty strings (or integers), the modality follows from the parts present.

Image paths are relative to ``image_root`` (default: the directory of the file
that names them). Every record needs text, an image or both; a named image
that does not exist is an error naming the file, line and path. Images are
decoded only when used (by :func:`lsr.inputs.load_image`, whose errors name
the image file).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError
from .inputs import Input
from .io import iter_jsonl, read_qrels
from .mbeir.records import read_pool, read_queries


@dataclass(frozen=True)
class Pair:
    """One training example: a query and a document that matches it."""

    query: Input
    document: Input
    query_id: str
    doc_id: str


def _string_id(path, n: int, obj: dict, key: str) -> str:
    if key not in obj:
        raise InputError(f"{path}:{n}: missing {key!r}")
    value = obj[key]
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{path}:{n}: {key!r} must be a non-empty string, got {value!r}")
    return value


def _optional_str(path, n: int, obj: dict, key: str) -> str | None:
    value = obj.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InputError(f"{path}:{n}: {key!r} must be a string, got {type(value).__name__}")
    return value


def _image_path(path, n: int, obj: dict, key: str, root: Path, check: bool) -> str | None:
    rel = _optional_str(path, n, obj, key)
    if rel is None:
        return None
    p = Path(os.path.expanduser(rel))
    p = p if p.is_absolute() else root / p
    if check and not p.is_file():
        raise InputError(f"{path}:{n}: image {p} does not exist (relative paths are resolved against {root}; "
                         "set image_root)")
    return str(p)


def _make_input(path, n: int, text: str | None, image: str | None, instruction: str | None = None) -> Input:
    if not (text and text.strip()) and image is None:
        raise InputError(f"{path}:{n}: the record has neither text nor an image")
    return Input(text=text, image=image, instruction=instruction)


# ------------------------------------------------------------------- BEIR
def read_beir_inputs(path: str | os.PathLike, image_root: str | os.PathLike | None = None,
                     role: str = "document", check_images: bool = True) -> dict[str, Input]:
    """``{id: Input}`` from a BEIR-style JSONL file whose lines may name an ``image``.

    Documents join ``title`` and ``text``; queries may carry an ``instruction``.
    """
    path = Path(path)
    root = Path(image_root) if image_root is not None else path.parent
    out: dict[str, Input] = {}
    for n, obj in iter_jsonl(path):
        rid = _string_id(path, n, obj, "_id")
        if rid in out:
            raise InputError(f"{path}:{n}: duplicate id {rid!r}; ids must be unique")
        title = _optional_str(path, n, obj, "title")
        text = _optional_str(path, n, obj, "text")
        if role == "document" and title:
            text = f"{title} {text}".strip() if text else title
        image = _image_path(path, n, obj, "image", root, check_images)
        instruction = _optional_str(path, n, obj, "instruction") if role == "query" else None
        out[rid] = _make_input(path, n, text, image, instruction)
    return out


def read_beir_pairs(root: str | os.PathLike, split: str = "train", image_root: str | os.PathLike | None = None,
                    instruction: str | None = None, check_images: bool = True) -> list[Pair]:
    """Pairs from a BEIR-style directory: every qrels entry with a positive score."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: not a directory; a BEIR-style dataset has corpus.jsonl, queries.jsonl and qrels/")
    qrels_path = root / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        raise InputError(f"{qrels_path}: file not found (split {split!r}); pick another split")
    docs = read_beir_inputs(root / "corpus.jsonl", image_root, "document", check_images)
    queries = read_beir_inputs(root / "queries.jsonl", image_root, "query", check_images)
    qrels = read_qrels(qrels_path)
    pairs = []
    for qid, judged in qrels.items():
        for did, rel in judged.items():
            if rel <= 0:
                continue
            if qid not in queries:
                raise InputError(f"{qrels_path}: query {qid!r} is not in {root / 'queries.jsonl'}")
            if did not in docs:
                raise InputError(f"{qrels_path}: document {did!r} is not in {root / 'corpus.jsonl'}")
            q = queries[qid]
            if instruction and not q.instruction:
                q = Input(q.text, q.image, instruction)
            pairs.append(Pair(q, docs[did], qid, did))
    if not pairs:
        raise InputError(f"{qrels_path}: no pair with a positive score")
    return pairs


# ----------------------------------------------------------------- M-BEIR
def read_mbeir_candidates(path: str | os.PathLike, image_root: str | os.PathLike | None = None,
                          check_images: bool = True) -> dict[str, Input]:
    """``{did: Input}`` from an M-BEIR-style candidate pool (``did``, ``txt``, ``img_path``).

    Read by :func:`lsr.mbeir.read_pool` with ``strict=False``: see
    :mod:`lsr.mbeir.records` for what a record may hold.
    """
    path = Path(path)
    pool = read_pool(path, image_root if image_root is not None else path.parent, check_images, strict=False)
    return {c.did: Input(text=c.text, image=c.image) for c in pool}


def read_mbeir_pairs(queries: str | os.PathLike, candidates: str | os.PathLike,
                     image_root: str | os.PathLike | None = None, instruction: str | None = None,
                     check_images: bool = True) -> list[Pair]:
    """One pair per (query, positive candidate) of an M-BEIR-style query file.

    Read by :func:`lsr.mbeir.read_queries` with ``strict=False``; a query's own
    ``instruction`` field wins over the ``instruction`` argument.
    """
    queries = Path(queries)
    pool = read_mbeir_candidates(candidates, image_root, check_images)
    records = read_queries(queries, image_root if image_root is not None else queries.parent, check_images,
                           strict=False)
    pairs = []
    for q in records:
        query = Input(text=q.text, image=q.image, instruction=q.instruction or instruction)
        for did in q.positives:
            if did not in pool:
                raise InputError(f"{q.source}: positive candidate {did!r} is not in {candidates}")
            pairs.append(Pair(query, pool[did], q.qid, did))
    return pairs


def read_pairs(data: str | os.PathLike, data_format: str = "auto", split: str = "train",
               candidates: str | os.PathLike | None = None, image_root: str | os.PathLike | None = None,
               instruction: str | None = None, check_images: bool = True) -> list[Pair]:
    """Pairs from a BEIR-style directory or an M-BEIR query file (``data_format`` ``auto`` decides by the path)."""
    data = Path(data)
    if data_format == "auto":
        data_format = "beir" if data.is_dir() else ("captions" if _looks_like_captions(data) else "mbeir")
    if data_format == "captions":
        from .captions import read_captions

        split_arg: str | None = split
        if data.suffix not in (".json", ".jsonl"):  # a token file: split is the path of a split list
            if split and Path(split).is_file():
                split_arg = split
            elif split in (None, "", "train"):
                split_arg = None  # the default split name: every captioned image of the file
            else:
                raise InputError(f"{data}: split {split!r} is not a split list file (e.g. Flickr_8k.trainImages.txt)")
        return read_captions(data, split_arg, image_root, check_images).pairs()
    if data_format == "beir":
        return read_beir_pairs(data, split, image_root, instruction, check_images)
    if data_format == "mbeir":
        if candidates is None:
            raise InputError(f"{data}: M-BEIR data needs its candidate pool (candidates = path of the pool JSONL)")
        return read_mbeir_pairs(data, candidates, image_root, instruction, check_images)
    raise InputError(f"data format must be 'auto', 'beir', 'mbeir' or 'captions', not {data_format!r}")


def _looks_like_captions(path: Path) -> bool:
    """A captions JSONL (``image`` + ``caption`` fields), a Karpathy JSON or a Flickr token file."""
    if path.suffix == ".json":
        return True
    try:
        with open(path, encoding="utf-8") as fh:
            first = next((line for line in fh if line.strip()), "")
    except (OSError, UnicodeDecodeError):
        return False
    if path.suffix == ".jsonl":
        return '"caption"' in first and '"image"' in first
    return "\t" in first and "#" in first.split("\t", 1)[0]
