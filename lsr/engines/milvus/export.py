"""Exporting vector directories into a collection."""

from __future__ import annotations

import os
from typing import Sequence

from ...errors import IndexMismatchError
from ...vocab import Vocabulary
from ..report import InsertReport
from .collection import MilvusCollection
from .meta import CollectionMeta
from .tokens import vector_dir_tokens


def export_vector_dirs(
    vecdirs: Sequence[str | os.PathLike],
    uri: str,
    collection: str,
    vocab: Vocabulary | None = None,
    replace: bool = False,
    token: str | None = None,
    batch_size: int = 1000,
    progress: bool = True,
    timeout: float = 10.0,
) -> tuple[str, InsertReport]:
    """Create (or append to) a collection from vector directories; returns (action, report).

    ``vocab`` (the encoder's vocabulary, checked against the directories'
    fingerprint) makes dimension ids the vocabulary ids; without it they are
    derived from the tokens in the vectors and kept in the collection.
    Several directories (the shards of one corpus) must fit together; see
    :func:`lsr.engines.check_vector_dirs`.
    """
    from ..shards import check_vector_dirs

    infos = check_vector_dirs(vecdirs)
    info = infos[0]
    if vocab is not None and info is not None and info.vocab_fingerprint \
            and info.vocab_fingerprint != vocab.fingerprint:
        raise IndexMismatchError(f"{vecdirs[0]} was encoded with {info.encoder!r} (vocabulary "
                                 f"{info.vocab_fingerprint}), not with the given vocabulary {vocab.fingerprint}")
    col = MilvusCollection(uri, collection, token=token, timeout=timeout)
    used: list[str] | None = None

    def tokens_in_use() -> list[str]:
        nonlocal used
        if used is None:
            used = vector_dir_tokens(vecdirs)
        return used

    if vocab is not None:
        meta = CollectionMeta(info.encoder if info else None, vocab.fingerprint, len(vocab),
                              info.quantization if info else None, "vocabulary")
        action = col.create(meta, list(vocab.tokens), replace=replace)
    else:
        meta = CollectionMeta(info.encoder if info else None, info.vocab_fingerprint if info else None, None,
                              info.quantization if info else None, "derived")
        action = col.create(meta, tokens_in_use, replace=replace)
    if col.meta.ids == "derived":
        col.ensure_tokens(tokens_in_use())
    report = InsertReport()
    for d in vecdirs:
        report += col.insert_vector_dir(d, batch_size=batch_size, progress=progress, extend_tokens=False)
    col.flush()
    col.close()
    return action, report
