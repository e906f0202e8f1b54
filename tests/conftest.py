import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CRANFIELD = Path(os.environ.get("LSR_CRANFIELD", REPO.parent / "shared" / "data" / "cranfield"))
FLICKR8K = Path(os.environ.get("LSR_FLICKR8K", REPO.parent / "shared" / "data" / "flickr8k"))


@pytest.fixture(scope="session")
def cranfield() -> Path:
    if not (CRANFIELD / "corpus.jsonl").is_file():
        pytest.fail(f"Cranfield data not found at {CRANFIELD}; set LSR_CRANFIELD")
    return CRANFIELD


@pytest.fixture(scope="session")
def flickr8k() -> Path:
    """Real Flickr8k photographs and captions (research use only; never copied into the project)."""
    if not (FLICKR8K / "captions_dev.jsonl").is_file():
        pytest.fail(f"Flickr8k data not found at {FLICKR8K}; set LSR_FLICKR8K")
    return FLICKR8K


@pytest.fixture(scope="session")
def splade_tiny():
    """The real SPLADE-tiny weights (installed by the `models` extra)."""
    from encoders.splade import SpladeEncoder

    return SpladeEncoder("splade-tiny", device="cpu")


@pytest.fixture(scope="session")
def tiny_bert(splade_tiny):
    """A randomly initialised 1-layer BERT masked LM built from a config, with the real tokenizer."""
    import torch
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(splade_tiny.vocab), hidden_size=32, num_hidden_layers=1,
                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    return BertForMaskedLM(cfg).eval(), splade_tiny.tokenizer


@pytest.fixture(scope="session")
def dev_small(flickr8k):
    from lsr.captions import read_caption_jsonl

    return read_caption_jsonl(flickr8k / "captions_dev.jsonl").head(12)
