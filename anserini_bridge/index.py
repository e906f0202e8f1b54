"""Build a Lucene impact index from vector directories with Anserini's IndexCollection.

The index is built in a temporary directory beside the target and renamed into
place only when Anserini finished and its counters add up, so an interrupted
or failed build never leaves a half index at the target path.

Next to Lucene's files the index holds ``lsr-index.json``: the encoder name,
vocabulary fingerprint, quantization spec and document counts. Searching reads
it to quantize queries the same way and to refuse a mismatched encoder.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from lsr.progress import tqdm

from lsr.errors import EnvironmentProblem, InputError, option
from lsr.meta import Meta, meta_field
from lsr.quantize import Quantizer, quantization_field
from lsr.vectors import (META_FILE, OFFSETS_FILE, VectorDirInfo, part_files, scan_vector_files, vector_file_name,
                         write_offsets)

from . import jvm

log = logging.getLogger(__name__)

INDEX_META = "lsr-index.json"
DOCVECTORS_DIR = "docvectors"


@dataclass
class IndexMeta(Meta, format="lsr-impact-index", what="index metadata", remedy="rebuild the index"):
    """The metadata stored in ``lsr-index.json``."""

    encoder: str | None
    vocab_fingerprint: str | None
    quantization: Quantizer | None = quantization_field()
    documents: int = meta_field(required=True)
    counters: dict = meta_field(absent={})
    stored_vectors: bool = meta_field(default=True, absent=False)
    source: str | None = None
    retriever: str = "impact"  # "impact": learned sparse impacts; "bm25": text analysed by Lucene, BM25 scores

    @classmethod
    def load(cls, index_dir: str | os.PathLike) -> "IndexMeta":
        index_dir = Path(index_dir)
        if not index_dir.is_dir():
            raise InputError(f"{index_dir}: index directory not found")
        path = index_dir / INDEX_META
        if not path.is_file():
            if any(index_dir.glob("segments_*")):
                raise InputError(f"{index_dir}: a Lucene index without {INDEX_META}; it was not built by "
                                 "`lsr index` (rebuild it with `lsr index --input VECDIR --index IDXDIR`)")
            raise InputError(f"{index_dir}: not an index (no {INDEX_META}, no Lucene segments); "
                             "build one with `lsr index --input VECDIR --index IDXDIR`")
        return cls.read(path)


def foreign_index_meta(index_dir: str | os.PathLike, quantizer: Quantizer | None = None) -> IndexMeta | None:
    """Metadata for a Lucene impact index built by another tool (Anserini's IndexCollection, Pyserini's
    prebuilt indexes), or ``None`` when ``index_dir`` has ``lsr-index.json`` or no Lucene segments.

    Nothing records how its vectors were quantized, so ``quantizer`` (default
    :class:`~lsr.quantize.Quantizer()`: scale 100, as SPLADE indexes from
    Anserini and Pyserini are made) quantizes float queries; the encoder is not
    known and not checked.
    """
    index_dir = Path(index_dir)
    if (index_dir / INDEX_META).is_file() or not any(index_dir.glob("segments_*")):
        return None
    return IndexMeta(None, None, quantizer or Quantizer(), documents=-1, counters={}, stored_vectors=False,
                     source="foreign")


_ADDED = re.compile(r"(\S+): ([\d,]+) docs added")
_COUNTER = re.compile(r"\b(indexed|unindexable|empty|skipped|errors):\s+([\d,]+)\s*$")


def build_index(
    vecdir: str | os.PathLike | Sequence[str | os.PathLike],
    index_dir: str | os.PathLike,
    threads: int | None = None,
    overwrite: bool = False,
    store_vectors: bool = True,
    progress: bool = True,
    allow_partial_shards: bool = False,
) -> IndexMeta:
    """Index every part file of ``vecdir`` into a new Lucene impact index at ``index_dir``.

    ``vecdir`` may also be several vector directories, e.g. the shards written
    by ``lsr encode --shard I/N`` on several machines: they must share the
    encoder's vocabulary and the quantization, hold no id twice, and form a
    complete set of shards (unless ``allow_partial_shards``); see
    :func:`lsr.engines.check_vector_dirs`. They go into one index as if
    encoded in one run.

    ``store_vectors`` keeps the document vectors beside the Lucene files
    (``IDXDIR/docvectors``: the part files, hard-linked when possible, and an
    id -> offset table) so that explanations work without re-encoding. They are
    kept outside Lucene's stored fields, which every hit would otherwise load.
    """
    dirs = [Path(vecdir)] if isinstance(vecdir, (str, os.PathLike)) else [Path(d) for d in vecdir]
    if not dirs:
        raise InputError(f"no vector directory given; pass {option('a vector directory', '--input VECDIR')}")
    index_dir = Path(index_dir)
    sources = []  # (vector directory, its part files, the names they get in the staging directory)
    for k, d in enumerate(dirs):
        if d.is_dir() and ((d / INDEX_META).is_file() or any(d.glob("segments_*"))):
            raise InputError(f"{d}: is an index, not a vector directory; pass the vectors it was built from "
                             "(`lsr encode --output VECDIR`)")
        parts = part_files(d) if d.is_dir() else []
        if not parts:
            raise InputError(f"{d}: no vector files (part-*.jsonl from `lsr encode`, or the *.json, *.jsonl and "
                             "*.gz files of an Anserini JsonVectorCollection); create them with `lsr encode`")
        flat = [vector_file_name(d, p) for p in parts]
        names = [n if len(dirs) == 1 else f"part-{k:03d}-{n[len('part-'):] if n.startswith('part-') else n}"
                 for n in flat]
        sources.append((d, parts, names))
    if index_dir.exists():
        if not overwrite:
            raise InputError(f"{index_dir}: already exists; choose a new path or pass "
                             f"{option('overwrite=True', '--overwrite')}")
    if len(dirs) > 1:
        from lsr.engines import check_vector_dirs

        check_vector_dirs(dirs, allow_partial=allow_partial_shards)
    infos = []
    scanned: dict[Path, Path] = {}  # foreign directory -> the offsets table written while validating it
    converted: list[Path] = []  # directories of foreign files rewritten as JSON lines
    scratch = index_dir.parent if index_dir.parent.is_dir() else None
    try:
        for i, (d, parts, names) in enumerate(sources):
            info = VectorDirInfo.load(d)
            if info is None:
                # Foreign JsonVectorCollection files: validate every document before handing them to Java,
                # noting each document's offset on the way (one pass over the files, not two); gzip files
                # and JSON arrays are rewritten as JSON lines, so that stored vectors can be found by offset.
                log.warning("%s has no %s (vectors from another tool): the encoder and quantization are not "
                            "known, so queries are not checked against them; search with --query-vectors, "
                            "or with --model and the --scale the vectors were quantized with", d, META_FILE)
                fd, table = tempfile.mkstemp(prefix=".lsr-offsets-", suffix=".tsv", dir=scratch)
                os.close(fd)
                scanned[d] = Path(table)
                converted.append(Path(tempfile.mkdtemp(prefix=".lsr-converted-", dir=scratch)))
                expected, files = scan_vector_files(list(zip(parts, names)), scanned[d], converted[-1])
                sources[i] = (d, [p for p, _ in files], [n for _, n in files])
                info = VectorDirInfo(None, None, None, documents_read=expected, documents_written=expected)  # type: ignore[arg-type]
            infos.append(info)
        return _build(sources, dirs, infos, scanned, index_dir, threads, store_vectors, progress)
    finally:
        for table in scanned.values():
            table.unlink(missing_ok=True)
        for conv in converted:
            shutil.rmtree(conv, ignore_errors=True)


def _build(sources, dirs, infos, scanned, index_dir: Path, threads, store_vectors: bool, progress: bool) -> IndexMeta:
    info = infos[0]
    expected = sum(i.documents_written for i in infos)
    n_parts = sum(len(parts) for _, parts, _ in sources)
    threads = threads or max(1, min(n_parts, os.cpu_count() or 1))
    label = " ".join(str(d) for d in dirs)

    index_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{index_dir.name}.building-", dir=index_dir.parent))
    try:
        staging = work / "input"
        staging.mkdir()
        for _, parts, names in sources:  # only the part files: Anserini would try to read the metadata too
            for p, name in zip(parts, names):
                os.symlink(p.resolve(), staging / name)
        tmp_index = work / "index"
        counters = _run_index_collection(staging, tmp_index, threads, expected, progress)
        if counters.get("indexed") != expected or counters.get("errors", 0) or counters.get("unindexable", 0):
            raise InputError(
                f"{label}: Anserini indexed {counters.get('indexed')} of {expected} documents "
                f"(counters: {counters}); the index was not created"
            )
        if store_vectors:
            if len(dirs) == 1:
                _store_vectors(dirs[0], sources[0][1], tmp_index / DOCVECTORS_DIR,
                               have_offsets=info.encoder is not None, offsets=scanned.get(dirs[0]),
                               names=sources[0][2])
            else:
                _store_vectors_of_many(sources, infos, tmp_index / DOCVECTORS_DIR, scanned)
        source = str(dirs[0].resolve()) if len(dirs) == 1 else " ".join(str(d.resolve()) for d in dirs)
        meta = IndexMeta(info.encoder, info.vocab_fingerprint, info.quantization, expected, counters,
                         store_vectors, source)
        meta.counters["reported_by_encoder"] = sum(i.documents_reported for i in infos)
        return publish_index(tmp_index, index_dir, meta)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def publish_index(tmp_index: Path, index_dir: Path, meta: IndexMeta) -> IndexMeta:
    """Write ``meta`` into a finished index built at ``tmp_index`` and move it to ``index_dir`` in one rename."""
    meta.write(tmp_index / INDEX_META)
    (tmp_index / "write.lock").unlink(missing_ok=True)
    if index_dir.exists():
        shutil.rmtree(index_dir)
    os.replace(tmp_index, index_dir)
    return meta


def _store_vectors_of_many(sources: list, infos: list[VectorDirInfo], dest: Path,
                           scanned: dict | None = None) -> None:
    """The part files of several vector directories under their staged names, with one offsets table."""
    dest.mkdir()
    complete = True
    lines = []
    for (d, parts, names), info in zip(sources, infos):
        for p, name in zip(parts, names):
            _link_or_copy(p, dest / name)
        # offsets tables of `lsr encode` name part files as they are; those written while scanning foreign
        # files already use the staged names
        renamed = {n: n for n in names} if d in (scanned or {}) else {p.name: name for p, name in zip(parts, names)}
        offsets = (scanned or {}).get(d) or d / OFFSETS_FILE
        if (info.encoder is None and d not in (scanned or {})) or not offsets.is_file():
            complete = False
            continue
        with open(offsets, encoding="utf-8") as fh:
            for line in fh:
                rid, part, off = line.rstrip("\n").split("\t")
                lines.append(f"{rid}\t{renamed[part]}\t{off}\n")
    if complete:
        (dest / OFFSETS_FILE).write_text("".join(lines), encoding="utf-8")
    else:
        write_offsets(dest)


def _store_vectors(vecdir: Path, parts: list[Path], dest: Path, have_offsets: bool,
                   offsets: Path | None = None, names: list[str] | None = None) -> None:
    dest.mkdir()
    for p, name in zip(parts, names or [p.name for p in parts]):
        _link_or_copy(p, dest / name)
    if offsets is not None and offsets.is_file():
        shutil.copyfile(offsets, dest / OFFSETS_FILE)
    elif have_offsets and (vecdir / OFFSETS_FILE).is_file():
        _link_or_copy(vecdir / OFFSETS_FILE, dest / OFFSETS_FILE)
    else:
        write_offsets(dest)


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


IMPACT_OPTIONS = ("-collection", "JsonVectorCollection", "-impact", "-pretokenized")


def _run_index_collection(input_dir: Path, index_dir: Path, threads: int, expected: int, progress: bool,
                          options: Sequence[str] = IMPACT_OPTIONS) -> dict:
    home = jvm.java_home()
    jar = jvm.anserini_jar()
    cmd = [str(home / "bin" / "java"), *jvm.jvm_options(home), "-cp", str(jar),
           "io.anserini.index.IndexCollection", *options,
           "-input", str(input_dir), "-index", str(index_dir),
           "-threads", str(threads), "-verbose"]
    counters: dict[str, int] = {}
    log_tail: list[str] = []
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
    except OSError as e:
        raise EnvironmentProblem(f"cannot run {cmd[0]} ({e.strerror}); set LSR_JAVA_HOME to a Java 21+ runtime") from None
    try:
        with tqdm(total=expected, unit="doc", desc="index", disable=not progress) as bar:
            for line in proc.stdout:
                log_tail = (log_tail + [line.rstrip()])[-30:]
                m = _ADDED.search(line)
                if m:
                    bar.update(int(m.group(2).replace(",", "")))
                m = _COUNTER.search(line)
                if m:
                    counters[m.group(1)] = int(m.group(2).replace(",", ""))
            rc = proc.wait()
    finally:
        if proc.poll() is None:  # interrupted: do not leave Java writing into the work directory
            proc.kill()
            proc.wait()
    if rc != 0 or "indexed" not in counters:
        raise EnvironmentProblem(
            f"Anserini IndexCollection failed (exit {rc}). Last log lines:\n" + "\n".join(log_tail)
        )
    return counters
