"""Model adapters that turn texts and images into sparse (or dense) vectors.

Every name here is imported on first use, so ``import encoders`` loads no
model code; torch and transformers come with the first encoder.

Example::

    from encoders import SpladeEncoder, encode_to_dir, load
    from lsr import read_corpus

    enc = SpladeEncoder("splade-tiny")            # or load("splade-tiny"), load("run/final") for any kind
    batch = enc.encode_queries(["supersonic wing drag"], ids=["q1"])   # an lsr.SparseBatch
    encode_to_dir(enc, read_corpus("corpus.jsonl"), "vec")             # quantized vector files
"""

from lsr._lazy import lazy_exports

_LAZY = {
    "load": ".registry", "resolve": ".registry", "register_alias": ".registry", "aliases": ".registry",
    "SparseEncoder": ".base", "EncodeStats": ".base",
    "SpladeEncoder": ".splade",
    "StairEncoder": ".stair",
    "InferenceFreeEncoder": ".inference_free",
    "encode_to_dir": ".pipeline",
    "load_embedder": ".dense", "SentenceEmbedder": ".dense", "ClipEmbedder": ".dense",
    "TowerEmbedder": ".image_text", "FeatureFusionEmbedder": ".feature_fusion", "VistaEmbedder": ".vista",
}
__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
__all__ = list(_LAZY)
