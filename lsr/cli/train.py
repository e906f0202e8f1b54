"""``lsr train``: train a STAIR model (image + text sparse encoder) from a config file."""

from __future__ import annotations

import argparse
import json


def register(subparsers) -> dict:
    p = subparsers.add_parser(
        "train", help="train a STAIR image+text sparse encoder (stage 1, 2 or 3) from a JSON or TOML config",
        description="Train with an in-batch contrastive loss and FLOPs regularization. Settings come from "
                    "--config (JSON, or TOML with an optional [train] table); the options below override them.")
    p.add_argument("--config", required=True, help="JSON or TOML file of lsr.training.TrainConfig settings")
    p.add_argument("--stage", type=int, choices=[1, 2, 3], help="1: image side with masked text vectors; "
                   "2: text side, image side frozen; 3: everything")
    p.add_argument("--data", help="BEIR-style directory or M-BEIR query JSONL")
    p.add_argument("--model", help="continue from a saved STAIR directory")
    p.add_argument("--output-dir")
    p.add_argument("--steps", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--learning-rate", type=float)
    p.add_argument("--lambda-q", type=float, help="FLOPs weight on query vectors")
    p.add_argument("--lambda-d", type=float, help="FLOPs weight on document vectors")
    p.add_argument("--device", help="cpu, cuda, cuda:1, auto")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                   help="autocast to bfloat16 (--no-bf16 to turn off)")
    p.add_argument("--resume", action="store_true", default=None, help="continue from the newest checkpoint")
    p.add_argument("--seed", type=int)
    p.add_argument("--print-config", action="store_true", help="print the effective settings and exit")
    return {"train": cmd_train}


def cmd_train(args) -> int:
    from lsr.pairs import read_pairs
    from lsr.training import TrainConfig, train

    config = TrainConfig.from_file(args.config).replace(
        stage=args.stage, data=args.data, model=args.model, output_dir=args.output_dir, steps=args.steps,
        batch_size=args.batch_size, learning_rate=args.learning_rate, lambda_q=args.lambda_q,
        lambda_d=args.lambda_d, device=args.device, bf16=args.bf16, resume=args.resume, seed=args.seed)
    if args.print_config:
        print(json.dumps(config.to_dict(), indent=2))
        return 0
    if not config.data:
        from lsr.errors import InputError

        raise InputError(f"{args.config}: no training data (set data = ... or pass --data)")
    pairs = read_pairs(config.data, config.data_format, config.split, config.candidates, config.image_root,
                       config.instruction)
    encoder = build_encoder(config, pairs)
    print(f"training stage {config.stage} on {len(pairs)} pairs for {config.steps} steps "
          f"(batch {config.batch_size}, device {encoder.device}, bf16 {config.bf16}) -> {config.output_dir}")
    result = train(encoder, pairs, config)
    last = result.last
    if last:
        parts = ", ".join(f"{k} {last[k]:.4g}" for k in ("loss", "contrastive", "flops_q", "flops_d", "nnz_q", "nnz_d")
                          if k in last)
        print(f"step {last.get('step')}: {parts}")
    print(f"model saved to {result.final_dir}")
    return 0


def build_encoder(config, pairs=None):
    """The STAIR encoder a config names: a saved directory, or a new model from image_model / text_model.

    With ``head_vocab = "captions"`` a new model's image head covers only the
    word pieces that occur in the texts of ``pairs``.
    """
    from encoders.stair import StairEncoder, caption_vocabulary

    if config.model:
        return StairEncoder.load(config.model, device="cpu", dtype="float32", max_length=config.max_length)
    head_vocab = None
    if config.head_vocab == "captions":
        if not pairs:
            from lsr.errors import InputError

            raise InputError("head_vocab = 'captions' needs the training pairs")
        head_vocab = caption_vocabulary(config.text_model, [x.text_with_instruction() for p in pairs
                                                            for x in (p.query, p.document) if x.has_text])
    import torch

    torch.manual_seed(config.seed)  # a new model's random parts start from the config's seed: same config, same run
    return StairEncoder.create(image_model=config.image_model, pretrained=config.pretrained,
                               text_model=config.text_model, device="cpu", dtype="float32",
                               max_length=config.max_length, head_vocab=head_vocab,
                               image_positions=config.image_positions, head_hidden=config.head_hidden,
                               head_dropout=config.head_dropout)
