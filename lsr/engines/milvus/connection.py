"""Reaching Milvus: pymilvus (imported when used), addresses, collection names and the collection's fields."""

from __future__ import annotations

import contextlib
import logging
import re

from ...errors import EnvironmentProblem, InputError, first_line

INSTALL_HINT = 'pip install "pymilvus>=2.5,<2.6"  (or pip install -e ".[milvus]")'
ID_FIELD = "docid"
VECTOR_FIELD = "vector"
MAX_ID_BYTES = 512  # VARCHAR max_length of the primary key
VOCAB_SUFFIX = "_lsr_vocab"
MAX_VARCHAR_BYTES = 65_535  # the largest VARCHAR max_length Milvus accepts (and enforces)
VOCAB_CHUNK_BYTES = 60_000  # token-list chunks stay below it
MAX_TOPK = 16_384  # Milvus' limit on limit + offset
QUERY_BATCH = 256
SEARCH_PARAMS = {"metric_type": "IP", "params": {"drop_ratio_search": 0.0}}  # exact: drop nothing
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def import_pymilvus():
    try:
        import pymilvus
    except ImportError:
        raise EnvironmentProblem(f"Milvus support needs the pymilvus package: {INSTALL_HINT}") from None
    return pymilvus


def parse_milvus_uri(spec: str) -> tuple[str, str]:
    """``milvus://HOST:PORT/COLLECTION`` -> (``http://HOST:PORT``, ``COLLECTION``).

    ``milvus+https://`` selects TLS; the port defaults to 19530.
    """
    m = re.fullmatch(r"milvus(?:\+(https?))?://([^/\s]+)/([^/\s]+)/?", spec.strip())
    if not m:
        raise InputError(f"{spec!r}: expected milvus://HOST:PORT/COLLECTION (or milvus+https://...)")
    scheme, host, collection = m.group(1) or "http", m.group(2), m.group(3)
    if ":" not in host.rsplit("]", 1)[-1]:
        host += ":19530"
    check_collection_name(collection)
    return f"{scheme}://{host}", collection


def check_collection_name(name: str) -> str:
    if not _NAME.fullmatch(name or "") or len(name) + len(VOCAB_SUFFIX) > 255:
        raise InputError(f"collection name {name!r}: Milvus allows letters, digits and underscores, starting with "
                         f"a letter or underscore, at most {255 - len(VOCAB_SUFFIX)} characters here")
    return name


@contextlib.contextmanager
def quiet_pymilvus():
    """pymilvus logs every failed call; failures here are caught and reported per document instead."""
    log = logging.getLogger("pymilvus")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(level)


def error_line(e: BaseException) -> str:
    """pymilvus errors carry their text in ``message``; ``str(e)`` wraps it in the error code."""
    return first_line(getattr(e, "message", None) or e)
