"""Encode a corpus straight into a vector directory, streaming."""

from __future__ import annotations

import os
from typing import Sequence

from lsr.io import Record
from lsr.quantize import Quantizer
from lsr.vectors import VectorDirInfo, VectorWriter

from .splade import EncodeStats


def encode_to_dir(
    encoder,
    records: Sequence[Record],
    vecdir: str | os.PathLike,
    quantizer: Quantizer | None = None,
    role: str = "document",
    shard_size: int = 100_000,
    overwrite: bool = False,
    store_text: bool = True,
    chunk_size: int = 8192,
) -> VectorDirInfo:
    """Encode ``records`` with ``encoder`` and write quantized vectors to ``vecdir``.

    Every record is either written or listed in ``report.jsonl`` (empty text or
    empty vector); the returned info holds the counts and the number of
    truncated texts.
    """
    quantizer = quantizer or Quantizer()
    if role not in ("document", "query"):
        raise ValueError(f"role must be 'document' or 'query', not {role!r}")
    texts = [r.text for r in records]
    ids = [r.id for r in records]
    encode = encoder.iter_encode
    stats = EncodeStats()
    with VectorWriter(vecdir, quantizer, encoder=encoder.name, vocab=encoder.vocab, role=role,
                      shard_size=shard_size, overwrite=overwrite,
                      extra={"max_length": encoder.max_length}) as writer:
        start = 0
        for batch in encode(texts, ids, chunk_size=chunk_size, stats=stats):
            chunk_texts = texts[start:start + len(batch)]
            start += len(batch)
            empty_text = [i for i, t in enumerate(chunk_texts) if not t.strip()]
            for i in empty_text:
                writer.report(batch.ids[i], "empty text")
            if empty_text:
                keep = [i for i in range(len(batch)) if chunk_texts[i].strip()]
                batch = batch.select(keep)
                chunk_texts = [chunk_texts[i] for i in keep]
            writer.write(batch, chunk_texts if store_text else None)
        writer.info.truncated = stats.truncated
    return writer.info
