"""Sharded encoding: ``lsr encode --shard I/N`` keeps the documents whose id hashes to ``I`` modulo ``N``.

The hash is a BLAKE2b digest of the UTF-8 id, so every machine, process and
Python version splits a corpus the same way, and the ``N`` shards partition it
exactly. The shards' vector directories go together into one Lucene index
(``lsr index --input A B C``) or one engine collection (``lsr export --input A
B C``); :func:`check_vector_dirs` checks that they fit together.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from ..errors import IndexMismatchError, InputError
from ..vectors import OFFSETS_FILE, VectorDirInfo, iter_vectors, part_files

SHARD_HASH = "blake2b-64"


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (``0 <= index < count``)."""

    index: int
    count: int

    def __post_init__(self):
        if self.count < 1 or not (0 <= self.index < self.count):
            raise InputError(f"shard {self.index}/{self.count}: expected I/N with 0 <= I < N")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def contains(self, docid: str) -> bool:
        return shard_of(docid, self.count) == self.index

    def select(self, records: Iterable) -> list:
        """The records (anything with an ``id``) that belong to this shard, in their order."""
        return [r for r in records if shard_of(r.id, self.count) == self.index]


def parse_shard(spec: str) -> Shard:
    """``"I/N"`` -> :class:`Shard` (``--shard 0/3`` is the first of three)."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", spec or "")
    if not m:
        raise InputError(f"--shard {spec!r}: expected I/N, e.g. 0/4 for the first of four shards")
    i, n = int(m.group(1)), int(m.group(2))
    if n < 1 or i >= n:
        raise InputError(f"--shard {spec}: I must lie in 0..N-1 (got I={i}, N={n})")
    return Shard(i, n)


def shard_of(docid: str, count: int) -> int:
    """The shard (``0..count-1``) of a document id: BLAKE2b-64 of its UTF-8 bytes modulo ``count``.

    Unlike Python's ``hash()``, this does not change between processes or machines.
    """
    digest = hashlib.blake2b(docid.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count


def shard_info(shard: Shard, corpus: str | os.PathLike, corpus_records: int) -> dict:
    """The ``shard`` entry written to a vector directory's ``lsr-vectors.json``."""
    return {"index": shard.index, "count": shard.count, "hash": SHARD_HASH,
            "corpus": Path(corpus).name, "corpus_records": int(corpus_records)}


# ------------------------------------------------------- several vector dirs
def check_vector_dirs(
    vecdirs: Sequence[str | os.PathLike], allow_partial: bool = False, check_ids: bool = True,
) -> list[VectorDirInfo | None]:
    """Check that vector directories can go into one index or collection; returns their metadata.

    They must share the encoder's vocabulary fingerprint and the quantization
    (the encoder name may differ only when the vocabulary is the same), hold no
    document id twice, and, when they are shards of one corpus, be a complete
    set of ``N`` distinct shards with the same hash and corpus size (unless
    ``allow_partial``). A single directory is returned unchecked.
    """
    dirs = [Path(d) for d in vecdirs]
    if not dirs:
        raise InputError("no vector directory given")
    for d in dirs:
        if not d.is_dir() or not part_files(d):
            raise InputError(f"{d}: no vector files (part-*.jsonl from `lsr encode`, or the *.json, *.jsonl and "
                             "*.gz files of an Anserini JsonVectorCollection); create them with `lsr encode`")
    if len({d.resolve() for d in dirs}) != len(dirs):
        raise InputError("the same vector directory is given twice: " + " ".join(map(str, dirs)))
    infos = [VectorDirInfo.load(d) for d in dirs]
    if len(dirs) == 1:
        return infos
    first_dir, first = dirs[0], infos[0]
    for d, info in zip(dirs[1:], infos[1:]):
        if (first is None) != (info is None):
            raise IndexMismatchError(f"{first_dir if first is None else d} has no lsr-vectors.json metadata but "
                                     f"{d if first is None else first_dir} has; combine only directories written "
                                     "by `lsr encode` (or only foreign ones)")
        if first is None:
            continue
        if first.vocab_fingerprint != info.vocab_fingerprint:
            raise IndexMismatchError(f"{d} was encoded with {info.encoder!r} (vocabulary {info.vocab_fingerprint}) but "
                                     f"{first_dir} with {first.encoder!r} (vocabulary {first.vocab_fingerprint}); "
                                     "encode every shard with the same model")
        if first.quantization != info.quantization:
            raise IndexMismatchError(f"{d} is quantized with {info.quantization} but {first_dir} with "
                                     f"{first.quantization}; encode every shard with the same --scale/--max-value")
        if first.role != info.role:
            raise IndexMismatchError(f"{d} holds {info.role} vectors but {first_dir} {first.role} vectors")
    _check_shard_set(dirs, infos, allow_partial)
    if check_ids:
        _check_unique_ids(dirs, infos)
    return infos


def _check_shard_set(dirs: list[Path], infos: list, allow_partial: bool) -> None:
    shards = [(d, (i.extra.get("shard") if i is not None else None)) for d, i in zip(dirs, infos)]
    with_shard = [(d, s) for d, s in shards if isinstance(s, dict)]
    if not with_shard:
        return
    d0, s0 = with_shard[0]
    seen: dict[int, Path] = {}
    for d, s in with_shard:
        for key in ("count", "hash", "corpus_records"):
            if s.get(key) != s0.get(key):
                raise IndexMismatchError(f"{d} is shard {s.get('index')}/{s.get('count')} of a corpus of "
                                         f"{s.get('corpus_records')} records ({s.get('hash')}) but {d0} is shard "
                                         f"{s0.get('index')}/{s0.get('count')} of {s0.get('corpus_records')} records "
                                         f"({s0.get('hash')}); combine shards of one `lsr encode --shard I/N` split")
        if s.get("index") in seen:
            raise InputError(f"{d} and {seen[s['index']]} are both shard {s['index']}/{s['count']}")
        seen[s.get("index")] = d
    missing = sorted(set(range(int(s0["count"]))) - set(seen))
    if missing and not allow_partial:
        n = s0["count"]
        raise InputError(f"shard(s) {', '.join(f'{m}/{n}' for m in missing)} missing: give all "
                         f"{s0['count']} shard directories of the split (got {len(seen)})")


def _ids(d: Path) -> Iterator[str]:
    offsets = d / OFFSETS_FILE
    if offsets.is_file():
        with open(offsets, encoding="utf-8") as fh:
            for line in fh:
                yield line.split("\t", 1)[0]
    else:
        for p in part_files(d):
            for rid, _, _ in iter_vectors(p):
                yield rid


def _check_unique_ids(dirs: list[Path], infos: list) -> None:
    owner: dict[str, int] = {}
    for k, d in enumerate(dirs):
        for rid in _ids(d):
            prev = owner.setdefault(rid, k)
            if prev != k:
                raise InputError(f"document {rid!r} is in both {dirs[prev]} and {d}; shards must not overlap "
                                 "(split one corpus with `lsr encode --shard I/N`)")
