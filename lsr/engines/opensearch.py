"""OpenSearch (``rank_features``) and Elasticsearch (``sparse_vector``): mappings, bulk files, queries.

Both engines store a sparse vector as Lucene ``FeatureField`` postings:
``{feature name: positive weight}`` per document, scored by a query as
``sum(query weight * stored document weight)``. That gives two limits the
exported vectors must respect:

* **Document precision.** A feature value keeps only the 9 most significant
  bits of its float32 (the top 17 bits of the float are stored, the rest is
  truncated), a relative error below 0.4%. Every integer impact up to
  ``512`` is kept exactly; above that, ``513`` is stored as ``512``, ``1001``
  as ``1000``. :func:`stored_feature_values` computes what is stored.
  Quantize with ``--max-value 512`` (the default quantization caps at 1000)
  when scores must equal the Lucene impact index exactly.
* **Query weights.** ``FeatureField.newLinearQuery`` refuses weights above
  ``64``. :func:`rescale_query` divides a query by the smallest power of two
  that brings its largest weight to 64 or below. Dividing by a power of two
  is exact in floating point, so every score is divided by the same factor:
  the ranking (ties included) is unchanged, and ``engine score * factor`` is
  the integer impact score again.

Feature names: both engines read a dot in a field name as an object path
(``rank_features`` refuses it; ``sparse_vector`` accepts it only from 8.16).
Tokens are therefore written with every ``.`` replaced by ``__``
(:func:`feature_name`), in documents and queries alike; the BERT word-piece
vocabulary has no token containing ``__``, so the mapping stays one-to-one
(writers check it).

Query bodies:

* OpenSearch 2.11+: ``{"neural_sparse": {FIELD: {"query_tokens": {...}}}}``
* Elasticsearch 8.15+: ``{"sparse_vector": {"field": FIELD, "query_vector": {...}}}``

Every document also carries its id in a ``docid`` keyword field, so searches
sort ties by docid exactly as the Lucene impact index does.
:class:`HttpEngine` talks to a running engine over its REST API with the
standard library only (create the index, send bulk files with per-document
failure reports, search as a :class:`~lsr.retrieval.Retriever`).
"""

from __future__ import annotations

import base64
import json
import math
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np
from lsr.progress import tqdm

from ..errors import EnvironmentProblem, IndexMismatchError, InputError
from ..io import Hit
from ..meta import Meta
from ..quantize import Quantizer, quantization_field
from ..retrieval import SparseRetriever
from ..vectors import VectorDirInfo, iter_vector_records, part_files
from .report import InsertReport

ENGINES = ("opensearch", "elasticsearch")
FIELD_TYPES = {"opensearch": "rank_features", "elasticsearch": "sparse_vector"}
MAX_QUERY_WEIGHT = 64.0  # Lucene FeatureField.newLinearQuery
EXACT_INTEGER_LIMIT = 512  # 9 significant bits: every integer up to 2**9 is stored exactly
DEFAULT_FIELD = "vector"
DOCID_FIELD = "docid"


def _check_engine(engine: str) -> str:
    if engine not in ENGINES:
        raise InputError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    return engine


# ------------------------------------------------------------------ precision
def stored_feature_values(values) -> np.ndarray:
    """The float32 values a ``rank_features`` / ``sparse_vector`` field stores for ``values``.

    Lucene keeps the top 17 bits of the float (sign, 8 exponent bits and 8
    mantissa bits: 9 significant bits) and truncates the rest.
    """
    v = np.ascontiguousarray(values, dtype=np.float32)
    if np.any(~np.isfinite(v)) or np.any(v <= 0):
        raise InputError("feature values must be finite and positive")
    bits = v.view(np.uint32) >> np.uint32(15) << np.uint32(15)
    return bits.view(np.float32)


def feature_name(token: str) -> str:
    """The feature (field) name of a token: every ``.`` becomes ``__``."""
    return token.replace(".", "__")


def rescale_query(vector: Mapping[str, float], max_weight: float = MAX_QUERY_WEIGHT) -> tuple[dict[str, float], float]:
    """``(weights / factor, factor)`` with ``factor`` the smallest power of two that brings every weight to
    ``max_weight`` or below (1 when they already are).

    Scores of the rescaled query are the original scores divided by
    ``factor`` exactly, so rankings and ties do not change.
    """
    if not vector:
        return {}, 1.0
    top = max(float(w) for w in vector.values())
    if not math.isfinite(top) or min(float(w) for w in vector.values()) <= 0:
        raise InputError("query weights must be finite and positive")
    factor = 1.0 if top <= max_weight else 2.0 ** math.ceil(math.log2(top / max_weight))
    return {t: float(w) / factor for t, w in vector.items()}, factor


# ------------------------------------------------------------------- mappings
@dataclass
class FeatureIndexMeta(Meta, format="lsr-feature-index", what="index metadata (mapping _meta)",
                       remedy="recreate the index (replace=True)"):
    """What an index's mapping records about its vectors (its ``_meta`` block)."""

    encoder: str | None
    vocab_fingerprint: str | None
    quantization: Quantizer | None = quantization_field()
    feature_names: str = "dots as __"


def index_meta(info: VectorDirInfo | None) -> dict:
    """The ``_meta`` block recorded in the mapping: encoder, vocabulary fingerprint, quantization."""
    return FeatureIndexMeta(info.encoder if info else None, info.vocab_fingerprint if info else None,
                            info.quantization if info else None).to_dict()


def index_body(engine: str, meta: dict | None = None, field: str = DEFAULT_FIELD, contents: bool = True) -> dict:
    """The body of ``PUT /INDEX``: a ``rank_features`` (OpenSearch) or ``sparse_vector`` (Elasticsearch)
    field, the ``docid`` keyword used to break ties, and optionally the document text."""
    props = {field: {"type": FIELD_TYPES[_check_engine(engine)]}, DOCID_FIELD: {"type": "keyword"}}
    if contents:
        props["contents"] = {"type": "text"}
    mappings: dict = {"properties": props}
    if meta is not None:
        mappings["_meta"] = meta
    return {"mappings": mappings}


# ---------------------------------------------------------------- bulk files
@dataclass
class BulkStats:
    """What a bulk file holds: documents, feature values, and how many the engine cannot store exactly."""

    documents: int = 0
    values: int = 0
    inexact_values: int = 0  # values the engine rounds (9 significant bits)
    max_relative_error: float = 0.0
    max_value: float = 0.0

    def precision_note(self) -> str:
        if not self.inexact_values:
            return (f"all {self.values} feature values (largest {self.max_value:g}) are stored exactly "
                    f"(integers up to {EXACT_INTEGER_LIMIT} keep their value)")
        return (f"{self.inexact_values} of {self.values} feature values exceed what 9 significant bits hold "
                f"(largest {self.max_value:g}; relative error up to {self.max_relative_error:.2%}); quantize with "
                f"--max-value {EXACT_INTEGER_LIMIT} to keep every impact exact")


class BulkWriter:
    """Writes ``_bulk`` NDJSON: an ``index`` action and a source line per document.

    Use as a context manager; a failed write removes the file.
    """

    def __init__(self, path: str | os.PathLike, engine: str, index: str | None = None,
                 field: str = DEFAULT_FIELD, contents: bool = True):
        _check_engine(engine)
        self.path = Path(path)
        self.engine, self.index, self.field, self.contents = engine, index, field, contents
        self.stats = BulkStats()
        self._names: dict[str, str] = {}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "w", encoding="utf-8")
        except OSError as e:
            raise InputError(f"{self.path}: cannot write the bulk file ({e.strerror})") from None

    def _name(self, token: str) -> str:
        name = feature_name(token)
        prev = self._names.setdefault(name, token)
        if prev != token:
            raise InputError(f"tokens {prev!r} and {token!r} both become feature {name!r} once dots are "
                             "replaced; these vectors cannot be written as feature fields")
        return name

    def write(self, docid: str, vector: Mapping[str, float], contents: str | None = None) -> None:
        if not vector:
            raise InputError(f"document {docid!r}: empty vector (feature fields need at least one positive weight)")
        values = np.fromiter((float(w) for w in vector.values()), np.float64, len(vector))
        stored = stored_feature_values(values).astype(np.float64)
        err = np.abs(stored - values) / values
        s = self.stats
        s.documents += 1
        s.values += len(values)
        s.inexact_values += int(np.count_nonzero(err))
        s.max_relative_error = max(s.max_relative_error, float(err.max()))
        s.max_value = max(s.max_value, float(values.max()))
        action = {"_id": docid} if self.index is None else {"_index": self.index, "_id": docid}
        source = {DOCID_FIELD: docid, self.field: {self._name(t): _number(w) for t, w in vector.items()}}
        if self.contents and contents:
            source["contents"] = contents
        self._fh.write(json.dumps({"index": action}, ensure_ascii=False) + "\n")
        self._fh.write(json.dumps(source, ensure_ascii=False) + "\n")

    def close(self) -> BulkStats:
        self._fh.close()
        return self.stats

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self._fh.close()
        if exc_type is not None:
            self.path.unlink(missing_ok=True)
        return False


def _number(w: float) -> int | float:
    return int(w) if float(w).is_integer() else float(w)


def write_bulk(
    vecdirs: Sequence[str | os.PathLike], path: str | os.PathLike, engine: str, index: str | None = None,
    field: str = DEFAULT_FIELD, contents: bool = True, progress: bool = True,
) -> tuple[BulkStats, Path]:
    """Write the documents of vector directories (``lsr encode`` output) as one ``_bulk`` file.

    Beside it, ``PATH.index.json`` holds the body that creates the index
    (mapping and ``_meta``). Returns the statistics and that file's path.
    """
    from .shards import check_vector_dirs

    infos = check_vector_dirs(vecdirs)
    path = Path(path)
    total = sum((i.documents_written if i else 0) for i in infos) or None
    with BulkWriter(path, engine, index, field, contents) as w, \
            tqdm(total=total, unit="doc", desc=f"{engine} bulk", disable=not progress) as bar:
        for d in vecdirs:
            for p in part_files(d):
                for docid, vec, text in _iter_documents(p):
                    w.write(docid, vec, text)
                    bar.update(1)
    body_path = path.with_name(path.name + ".index.json")
    body_path.write_text(json.dumps(index_body(engine, index_meta(infos[0]), field, contents), indent=2) + "\n",
                         encoding="utf-8")
    return w.stats, body_path


def _iter_documents(path: Path) -> Iterator[tuple[str, dict[str, int], str | None]]:
    """``(id, {token: int}, contents)`` of one vector file, validated as :func:`lsr.vectors.iter_vectors` does."""
    for _, _, rid, vec, obj in iter_vector_records(path):
        contents = obj.get("contents")
        yield rid, vec, contents if isinstance(contents, str) and contents else None


# ------------------------------------------------------------------- queries
def query_body(engine: str, vector: Mapping[str, float], k: int = 10, field: str = DEFAULT_FIELD) -> tuple[dict, float]:
    """A search body for one integer (or float) query vector; returns ``(body, factor)``.

    Weights are rescaled with :func:`rescale_query`; multiply the engine's
    ``_score`` by ``factor`` to get the integer impact score back.
    """
    _check_engine(engine)
    weights, factor = rescale_query(vector)
    tokens = {feature_name(t): w for t, w in weights.items()}
    if engine == "opensearch":
        query = {"neural_sparse": {field: {"query_tokens": tokens}}}
    else:
        query = {"sparse_vector": {"field": field, "query_vector": tokens}}
    body = {"size": int(k), "query": query, "_source": False,
            "sort": [{"_score": {"order": "desc"}}, {DOCID_FIELD: {"order": "asc"}}], "track_scores": True}
    return body, factor


def hits_from_response(response: dict, factor: float, quantizer: Quantizer | None = None) -> list[Hit]:
    """Typed hits from a search response; ``impact_score`` is ``round(_score * factor)``."""
    hits = []
    for rank, h in enumerate(response.get("hits", {}).get("hits", []), 1):
        raw = float(h.get("_score") or 0.0) * factor
        integer = int(round(raw))
        hits.append(Hit(str(h["_id"]), quantizer.to_float_score(integer) if quantizer else raw, rank, integer))
    return hits


def bulk_failures(response: dict) -> list[tuple[str, str]]:
    """``(docid, reason)`` for every item of a ``_bulk`` response that failed."""
    out = []
    if not response.get("errors"):
        return out
    for item in response.get("items", []):
        for action in item.values():
            err = action.get("error")
            if err:
                reason = f"{err.get('type')}: {err.get('reason')}" if isinstance(err, dict) else str(err)
                out.append((str(action.get("_id")), f"status {action.get('status')}: {reason}"))
    return out


# ---------------------------------------------------------------- REST client
class HttpEngine(SparseRetriever):
    """One OpenSearch or Elasticsearch index over its REST API (standard library only).

    ``url`` may carry ``user:password@``. Satisfies :class:`lsr.retrieval.Retriever`.
    """

    def __init__(self, url: str, index: str, engine: str | None = None, field: str = DEFAULT_FIELD,
                 timeout: float = 30.0):
        parts = urllib.parse.urlsplit(url.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InputError(f"{url!r}: expected http(s)://HOST:PORT")
        self._auth = None
        if parts.username is not None:
            cred = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
            self._auth = "Basic " + base64.b64encode(cred.encode()).decode()
        netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
        self.url = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))
        self.index, self.field, self.timeout = index, field, timeout
        if engine is None:
            info = self._request("GET", "/")
            engine = "opensearch" if info.get("version", {}).get("distribution") == "opensearch" else "elasticsearch"
        self.engine = _check_engine(engine)
        self._meta: FeatureIndexMeta | None = None

    def _request(self, method: str, path: str, body=None, ndjson: bool = False, ok=(200, 201)) -> dict:
        data = None
        headers = {"Accept": "application/json"}
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/x-ndjson" if ndjson else "application/json"
        if self._auth:
            headers["Authorization"] = self._auth
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as e:
            text = e.read().decode("utf-8", "replace")
            if e.code in ok:
                return json.loads(text or "{}")
            raise InputError(f"{self.engine if hasattr(self, 'engine') else 'engine'} at {self.url} refused "
                             f"{method} {path}: HTTP {e.code} {text[:500]}") from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise EnvironmentProblem(f"cannot reach {self.url} ({reason}); start the engine or check the URL") from None

    def describe(self) -> str:
        return f"index {self.index!r} at {self.url}"

    # ---------------------------------------------------------------- index
    @property
    def exists(self) -> bool:
        try:
            self._request("HEAD", f"/{self.index}")
            return True
        except InputError as e:
            if "HTTP 404" in str(e):
                return False
            raise

    @property
    def meta(self) -> FeatureIndexMeta:
        if self._meta is None:
            m = self._request("GET", f"/{self.index}/_mapping")
            mappings = next(iter(m.values()), {}).get("mappings", {})
            meta = mappings.get("_meta") or {}
            if not FeatureIndexMeta.owns(meta):
                raise IndexMismatchError(f"index {self.index!r} at {self.url} was not created by lsr (no "
                                         f"{FeatureIndexMeta.tag()} _meta in its mapping)")
            try:
                self._meta = FeatureIndexMeta.from_dict(meta, f"index {self.index!r} at {self.url}")
            except InputError as e:  # a newer format, or damaged: replace=True may still delete it
                raise IndexMismatchError(str(e)) from None
        return self._meta

    def create(self, meta: dict | FeatureIndexMeta, replace: bool = False, contents: bool = True) -> str:
        """Create the index (``"created"``); keep an existing one for the same vectors (``"appending"``);
        refuse one for other vectors unless ``replace`` (``"replaced"``)."""
        wanted = meta if isinstance(meta, FeatureIndexMeta) else FeatureIndexMeta.from_dict(meta, "the _meta given")
        action = "created"
        if self.exists:
            try:
                have = self.meta
                same = (have.vocab_fingerprint, have.quantization) == (wanted.vocab_fingerprint, wanted.quantization)
                problem = None if same else (f"index {self.index!r} at {self.url} holds vectors of {have.encoder!r} "
                                             f"({have.vocab_fingerprint}, quantization {have.quantization})")
            except IndexMismatchError as e:
                problem = str(e)
            if problem and not replace:
                raise IndexMismatchError(f"{problem}; pass replace=True to delete and recreate it")
            if not problem and not replace:
                return "appending"
            self._request("DELETE", f"/{self.index}")
            action = "replaced"
        body_meta = meta.to_dict() if isinstance(meta, FeatureIndexMeta) else meta
        self._request("PUT", f"/{self.index}", index_body(self.engine, body_meta, self.field, contents))
        self._meta = None
        return action

    def flush(self) -> None:
        """Make what was sent visible to searches (the engine's refresh)."""
        self._request("POST", f"/{self.index}/_refresh")

    def drop(self) -> None:
        """Delete the index."""
        self._request("DELETE", f"/{self.index}")
        self._meta = None

    refresh, delete = flush, drop  # the engines' own words

    def send_bulk(self, path: str | os.PathLike, chunk_docs: int = 500, progress: bool = True) -> InsertReport:
        """Send a bulk file in requests of ``chunk_docs`` documents; reports every document the engine refused."""
        report = InsertReport()
        lines: list[bytes] = []
        with open(path, "rb") as fh, tqdm(unit="doc", desc="bulk", disable=not progress) as bar:
            for line in fh:
                if line.strip():
                    lines.append(line if line.endswith(b"\n") else line + b"\n")
                if len(lines) >= 2 * chunk_docs:
                    report += self._send(lines)
                    bar.update(len(lines) // 2)
                    lines = []
            if lines:
                report += self._send(lines)
                bar.update(len(lines) // 2)
        return report

    def _send(self, lines: list[bytes]) -> InsertReport:
        resp = self._request("POST", f"/{self.index}/_bulk", b"".join(lines), ndjson=True)
        failed = bulk_failures(resp)
        return InsertReport(len(resp.get("items", [])) - len(failed), failed)

    # --------------------------------------------------------------- search
    def _search_vectors(self, qids: Sequence[str], vectors: Sequence[Mapping[str, int]], k: int,
                        threads: int | None = None) -> list[list[Hit]]:
        """Hits through ``_msearch``, 100 queries a request; ``threads`` is not used (the engine parallelises)."""
        quant = self.meta.quantization
        out = []
        todo = [(q, *query_body(self.engine, v, k, self.field)) for q, v in zip(qids, vectors)]
        for start in range(0, len(todo), 100):
            chunk = todo[start:start + 100]
            lines = b"".join(json.dumps({"index": self.index}).encode() + b"\n" + json.dumps(b).encode() + b"\n"
                             for _, b, _ in chunk)
            resp = self._request("POST", "/_msearch", lines, ndjson=True)
            for (qid, _, factor), r in zip(chunk, resp.get("responses", [])):
                if "error" in r:
                    raise InputError(f"{self.engine} at {self.url} refused the query {qid!r}: {r['error']}")
                out.append(hits_from_response(r, factor, quant))
        return out
