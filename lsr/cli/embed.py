"""``lsr embed``: build an on-disk store of dense document embeddings for reranking."""

from __future__ import annotations

import sys
import time
from pathlib import Path


def register(sub) -> dict:
    p = sub.add_parser("embed", help="encode a corpus with a dense or MLLM model into an embedding store")
    p.add_argument("--model", required=True,
                   help="minilm, hf:ORG/NAME or a sentence-transformers directory; open_clip:MODEL[@PRETRAINED]; "
                        "e5v:SOURCE")
    p.add_argument("--input", required=True,
                   help="BEIR corpus.jsonl (_id, title, text; an optional 'image' path, relative to the file)")
    p.add_argument("--output", required=True, help="store directory to create")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when available)")
    p.add_argument("--max-length", type=int, default=256, help="word pieces per text (sentence embedders)")
    p.add_argument("--image-weight", type=float, default=None,
                   help="CLIP only: weight of the image embedding for image+text documents (default 0.5)")
    p.add_argument("--prompt-task", default=None,
                   help="MLLM only: the prompt table's task for documents (default: default)")
    p.add_argument("--query-prompt-task", default=None,
                   help="MLLM only: the task for queries, recorded in the store (default: the documents' task)")
    p.add_argument("--chat-template", default=None, help="MLLM only: plain, llama3, or a string with {prompt}")
    p.add_argument("--overwrite", action="store_true")
    return {"embed": cmd_embed}


def corpus_inputs(path: str | Path):
    """``(ids, inputs)`` of a BEIR corpus; a line's ``image`` field (a path) makes it an image+text input."""
    from lsr.errors import InputError
    from lsr.inputs import Input
    from lsr.io import iter_jsonl, read_corpus

    records = read_corpus(path)
    images = {}
    for n, obj in iter_jsonl(path):
        image = obj.get("image")
        if image is None:
            continue
        if not isinstance(image, str) or not image.strip():
            raise InputError(f"{path}:{n}: 'image' must be a non-empty path string")
        p = Path(image)
        images[n] = p if p.is_absolute() else Path(path).parent / p
    if not images:
        return [r.id for r in records], [r.text for r in records]
    inputs = []
    for r in records:
        image = images.get(r.line)
        inputs.append(r.text if image is None else Input(text=r.text or None, image=str(image)))
    return [r.id for r in records], inputs


def cmd_embed(args) -> int:
    from lsr.embstore import build_store, check_store_output

    check_store_output(args.output, args.overwrite)  # before loading anything
    given = {"image_weight": args.image_weight, "task": args.prompt_task, "query_task": args.query_prompt_task,
             "chat_template": args.chat_template}
    options = {k: v for k, v in given.items() if v is not None}
    ids, inputs = corpus_inputs(args.input)
    from encoders.dense import load_embedder

    encoder = load_embedder(args.model, device=args.device, batch_size=args.batch_size,
                            max_length=args.max_length, **options)
    t0 = time.perf_counter()
    store = build_store(encoder, inputs, ids, args.output, overwrite=args.overwrite, progress=True,
                        input_path=str(Path(args.input).resolve()))
    dt = time.perf_counter() - t0
    empty = f", {store.meta.empty} empty (zero rows)" if store.meta.empty else ""
    print(f"embedded {len(store)} documents{empty} with {store.model} ({store.dim} dimensions) in {dt:.1f}s "
          f"({len(store) / max(dt, 1e-9):.0f} docs/s) -> {args.output}", file=sys.stderr)
    return 0
