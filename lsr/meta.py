"""Metadata files: one JSON object with a ``format`` tag, written atomically.

The vector directory (``lsr-vectors.json``), the impact index
(``lsr-index.json``), the embedding store (``lsr-embeddings.json``) and the
STAIR model directory (``lsr-stair.json``) all record their metadata this way.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def write_meta(path: str | os.PathLike, data: dict) -> None:
    """Write ``data`` as indented JSON to ``path`` through a temporary file, so a reader never sees half of it."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_meta(path: str | os.PathLike, fmt: str | None = None) -> dict:
    """The JSON object in ``path``; raises ``ValueError`` when it is unreadable, not an object, or (with
    ``fmt``) of another format."""
    d = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(d, dict):
        raise ValueError("not a JSON object")
    if fmt is not None and d.get("format") != fmt:
        raise ValueError(f"unknown format {d.get('format')!r}")
    return d
