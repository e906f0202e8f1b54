"""The vocabulary that gives every sparse dimension its readable token."""

from __future__ import annotations

import hashlib
from functools import cached_property
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from .errors import InputError


@dataclass(frozen=True, eq=False)
class Vocabulary:
    """An ordered list of tokens; dimension ``i`` of a sparse vector is ``tokens[i]``.

    ``special_ids`` are dimensions that are never emitted by encoders nor shown
    to users ([CLS], [SEP], [PAD], ...).
    """

    tokens: tuple[str, ...]
    special_ids: frozenset[int] = frozenset()
    _index: dict = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "tokens", tuple(self.tokens))
        object.__setattr__(self, "special_ids", frozenset(int(i) for i in self.special_ids))
        index = {}
        for i, tok in enumerate(self.tokens):
            # The first occurrence wins; duplicate tokens would make postings ambiguous.
            index.setdefault(tok, i)
        object.__setattr__(self, "_index", index)

    @classmethod
    def from_tokens(cls, tokens: Iterable[str], special_tokens: Iterable[str] = ()) -> "Vocabulary":
        tokens = tuple(tokens)
        wanted = set(special_tokens)
        return cls(tokens, frozenset(i for i, t in enumerate(tokens) if t in wanted))

    def __len__(self) -> int:
        return len(self.tokens)

    def __eq__(self, other) -> bool:
        return isinstance(other, Vocabulary) and self.tokens == other.tokens

    def __hash__(self) -> int:
        return hash(self.tokens)

    def __contains__(self, token: str) -> bool:
        return token in self._index

    def id_of(self, token: str) -> int:
        try:
            return self._index[token]
        except KeyError:
            raise InputError(f"token {token!r} is not in the vocabulary ({len(self)} tokens)") from None

    def ids_of(self, tokens: Sequence[str]) -> list[int]:
        return [self.id_of(t) for t in tokens]

    @cached_property
    def fingerprint(self) -> str:
        """A short, stable hash of the token list, stored with vectors and indexes (computed once)."""
        h = hashlib.sha256("\n".join(self.tokens).encode("utf-8")).hexdigest()
        return f"sha256:{h[:16]}"

    @staticmethod
    def display(token: str) -> str:
        """A readable form of a word piece: ``##ing`` is shown as ``…ing``."""
        if token.startswith("##") and len(token) > 2:
            return "\u2026" + token[2:]
        return token
