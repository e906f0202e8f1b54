"""Encode a corpus straight into a vector directory, streaming.

The encoder yields chunks of vectors in input order while it keeps working;
each chunk is quantized and written as JSONL. When the encoder runs on a GPU
and the corpus spans more than one chunk, the writing happens in a separate
process, so formatting JSON does not compete with the thread that feeds the
GPU for the interpreter: the encoder hands each chunk over (one pickled
message) and goes on. Memory stays bounded either way: the
hand-over queue holds a few chunks and the writer streams to disk.
"""

from __future__ import annotations

import inspect
import os
import pickle
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Sequence

import numpy as np

from lsr.errors import InputError, LsrError
from lsr.io import Record
from lsr.quantize import Quantizer
from lsr.sparse import SparseBatch, row_entries
from lsr.vectors import VectorDirInfo, VectorWriter, check_new_output
from lsr.vocab import Vocabulary

# Rows per chunk handed to the writer: small, so little is left to write when encoding ends.
_OUTPUT_CHUNK = 1024


def encode_to_dir(
    encoder,
    records: Sequence[Record],
    vecdir: str | os.PathLike,
    quantizer: Quantizer | None = None,
    role: str = "document",
    shard_size: int = 100_000,
    overwrite: bool = False,
    store_text: bool = True,
    chunk_size: int = 8192,
    writer: str = "auto",
) -> VectorDirInfo:
    """Encode ``records`` with ``encoder`` and write quantized vectors to ``vecdir``.

    Every record is either written or listed in ``report.jsonl`` (empty text or
    empty vector); the returned info holds the counts and the number of
    truncated texts. Records with an ``image`` need an encoder that takes
    images (a STAIR model); the stored contents are the text, or the image
    path of an image-only record. ``chunk_size`` texts are sorted by length
    together (the encoder's sort window); ``writer`` is ``"process"`` (write
    in a separate process), ``"inline"`` (in this one) or ``"auto"`` (a
    process when the encoder runs on an accelerator and there is more than
    one chunk).
    """
    items = record_inputs(encoder, records)
    contents = [r.text if r.text.strip() or r.image is None else r.image for r in records] if store_text else None
    return encode_items_to_dir(encoder, items, [r.id for r in records], vecdir, quantizer, role=role,
                               shard_size=shard_size, overwrite=overwrite, contents=contents,
                               empty=[r.is_empty for r in records], chunk_size=chunk_size, writer=writer)


def record_inputs(encoder, records: Sequence[Record]) -> list:
    """What ``encoder`` is given for each record: its text, or an :class:`~lsr.inputs.Input` with its image.

    Records with images given to a text-only encoder are refused here, naming the first record and its line.
    """
    from lsr.inputs import Input

    with_image = [r for r in records if r.image is not None]
    if with_image and not getattr(encoder, "takes_images", False):
        r, more = with_image[0], len(with_image) - 1
        which = f"record {r.id!r}" + (f" (line {r.line})" if r.line else "") + \
            (f" and {more} more have" if more else " has")
        raise InputError(f"{which} an 'image', but {encoder.name!r} encodes text only; use a STAIR model "
                         "directory, or drop the 'image' fields")
    return [Input(text=r.text, image=r.image) if r.image is not None else r.text for r in records]


def encode_items_to_dir(
    encoder,
    items: Sequence,
    ids: Sequence[str],
    vecdir: str | os.PathLike,
    quantizer: Quantizer | None = None,
    *,
    role: str = "document",
    shard_size: int = 100_000,
    overwrite: bool = False,
    contents: Sequence[str] | None = None,
    empty: Sequence[bool] | None = None,
    chunk_size: int = 8192,
    writer: str = "auto",
    extra: dict | None = None,
) -> VectorDirInfo:
    """Encode what the encoder takes (texts; for image models also :class:`~lsr.inputs.Input`) into ``vecdir``.

    ``empty[i]`` marks inputs with nothing to encode (reported as "empty text"
    instead of written; default: blank strings); ``contents[i]`` is stored
    with each vector (default: nothing).
    """
    from .base import EncodeStats

    quantizer = quantizer or Quantizer()
    if role not in ("document", "query"):
        raise ValueError(f"role must be 'document' or 'query', not {role!r}")
    if writer not in ("auto", "process", "inline"):
        raise InputError(f"writer must be 'auto', 'process' or 'inline', not {writer!r}")
    if len(ids) != len(items):
        raise InputError(f"{len(ids)} ids for {len(items)} inputs")
    if empty is None:
        empty = [isinstance(x, str) and not x.strip() for x in items]
    stats = EncodeStats()
    encode = encoder.iter_encode
    if "sort_window" in inspect.signature(encode).parameters:
        chunks = encode(items, ids, chunk_size=min(chunk_size, _OUTPUT_CHUNK), stats=stats, sort_window=chunk_size)
    else:
        chunks = encode(items, ids, chunk_size=chunk_size, stats=stats)
    # On a GPU the interpreter is the bottleneck, so writing moves out of it; on the CPU the model's
    # arithmetic dwarfs writing (and a writer process would only compete for the same cores).
    on_accelerator = getattr(getattr(encoder, "device", None), "type", "cpu") != "cpu"
    writer_in_subprocess = writer == "process" or (writer == "auto" and on_accelerator and len(items) > chunk_size)
    make = ProcessVectorWriter if writer_in_subprocess else VectorWriter
    meta = {"max_length": encoder.max_length, **(extra or {})}
    with make(vecdir, quantizer, encoder=encoder.name, vocab=encoder.vocab, role=role, shard_size=shard_size,
              overwrite=overwrite, extra=meta) as out:
        start = 0
        for batch in chunks:
            base, start = start, start + len(batch)
            blank = [i for i in range(len(batch)) if empty[base + i]]
            chunk_contents = list(contents[base:start]) if contents is not None else None
            for i in blank:
                out.report(batch.ids[i], "empty text")
            if blank:
                keep = [i for i in range(len(batch)) if not empty[base + i]]
                batch = select_rows(batch, keep)
                if chunk_contents is not None:
                    chunk_contents = [chunk_contents[i] for i in keep]
            out.write(batch, chunk_contents)
        out.info.truncated = stats.truncated
    return out.info


def select_rows(batch: SparseBatch, rows: Sequence[int]) -> SparseBatch:
    """Rows of a batch, in the given order (CSR slicing, no format conversion)."""
    rows = np.asarray(rows, dtype=np.int64)
    src, lengths = row_entries(batch.indptr, rows)
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    ids = tuple(batch.ids[r] for r in rows.tolist()) if batch.ids is not None else None
    return SparseBatch(indptr, batch.indices[src], batch.values[src], batch.vocab, ids)


# ----------------------------------------------------------- writer process
class ProcessVectorWriter:
    """A :class:`~lsr.vectors.VectorWriter` running in a child process.

    Same methods and the same files. ``write`` pickles the batch and returns;
    a feeder thread pipes it to the child, which quantizes, formats and writes.
    Errors in the child (a full disk, say) are raised by the next call here,
    and the partial output is removed, as with the in-process writer.
    """

    def __init__(
        self,
        vecdir: str | os.PathLike,
        quantizer: Quantizer,
        encoder: str | None = None,
        vocab: Vocabulary | None = None,
        role: str = "document",
        shard_size: int = 100_000,
        overwrite: bool = False,
        extra: dict | None = None,
        queue_size: int = 32,
    ):
        self.dir = Path(vecdir)
        check_new_output(self.dir, overwrite, shard_size)  # the child replaces an existing directory
        if vocab is None:
            raise InputError("ProcessVectorWriter needs the vocabulary of the vectors (vocab=...)")
        self.info = VectorDirInfo(encoder, vocab.fingerprint, quantizer, role,
                                  extra=dict(extra or {}))
        root = str(Path(__file__).resolve().parents[1])
        env = dict(os.environ)
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self._stderr = tempfile.TemporaryFile()
        self._proc = subprocess.Popen([sys.executable, "-m", "encoders.pipeline", "--vector-writer"],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, env=env)
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._broken = threading.Event()
        self._feeder = threading.Thread(target=self._feed, name="lsr-vector-writer", daemon=True)
        self._feeder.start()
        self._closed = False
        self._send(("open", {
            "vecdir": str(self.dir), "quantizer": quantizer.to_dict(), "encoder": encoder,
            "vocab": (vocab.tokens, sorted(vocab.special_ids)), "role": role,
            "shard_size": shard_size, "overwrite": overwrite, "extra": dict(extra or {}),
        }))

    # ------------------------------------------------------------ plumbing
    def _feed(self) -> None:
        pipe = self._proc.stdin
        while True:
            payload = self._queue.get()
            if payload is None:
                break
            if self._broken.is_set():
                continue
            try:
                pipe.write(len(payload).to_bytes(8, "little"))
                pipe.write(payload)
                pipe.flush()
            except OSError:  # the child is gone; its reply says why
                self._broken.set()
        try:
            pipe.close()
        except OSError:
            self._broken.set()

    def _send(self, message) -> None:
        if self._broken.is_set() or self._proc.poll() is not None:
            self._fail()
        self._queue.put(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))

    def _reply(self):
        try:
            return pickle.load(self._proc.stdout)
        except (EOFError, pickle.UnpicklingError, OSError):
            return None

    def _fail(self) -> None:
        """The child stopped: raise its error (the output was removed)."""
        self._queue.put(None)
        self._feeder.join()
        reply = self._reply()
        self._proc.wait()
        self._closed = True
        if reply and reply[0] == "error":
            raise InputError(reply[1])
        self._stderr.seek(0)
        tail = self._stderr.read().decode("utf-8", "replace").strip().splitlines()[-5:]
        shutil.rmtree(self.dir, ignore_errors=True)
        raise InputError(f"{self.dir}: the vector writer process stopped (exit {self._proc.returncode}): "
                         + " | ".join(tail))

    # ----------------------------------------------------------------- API
    def report(self, docid: str, reason: str) -> None:
        self._send(("report", docid, reason))

    def write(self, batch: SparseBatch, contents: Sequence[str] | None = None) -> None:
        if batch.ids is None:
            raise InputError("VectorWriter.write needs a batch with ids")
        if contents is not None and len(contents) != len(batch):
            raise InputError(f"{len(contents)} contents for {len(batch)} vectors")
        self._send(("write", batch.indptr, batch.indices, batch.values, batch.ids,
                    list(contents) if contents is not None else None))

    def close(self) -> VectorDirInfo:
        if self._closed:
            return self.info
        self._send(("close", self.info.truncated))
        self._queue.put(None)
        self._feeder.join()
        reply = self._reply()
        self._proc.wait()
        self._closed = True
        if not reply or reply[0] != "ok":
            if reply and reply[0] == "error":
                raise InputError(reply[1])
            shutil.rmtree(self.dir, ignore_errors=True)
            raise InputError(f"{self.dir}: the vector writer process failed (exit {self._proc.returncode})")
        self.info = VectorDirInfo.load(self.dir)
        return self.info

    def abort(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._broken.set()
        while True:  # wake the feeder: it skips what is queued and stops at None
            try:
                self._queue.put_nowait(None)
                break
            except queue.Full:
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    pass
        self._closed = True
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            try:
                self.close()
            except BaseException:
                self.abort()
                raise
        else:
            self.abort()
        return False


def _writer_child() -> int:
    """The child's loop: read pickled messages from stdin, write with a VectorWriter, reply on stdout."""
    inp, out = sys.stdin.buffer, sys.stdout.buffer

    def read():
        head = inp.read(8)
        if len(head) < 8:
            return None
        return pickle.loads(inp.read(int.from_bytes(head, "little")))

    def reply(message) -> None:
        pickle.dump(message, out, protocol=pickle.HIGHEST_PROTOCOL)
        out.flush()

    first = read()
    if not first or first[0] != "open":
        return 2
    o = first[1]
    vocab = Vocabulary(tuple(o["vocab"][0]), frozenset(o["vocab"][1]))
    try:
        with VectorWriter(o["vecdir"], Quantizer.from_dict(o["quantizer"]), encoder=o["encoder"], vocab=vocab,
                          role=o["role"], shard_size=o["shard_size"], overwrite=o["overwrite"],
                          extra=o["extra"]) as writer:
            while True:
                msg = read()
                if msg is None:
                    raise _Aborted()
                if msg[0] == "write":
                    _, indptr, indices, values, ids, contents = msg
                    writer.write(SparseBatch(indptr, indices, values, vocab, ids), contents)
                elif msg[0] == "report":
                    writer.report(msg[1], msg[2])
                elif msg[0] == "close":
                    writer.info.truncated = msg[1]
                    break
    except _Aborted:
        return 1
    except (LsrError, OSError) as e:
        reply(("error", str(e)))
        return 1
    reply(("ok", None))
    return 0


class _Aborted(Exception):
    """The parent went away without closing."""


if __name__ == "__main__" and sys.argv[1:] == ["--vector-writer"]:
    sys.exit(_writer_child())
