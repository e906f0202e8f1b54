"""Search a Lucene impact index through Anserini's SimpleImpactSearcher.

Queries are integer impacts (``{token: int}``) or float sparse vectors, which
are quantized with the index's own :class:`~lsr.quantize.Quantizer`. Results
are plain Python :class:`~lsr.io.Hit` values; the float ``score`` is the
integer Lucene score divided by ``scale**2``, and ``impact_score`` keeps the
integer.

Each query is searched directly (:class:`_DirectSearch`): Anserini's query
generator and impact similarity on Lucene's own top-k search, the query in
and the hits out as one JSON text each (through Jackson, in the Anserini jar),
and document ids from a table read once from the index, so no stored document
is loaded and no per-hit Java object crosses into Python. The ranking is
Anserini's: score, then id for ties. ``batch_search`` runs its queries one
after another this way; on Cranfield at k = 1000 a query costs a fraction of
Anserini's own ``search``, which loads every hit's stored document.

When the jar lacks what the direct path needs, Anserini's ``search`` and
``batch_search`` are used: a batch of queries travels as one JSON text that
Jackson turns into the ``List<Map<String, Integer>>`` that
``SimpleImpactSearcher.batch_search`` takes, and all results come back as one
JSON text. Non-ASCII text is escaped on both sides, so every token and
document id arrives intact.
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import os
from pathlib import Path
from typing import Mapping, Sequence, Union

import numpy as np

from lsr.errors import EnvironmentProblem, IndexMismatchError, InputError, first_line
from lsr.io import Hit
from lsr.quantize import Quantizer
from lsr.retrieval import SparseRetriever
from lsr.sparse import SparseBatch
from lsr.vectors import VectorStore, parse_vector

from . import jvm
from .index import DOCVECTORS_DIR, INDEX_META, IndexMeta, foreign_index_meta

log = logging.getLogger(__name__)

Query = Union[Mapping[str, int], SparseBatch]

# Up to this many hits, one query's results are read field by field (cheaper than starting
# Anserini's thread pool for a batch of one); beyond it, in one JSON text.
#: From this many hits per query on, a batch runs on the direct path even with several threads.
_DIRECT_BATCH_MIN_K = 100
_FIELD_BY_FIELD_MAX_K = 200

#: ``Hit`` from a 4-tuple without ``Hit._make``'s Python-level length check (a thousand hits per query)
_new_hit = functools.partial(tuple.__new__, Hit)


class ImpactSearcher(SparseRetriever):
    """Searches one impact index built by :func:`anserini_bridge.build_index`."""

    _holds = "was built with encoder"

    def __init__(self, index_dir: str | os.PathLike, quantizer: Quantizer | None = None):
        """Open ``index_dir``: an index built by ``lsr index``, or a Lucene impact index built by Anserini's
        IndexCollection or Pyserini (no ``lsr-index.json``).

        For an index from another tool, float queries are quantized with
        ``quantizer`` (default ``Quantizer()``, scale 100, the scale of
        Anserini's and Pyserini's SPLADE indexes) and the encoder is not
        checked; a notice says so. For an ``lsr index`` index, ``quantizer``
        may only repeat the index's own, or fill in for one built from
        foreign vector files.
        """
        self.index_dir = Path(index_dir)
        self.foreign = False
        meta = foreign_index_meta(self.index_dir, quantizer)
        if meta is not None:
            self.foreign = True
            log.warning("%s is a Lucene index without %s (built by Anserini or Pyserini?): float queries are "
                        "quantized with %s%s and the encoder is not checked", self.index_dir, INDEX_META,
                        meta.quantization, "" if quantizer else " (the default; pass --scale or quantizer= "
                        "if the documents were quantized differently)")
        else:
            meta = IndexMeta.load(self.index_dir)
            if quantizer is not None:
                if meta.quantization is None:
                    meta.quantization = quantizer
                elif quantizer != meta.quantization:
                    raise IndexMismatchError(f"{self.index_dir} was quantized with {meta.quantization} (recorded "
                                             f"in {INDEX_META}), not {quantizer}; leave the quantization out")
        self.meta = meta
        self._searcher = jvm.open_searcher("io.anserini.search.SimpleImpactSearcher", self.index_dir, "lsr index")
        self._json = _JsonBridge.create()
        self._clause_limit = 1024
        self._store = VectorStore(self.index_dir / DOCVECTORS_DIR) if self.meta.stored_vectors else None
        self._direct: _DirectSearch | None | bool = None  # False: not available in this jar

    # ----------------------------------------------------------------- checks
    @property
    def num_docs(self) -> int:
        return int(self._searcher.get_total_num_docs())

    def describe(self) -> str:
        return str(self.index_dir)

    # ------------------------------------------------------------ conversion
    def _engine_queries(self, queries: Query | Sequence[Mapping[str, int]]) -> list[dict[str, int]]:
        out = self.quantized_queries(queries)
        self._allow_terms(out)
        return out

    def _allow_terms(self, queries: Sequence[Mapping[str, int]]) -> None:
        """Raise Lucene's clause limit (1024 by default) to the longest query.

        A learned sparse query can activate thousands of word pieces (an
        image-heavy STAIR query, an untrained model); Lucene would refuse it
        and Anserini's batch search would fail as a whole.
        """
        longest = max((len(q) for q in queries), default=0)
        if longest > self._clause_limit:
            index_searcher = jvm.autoclass("org.apache.lucene.search.IndexSearcher")
            if longest > index_searcher.getMaxClauseCount():
                index_searcher.setMaxClauseCount(int(longest))
            self._clause_limit = int(index_searcher.getMaxClauseCount())

    def _java_query(self, q: Mapping[str, int]):
        return self._json.to_map(q)

    def _java_list(self, values: Sequence):
        return self._json.to_list(list(values))

    def _hit_of(self, rank: int, docid: str, raw: float) -> Hit:
        integer = int(round(raw))
        score = self.meta.quantization.to_float_score(integer) if self.meta.quantization else raw
        return Hit(docid, score, rank, integer)

    def _hits(self, scored) -> list[Hit]:
        return [self._hit_of(rank, sd.docid, float(sd.score)) for rank, sd in enumerate(scored, 1)]

    def _direct_search(self) -> "_DirectSearch | None":
        """The direct Lucene path (see :class:`_DirectSearch`), or ``None`` when this jar lacks what it needs."""
        if self._direct is None:
            self._direct = _DirectSearch.create(self.index_dir) or False
        return self._direct or None

    def _direct_hits(self, found: tuple[list[str], np.ndarray]) -> list[Hit]:
        docids, raw = found
        whole = np.rint(np.asarray(raw, dtype=np.float64))  # Lucene sums integer impacts: whole numbers
        integers = whole.astype(np.int64).tolist()
        q = self.meta.quantization
        scores = (whole / (q.scale * q.scale)).tolist() if q is not None else np.asarray(raw, np.float64).tolist()
        return list(map(_new_hit, zip(docids, scores, range(1, len(docids) + 1), integers)))

    def _all_hits(self, out, qids: Sequence[str]) -> dict[str, list[Hit]]:
        """Hits of every query from ``batch_search``'s ``Map<String, ScoredDoc[]>``."""
        data = self._json.hits(out)
        if data is not None:
            return {qid: [self._hit_of(r, d, float(sc)) for r, (d, sc) in enumerate(data.get(qid, ()), 1)]
                    for qid in qids}
        return {qid: self._hits(out.get(qid)) for qid in qids}

    # ---------------------------------------------------------------- search
    def _search_one(self, q: Mapping[str, int], k: int) -> list[Hit]:
        direct = self._direct_search()
        if direct is not None:
            return self._direct_hits(direct.search(q, int(k)))
        if k > _FIELD_BY_FIELD_MAX_K and self._json.docid_first is not None:
            # many hits: through the batch entry point, whose results stay a Java map and are read in one piece
            out = self._searcher.batch_search(self._java_list([q]), self._java_list(["q"]), int(k), 1)
            return self._all_hits(out, ["q"])["q"]
        return self._hits(self._searcher.search(self._java_query(q), int(k)))

    def _search_vectors(self, qids: Sequence[str], vectors: Sequence[Mapping[str, int]], k: int,
                        threads: int | None) -> list[list[Hit]]:
        """Queries on Anserini's thread pool with ``threads`` threads, or one after another on the direct path
        when that is cheaper: on one thread, or for deep result lists (``k`` of at least
        ``_DIRECT_BATCH_MIN_K``), where Anserini's pool spends most of its time loading each hit's stored
        document. Both give the same hits in the same order."""
        threads = threads or os.cpu_count() or 1
        direct = self._direct_search() if threads == 1 or k >= _DIRECT_BATCH_MIN_K else None
        if direct is not None:
            return [self._direct_hits(direct.search(q, int(k))) for q in vectors]
        out = self._searcher.batch_search(self._java_list(vectors), self._java_list(qids), int(k), int(threads))
        found = self._all_hits(out, qids)
        return [found[qid] for qid in qids]

    def document_frequencies(self, tokens: Sequence[str]) -> list[int]:
        """How many documents of the index contain each token (from Lucene's postings of the impact field)."""
        direct = self._direct_search()
        if direct is not None:
            reader, utils = direct.reader, direct._utils
        else:
            utils = jvm.autoclass("io.anserini.index.IndexReaderUtils")
            if getattr(self, "_df_reader", None) is None:
                self._df_reader = utils.getReader(str(self.index_dir))
            reader = self._df_reader
        return [int(utils.getDF(reader, str(t))) for t in tokens]

    # ---------------------------------------------------------- stored data
    def _stored(self, docid: str) -> dict:
        if self._store is None and self.foreign:
            return self._stored_in_lucene(str(docid))
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

    def _stored_in_lucene(self, docid: str) -> dict:
        """``{"id", "contents", "vector"}`` of a document of an index built by another tool, from what Lucene
        stores: the raw JSON document (IndexCollection ``-storeRaw``) or the term vector (``-storeDocvectors``,
        whose term frequencies are the impacts)."""
        if self._searcher.doc(docid) is None:
            raise InputError(f"document {docid!r} is not in the index {self.index_dir} ({self.num_docs} documents); "
                             "use an id from the collection it was built from")
        raw = self._searcher.doc_raw(docid)
        if raw:
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError:
                obj = None
            if isinstance(obj, dict) and isinstance(obj.get("vector"), dict):
                return {"id": docid, "contents": obj.get("contents") or "", "vector": obj["vector"]}
        utils = jvm.autoclass("io.anserini.index.IndexReaderUtils")
        try:
            if getattr(self, "_reader", None) is None:
                self._reader = utils.getReader(str(self.index_dir))
            tv = utils.getDocumentVector(self._reader, docid)
        except Exception:  # noqa: BLE001 - NotStoredException: no term vectors in this index
            tv = None
        if tv is None:
            raise InputError(f"{self.index_dir} stores neither the raw documents nor document vectors, so the "
                             f"vector of {docid!r} is unknown; rebuild it with Anserini's IndexCollection "
                             "-storeRaw or -storeDocvectors, or with `lsr index --input VECDIR`")
        vector = {str(t): int(tv.get(t)) for t in tv.keySet().toArray()}
        return {"id": docid, "contents": self._searcher.doc_contents(docid) or "", "vector": vector}

    def doc_vector(self, docid: str) -> dict[str, int]:
        """The integer vector indexed for ``docid`` (needs an index built with stored vectors)."""
        return parse_vector(self.index_dir, 0, self._stored(docid))

    def doc_contents(self, docid: str) -> str:
        return self._stored(docid).get("contents", "")

    def close(self) -> None:
        if self._direct:
            self._direct.close()
        if getattr(self, "_df_reader", None) is not None:
            self._df_reader.close()
        if getattr(self, "_reader", None) is not None:
            self._reader.close()
            self._reader = None
        self._searcher.close()


def _object_mapper():
    """A Jackson ObjectMapper (from the Anserini jar) that writes plain ASCII, so no id or token depends on how
    strings cross into Python."""
    mapper = jvm.autoclass("com.fasterxml.jackson.databind.ObjectMapper")()
    mapper.getFactory().configure(jvm.autoclass("com.fasterxml.jackson.core.JsonGenerator$Feature").ESCAPE_NON_ASCII,
                                  True)
    return mapper


def _configure(mapper, class_name: str, ignored: Sequence[str], as_array: bool = False) -> None:
    """Tell ``mapper`` to leave out ``ignored`` properties of ``class_name`` (and to write it as a JSON array),
    through its per-class configuration: the Lucene and Anserini classes carry no Jackson annotations."""
    A = jvm.autoclass
    names = A("java.util.HashSet")()
    for n in ignored:
        names.add(n)
    override = mapper.configOverride(A("java.lang.Class").forName(class_name))
    override.setIgnorals(A("com.fasterxml.jackson.annotation.JsonIgnoreProperties$Value").forIgnoredProperties(names))
    if as_array:
        override.setFormat(A("com.fasterxml.jackson.annotation.JsonFormat$Value").forShape(
            A("com.fasterxml.jackson.annotation.JsonFormat$Shape").ARRAY))


class _JsonBridge:
    """Java objects from JSON text and back, through the Jackson library inside the Anserini jar.

    Hits are written as ``[docid, score]`` pairs: Jackson is told (without
    annotations, through its per-class configuration) to leave out the other
    fields of ``ScoredDoc`` and to write it as an array.
    """

    def __init__(self, mapper, list_class, map_class):
        self.mapper, self.list_class, self.map_class = mapper, list_class, map_class
        self.docid_first: bool | None = None  # order of the pair; None: hits are read field by field

    @classmethod
    def create(cls) -> "_JsonBridge":
        """The bridge; every Anserini fat jar this project supports bundles Jackson."""
        try:
            mapper = _object_mapper()
            Class = jvm.autoclass("java.lang.Class")
            bridge = cls(mapper, Class.forName("java.util.List"), Class.forName("java.util.Map"))
        except Exception as e:  # noqa: BLE001 - no Jackson in this jar
            raise EnvironmentProblem(f"the Anserini jar lacks the Jackson JSON library ({first_line(e)}); "
                                     "use the fat jar that pyserini ships (anserini-*-fatjar.jar)") from None
        try:
            _configure(mapper, "io.anserini.search.ScoredDoc", ("lucene_document", "lucene_docid"), as_array=True)
            probe = bridge.read(jvm.autoclass("io.anserini.search.ScoredDoc")("d\u00e9\U0001F600", 7, 2.5, None))
            if probe == ["d\u00e9\U0001F600", 2.5]:
                bridge.docid_first = True
            elif probe == [2.5, "d\u00e9\U0001F600"]:
                bridge.docid_first = False
        except Exception:  # noqa: BLE001 - an older Jackson: hits are read field by field
            bridge.docid_first = None
        probe = [{"t\u00e9st\U0001F600": 2147483647}]
        if bridge.read(bridge.to_list(probe)) != probe:
            raise EnvironmentProblem("the Anserini jar's Jackson does not carry queries intact; use the fat jar "
                                     "that pyserini ships (anserini-*-fatjar.jar)")
        return bridge

    def to_list(self, values: list):
        # ensure_ascii: every character arrives as an escape, whatever the JNI string conversion does
        return self.mapper.readValue(json.dumps(values), self.list_class)

    def to_map(self, value: Mapping[str, int]):
        return self.mapper.readValue(json.dumps(dict(value)), self.map_class)

    def read(self, obj):
        """``obj`` as Python data, or ``None`` when Jackson cannot write it."""
        try:
            return json.loads(self.mapper.writeValueAsString(obj))
        except Exception:  # noqa: BLE001 - an unexpected stored field type
            return None

    def hits(self, out) -> dict[str, list[tuple[str, float]]] | None:
        """``{qid: [(docid, score), ...]}`` from a ``Map<String, ScoredDoc[]>``, or ``None``."""
        if self.docid_first is None:
            return None
        data = self.read(out)
        if data is None:
            return None
        if self.docid_first:
            return data
        return {qid: [(d, sc) for sc, d in rows] for qid, rows in data.items()}


_SCORE_DOCS_HEAD = '{"scoreDocs":['

# Indexes with at most this many documents get their docid table in one piece at the first search;
# larger ones fetch each docid the first time a hit needs it (and keep it).
_DOCID_TABLE_MAX_DOCS = 1 << 21


class _DirectSearch:
    """One query against Lucene directly, with the ranking of ``SimpleImpactSearcher.search``.

    Anserini's ``search`` loads every hit's stored document to read its id,
    which at ``k = 1000`` costs far more than the search itself, and pyjnius
    then wraps every hit as a Java object. This path builds the same query
    (Anserini's ``BagOfWordsQueryGenerator`` over the ``contents`` field, the
    index's ``ImpactSimilarity``), runs Lucene's top-k search on an
    ``IndexSearcher`` of its own and reads the hits as one JSON text of
    ``[lucene doc, score]`` pairs. Lucene docs are mapped to ids with a table
    read once from the ``id`` doc values.

    The order is Anserini's: score descending, ties by id ascending (its sort
    ``FIELD_SCORE, id``). Lucene's plain top-k breaks ties by Lucene doc instead,
    so when the k-th score is tied the search asks for more hits until the
    tie is complete, and ties are then ordered by id.
    """

    def __init__(self, index_dir: Path):
        A = jvm.autoclass
        reader = A("org.apache.lucene.index.DirectoryReader").open(
            A("org.apache.lucene.store.FSDirectory").open(A("java.nio.file.Paths").get(str(index_dir))))
        self.reader = reader
        self.searcher = A("org.apache.lucene.search.IndexSearcher")(
            reader, signature="(Lorg/apache/lucene/index/IndexReader;)V")
        self.searcher.setSimilarity(A("io.anserini.search.similarity.ImpactSimilarity")())
        self.max_doc = int(reader.maxDoc())

        mapper = _object_mapper()
        _configure(mapper, "org.apache.lucene.search.TopDocs", ("totalHits",))
        _configure(mapper, "org.apache.lucene.search.TopFieldDocs", ("totalHits", "fields"))
        _configure(mapper, "org.apache.lucene.search.ScoreDoc", ("shardIndex",), as_array=True)
        _configure(mapper, "org.apache.lucene.search.FieldDoc", ("shardIndex", "score"))
        _configure(mapper, "org.apache.lucene.util.BytesRef", ("valid",))
        self.mapper = mapper
        # Map<String, Float>: the generator reads the query's weights as Float
        self.query_reader = mapper.readerForMapOf(A("java.lang.Class").forName("java.lang.Float"))
        self.generator = A("io.anserini.search.query.BagOfWordsQueryGenerator")()
        # the order of a hit's two fields in the JSON array
        probe = json.loads(mapper.writeValueAsString(A("org.apache.lucene.search.ScoreDoc")(7, 2.5)))
        if probe == [7, 2.5]:
            self.doc_first = True
        elif probe == [2.5, 7]:
            self.doc_first = False
        else:
            raise ValueError(f"unexpected ScoreDoc JSON {probe!r}")
        self._docids: list[str] | None = None
        self._ranks: np.ndarray | None = None
        self._lazy: dict[int, str] = {}
        self._utils = A("io.anserini.index.IndexReaderUtils")

    @classmethod
    def create(cls, index_dir: Path) -> "_DirectSearch | None":
        try:
            return cls(index_dir)
        except Exception:  # noqa: BLE001 - a jar without these classes: Anserini's own search is used
            return None

    def _query(self, q: Mapping[str, int]):
        return self.generator.buildQuery("contents", self.query_reader.readValue(json.dumps(q)))

    def _top(self, query, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, lucene docs)`` of the plain top ``n`` (score descending, ties by Lucene doc)."""
        text = self.mapper.writeValueAsString(self.searcher.search(query, n))
        # '{"scoreDocs":[[a,b],[a,b],...]}' holds numbers only: read them in one pass, which at k = 1000 costs
        # half of a JSON parse into nested lists
        # (Java writes large floats as 1.5E7, which float() reads too)
        body = text[len(_SCORE_DOCS_HEAD):-2] if text.startswith(_SCORE_DOCS_HEAD) and text.endswith("]}") else None
        if body is None:
            pairs = np.asarray(json.loads(text)["scoreDocs"], dtype=np.float64).reshape(-1, 2)
        elif body:
            pairs = np.array(body.replace("[", "").replace("]", "").split(","), dtype=np.float64).reshape(-1, 2)
        else:
            pairs = np.zeros((0, 2))
        docs, scores = (pairs[:, 0], pairs[:, 1]) if self.doc_first else (pairs[:, 1], pairs[:, 0])
        return scores, docs.astype(np.int64)

    def search(self, q: Mapping[str, int], k: int) -> tuple[list[str], np.ndarray]:
        """``(docids, float Lucene scores)`` of the top ``k``, best first, in Anserini's order."""
        if self.max_doc == 0:
            return [], np.zeros(0)
        query = self._query(q)
        n = min(k + 1, self.max_doc)
        scores, docs = self._top(query, n)
        # a full page whose last hit ties with the k-th: documents with that score may be missing
        while len(scores) == n and n < self.max_doc and scores[-1] == scores[k - 1]:
            n = min(self.max_doc, 2 * n)
            scores, docs = self._top(query, n)
        if len(scores) > 1 and bool((scores[1:] == scores[:-1]).any()):
            # ties by id (Anserini's second sort key): score descending, then the id's place in id order
            ranks = self._id_ranks()
            id_order = ranks[docs] if ranks is not None else np.unique(self._ids(docs.tolist()), return_inverse=True)[1]
            order = np.lexsort((id_order, -scores))[:k]
            docs, scores = docs[order], scores[order]
        return self._ids(docs[:k].tolist()), scores[:k]

    # ------------------------------------------------------------ docids
    def _ids(self, docs: list[int]) -> list[str]:
        table = self._table()
        if table is not None:
            return [table[d] for d in docs]
        lazy = self._lazy
        out = []
        for d in docs:
            docid = lazy.get(d)
            if docid is None:
                docid = lazy[d] = str(self._utils.convertLuceneDocidToDocid(self.reader, int(d)))
            out.append(docid)
        return out

    def _table(self) -> list[str] | None:
        """Every Lucene doc's id, read once (``None`` for an index too large for the table)."""
        if self._docids is None and self.max_doc <= _DOCID_TABLE_MAX_DOCS:
            self._docids = self._read_docid_table()
        return self._docids

    def _id_ranks(self) -> np.ndarray | None:
        """Each Lucene doc's place in the order of ids (``None`` for an index too large for the id table)."""
        table = self._table()
        if self._ranks is None and table is not None:
            ranks = np.empty(len(table), np.int64)
            ranks[sorted(range(len(table)), key=table.__getitem__)] = np.arange(len(table))
            self._ranks = ranks
        return self._ranks

    def _read_docid_table(self) -> list[str]:
        """Every Lucene doc's id, from one search over all documents sorted by the ``id`` doc values."""
        A = jvm.autoclass
        SortField = A("org.apache.lucene.search.SortField")
        sort = A("org.apache.lucene.search.Sort")(SortField("id", A("org.apache.lucene.search.SortField$Type").STRING_VAL))
        found = self.searcher.search(A("org.apache.lucene.search.MatchAllDocsQuery")(), max(1, self.max_doc), sort)
        table = [""] * self.max_doc
        for row in json.loads(self.mapper.writeValueAsString(found))["scoreDocs"]:
            ref = row["fields"][0]
            raw = base64.b64decode(ref["bytes"])
            table[row["doc"]] = raw[ref["offset"]:ref["offset"] + ref["length"]].decode("utf-8")
        return table

    def close(self) -> None:
        try:
            self.reader.close()
        except Exception:  # noqa: BLE001
            pass
