"""The metadata a collection records about its vectors, in its description and a collection property."""

from __future__ import annotations

import json
from dataclasses import dataclass

from ...meta import Meta
from ...quantize import Quantizer, quantization_field
from ...vocab import Vocabulary

META_PROPERTY = "lsr.meta"  # collection property holding the same metadata as the description
MAX_DESCRIPTION_BYTES = 1024


@dataclass
class CollectionMeta(Meta, format="lsr-milvus", what="collection metadata",
                     remedy="recreate the collection with `lsr export ... --replace`"):
    """What the collection description records about the vectors in it."""

    encoder: str | None
    vocab_fingerprint: str | None
    dimension: int | None  # the encoder's vocabulary size, when known
    quantization: Quantizer | None = quantization_field()
    ids: str = "vocabulary"  # "vocabulary": encoder ids; "derived": ids of the stored token list

    @classmethod
    def for_vocabulary(cls, vocab: Vocabulary, quantizer: Quantizer | None, encoder: str | None = None):
        return cls(encoder, vocab.fingerprint, len(vocab), quantizer, "vocabulary")

    def to_description(self) -> str:
        """Compact JSON within Milvus' limit on a description (the start of a long encoder path is cut)."""
        d = self.to_dict()
        text = compact_json(d)
        if len(text.encode("utf-8")) > MAX_DESCRIPTION_BYTES and self.encoder:
            over = len(text.encode("utf-8")) - MAX_DESCRIPTION_BYTES
            d["encoder"] = "\u2026" + self.encoder[over + 3:]  # keep the end of a long path
            text = compact_json(d)
        return text

    @classmethod
    def from_description(cls, text: str, source: str = "collection description") -> "CollectionMeta | None":
        """The metadata, or None when the description was not written by this module."""
        try:
            d = json.loads(text or "")
        except json.JSONDecodeError:
            return None
        return cls.from_dict(d, source) if cls.owns(d) else None

    def differences(self, other: "CollectionMeta") -> list[str]:
        """Why vectors described by ``other`` cannot go into a collection described by ``self``."""
        out = []
        if self.vocab_fingerprint != other.vocab_fingerprint:
            out.append(f"model: {self.encoder!r} (vocabulary {self.vocab_fingerprint}) vs {other.encoder!r} "
                       f"(vocabulary {other.vocab_fingerprint})")
        if self.dimension is not None and other.dimension is not None and self.dimension != other.dimension:
            out.append(f"dimension: {self.dimension} vs {other.dimension}")
        if self.quantization != other.quantization:
            out.append(f"quantization: {self.quantization} vs {other.quantization}")
        return out


def compact_json(value) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
