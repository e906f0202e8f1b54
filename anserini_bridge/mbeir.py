"""M-BEIR evaluation of a sparse encoder through a real Lucene impact index.

The whole candidate pool is encoded, quantized, indexed with Anserini and
searched; a local pool's ranking is the index's ranking restricted to that pool
(impact scores do not depend on the rest of the collection, so this is exactly
the ranking of an index holding only the local pool; the search depth grows
until enough local candidates are found). Dense encoders are searched
exhaustively by :func:`lsr.mbeir.dense_runs`. ``lsr eval-mbeir`` is the
command line over these functions; the encoder is any object with ``name``,
``vocab`` and ``encode_queries`` / ``encode_documents`` returning a
:class:`~lsr.sparse.SparseBatch`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

from lsr.mbeir.metrics import DENSE, SPARSE


def _check_sparse(encoder) -> None:
    from lsr.errors import InputError

    missing = [a for a in ("name", "vocab", "encode_queries", "encode_documents") if not hasattr(encoder, a)]
    if missing:
        raise InputError(f"{type(encoder).__name__} is not a sparse encoder (missing {', '.join(missing)})")


def _encode_sparse(encoder, inputs, ids: Sequence[str], role: str, chunk_size: int, progress: bool,
                   max_terms: int | None = None):
    """Yield SparseBatches with ids, ``chunk_size`` inputs at a time (each row pruned to its ``max_terms``
    largest weights when given)."""
    from lsr.progress import tqdm

    from lsr.errors import InputError
    from lsr.inputs import text_only, without_images
    from lsr.sparse import SparseBatch

    fn = encoder.encode_queries if role == "query" else encoder.encode_documents
    strip = text_only(encoder)
    desc = "encode queries" if role == "query" else "encode candidates"
    with tqdm(total=len(inputs), unit="input", desc=desc, disable=not progress) as bar:
        for s in range(0, len(inputs), chunk_size):
            chunk = list(inputs[s:s + chunk_size])
            batch = fn(without_images(chunk) if strip else chunk)
            if not isinstance(batch, SparseBatch) or len(batch) != len(chunk):
                raise InputError(f"{encoder.name}: encode_{role}s must return a SparseBatch with one row per input "
                                 f"(got {type(batch).__name__} for {len(chunk)} inputs)")
            bar.update(len(chunk))
            if max_terms:
                batch = batch.topk(max_terms)
            yield batch.with_ids(ids[s:s + chunk_size])


def build_sparse_index(encoder, mset, workdir: str | os.PathLike, quantizer=None, chunk_size: int = 256,
                       threads: int | None = None, progress: bool = True, max_terms: int | None = None) -> Path:
    """Encode the whole pool, write quantized vectors and build a Lucene impact index; returns its path.

    ``max_terms`` keeps only the largest weights of each candidate vector.
    Candidates whose vector is empty after quantization are listed in
    ``WORKDIR/vectors/report.jsonl`` and are not indexed (they cannot be retrieved).
    """
    from .index import build_index
    from lsr.errors import InputError
    from lsr.quantize import Quantizer
    from lsr.vectors import VectorWriter

    _check_sparse(encoder)
    workdir = Path(workdir)
    vecdir, index_dir = workdir / "vectors", workdir / "index"
    inputs = mset.candidate_inputs()
    dids = [c.did for c in mset.pool]
    contents = [c.text or Path(c.image).name for c in mset.pool]
    with VectorWriter(vecdir, quantizer or Quantizer(), encoder=encoder.name, vocab=encoder.vocab,
                      overwrite=True, extra={"mbeir_pool": len(dids)}) as writer:
        start = 0
        for batch in _encode_sparse(encoder, inputs, dids, "document", chunk_size, progress, max_terms):
            writer.write(batch, contents[start:start + len(batch)])
            start += len(batch)
    if writer.info.documents_written == 0:
        raise InputError(f"{encoder.name} gave an empty vector to every one of the {len(dids)} candidates; "
                         "nothing can be indexed")
    build_index(vecdir, index_dir, threads=threads, overwrite=True, store_vectors=False, progress=progress)
    return index_dir


def sparse_runs(encoder, mset, query_inputs, index_dir: str | os.PathLike, depth: int = 50,
                scopes: Iterable[str] = ("local", "global"), chunk_size: int = 256, threads: int | None = None,
                progress: bool = True, max_terms: int | None = None):
    """Search the impact index with the encoded queries; ``Runs`` for each scope at ``depth``.

    ``max_terms`` keeps only the largest weights of each query vector.

    Local results are the index's ranking restricted to the row's local pool;
    queries whose first ``4 * depth`` hits hold fewer than ``depth`` local
    candidates are searched again, 8 times deeper each round, up to the whole index.
    """
    from .search import ImpactSearcher
    from lsr.errors import InputError
    from lsr.mbeir import Runs, restrict
    from lsr.sparse import SparseBatch

    _check_sparse(encoder)
    scopes = tuple(scopes)
    if depth < 1:
        raise InputError(f"depth must be at least 1, got {depth}")
    qids = [q.qid for q in mset.queries]
    if len(query_inputs) != len(qids):
        raise InputError(f"{len(query_inputs)} query inputs for {len(qids)} queries")
    queries = SparseBatch.concat(list(_encode_sparse(encoder, list(query_inputs), qids, "query", chunk_size,
                                                     progress, max_terms)))
    out: dict = {}
    with ImpactSearcher(index_dir) as searcher:
        searcher.check_encoder(encoder.name, encoder.vocab.fingerprint)
        n_docs = searcher.num_docs
        k = max(1, min(n_docs, depth * 4 if "local" in scopes else depth))
        first = searcher.batch_search(queries, qids, k=k, threads=threads)
        if "global" in scopes:
            out["global"] = {q: first[q][:depth] for q in qids}
        if "local" in scopes:
            local, pending, rounds = {}, [], 1
            for i, q in enumerate(qids):
                got = restrict(first[q], mset.scope_dids("local", mset.row_of(q)), depth)
                if len(got) >= depth or len(first[q]) < k or k >= n_docs:
                    local[q] = got
                else:
                    pending.append(i)
            while pending:
                k = min(n_docs, k * 8)
                rounds += 1
                sub_ids = [qids[i] for i in pending]
                res = searcher.batch_search(queries.select(pending), sub_ids, k=k, threads=threads)
                still = []
                for i in pending:
                    q = qids[i]
                    got = restrict(res[q], mset.scope_dids("local", mset.row_of(q)), depth)
                    if len(got) >= depth or len(res[q]) < k or k >= n_docs:
                        local[q] = got
                    else:
                        still.append(i)
                pending = still
            out["local"] = local
        info = {"indexed": n_docs, "pool": len(mset.pool), "search_rounds": rounds if "local" in scopes else 1,
                "empty_queries": int((queries.nnz == 0).sum()), "query_terms_max": int(queries.nnz.max()),
                "query_terms_mean": float(queries.nnz.mean())}
    return Runs(encoder.name, out, SPARSE, info)


def evaluate_model(encoder, kind: str, mset, query_inputs, workdir: str | os.PathLike, depth: int = 50,
                   scopes: Iterable[str] = ("local", "global"), quantizer=None, threads: int | None = None,
                   chunk_size: int = 256, progress: bool = True, max_query_terms: int | None = None,
                   max_doc_terms: int | None = None):
    """``Runs`` of one model: an impact index for a sparse one, exhaustive cosine for a dense one."""
    from lsr.mbeir import dense_runs

    if kind == DENSE:
        return dense_runs(encoder, mset, query_inputs, depth, scopes, chunk_size=chunk_size, workdir=workdir,
                          progress=progress)
    index_dir = build_sparse_index(encoder, mset, workdir, quantizer, chunk_size, threads, progress, max_doc_terms)
    return sparse_runs(encoder, mset, query_inputs, index_dir, depth, scopes, chunk_size, threads, progress,
                       max_query_terms)
