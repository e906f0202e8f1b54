"""``lsr inspect``: the tokens a text, an image, or both activate."""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import InputError, LsrError
from ._options import add_model_args

def add_encoder_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    add_model_args(p, required=required)


#: Registry kinds of dense embedders (see ``encoders.dense.load_embedder``).
DENSE_KINDS = ("dense", "sentence", "mllm")


def check_sparse_model(name: str) -> None:
    """Refuse, before any model loads, a ``--model`` that names a dense embedder rather than a sparse encoder.

    Unknown names keep the registry's own error. Aliases of dense models are
    registered by ``encoders.dense``, which is imported only to tell the user
    what a name that is not a sparse alias is.
    """
    from encoders.registry import DENSE_PREFIXES, SPARSE_CLASSES, resolve

    if not name.startswith(DENSE_PREFIXES):
        try:
            loc = resolve(name)
        except InputError as unknown:
            try:
                import encoders.dense  # noqa: F401  (registers the dense aliases, e.g. minilm)

                loc = resolve(name, default_kind="dense")
            except (ImportError, LsrError):
                raise unknown from None
            if loc.kind in SPARSE_CLASSES:
                raise unknown from None
        if loc.kind in SPARSE_CLASSES:
            return
        if loc.kind not in DENSE_KINDS:
            raise InputError(f"model {name!r} is of kind {loc.kind!r}, which has no sparse encoder "
                             f"(known kinds: {', '.join(sorted(SPARSE_CLASSES))})")
    raise InputError(
        f"model {name!r} is a dense embedder, not a sparse encoder: --model names the sparse model an index was "
        f"built with (e.g. splade-tiny). To use {name}, build an embedding store with `lsr embed --model {name} "
        f"--input corpus.jsonl --output STORE` and rerank the sparse results with `lsr search --index IDX --model "
        f"splade-tiny --queries queries.jsonl --rerank STORE --output run.trec`")


def load_encoder(args, needs_image: bool = False):
    """The sparse encoder named by ``--model``, picked by the kind the model registry gives the name."""
    from encoders.registry import load, resolve

    check_sparse_model(args.model)
    if needs_image and resolve(args.model).kind == "splade":
        raise InputError(f"model {args.model!r} is a text-only SPLADE model; --image needs an image encoder "
                         "(a STAIR model name)")
    return load(args.model, kind="sparse", device=args.device, dtype=args.dtype, max_length=args.max_length,
                batch_size=1)


def register(sub) -> dict:
    p = sub.add_parser("inspect", help="show the tokens a text and/or an image activates")
    add_encoder_args(p)
    p.add_argument("--text", help="text to encode")
    p.add_argument("--image", help="image file to encode (needs an image encoder such as STAIR)")
    p.add_argument("--instruction", default=None, help="task instruction prepended to the text")
    p.add_argument("--role", choices=["query", "document"], default="query", help="encode as a query or a document")
    p.add_argument("--top", type=int, default=20, help="how many tokens to show (0: all)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--html", metavar="OUT.html", help="also write a self-contained HTML page")
    return {"inspect": cmd_inspect}


def cmd_inspect(args) -> int:
    from ..explain import decode, encode_one
    from ..inputs import Input, load_image

    if args.text is None and args.image is None:
        raise InputError("give --text, --image, or both")
    if args.text is not None and not args.text.strip() and args.image is None:
        raise InputError("--text is empty; give some text to inspect")
    if args.top < 0:
        raise InputError(f"--top must be 0 (all) or positive, got {args.top}")
    image = load_image(args.image) if args.image is not None else None  # fail on a bad file before loading a model
    item = Input(text=args.text if args.text and args.text.strip() else None, image=image,
                 instruction=args.instruction)
    encoder = load_encoder(args, needs_image=image is not None)
    vector = encode_one(encoder, item, role=args.role)
    nnz = int(vector.nnz[0])
    tokens = decode(vector, args.top or None)
    if args.html:
        from ..html_view import render_tokens_page, write_page

        what = " + ".join(x for x, v in (("text", args.text), ("image", args.image)) if v)
        page = render_tokens_page(tokens, title=f"Tokens activated by {args.model}", text=args.text, image=image,
                                  subtitle=f"{what} as a {args.role} · {nnz} non-zero tokens · top {len(tokens)} "
                                           "shown, largest weight first")
        write_page(args.html, page)
        print(f"wrote {args.html}", file=sys.stderr)
    if args.json:
        print(json.dumps({"model": args.model, "role": args.role, "text": args.text, "image": args.image,
                          "nnz": nnz, "tokens": [{"token": t.token, "display": t.display, "weight": t.weight}
                                                 for t in tokens]}))
        return 0
    what = " + ".join(x for x, v in (("text", args.text), ("image", args.image)) if v)
    print(f"{args.model}: {what} as a {args.role} activates {nnz} tokens; top {len(tokens)}:")
    width = max([len(t.display) for t in tokens] + [5])
    for i, t in enumerate(tokens, 1):
        print(f"  {i:>3}. {t.display:<{width}}  {t.weight:.3f}")
    return 0
