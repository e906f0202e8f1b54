"""Why a document matched: per-token contributions to an impact score."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from .vocab import Vocabulary


@dataclass(frozen=True)
class Contribution:
    token: str
    query_weight: int
    doc_weight: int

    @property
    def contribution(self) -> int:
        return self.query_weight * self.doc_weight

    @property
    def display(self) -> str:
        return Vocabulary.display(self.token)


def contributions(query: Mapping[str, int], document: Mapping[str, int]) -> list[Contribution]:
    """Tokens present in both integer vectors, largest contribution first.

    Their ``contribution`` values sum to the impact score Lucene computes for
    the pair.
    """
    small, large = (query, document) if len(query) <= len(document) else (document, query)
    shared = [t for t in small if t in large]
    out = [Contribution(t, int(query[t]), int(document[t])) for t in shared]
    out.sort(key=lambda c: (-c.contribution, c.token))
    return out
