"""Tiny train config for tests/test_train.py: a 2-layer, 32-wide BERT from scratch (bundled e5
tokenizer) on XQuAD-R en+de question/answer-sentence pairs; ~20 steps in well under a minute.

  python -m hybrid_ir.train --config tests/configs_test_train.py --workdir /tmp/t
"""
import os
import pathlib

import ml_collections

DATA = os.environ.get("HYBRID_IR_DATA",
                      str(pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.total_steps = 20
  c.log_every = 5
  c.eval_every = 0
  c.grad_cache_chunks = 0
  # fsdp: shards the 8M-entry embedding table and its AdamW moments over the 8 fake devices
  # (replicated, every fake device would update all of it: 8x the work on our 2 cores).
  c.mesh = dict(data=1, fsdp=-1)
  c.model = dict(name="random_init", pooling="mean", dtype="float32", buckets=(64,),
                 query_prefix="", passage_prefix="",
                 random_init=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=64, max_position_embeddings=64))
  c.optimizer = dict(lr=3e-3, weight_decay=0.01, warmup_steps=2, decay="linear", grad_clip=1.0,
                     embedding_update="dense")
  c.loss = dict(variant="standard", temperature=0.05, learn_temperature=False, temperature_lr=0.0,
                symmetric=False, mask_false_negatives=True)
  c.checkpoint = dict(every=5, keep=3, async_save=True)
  c.input = dict(batch_size=16, seed=0, prefetch=2, store_dir=os.environ.get("HYBRID_IR_STORES"),
                 packing=False,
                 type_probs=dict(mono=0.5, cross=0.5, mixed=0.0),
                 sources=[dict(name="xquad", kind="squad", path=f"{DATA}/xquad-r",
                               langs=("en", "de"))])
  return c
