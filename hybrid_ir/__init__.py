"""hybrid_ir: multilingual dual-encoder retrieval with hybrid batches (JAX/Flax)."""
