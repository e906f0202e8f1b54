"""One typed sparse value that travels between every layer.

:class:`SparseBatch` is a batch of vocabulary-sized sparse vectors stored as CSR
(``indptr``, ``indices``, ``values``) plus the :class:`~lsr.vocab.Vocabulary`
that names each dimension and, optionally, one string id per row. Encoders
return it, quantization and export consume it, fusion and dot products are
defined on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np
import scipy.sparse as sp

from .errors import InputError
from .vocab import Vocabulary


@dataclass(frozen=True, eq=False)
class SparseBatch:
    indptr: np.ndarray  # int64 [n + 1]
    indices: np.ndarray  # int32 [nnz], sorted within each row
    values: np.ndarray  # float32 [nnz]
    vocab: Vocabulary
    ids: tuple[str, ...] | None = None

    def __post_init__(self):
        indptr = np.ascontiguousarray(self.indptr, dtype=np.int64)
        indices = np.ascontiguousarray(self.indices, dtype=np.int32)
        values = np.ascontiguousarray(self.values, dtype=np.float32)
        if indptr.ndim != 1 or len(indptr) == 0 or indptr[0] != 0 or indptr[-1] != len(indices):
            raise InputError("SparseBatch: indptr must start at 0 and end at len(indices)")
        if len(indices) != len(values):
            raise InputError("SparseBatch: indices and values differ in length")
        if np.any(np.diff(indptr) < 0):
            raise InputError("SparseBatch: indptr must be non-decreasing")
        if len(indices) and (indices.min() < 0 or indices.max() >= len(self.vocab)):
            raise InputError(f"SparseBatch: a token id lies outside the vocabulary of {len(self.vocab)} tokens")
        if not np.all(np.isfinite(values)):
            raise InputError("SparseBatch: values must be finite (found NaN or infinity)")
        object.__setattr__(self, "indptr", indptr)
        object.__setattr__(self, "indices", indices)
        object.__setattr__(self, "values", values)
        if self.ids is not None:
            ids = tuple(self.ids)
            if len(ids) != len(indptr) - 1:
                raise InputError(f"SparseBatch: {len(ids)} ids for {len(indptr) - 1} rows")
            object.__setattr__(self, "ids", ids)

    # ----------------------------------------------------------- construction
    @classmethod
    def empty(cls, vocab: Vocabulary, n: int = 0, ids: Sequence[str] | None = None) -> "SparseBatch":
        return cls(np.zeros(n + 1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32), vocab, ids)

    @classmethod
    def from_scipy(cls, matrix, vocab: Vocabulary, ids: Sequence[str] | None = None) -> "SparseBatch":
        m = sp.csr_matrix(matrix, dtype=np.float32)
        if m.shape[1] != len(vocab):
            raise InputError(f"matrix has {m.shape[1]} columns but the vocabulary has {len(vocab)} tokens")
        m.sum_duplicates()
        m.eliminate_zeros()
        m.sort_indices()
        return cls(m.indptr, m.indices, m.data, vocab, ids)

    @classmethod
    def from_dense(cls, array, vocab: Vocabulary, ids: Sequence[str] | None = None) -> "SparseBatch":
        """From a dense ``[n, |V|]`` numpy array or torch tensor (any device)."""
        if hasattr(array, "detach"):
            return cls.from_torch(array, vocab, ids)
        arr = np.asarray(array, dtype=np.float32)
        if arr.ndim == 1:
            arr = arr[None, :]
        return cls.from_scipy(sp.csr_matrix(arr), vocab, ids)

    @classmethod
    def from_torch(cls, tensor, vocab: Vocabulary, ids: Sequence[str] | None = None) -> "SparseBatch":
        """From a torch tensor, dense or sparse (COO/CSR), on any device.

        Dense tensors are sparsified on their own device, so only the non-zeros
        cross to the host.
        """
        import torch

        t = tensor.detach()
        if t.dim() == 1:
            t = t.unsqueeze(0)
        if t.layout == torch.sparse_coo:
            t = t.coalesce().to_sparse_csr()
        if t.layout == torch.sparse_csr:
            return cls(
                t.crow_indices().cpu().numpy(), t.col_indices().cpu().numpy(),
                t.values().float().cpu().numpy(), vocab, ids,
            )
        rows, cols = torch.nonzero(t, as_tuple=True)
        vals = t[rows, cols].float()
        counts = torch.bincount(rows, minlength=t.shape[0])
        indptr = torch.zeros(t.shape[0] + 1, dtype=torch.int64, device=t.device)
        indptr[1:] = torch.cumsum(counts, 0)
        return cls(indptr.cpu().numpy(), cols.cpu().numpy(), vals.cpu().numpy(), vocab, ids)

    @classmethod
    def from_dicts(
        cls, rows: Iterable[Mapping[str, float]], vocab: Vocabulary, ids: Sequence[str] | None = None
    ) -> "SparseBatch":
        """From ``{token: weight}`` mappings (unknown tokens raise :class:`InputError`)."""
        indptr, indices, values = [0], [], []
        for row in rows:
            pairs = sorted((vocab.id_of(tok), float(w)) for tok, w in row.items() if w != 0)
            indices.extend(p[0] for p in pairs)
            values.extend(p[1] for p in pairs)
            indptr.append(len(indices))
        return cls(np.array(indptr), np.array(indices, np.int32), np.array(values, np.float32), vocab, ids)

    @classmethod
    def concat(cls, batches: Sequence["SparseBatch"]) -> "SparseBatch":
        if not batches:
            raise InputError("concat needs at least one batch")
        vocab = batches[0].vocab
        for b in batches[1:]:
            _same_vocab(vocab, b.vocab)
        offsets = np.cumsum([0] + [b.nnz_total for b in batches])
        indptr = np.concatenate([[0]] + [b.indptr[1:] + off for b, off in zip(batches, offsets)])
        with_ids = all(b.ids is not None for b in batches)
        ids = tuple(i for b in batches for i in b.ids) if with_ids else None
        return cls(
            indptr, np.concatenate([b.indices for b in batches]), np.concatenate([b.values for b in batches]),
            vocab, ids,
        )

    # ------------------------------------------------------------ conversion
    def __len__(self) -> int:
        return len(self.indptr) - 1

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self), len(self.vocab))

    @property
    def nnz_total(self) -> int:
        return int(self.indptr[-1])

    @property
    def nnz(self) -> np.ndarray:
        """Non-zeros per row."""
        return np.diff(self.indptr)

    def to_scipy(self) -> sp.csr_matrix:
        return sp.csr_matrix((self.values, self.indices, self.indptr), shape=self.shape)

    def to_torch(self, device=None, layout: str = "csr"):
        """A torch tensor: ``layout`` is ``"csr"``, ``"coo"`` or ``"dense"``."""
        import torch

        crow = torch.from_numpy(self.indptr)
        col = torch.from_numpy(self.indices.astype(np.int64))
        val = torch.from_numpy(self.values)
        t = torch.sparse_csr_tensor(crow, col, val, size=self.shape, check_invariants=False)
        if layout == "coo":
            t = t.to_sparse_coo()
        elif layout == "dense":
            t = t.to_dense()
        elif layout != "csr":
            raise InputError(f"layout must be 'csr', 'coo' or 'dense', not {layout!r}")
        return t.to(device) if device is not None else t

    def row(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Token ids and weights of row ``i``."""
        s, e = self.indptr[i], self.indptr[i + 1]
        return self.indices[s:e], self.values[s:e]

    def to_dict(self, i: int) -> dict[str, float]:
        """Row ``i`` as ``{token: weight}``."""
        idx, val = self.row(i)
        toks = self.vocab.tokens
        return {toks[j]: float(v) for j, v in zip(idx, val)}

    def select(self, rows: Sequence[int]) -> "SparseBatch":
        rows = np.asarray(rows, dtype=np.int64)
        ids = tuple(self.ids[r] for r in rows) if self.ids is not None else None
        return SparseBatch.from_scipy(self.to_scipy()[rows], self.vocab, ids)

    def with_ids(self, ids: Sequence[str]) -> "SparseBatch":
        return SparseBatch(self.indptr, self.indices, self.values, self.vocab, tuple(ids))

    def _replace_values(self, keep: np.ndarray, values: np.ndarray | None = None) -> "SparseBatch":
        vals = self.values if values is None else values
        rows = np.repeat(np.arange(len(self)), self.nnz)
        counts = np.bincount(rows[keep], minlength=len(self))
        indptr = np.concatenate([[0], np.cumsum(counts)])
        return SparseBatch(indptr, self.indices[keep], vals[keep], self.vocab, self.ids)

    # --------------------------------------------------------------- pruning
    def threshold(self, min_weight: float) -> "SparseBatch":
        """Drop entries whose weight is below ``min_weight``."""
        return self._replace_values(self.values >= min_weight)

    def topk(self, k: int) -> "SparseBatch":
        """Keep the ``k`` largest weights of each row (ties broken by token id)."""
        if k < 0:
            raise InputError(f"top-k needs k >= 0, got {k}")
        keep = np.zeros(self.nnz_total, dtype=bool)
        for i in range(len(self)):
            s, e = self.indptr[i], self.indptr[i + 1]
            if e - s <= k:
                keep[s:e] = True
            elif k > 0:
                order = np.lexsort((self.indices[s:e], -self.values[s:e]))[:k]
                keep[s + order] = True
        return self._replace_values(keep)

    # ------------------------------------------------------------- arithmetic
    def max_fuse(self, other: "SparseBatch") -> "SparseBatch":
        """Element-wise max of two batches with the same rows and vocabulary."""
        return max_fuse(self, other)

    def dot(self, other: "SparseBatch") -> np.ndarray:
        """Dense ``[len(self), len(other)]`` matrix of dot products."""
        _same_vocab(self.vocab, other.vocab)
        return (self.to_scipy() @ other.to_scipy().T).toarray()

    def stats(self) -> dict:
        """Sparsity figures: rows, non-zeros per row, and the FLOPs estimate."""
        nnz = self.nnz
        return {
            "rows": len(self),
            "nnz_total": self.nnz_total,
            "nnz_mean": float(nnz.mean()) if len(self) else 0.0,
            "nnz_max": int(nnz.max()) if len(self) else 0,
            "empty_rows": int((nnz == 0).sum()),
            "flops": flops(self, self),
        }

    def __repr__(self) -> str:
        return f"SparseBatch(rows={len(self)}, vocab={len(self.vocab)}, nnz={self.nnz_total})"


def row_entries(indptr: np.ndarray, rows: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(positions, lengths)``: where the entries of ``rows`` (in that order) lie in a CSR matrix with
    ``indptr``, row after row, and each row's length. Gathering with ``positions`` slices the rows out;
    scattering into them places rows of that length there."""
    rows = np.asarray(rows, dtype=np.int64)
    lengths = np.diff(indptr)[rows]
    total = int(lengths.sum())
    positions = np.repeat(indptr[rows] - (np.cumsum(lengths) - lengths), lengths) + np.arange(total)
    return positions, lengths


def _same_vocab(a: Vocabulary, b: Vocabulary) -> None:
    if a is not b and a != b:
        raise InputError(
            f"vectors use different vocabularies ({a.fingerprint} vs {b.fingerprint}); "
            "encode both sides with the same tokenizer"
        )


def max_fuse(*batches: SparseBatch) -> SparseBatch:
    """Element-wise max fusion: the vector of a mixed input (e.g. image + text)."""
    if not batches:
        raise InputError("max_fuse needs at least one batch")
    first = batches[0]
    out = first.to_scipy()
    for b in batches[1:]:
        _same_vocab(first.vocab, b.vocab)
        if len(b) != len(first):
            raise InputError(f"max_fuse: batches have {len(first)} and {len(b)} rows")
        out = out.maximum(b.to_scipy())
    ids = first.ids if first.ids is not None else next((b.ids for b in batches if b.ids is not None), None)
    return SparseBatch.from_scipy(out, first.vocab, ids)


def flops(queries: SparseBatch, documents: SparseBatch) -> float:
    """Expected floating-point operations of one query-document match.

    ``sum_j p_j(q) * p_j(d)`` where ``p_j`` is the fraction of rows in which
    token ``j`` is non-zero (Paria et al., 2020; used by SPLADE).
    """
    _same_vocab(queries.vocab, documents.vocab)
    if len(queries) == 0 or len(documents) == 0:
        return 0.0
    pq = np.bincount(queries.indices[queries.values != 0], minlength=len(queries.vocab)) / len(queries)
    pd = np.bincount(documents.indices[documents.values != 0], minlength=len(documents.vocab)) / len(documents)
    return float(pq @ pd)
