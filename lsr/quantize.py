"""Float weights to integer impacts, the same way for documents and queries.

Lucene impact indexes store one positive integer per (document, token) and
multiply it by an integer query weight. :class:`Quantizer` is the single
definition of that mapping; it is saved with every vector directory and index,
and searching refuses queries quantized another way.

    impact = min(max_value, floor(weight * scale + 0.5))     (0 -> dropped)

so with ``scale=100`` a weight of 1.234 becomes 123 and 0.004 disappears.
A Lucene score is a sum of ``q_impact * d_impact`` and therefore approximates
``scale**2`` times the float dot product; :meth:`Quantizer.to_float_score`
divides it back.

Scores are summed by Lucene in float32, which represents every integer below
2**24 exactly; with the default ``max_value`` a query would need over 16
full-weight overlapping tokens at the cap before exactness could be at risk.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np

from .errors import InputError
from .meta import meta_field
from .sparse import SparseBatch


@dataclass(frozen=True)
class Quantizer:
    scale: float = 100.0
    max_value: int = 1000

    def __post_init__(self):
        if not (np.isfinite(self.scale) and self.scale > 0):
            raise InputError(f"quantization scale must be a positive number, got {self.scale!r}")
        if int(self.max_value) != self.max_value or self.max_value < 1:
            raise InputError(f"quantization max_value must be a positive integer, got {self.max_value!r}")

    def impacts(self, weights: np.ndarray) -> np.ndarray:
        """Integer impacts (int32) for an array of non-negative float weights."""
        w = np.asarray(weights, dtype=np.float64)
        if np.any(~np.isfinite(w)) or np.any(w < 0):
            raise InputError("weights to quantize must be finite and non-negative")
        return np.minimum(np.floor(w * self.scale + 0.5), self.max_value).astype(np.int32)

    def quantize(self, batch: SparseBatch) -> SparseBatch:
        """The batch with integer impacts as values; entries that round to 0 are removed."""
        q = self.impacts(batch.values)
        keep = q > 0
        return batch._replace_values(keep, q.astype(np.float32))

    def to_float_score(self, integer_score: float) -> float:
        return float(integer_score) / (self.scale * self.scale)

    def to_dict(self) -> dict:
        return {"scale": float(self.scale), "max_value": int(self.max_value)}

    @classmethod
    def from_dict(cls, d: dict) -> "Quantizer":
        try:
            return cls(scale=float(d["scale"]), max_value=int(d["max_value"]))
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"invalid quantization spec {d!r}: {e}") from None

    def __str__(self) -> str:
        return json.dumps(asdict(self))


def quantization_field(**rules):
    """A :class:`~lsr.meta.Meta` field holding a :class:`Quantizer` (or ``None``), stored as its dict."""
    return meta_field(dump=Quantizer.to_dict, load=Quantizer.from_dict, **rules)
