"""SPLADE text encoder over any Hugging Face masked language model.

Encoding is a pipeline that keeps the model busy:

* texts are tokenized on ``tokenizer_threads`` background threads (the Rust
  tokenizer releases the GIL), two *sort windows* ahead of the model; a
  window's token ids travel to the device in one (pinned, asynchronous) copy
  and each batch is padded there;
* within a window, texts are sorted by token count so each batch pads to a
  similar length; the first and last windows of a long input are small, so
  the model starts early and the output of the last window is ready soon after
  the model finishes;
* the thread that launches the model rarely waits for the device: on an
  accelerator it collects each batch's result six launches later, so the
  device always has work queued; on CUDA the padding mask goes to the model
  as a 4D boolean mask when that gives the same result, because a 2D mask
  makes Hugging Face models check on the host whether any padding exists,
  which waits for the device at every batch;
* the masked language model's output projection is replaced during inference
  by :class:`PooledDecoder`, which keeps a running masked max over positions
  instead of materialising ``[batch, positions, vocab]`` logits; for one
  query (:meth:`SpladeEncoder.encode_query`) it can bound every logit with a
  bfloat16 pass first and project only the possibly active word pieces in
  float32 (``query_projection``), with the same result;
* ``log1p(relu(.))`` is applied to the pooled ``[batch, vocab]`` tensor
  (identical to saturating first, since the function is monotone), and the
  result is sparsified to CSR on the device with one host copy per batch; on
  CUDA this happens on a side stream while the next batches run, so the host
  never waits for the model;
* results are put back into input order on the tokenizer threads and yielded
  in chunks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from itertools import chain
from typing import Iterator, Sequence, Union

import numpy as np
import torch
from lsr.progress import tqdm

from lsr.errors import InputError
from lsr.inputs import Input
from lsr.pooling import saturate
from lsr.sparse import SparseBatch
from lsr.threads import intra_op_threads
from lsr.vocab import Vocabulary

# pick_device, pick_dtype and check_batching are also imported from here by dense.py and image_text.py.
from .base import EncodeAll, EncodeStats, check_batching, default_batch_size, load_masked_lm, pick_device, pick_dtype
from .encode_run import _BatchTokenizer, _EncodeRun, _pad_rows, default_tokenizer_threads
from .graphs import GraphedFunction
from .pooled_decoder import PooledDecoder, fast_bfloat16

# With CUDA graphs, batches are padded to a multiple of this many word pieces (one graph per padded length).
_GRAPH_PAD_MULTIPLE = 16

#: What a SPLADE encoder takes for one input: a text, or an :class:`~lsr.inputs.Input` without an image.
TextLike = Union[str, Input]


class SpladeEncoder(EncodeAll):
    """Text to vocabulary-sized sparse vectors, SPLADE style.

    ``log1p(relu(max over tokens of the MLM logits))`` with the attention mask
    applied, special tokens removed from the output, batches sorted by length
    so that padding is minimal. Empty or whitespace-only texts give an empty
    vector without running the model.

    Wherever a text is taken, an :class:`lsr.inputs.Input` may stand instead:
    its text with the instruction in front (:meth:`Input.text_with_instruction`)
    is encoded. An Input with an image is refused (a STAIR model encodes images).
    """

    kind = "splade"
    takes_images = False

    def __init__(
        self,
        model: str = "splade-tiny",
        *,
        device: str | None = None,
        dtype: str | torch.dtype | None = None,
        max_length: int = 256,
        batch_size: int | None = None,
        progress: bool = False,
        hf_model=None,
        tokenizer=None,
        cuda_graphs: bool = False,
        pad_multiple: int | None = None,
        query_threads: int | None = 1,
        tokenizer_threads: int | None = None,
        query_projection: str = "auto",
    ):
        """Load ``model`` (alias, ``hf:`` id or path), or wrap ``hf_model`` + ``tokenizer`` objects.

        ``batch_size``: texts per model call (default: 128 on a GPU, where
        small batches leave it waiting for the host, 32 on the CPU).

        ``cuda_graphs``: on a CUDA device, replay full batches from CUDA graphs
        captured once per padded length (see :mod:`encoders.graphs`); batches
        are then padded to a multiple of 16 word pieces so that few graphs are
        needed. ``pad_multiple``: pad every batch to a multiple of this many
        word pieces (the result is the same; only the amount of padding
        changes).

        ``query_threads``: intra-op threads for :meth:`encode_query` on the CPU
        (default 1; ``None``: torch's setting). A query of a few dozen word
        pieces is too small to split: with two threads the work barely
        shrinks, and on a busy machine the threads wait for each other at
        every operation (ten times slower measured on a loaded 2-core host).

        ``query_projection``: how :meth:`encode_query` projects a query onto
        the vocabulary on the CPU. ``"full"``: every word piece in float32.
        ``"bounded"``: first in bfloat16, which bounds every word piece's
        logit, then in float32 only the word pieces the bound leaves possibly
        active (see :meth:`~encoders.pooled_decoder.PooledDecoder.bounded_max`);
        the weights are the full projection's. ``"auto"`` (default): bounded
        where the CPU multiplies bfloat16 in hardware, else full.

        ``tokenizer_threads``: threads that tokenize ahead of the model and put
        finished windows back into input order in :meth:`iter_encode` (default:
        a quarter of the cores, 1 or 2, see
        :func:`~encoders.encode_run.default_tokenizer_threads`); 0 does all of
        it on the calling thread, as do inputs of at most one batch. The
        vectors are the same for any number.
        """
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        batch_size = default_batch_size(self.device) if batch_size is None else batch_size
        check_batching(max_length, batch_size)
        if pad_multiple is not None and pad_multiple < 1:
            raise InputError(f"pad_multiple must be positive, got {pad_multiple}")
        self.max_length = max_length
        self.batch_size = batch_size
        self.progress = progress
        if hf_model is None:
            tokenizer, hf_model = load_masked_lm(model, self.dtype)
            self.name = model
        else:
            if tokenizer is None:
                raise InputError("hf_model given without its tokenizer")
            self.name = model
        self.tokenizer = tokenizer
        self.model = hf_model.to(device=self.device, dtype=self.dtype).eval()
        self.max_length = min(self.max_length, getattr(tokenizer, "model_max_length", self.max_length) or self.max_length)
        vocab_size = self.model.get_output_embeddings().weight.shape[0]
        self.vocab = vocabulary_of(tokenizer, vocab_size)
        self._excluded = torch.tensor(sorted(self.vocab.special_ids), dtype=torch.long, device=self.device)
        self._pooled_decoder = PooledDecoder(self.model)
        self._batch_tokenizer: _BatchTokenizer | None = None
        self._side_stream = None
        self._mask4d: bool | None = None
        self._positions: torch.Tensor | None = None
        self._graphed: GraphedFunction | None = None
        if cuda_graphs and self.device.type == "cuda":
            self._graphed = GraphedFunction(self._pooled_weights)
            pad_multiple = pad_multiple or _GRAPH_PAD_MULTIPLE
        self.cuda_graphs = cuda_graphs
        self.pad_multiple = pad_multiple
        if query_threads is not None and query_threads < 1:
            raise InputError(f"query_threads must be positive, got {query_threads}")
        self.query_threads = query_threads
        if query_projection not in ("auto", "bounded", "full"):
            raise InputError(f"query_projection must be 'auto', 'bounded' or 'full', got {query_projection!r}")
        self.query_projection = query_projection
        self._bounded_queries = query_projection == "bounded" or (query_projection == "auto" and fast_bfloat16())
        if tokenizer_threads is not None and tokenizer_threads < 0:
            raise InputError(f"tokenizer_threads must be 0 or more, got {tokenizer_threads}")
        self.tokenizer_threads = default_tokenizer_threads() if tokenizer_threads is None else tokenizer_threads
        self.last_stats = EncodeStats()

    # ------------------------------------------------------------------ API
    def _check_inputs(self, texts) -> list[str]:
        return _texts_of(texts, self.name)

    def iter_encode(
        self, texts: Sequence[TextLike], ids: Sequence[str] | None = None, chunk_size: int = 8192,
        stats: EncodeStats | None = None, *, sort_window: int | None = None,
    ) -> Iterator[SparseBatch]:
        """Encode in chunks of ``chunk_size`` texts, yielding one batch per chunk in input order.

        Texts are sorted by token count within windows of ``sort_window``
        texts (default: ``chunk_size``) so each model batch pads to a similar
        length. A window larger than the chunk pads less; a chunk is yielded
        as soon as the windows covering it are done. Memory is bounded by the
        larger of the two.
        """
        texts = _texts_of(texts, self.name)
        if ids is not None and len(ids) != len(texts):
            raise InputError(f"{len(ids)} ids for {len(texts)} texts")
        if chunk_size < 1:
            raise InputError(f"chunk_size must be positive, got {chunk_size}")
        sort_window = chunk_size if sort_window is None else sort_window
        if sort_window < 1:
            raise InputError(f"sort_window must be positive, got {sort_window}")
        stats = stats if stats is not None else EncodeStats()
        bar = tqdm(total=len(texts), unit="doc", desc="encode", disable=not self.progress)
        try:
            yield from _EncodeRun(self, texts, ids, chunk_size, sort_window, stats, bar).chunks()
        finally:
            bar.close()

    def _encode_all(self, inputs, ids) -> SparseBatch:
        texts = self._check_inputs(inputs)
        if len(texts) == 1 and (ids is None or len(ids) == 1):
            # one text: the direct path, without the batching machinery
            return self.encode_query(texts[0], ids[0] if ids is not None else None)
        return super()._encode_all(texts, ids)

    @torch.inference_mode()
    def encode_query(self, text: TextLike, qid: str | None = None) -> SparseBatch:
        """One text (or text-only :class:`~lsr.inputs.Input`) as a one-row batch, encoded on this thread with
        nothing set up per call.

        The text is tokenized by the fast tokenizer (no padding, no attention
        mask to build), the model runs once on its word pieces and the pooling
        takes the max over positions of their projection onto the vocabulary,
        so a stream of single queries costs the model's forward pass or less.
        Every position counts (SPLADE's max needs all of them). With the
        bounded projection (``query_projection``) a first pass in bfloat16
        rules out the word pieces that cannot be active and only the rest are
        projected in float32; the weights are the full projection's. They
        equal :meth:`encode_queries`' for the same text up to float32
        rounding, since a padded batch's matrix products sum in another order
        (see "What is exact" in the README).
        """
        if not isinstance(text, str):
            if not isinstance(text, Input):
                raise InputError(f"expected a text (str) or lsr.inputs.Input, got {type(text).__name__}")
            text = _text_of(text, 0, self.name)
        ids = (qid,) if qid is not None else None
        stats = EncodeStats(inputs=1)
        self.last_stats = stats
        if not text.strip():
            stats.empty = 1
            return SparseBatch.empty(self.vocab, 1, ids=ids)
        fast = self._tokenizer_for_batches().fast
        if fast is not None:
            enc = fast.encode(text)
            token_ids = enc.ids
            stats.truncated = int(len(token_ids) >= self.max_length and bool(enc.overflowing))
        else:
            rows, stats.truncated = self.tokenize([text])
            token_ids = rows[0]
        x = torch.tensor(token_ids, dtype=torch.long).view(1, -1).to(self.device)
        with intra_op_threads(self.query_threads if self.device.type == "cpu" else None):
            # one unpadded row: no attention mask, and the pooling needs none
            with self._pooled_decoder.installed(None, bounded=self._bounded_queries):
                pooled = self.model(input_ids=x).logits[0, 0]
            weights = saturate(pooled, self._excluded)
            cols = torch.nonzero(weights).view(-1)
            vals = weights[cols]
        cols_np = cols.to(torch.int32).cpu().numpy()
        return SparseBatch(np.array([0, len(cols_np)], np.int64), cols_np, vals.cpu().numpy(), self.vocab, ids)

    # ------------------------------------------------------------- internals
    def tokenize(self, texts: Sequence[str]) -> tuple[list[list[int]], int]:
        """Token ids per text (truncated to ``max_length``) and how many texts were truncated."""
        enc = self.tokenizer(list(texts), truncation=True, max_length=self.max_length,
                             return_overflowing_tokens=True, stride=0, return_attention_mask=False,
                             return_token_type_ids=False)
        mapping = enc["overflow_to_sample_mapping"]
        ids: list[list[int] | None] = [None] * len(texts)
        counts = np.bincount(np.asarray(mapping, dtype=np.int64), minlength=len(texts))
        for row, sample in zip(enc["input_ids"], mapping):
            if ids[sample] is None:
                ids[sample] = row
        return ids, int((counts > 1).sum())  # type: ignore[return-value]

    def _tokenizer_for_batches(self) -> "_BatchTokenizer":
        if self._batch_tokenizer is None or self._batch_tokenizer.max_length != self.max_length:
            self._batch_tokenizer = _BatchTokenizer(self, self.max_length)
        return self._batch_tokenizer

    @torch.inference_mode()
    def _forward(self, token_ids: list[list[int]]) -> SparseBatch:
        """Encode one batch of token id lists (in the given order)."""
        lengths = np.array([len(t) for t in token_ids], dtype=np.int64)
        flat = np.fromiter(chain.from_iterable(token_ids), np.int64, int(lengths.sum()))
        host = _pad_rows(flat, np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths, self._pad_id(), False)
        counts, cols, vals = self._collect(self._launch(host))
        indptr = np.concatenate([[0], np.cumsum(counts)])
        return SparseBatch(indptr, cols, vals, self.vocab)

    def _pad_id(self) -> int:
        pad = getattr(self.tokenizer, "pad_token_id", None)
        return int(pad) if pad is not None else 0

    def _launch(self, host: torch.Tensor) -> "_InFlight":
        """Start one batch on the device. ``host`` is ``[batch, length + 1]``: token ids, then the length."""
        x = host.to(self.device, non_blocking=True)
        length = x.shape[1] - 1
        valid = torch.arange(length, device=self.device)[None, :] < x[:, length:]
        return self._launch_tokens(x[:, :length].contiguous(), valid)

    def _launch_rows(self, flat: torch.Tensor, starts: torch.Tensor, lengths: torch.Tensor, first: int, last: int,
                     width: int) -> "_InFlight":
        """Start rows ``first:last`` of a window whose ids are ``flat`` (row r: ``starts[r]``, ``lengths[r]`` long).

        The batch is padded on the device, so nothing is copied per batch.
        """
        if self.pad_multiple:
            width = min(-(-width // self.pad_multiple) * self.pad_multiple, self.max_length)  # never past it
        if self._positions is None or len(self._positions) < width or self._positions.device != flat.device:
            self._positions = torch.arange(max(width, self.max_length), device=flat.device)
        pos = self._positions[:width]
        valid = pos[None, :] < lengths[first:last, None]
        idx = (starts[first:last, None] + pos[None, :]).clamp_(max=len(flat) - 1)
        ids = flat[idx].masked_fill_(~valid, self._pad_id())
        return self._launch_tokens(ids, valid)

    def _launch_tokens(self, input_ids: torch.Tensor, valid: torch.Tensor) -> "_InFlight":
        """Model, pooling and saturation for padded ids (``valid`` marks the real tokens); nothing waits."""
        weights = None
        graphed = self._graphed
        if graphed is not None and graphed.active and input_ids.shape[0] == self.batch_size:
            if not self._use_mask4d(input_ids.device):
                graphed.reason = "the model does not take a 4D attention mask (a 2D one waits for the device)"
            else:
                weights = graphed.replay(input_ids, valid)
        if weights is None:
            weights = self._pooled_weights(input_ids, valid)
        event = None
        if weights.is_cuda:
            event = torch.cuda.Event()
            event.record()
        return _InFlight(weights, event)

    def _pooled_weights(self, input_ids: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """``[batch, vocab]`` float32 SPLADE weights of padded ids, special tokens zeroed."""
        if self._use_mask4d(input_ids.device):
            model_mask = valid[:, None, None, :]
        else:
            model_mask = valid.to(torch.long)
        with self._pooled_decoder.installed(valid):
            # the decoder returns the masked max over positions: [batch, 1, vocab]
            pooled = self.model(input_ids=input_ids, attention_mask=model_mask).logits[:, 0]
        return saturate(pooled, self._excluded)

    @property
    def cuda_graphs_status(self) -> dict:
        """Whether CUDA graphs were asked for and are in use, why not, and how often they ran."""
        g = self._graphed
        if g is None:
            reason = None if not self.cuda_graphs else f"not on a CUDA device ({self.device})"
            return {"requested": self.cuda_graphs, "active": False, "reason": reason}
        return {"requested": True, "active": g.active, "reason": g.reason, "graphs": g.stats.captured,
                "padded_lengths": sorted(shape[-1] for shape in g.stats.shapes), "replays": g.stats.replays}

    def _use_mask4d(self, device: torch.device) -> bool:
        if device.type != "cuda":
            return False  # the host-side padding check costs nothing without a device to wait for
        if self._mask4d is None:
            self._mask4d = self._probe_mask4d()
        return self._mask4d

    @torch.inference_mode()
    def _probe_mask4d(self) -> bool:
        """Does the model give the same output for a ``[batch, 1, 1, length]`` boolean mask as for the 2D mask?"""
        try:
            usable = [i for i in range(len(self.vocab)) if i not in self.vocab.special_ids][:16]
            ids = torch.tensor(usable, device=self.device).view(2, 8)
            valid = torch.ones(2, 8, dtype=torch.bool, device=self.device)
            valid[1, 5:] = False
            a = self.model(input_ids=ids, attention_mask=valid.to(torch.long)).logits
            b = self.model(input_ids=ids, attention_mask=valid[:, None, None, :]).logits
            tol = 1e-5 if self.dtype == torch.float32 else 2e-2
            return bool(torch.allclose(a[valid].float(), b[valid].float(), rtol=tol, atol=tol))
        except Exception:  # noqa: BLE001 - a model that does not take 4D masks: use the 2D one
            return False

    def _collect(self, job: "_InFlight") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """CSR parts of a launched batch: non-zeros per row, column ids and weights (one host copy)."""
        w = job.weights
        if not w.is_cuda:
            rows, cols = torch.nonzero(w, as_tuple=True)
            counts = (w != 0).sum(dim=1)
            return counts.numpy(), cols.to(torch.int32).numpy(), w[rows, cols].numpy()
        if self._side_stream is None or self._side_stream.device != w.device:
            self._side_stream = torch.cuda.Stream(device=w.device)
        side = self._side_stream
        with torch.cuda.device(w.device), torch.cuda.stream(side):
            side.wait_event(job.event)
            counts = (w != 0).sum(dim=1, dtype=torch.int32)
            rows, cols = torch.nonzero(w, as_tuple=True)  # waits for this stream only
            vals = w[rows, cols]
            packed = torch.cat([counts, cols.to(torch.int32), vals.view(torch.int32)]).cpu().numpy()
        b, nnz = w.shape[0], len(vals)
        return (packed[:b].astype(np.int64), packed[b:b + nnz],
                packed[b + nnz:].view(np.float32))


@dataclass
class _InFlight:
    weights: torch.Tensor
    event: object | None


def vocabulary_of(tokenizer, size: int | None = None) -> Vocabulary:
    """The :class:`Vocabulary` of a Hugging Face tokenizer (ids in order, special tokens marked)."""
    vocab = tokenizer.get_vocab()
    size = size or len(vocab)
    tokens = [f"[unused_id_{i}]" for i in range(size)]
    for tok, i in vocab.items():
        if i < size:
            tokens[i] = tok
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    # Ids the tokenizer never produces are excluded as well.
    special.update(i for i, t in enumerate(tokens) if t.startswith("[unused_id_"))
    return Vocabulary(tuple(tokens), frozenset(i for i in special if i < size))


def _as_texts(texts) -> list[str]:
    if isinstance(texts, str):
        raise InputError("expected a list of texts, got a single string (wrap it in a list)")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise InputError(f"text #{i} is {type(t).__name__}, expected str")
    return out


def _texts_of(items, model: str) -> list[str]:
    """The texts a SPLADE model encodes for ``items``: strings as they are, and each
    :class:`~lsr.inputs.Input` as :meth:`~lsr.inputs.Input.text_with_instruction` (one with an image is refused)."""
    if isinstance(items, (str, Input)):
        what = "string" if isinstance(items, str) else "Input"
        raise InputError(f"expected a list of texts, got a single {what} (wrap it in a list)")
    out = list(items)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            if not isinstance(t, Input):
                raise InputError(f"text #{i} is {type(t).__name__}, expected str or lsr.inputs.Input")
            out[i] = _text_of(t, i, model)
    return out


def _text_of(item: Input, i: int, model: str) -> str:
    if item.image is not None:
        image = f" ({item.image})" if isinstance(item.image, (str, os.PathLike)) else ""
        raise InputError(f"input #{i} has an image{image}, but {model!r} is a text-only SPLADE model; use a STAIR "
                         "model for images, or drop the image from the input")
    return item.text_with_instruction()
