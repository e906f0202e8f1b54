"""On-disk store of dense document embeddings, built once and memory-mapped.

A store directory holds::

    STORE/embeddings.npy       float32 matrix [documents, dim], one row per document
    STORE/ids.txt              the docid of each row, one per line, in row order
    STORE/lsr-embeddings.json  model name and source, dimension, count, how it was built

Reranking looks rows up by docid and never re-encodes a document. The matrix
is opened with ``numpy.load(mmap_mode="r")``, so only the rows touched are
read from disk. A store is built into a temporary directory beside the target
and renamed into place when complete, so a failed build leaves nothing behind.

Documents whose text is empty (and that have no image) get a zero row: their
dense score is 0 for every query. They are counted in the metadata.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from lsr.progress import tqdm

from .errors import IndexMismatchError, InputError, option
from .meta import Meta, meta_field
from .threads import intra_op_threads

STORE_META = "lsr-embeddings.json"
MATRIX_FILE = "embeddings.npy"
IDS_FILE = "ids.txt"


@dataclass
class StoreMeta(Meta, format="lsr-embeddings", what="store metadata", remedy="rebuild the store with `lsr embed`"):
    """What ``lsr-embeddings.json`` records."""

    model: str = meta_field(required=True)  # the model name as given when the store was built
    source: str | None  # where the weights came from (resolved path or hub id)
    kind: str = meta_field(absent="dense")  # "sentence", "clip", "mllm", ...
    dim: int = meta_field(required=True)
    count: int = meta_field(required=True)
    normalized: bool = True
    empty: int = 0
    input: str | None = None
    settings: dict = field(default_factory=dict)  # max_length, prompts, fusion weight, ...
    created: float = 0.0
    dtype: str = "float32"  # of the matrix; stores are always float32


def describe_encoder(encoder) -> tuple[str, str | None, str, int]:
    """``(name, source, kind, dim)`` of a dense encoder object."""
    name = getattr(encoder, "name", None)
    dim = getattr(encoder, "dim", None)
    if not name or not isinstance(dim, int) or dim < 1:
        raise InputError(f"{type(encoder).__name__} is not a dense encoder (needs .name, .dim and "
                         "encode_documents/encode_queries returning [n, dim] arrays)")
    return str(name), getattr(encoder, "source", None), str(getattr(encoder, "kind", "dense")), dim


def check_store_output(output: str | os.PathLike, overwrite: bool = False) -> None:
    """Refuse an existing ``output`` unless ``overwrite`` (and never replace what is not a store)."""
    output = Path(output)
    if output.exists():
        if not overwrite:
            raise InputError(f"{output} already exists; pass {option('overwrite=True', '--overwrite')} to replace it")
        if output.is_dir() and any(output.iterdir()) and not (output / STORE_META).is_file():
            raise InputError(f"{output} is a non-empty directory that is not an embedding store; "
                             "refusing to overwrite it")


def build_store(
    encoder,
    inputs: Sequence[Any],
    ids: Sequence[str],
    output: str | os.PathLike,
    *,
    overwrite: bool = False,
    chunk_size: int = 256,
    progress: bool = True,
    input_path: str | None = None,
) -> "EmbeddingStore":
    """Encode ``inputs`` (texts or :class:`~lsr.inputs.Input`) with ``encoder.encode_documents``
    and write a store at ``output``. Returns the opened store."""
    name, source, kind, dim = describe_encoder(encoder)
    output = Path(output)
    ids = [str(i) for i in ids]
    if len(ids) != len(inputs):
        raise InputError(f"{len(ids)} ids for {len(inputs)} documents")
    if not ids:
        raise InputError("no documents to embed")
    bad = [i for i in ids if not i or any(c.isspace() for c in i)]
    if bad:
        raise InputError(f"docids must be non-empty without whitespace, got {bad[0]!r}")
    if len(set(ids)) != len(ids):
        raise InputError("docids must be unique")
    check_store_output(output, overwrite)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        matrix = np.lib.format.open_memmap(tmp / MATRIX_FILE, mode="w+", dtype=np.float32, shape=(len(ids), dim))
        empty = 0
        bar = tqdm(total=len(ids), unit="doc", desc=f"embed {name}", disable=not progress)
        for start in range(0, len(ids), chunk_size):
            chunk = list(inputs[start:start + chunk_size])
            keep = [i for i, x in enumerate(chunk) if not _is_empty(x)]
            empty += len(chunk) - len(keep)
            rows = np.zeros((len(chunk), dim), dtype=np.float32)
            if keep:
                vecs = np.asarray(encoder.encode_documents([chunk[i] for i in keep]), dtype=np.float32)
                if vecs.shape != (len(keep), dim):
                    raise InputError(f"{name}: encode_documents returned shape {vecs.shape}, "
                                     f"expected {(len(keep), dim)}")
                rows[keep] = vecs
            matrix[start:start + len(chunk)] = rows
            bar.update(len(chunk))
        bar.close()
        matrix.flush()
        del matrix
        (tmp / IDS_FILE).write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")
        settings = dict(getattr(encoder, "settings", lambda: {})())
        meta = StoreMeta(name, source, kind, dim, len(ids), bool(getattr(encoder, "normalized", True)), empty,
                         input_path, settings, time.time())
        meta.write(tmp / STORE_META)
        if output.exists():
            shutil.rmtree(output) if output.is_dir() else output.unlink()
        os.replace(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return EmbeddingStore(output)


def _is_empty(x: Any) -> bool:
    if isinstance(x, str):
        return not x.strip()
    return getattr(x, "image", None) is None and not (getattr(x, "text", None) or "").strip()


def dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` in float32 through torch, so dense scoring shares the thread pool of the query encoder.

    (A numpy BLAS product between two encoder calls leaves its own threads
    spinning and slows the next encoder call severalfold on many-core CPUs.)
    Small products run on one thread (see :mod:`lsr.threads`).
    """
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # read-only memory maps are only read
        ta, tb = torch.from_numpy(np.asarray(a, dtype=np.float32)), torch.from_numpy(np.asarray(b, dtype=np.float32))
    small = ta.shape[0] * ta.shape[-1] * (tb.shape[-1] if tb.dim() > 1 else 1) <= _ONE_THREAD_MACS
    with intra_op_threads(1 if small else None):
        return (ta @ tb).numpy()


# Products up to this many multiply-adds (a query against a few thousand stored rows) run on one thread.
_ONE_THREAD_MACS = 1 << 22


class EmbeddingStore:
    """A memory-mapped embedding store, looked up by docid."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.meta = self._load_meta()
        try:
            self.matrix = np.load(self.path / MATRIX_FILE, mmap_mode="r")
        except FileNotFoundError:
            raise InputError(f"{self.path}: {MATRIX_FILE} is missing; rebuild the store with `lsr embed`") from None
        except ValueError as e:
            raise InputError(f"{self.path}/{MATRIX_FILE}: not a readable .npy matrix ({e}); "
                             "rebuild the store with `lsr embed`") from None
        if self.matrix.dtype != np.float32 or self.matrix.ndim != 2:
            raise InputError(f"{self.path}/{MATRIX_FILE}: expected a 2-d float32 matrix, got "
                             f"{self.matrix.ndim}-d {self.matrix.dtype}; rebuild the store with `lsr embed`")
        if self.matrix.shape != (self.meta.count, self.meta.dim):
            raise InputError(f"{self.path}: the matrix has shape {self.matrix.shape} but {STORE_META} says "
                             f"{self.meta.count} documents of dimension {self.meta.dim}; rebuild the store")
        try:
            self.ids = (self.path / IDS_FILE).read_text(encoding="utf-8").split("\n")[:-1]
        except FileNotFoundError:
            raise InputError(f"{self.path}: {IDS_FILE} is missing; rebuild the store with `lsr embed`") from None
        if len(self.ids) != self.meta.count:
            raise InputError(f"{self.path}: {IDS_FILE} lists {len(self.ids)} docids for {self.meta.count} rows; "
                             "rebuild the store")
        self._row = {d: i for i, d in enumerate(self.ids)}
        if len(self._row) != len(self.ids):
            raise InputError(f"{self.path}: {IDS_FILE} lists a docid twice; rebuild the store")

    def _load_meta(self) -> StoreMeta:
        if not self.path.is_dir():
            raise InputError(f"{self.path}: embedding store not found; build one with "
                             "`lsr embed --model M --input corpus.jsonl --output STORE`")
        p = self.path / STORE_META
        if not p.is_file():
            raise InputError(f"{self.path}: not an embedding store (no {STORE_META}); build one with "
                             "`lsr embed --model M --input corpus.jsonl --output STORE`")
        return StoreMeta.read(p)

    # --------------------------------------------------------------- basics
    @property
    def dim(self) -> int:
        return self.meta.dim

    @property
    def model(self) -> str:
        return self.meta.model

    def __len__(self) -> int:
        return self.meta.count

    def __contains__(self, docid: str) -> bool:
        return docid in self._row

    def __repr__(self) -> str:
        return f"EmbeddingStore({str(self.path)!r}, model={self.model!r}, dim={self.dim}, documents={len(self)})"

    # --------------------------------------------------------------- checks
    def check_encoder(self, encoder) -> None:
        """Refuse a query encoder other than the one the store was built with, or of another dimension."""
        name, source, _, dim = describe_encoder(encoder)
        same = name == self.meta.model or (source is not None and source == self.meta.source)
        if not same:
            raise IndexMismatchError(
                f"{self.path} was built with model {self.meta.model!r} ({self.meta.source}); the query encoder "
                f"is {name!r} ({source}). Rerank with the store's model or rebuild the store with "
                f"`lsr embed --model {name} ...`")
        if dim != self.meta.dim:
            raise IndexMismatchError(
                f"{self.path} holds {self.meta.dim}-dimensional embeddings but the query encoder {name!r} "
                f"gives {dim} dimensions; rebuild the store with this model")

    def _check_queries(self, q: np.ndarray) -> np.ndarray:
        q = np.asarray(q, dtype=np.float32)
        if q.ndim == 1:
            q = q[None, :]
        if q.ndim != 2 or q.shape[1] != self.meta.dim:
            raise IndexMismatchError(f"query embeddings have shape {tuple(q.shape)}; {self.path} holds "
                                     f"{self.meta.dim}-dimensional embeddings of {self.meta.model!r}")
        return q

    # --------------------------------------------------------------- lookup
    def rows(self, docids: Sequence[str], missing: str = "error") -> tuple[np.ndarray, list[str]]:
        """Row numbers of ``docids`` and the docids that are not in the store.

        ``missing="error"`` raises for any unknown docid; ``missing="skip"``
        leaves them out (the returned rows then match ``[d for d in docids if d in store]``).
        """
        if missing not in ("error", "skip"):
            raise InputError(f"missing={missing!r}: use 'error' or 'skip'")
        found, absent = [], []
        for d in docids:
            i = self._row.get(d)
            if i is None:
                absent.append(d)
            else:
                found.append(i)
        if absent and missing == "error":
            shown = ", ".join(repr(d) for d in absent[:5]) + (f" and {len(absent) - 5} more" if len(absent) > 5 else "")
            raise InputError(f"{len(absent)} docids are not in the embedding store {self.path}: {shown}. Build "
                             "the store from the same corpus as the index (`lsr embed --input corpus.jsonl`), "
                             "or skip them (missing='skip' / --rerank-missing skip)")
        return np.asarray(found, dtype=np.int64), absent

    def lookup(self, docids: Sequence[str], missing: str = "error") -> tuple[np.ndarray, list[str]]:
        """The embeddings of ``docids`` as a float32 ``[m, dim]`` array, and the docids found (in order)."""
        rows, absent = self.rows(docids, missing)
        gone = set(absent)
        found = [d for d in docids if d not in gone]
        if len(rows) == 0:
            return np.zeros((0, self.meta.dim), dtype=np.float32), found
        order = np.argsort(rows, kind="stable")  # read the memory map in row order
        out = np.empty((len(rows), self.meta.dim), dtype=np.float32)
        out[order] = self.matrix[rows[order]]
        return out, found

    def score(self, query: np.ndarray, docids: Sequence[str], missing: str = "error") -> dict[str, float]:
        """Dot products of one query embedding with the stored embeddings of ``docids``."""
        q = self._check_queries(query)
        if len(q) != 1:
            raise InputError(f"score takes one query embedding, got {len(q)}")
        mat, found = self.lookup(docids, missing)
        return dict(zip(found, dot(mat, q[0]).tolist()))

    def search(self, queries: np.ndarray, k: int = 100, block: int = 65536) -> list[list[tuple[str, float]]]:
        """Exhaustive top ``k`` by dot product for each query row, ``[(docid, score)]`` best first.

        The matrix is scanned in blocks of ``block`` rows, so memory stays
        bounded by the block and the query count.
        """
        q = self._check_queries(queries)
        if k < 1:
            raise InputError(f"k must be at least 1, got {k}")
        from .exhaustive import blocked_top_k

        blocks = ((dot(self.matrix[start:start + block], q.T).T, np.arange(start, min(start + block, len(self))))
                  for start in range(0, len(self), block))  # scores [nq, b] of rows start...
        best_i, best_s = blocked_top_k(blocks, len(q), k)
        return [[(self.ids[i], float(s)) for i, s in zip(irow.tolist(), srow.tolist())]
                for irow, srow in zip(best_i, best_s)]
