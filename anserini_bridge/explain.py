"""Explain why a document matched a query in an impact index.

:func:`explain` takes the document's stored integer vector (kept by
``build_index`` unless ``store_vectors=False``), quantizes the query with the
index's own :class:`~lsr.quantize.Quantizer`, splits the score into per-token
products and puts it beside the score Lucene itself returns for that document,
searched deep enough to reach it even outside the usual top ``k``.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from lsr.errors import InputError
from lsr.explain import Explanation, encode_one, explain_vectors
from lsr.inputs import Input
from lsr.sparse import SparseBatch

from .search import ImpactSearcher


def explain(
    searcher_or_index_dir: ImpactSearcher | str | os.PathLike,
    query: Any,
    docid: str,
    encoder=None,
) -> Explanation:
    """Per-token contributions of ``docid``'s score for ``query``, beside Lucene's own score.

    ``query`` is text or an :class:`~lsr.inputs.Input` (encoded with
    ``encoder``, which must be the index's encoder), a one-row float
    :class:`~lsr.sparse.SparseBatch` (quantized with the index's quantizer), or
    an integer ``{token: impact}`` mapping used as is. The explanation's
    ``sum_of_contributions`` equals ``lucene_score`` exactly.
    """
    own = not isinstance(searcher_or_index_dir, ImpactSearcher)
    searcher = ImpactSearcher(searcher_or_index_dir) if own else searcher_or_index_dir
    try:
        return _explain(searcher, query, str(docid), encoder)
    finally:
        if own:
            searcher.close()


def _explain(searcher: ImpactSearcher, query: Any, docid: str, encoder) -> Explanation:
    if not docid or not docid.strip():
        raise InputError("no document id given; pass the id of an indexed document (its corpus _id)")
    # Fail on the document first: it needs no model and names the fix for a missing vector store.
    document = searcher.doc_vector(docid)
    query_text = query_image = None
    float_query = None
    if isinstance(query, (str, Input)):
        if encoder is None:
            raise InputError("a text or image query needs the index's encoder (encoder=...); or pass an integer "
                             "{token: impact} vector")
        if isinstance(query, Input):
            query_text, query_image = query.text, query.image
        else:
            query_text = query
        batch = encode_one(encoder, query, role="query")
        searcher.check_encoder(getattr(encoder, "name", None), batch.vocab.fingerprint)
        query = batch
    if isinstance(query, SparseBatch):
        if len(query) != 1:
            raise InputError(f"explain takes one query; got a batch of {len(query)} vectors (select one row)")
        float_query = query.to_dict(0)
        ints = searcher.quantized_queries(query)[0]
    elif isinstance(query, Mapping):
        if not query:
            raise InputError("the query vector is empty; give at least one {token: positive integer} entry")
        ints = searcher.quantized_queries([query])[0]
    else:
        raise InputError(f"cannot explain a query of type {type(query).__name__}; pass text (with encoder=), "
                         "an Input, a one-row SparseBatch or an integer {token: impact} dict")
    if not ints:
        raise InputError("the query is empty after quantization (no token weight reaches 1 impact); "
                         "use a longer query or a larger quantization scale")
    score, rank = lucene_score_of(searcher, ints, docid)
    scale = searcher.meta.quantization.scale if searcher.meta.quantization else 1.0
    doc_text = None
    try:
        doc_text = searcher.doc_contents(docid) or None
    except InputError:
        pass
    return explain_vectors(ints, document, docid, score, scale, rank, query_text=query_text,
                           query_image=query_image, doc_text=doc_text, float_query=float_query)


def lucene_score_of(searcher: ImpactSearcher, query: Mapping[str, int], docid: str,
                    first_k: int = 100) -> tuple[int, int | None]:
    """Lucene's integer score and rank of ``docid`` for ``query``: ``(0, None)`` when it does not match.

    Searches with ``k = first_k`` and grows ``k`` tenfold until the document
    appears or Lucene returns fewer hits than asked for (every matching
    document has then been seen).
    """
    total = max(1, searcher.num_docs)
    k = max(1, min(first_k, total))
    while True:
        hits = searcher.search(dict(query), k=k)
        for hit in hits:
            if hit.docid == docid:
                return hit.impact_score, hit.rank
        if len(hits) < k or k >= total:
            return 0, None
        k = min(total, k * 10)
