"""Search a Lucene impact index through Anserini's SimpleImpactSearcher.

Queries are integer impacts (``{token: int}``) or float sparse vectors, which
are quantized with the index's own :class:`~lsr.quantize.Quantizer`. Results
are plain Python :class:`~lsr.io.Hit` values; the float ``score`` is the
integer Lucene score divided by ``scale**2``, and ``impact_score`` keeps the
integer.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence, Union

from lsr.errors import IndexMismatchError, InputError
from lsr.io import Hit
from lsr.sparse import SparseBatch
from lsr.vectors import VectorStore, parse_vector

from . import jvm
from .index import DOCVECTORS_DIR, IndexMeta

Query = Union[Mapping[str, int], SparseBatch]


class ImpactSearcher:
    """Searches one impact index built by :func:`anserini_bridge.build_index`."""

    def __init__(self, index_dir: str | os.PathLike):
        self.index_dir = Path(index_dir)
        self.meta = IndexMeta.load(self.index_dir)
        S = jvm.autoclass("io.anserini.search.SimpleImpactSearcher")
        try:
            self._searcher = S(str(self.index_dir))
        except Exception as e:  # noqa: BLE001 - a JavaException from a corrupted directory
            raise InputError(f"{self.index_dir}: Lucene cannot open this index ({_first_line(e)}); "
                             "rebuild it with `lsr index`") from None
        self._HashMap = jvm.autoclass("java.util.HashMap")
        self._Integer = jvm.autoclass("java.lang.Integer")
        self._ArrayList = jvm.autoclass("java.util.ArrayList")
        self._store = VectorStore(self.index_dir / DOCVECTORS_DIR) if self.meta.stored_vectors else None

    # ----------------------------------------------------------------- checks
    @property
    def num_docs(self) -> int:
        return int(self._searcher.get_total_num_docs())

    def check_encoder(self, encoder_name: str | None, vocab_fingerprint: str | None) -> None:
        """Refuse to search with queries from a different vocabulary than the index was built with."""
        m = self.meta
        if m.vocab_fingerprint and vocab_fingerprint and m.vocab_fingerprint != vocab_fingerprint:
            raise IndexMismatchError(
                f"{self.index_dir} was built with encoder {m.encoder!r} (vocabulary {m.vocab_fingerprint}); "
                f"the queries come from {encoder_name!r} (vocabulary {vocab_fingerprint}). "
                "Encode queries with the index's encoder or rebuild the index."
            )
        if m.quantization is None:
            raise IndexMismatchError(
                f"{self.index_dir} has no quantization spec (built from foreign vector files); "
                "search it with integer query vectors (--query-vectors)"
            )

    # ------------------------------------------------------------ conversion
    def _integer_queries(self, queries: Query | Sequence[Mapping[str, int]]) -> list[dict[str, int]]:
        if isinstance(queries, SparseBatch):
            if self.meta.quantization is None:
                self.check_encoder(None, None)
            self.check_encoder(None, queries.vocab.fingerprint)
            q = self.meta.quantization.quantize(queries)
            return [{k: int(v) for k, v in q.to_dict(i).items()} for i in range(len(q))]
        out = []
        for i, d in enumerate(queries):
            try:
                out.append(parse_vector("query", i + 1, {"vector": dict(d)}))
            except InputError as e:
                raise InputError(str(e).replace("query:", "query #", 1)) from None
        return out

    def _java_query(self, q: Mapping[str, int]):
        m = self._HashMap()
        for tok, w in q.items():
            m.put(tok, self._Integer(int(w)))
        return m

    def _hits(self, scored) -> list[Hit]:
        hits = []
        for rank, sd in enumerate(scored, 1):
            raw = float(sd.score)
            integer = int(round(raw))
            score = self.meta.quantization.to_float_score(integer) if self.meta.quantization else raw
            hits.append(Hit(sd.docid, score, rank, integer))
        return hits

    # ---------------------------------------------------------------- search
    def search(self, query: Query, k: int = 10) -> list[Hit]:
        """Top ``k`` hits for one query (``{token: int}`` or a one-row float :class:`SparseBatch`)."""
        if k < 1:
            raise InputError(f"k must be at least 1, got {k}")
        if isinstance(query, SparseBatch):
            if len(query) != 1:
                raise InputError(f"search takes one query; got a batch of {len(query)} (use batch_search)")
            q = self._integer_queries(query)[0]
        else:
            q = self._integer_queries([query])[0]
        if not q:
            return []
        return self._hits(self._searcher.search(self._java_query(q), int(k)))

    def batch_search(
        self, queries: Query | Sequence[Mapping[str, int]], qids: Sequence[str] | None = None, k: int = 10,
        threads: int | None = None,
    ) -> dict[str, list[Hit]]:
        """Search many queries on Anserini's thread pool; returns ``{qid: hits}`` in the input order.

        A query whose vector is empty (after quantization) gets an empty list.
        """
        if k < 1:
            raise InputError(f"k must be at least 1, got {k}")
        if qids is None:
            if isinstance(queries, SparseBatch) and queries.ids is not None:
                qids = queries.ids
            else:
                raise InputError("batch_search needs query ids (qids=...) or a SparseBatch with ids")
        qids = [str(q) for q in qids]
        if len(set(qids)) != len(qids):
            raise InputError("batch_search: query ids must be unique")
        ints = self._integer_queries(queries)
        if len(ints) != len(qids):
            raise InputError(f"batch_search: {len(ints)} queries but {len(qids)} ids")
        jq, jids = self._ArrayList(), self._ArrayList()
        for qid, q in zip(qids, ints):
            if q:
                jq.add(self._java_query(q))
                jids.add(qid)
        results = {qid: [] for qid in qids}
        if jq.size():
            threads = threads or os.cpu_count() or 1
            out = self._searcher.batch_search(jq, jids, int(k), int(threads))
            for qid, q in zip(qids, ints):
                if q:
                    results[qid] = self._hits(out.get(qid))
        return results

    # ---------------------------------------------------------- stored data
    def _stored(self, docid: str) -> dict:
        if self._store is None:
            source = self.meta.source or "VECDIR"
            raise InputError(f"{self.index_dir} was built without stored vectors (--no-store-vectors); rebuild "
                             f"it without that option to explain matches: `lsr index --input {source} "
                             f"--index {self.index_dir} --overwrite`")
        try:
            return self._store.get(str(docid))
        except InputError:
            raise InputError(f"document {docid!r} is not in the index {self.index_dir} "
                             f"({len(self._store)} documents); use an id from the corpus it was built from") from None

    def doc_vector(self, docid: str) -> dict[str, int]:
        """The integer vector indexed for ``docid`` (needs an index built with stored vectors)."""
        return parse_vector(self.index_dir, 0, self._stored(docid))

    def doc_contents(self, docid: str) -> str:
        return self._stored(docid).get("contents", "")

    def close(self) -> None:
        self._searcher.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
