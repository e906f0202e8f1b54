"""BM25 over a text corpus: a Lucene index built by Anserini's IndexCollection, searched with SimpleSearcher.

:func:`build_bm25_index` turns a BEIR corpus (``_id``, ``title``, ``text``)
into Anserini's JsonCollection (``{"id", "contents": title + " " + text}``)
and indexes it with Anserini's default analyzer (English, Porter stemming,
stopwords), storing positions and document vectors. ``lsr-index.json`` records
``"retriever": "bm25"``, so ``lsr search`` knows to search it without a model.

:class:`BM25Searcher` answers with the same typed :class:`~lsr.io.Hit` values
as the impact searcher (``impact_score`` is ``None``: BM25 scores are floats),
so it serves as a first stage for hybrid reranking and as a fusion input.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

from tqdm.auto import tqdm

from lsr.errors import InputError
from lsr.io import Hit, read_corpus
from lsr.retrieval import query_ids

from . import jvm
from .index import INDEX_META, IndexMeta, _run_index_collection, publish_index
from .search import _JsonBridge

BM25_OPTIONS = ("-collection", "JsonCollection", "-generator", "DefaultLuceneDocumentGenerator",
                "-storePositions", "-storeDocvectors")
DEFAULT_K1 = 0.9  # Anserini's defaults
DEFAULT_B = 0.4


def build_bm25_index(corpus: str | os.PathLike, index_dir: str | os.PathLike, threads: int | None = None,
                     overwrite: bool = False, progress: bool = True) -> IndexMeta:
    """Index a BEIR ``corpus.jsonl`` for BM25 at ``index_dir`` (built beside it, renamed when complete)."""
    corpus, index_dir = Path(corpus), Path(index_dir)
    if corpus.is_dir():
        raise InputError(f"{corpus}: is a directory; --bm25 takes a BEIR corpus.jsonl (_id, title, text)")
    if index_dir.exists() and not overwrite:
        raise InputError(f"{index_dir}: already exists; choose a new path or pass --overwrite")
    records = read_corpus(corpus)
    texts = [r for r in records if r.text.strip()]
    index_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{index_dir.name}.building-", dir=index_dir.parent))
    try:
        (work / "input").mkdir()
        threads = threads or max(1, min(4, os.cpu_count() or 1))
        n_files = max(1, min(threads, len(texts) // 10_000 + 1))  # one file per indexing thread
        files = [open(work / "input" / f"docs-{k:02d}.jsonl", "w", encoding="utf-8") for k in range(n_files)]
        try:
            for i, r in enumerate(tqdm(texts, unit="doc", desc="bm25 corpus", disable=not progress)):
                files[i % n_files].write(json.dumps({"id": r.id, "contents": r.text}, ensure_ascii=False) + "\n")
        finally:
            for fh in files:
                fh.close()
        tmp_index = work / "index"
        counters = _run_index_collection(work / "input", tmp_index, threads, len(texts), progress, BM25_OPTIONS)
        if counters.get("indexed", 0) + counters.get("empty", 0) != len(texts) or counters.get("errors", 0):
            raise InputError(f"{corpus}: Anserini indexed {counters.get('indexed')} of {len(texts)} documents "
                             f"(counters: {counters}); the index was not created")
        counters["reported_by_encoder"] = len(records) - len(texts)  # documents without text
        meta = IndexMeta("bm25", None, None, counters["indexed"], counters, stored_vectors=False,
                         source=str(corpus.resolve()), retriever="bm25")
        return publish_index(tmp_index, index_dir, meta)
    finally:
        shutil.rmtree(work, ignore_errors=True)


class BM25Searcher:
    """BM25 search of an index built by :func:`build_bm25_index` (or any Anserini text index).

    Queries are texts, analysed as the documents were. Satisfies
    :class:`lsr.retrieval.Retriever` for text queries.
    """

    def __init__(self, index_dir: str | os.PathLike, k1: float = DEFAULT_K1, b: float = DEFAULT_B):
        self.index_dir = Path(index_dir)
        if not (self.index_dir / INDEX_META).is_file() and any(self.index_dir.glob("segments_*")):
            self.meta = IndexMeta("bm25", None, None, -1, {}, stored_vectors=False, source="foreign",
                                  retriever="bm25")
        else:
            self.meta = IndexMeta.load(self.index_dir)
            if self.meta.retriever != "bm25":
                raise InputError(f"{self.index_dir} is an impact index of {self.meta.encoder!r}, not a BM25 "
                                 "index; search it with ImpactSearcher (lsr search --model ...)")
        if k1 < 0 or not 0 <= b <= 1:
            raise InputError(f"BM25 needs k1 >= 0 and 0 <= b <= 1, got k1={k1}, b={b}")
        self.k1, self.b = float(k1), float(b)
        self._searcher = jvm.open_searcher("io.anserini.search.SimpleSearcher", self.index_dir, "lsr index --bm25")
        self._searcher.set_bm25(self.k1, self.b)
        self._json = _JsonBridge.create()
        self._ArrayList = jvm.autoclass("java.util.ArrayList")

    @property
    def num_docs(self) -> int:
        return int(self._searcher.get_total_num_docs())

    def check_encoder(self, encoder_name: str | None, vocab_fingerprint: str | None) -> None:
        raise InputError(f"{self.index_dir} is a BM25 index: it takes query texts and no model; "
                         "leave --model out (or search an impact index)")

    @staticmethod
    def _texts(queries) -> list[str]:
        if isinstance(queries, str) or not all(isinstance(q, str) for q in queries):
            raise InputError("BM25 queries are texts: pass a list of strings")
        return list(queries)

    def search(self, query: str, k: int = 10) -> list[Hit]:
        if k < 1:
            raise InputError(f"k must be at least 1, got {k}")
        if not isinstance(query, str):
            raise InputError(f"a BM25 query is a text, got {type(query).__name__}")
        if not query.strip():
            return []
        return [Hit(str(h.docid), float(h.score), r) for r, h in enumerate(self._searcher.search(query, int(k)), 1)]

    def batch_search(self, queries: Sequence[str], qids: Sequence[str] | None = None, k: int = 10,
                     threads: int | None = None) -> dict[str, list[Hit]]:
        """``{qid: hits}`` for many query texts on Anserini's thread pool, in the input order."""
        texts = self._texts(queries)
        qids = query_ids(texts, qids, k)
        results: dict[str, list[Hit]] = {q: [] for q in qids}
        asked = [(q, t) for q, t in zip(qids, texts) if t.strip()]
        if not asked:
            return results
        jq, jids = self._ArrayList(), self._ArrayList()
        for q, t in asked:
            jq.add(t)
            jids.add(q)
        out = self._searcher.batch_search(jq, jids, int(k), int(threads or os.cpu_count() or 1))
        data = self._json.hits(out)
        for q, _ in asked:
            if data is not None:
                results[q] = [Hit(str(d), float(s), r) for r, (d, s) in enumerate(data.get(q, ()), 1)]
            else:
                results[q] = [Hit(str(h.docid), float(h.score), r) for r, h in enumerate(out.get(q), 1)]
        return results

    def close(self) -> None:
        self._searcher.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
