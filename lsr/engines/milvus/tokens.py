"""The token list of a collection, kept in a companion collection ``<name>_lsr_vocab``: dimension ``i`` is
token ``i``.

The list is stored as compact JSON chunks (a VARCHAR holds at most 64 KB), one
row per chunk, in a collection whose only vector field is a marker Milvus
requires.
"""

from __future__ import annotations

import json
import os
from typing import Iterable, Sequence

from ...errors import IndexMismatchError, InputError
from ...vectors import iter_vectors, part_files
from .connection import MAX_TOPK, MAX_VARCHAR_BYTES, VOCAB_CHUNK_BYTES
from .meta import compact_json


class TokenList:
    """The token-list half of :class:`~lsr.engines.milvus.MilvusCollection` (which provides the client, the
    names, the metadata and ``_call``)."""

    def _create_token_list(self, tokens: Sequence[str]) -> None:
        DataType, c = self._DataType, self._client
        schema = c.create_schema(auto_id=False, enable_dynamic_field=False,
                                 description=f"token list of collection {self.name}")
        schema.add_field("chunk", DataType.INT64, is_primary=True)
        schema.add_field("tokens", DataType.VARCHAR, max_length=MAX_VARCHAR_BYTES)
        schema.add_field("marker", DataType.SPARSE_FLOAT_VECTOR)  # Milvus requires one vector field
        index = c.prepare_index_params()
        index.add_index(field_name="marker", index_type="SPARSE_INVERTED_INDEX", metric_type="IP")
        self._call("create_collection", c.create_collection, self.vocab_name, schema=schema, index_params=index)
        self._write_tokens(list(tokens), start_chunk=0)

    @property
    def tokens(self) -> list[str]:
        """The stored token list: dimension ``i`` is ``tokens[i]``."""
        if self._tokens is None:
            self.meta  # noqa: B018 - raises when the collection is missing or foreign
            if not self._call("has_collection", self._client.has_collection, self.vocab_name):
                raise IndexMismatchError(f"collection {self.name!r} at {self.uri} has lost its token list "
                                         f"({self.vocab_name!r}); rebuild it with `lsr export ... --replace`")
            self._call("load_collection", self._client.load_collection, self.vocab_name)
            rows = self._call("read token list", self._client.query, self.vocab_name, filter="chunk >= 0",
                              output_fields=["chunk", "tokens"], limit=MAX_TOPK, consistency_level="Strong")
            tokens: list[str] = []
            for row in sorted(rows, key=lambda r: r["chunk"]):
                tokens.extend(json.loads(row["tokens"]))
            self._tokens = tokens
        return self._tokens

    def _ids_of(self) -> dict[str, int]:
        if self._token_ids is None:
            ids: dict[str, int] = {}
            for i, t in enumerate(self.tokens):
                ids.setdefault(t, i)
            self._token_ids = ids
        return self._token_ids

    def _write_tokens(self, tokens: list[str], start_chunk: int) -> None:
        # a chunk is a compact JSON list '["a","b"]': 2 bytes of brackets, each token's JSON text and one
        # comma between tokens, counted in UTF-8 bytes (what VARCHAR max_length limits)
        chunks, cur, size = [], [], 2
        for t in tokens:
            n = len(compact_json(t).encode("utf-8")) + (1 if cur else 0)
            if cur and size + n > VOCAB_CHUNK_BYTES:
                chunks.append(cur)
                cur, size = [], 2
                n -= 1
            cur.append(t)
            size += n
        if cur:
            chunks.append(cur)
        texts = [compact_json(c) for c in chunks]
        for c, text in zip(chunks, texts):
            size = len(text.encode("utf-8"))
            if size > MAX_VARCHAR_BYTES:  # one token alone longer than a VARCHAR can hold
                raise InputError(f"token {max(c, key=len)[:40]!r}... is too long for a Milvus VARCHAR "
                                 f"({size} bytes > {MAX_VARCHAR_BYTES})")
        rows = [{"chunk": start_chunk + k, "tokens": text,
                 "marker": {start_chunk + k: 1.0}} for k, text in enumerate(texts)]
        if rows:
            self._call("store token list", self._client.insert, self.vocab_name, rows)
            self._call("flush", self._client.flush, self.vocab_name)

    def ensure_tokens(self, tokens: Iterable[str]) -> int:
        """Append the tokens the stored list lacks; returns how many (derived ids only).

        With ``ids="vocabulary"`` the list is the encoder's vocabulary and never
        changes; a token outside it fails the document that uses it.
        """
        if self.meta.ids != "derived":
            return 0
        known = self._ids_of()
        new = [t for t in dict.fromkeys(tokens) if t not in known]
        if not new:
            return 0
        rows = self._call("read token list", self._client.query, self.vocab_name, filter="chunk >= 0",
                          output_fields=["chunk"], limit=MAX_TOPK, consistency_level="Strong")
        self._write_tokens(new, start_chunk=1 + max((r["chunk"] for r in rows), default=-1))
        self._tokens = None
        self._token_ids = None
        if len(self.tokens) != len(known) + len(new):
            raise InputError(f"the token list of collection {self.name!r} changed while it was extended "
                             "(another export appended tokens at the same time); export the shards one after "
                             "another, or pass the encoder (--model) so that ids come from its vocabulary")
        return len(new)


def vector_dir_tokens(vecdirs: Sequence[str | os.PathLike]) -> list[str]:
    """The sorted set of tokens used by the vectors of some vector directories."""
    seen: set[str] = set()
    for d in vecdirs:
        for p in part_files(d):
            for _, vec, _ in iter_vectors(p):
                seen.update(vec)
    return sorted(seen)
