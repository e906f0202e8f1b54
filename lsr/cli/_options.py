"""Command-line flags that several commands share, with one meaning and one default each."""

from __future__ import annotations

MODEL_HELP = "alias (splade-tiny), a hub id (ORG/NAME or hf:ORG/NAME), or a local directory"
SPARSE_BATCH_HELP = ("inputs per model call (default: 128 on a GPU and 32 on the CPU for SPLADE models; "
                     "32 for STAIR models)")


def add_model_args(p, required: bool = True, model_help: str = MODEL_HELP, batch_size: bool = False,
                   batch_default: int | None = None, batch_help: str = SPARSE_BATCH_HELP) -> None:
    """``--model``, (with ``batch_size``) ``--batch-size``, ``--device``, ``--dtype`` and ``--max-length``.

    ``--max-length`` has no default: a model's own (a saved STAIR directory's,
    else 256) applies unless the user gives one.
    """
    p.add_argument("--model", required=required, help=model_help)
    if batch_size:
        p.add_argument("--batch-size", type=int, default=batch_default, help=batch_help)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when available)")
    p.add_argument("--dtype", default="auto", help="float32, bfloat16, float16 (default: bf16 on GPU)")
    p.add_argument("--max-length", type=int, default=None,
                   help="word pieces per text; longer texts are truncated (default: the model's own, or 256)")


def add_fusion_args(p, alpha_help: str) -> None:
    """``--fusion``, ``--alpha``, ``--norm`` and ``--rrf-k``: the arguments of :mod:`lsr.fusion`."""
    from lsr.fusion import FUSIONS, NORMALIZATIONS

    p.add_argument("--fusion", choices=FUSIONS, default="rrf",
                   help="rrf: reciprocal rank fusion; interp: alpha-interpolation of normalised scores; sum: "
                        "weighted sum of normalised scores (default: rrf)")
    p.add_argument("--alpha", type=float, default=0.5, help=alpha_help)
    p.add_argument("--norm", choices=NORMALIZATIONS, default="minmax", help="interp, sum: score normalisation")
    p.add_argument("--rrf-k", type=float, default=60.0, help="rrf: score = sum w / (rrf_k + rank)")
    p.add_argument("--weights", type=float, nargs="+", default=None, metavar="W",
                   help="rrf, sum: one weight per run, in order (default: 1 each)")


