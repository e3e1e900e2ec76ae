"""Flax NNX BERT-family text encoder (BERT, LaBSE, mBERT, multilingual-e5, RoBERTa / XLM-R), and the
`Encoder` interface shared by training and evaluation.

Architecture: post-LayerNorm transformer encoder exactly as HF `BertModel` / `XLMRobertaModel`
(exact-erf GELU, LayerNorm eps from the config). The only family difference is the position ids:
BERT counts from 0; RoBERTa / XLM-R from padding_idx + 1 (`position_offset`). Token-type embeddings
are always type 0 (XLM-R has a single type; for BERT we encode single segments).

Pooling (`BertConfig.pooling`): 'mean' over non-padding tokens (e5), 'cls' (first token), or 'pooler'
(LaBSE: tanh(dense(first token))); the encoder output is then L2-normalised.

Precision: parameters are float32; `dtype='bfloat16'` sets the *compute* dtype of the matmuls and
embeddings (for TPU/GPU; on our CPU bf16 was slower). LayerNorm, softmax and pooling run in f32.

Sharding rule (the metadata travels as `nnx.with_partitioning` annotations, exported as
`Encoder.partition_specs`, a pytree of PartitionSpec matching `Encoder.params`):
  * embedding tables [vocab|positions|types, H]: ('model', 'fsdp') - vocab-parallel over 'model';
  * column-parallel kernels [H, out] (Q/K/V, FFN-in, pooler): ('fsdp', 'model'), bias ('model',);
  * row-parallel kernels [in, H] (attention-out, FFN-out): ('model', 'fsdp'), bias replicated;
  * LayerNorm scale/bias: replicated.
  'data' never shards parameters. With a mesh whose 'fsdp' and 'model' axes have size 1 everything
  is replicated, which is the plain data-parallel case.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hybrid_ir import lsar
from hybrid_ir.models import tokenizers as tokenizers_lib

POOLINGS = ("mean", "cls", "pooler")


@dataclasses.dataclass(frozen=True)
class BertConfig:
  """Sizes and family details of a BERT / XLM-R encoder (field names follow HF config.json)."""
  vocab_size: int
  hidden_size: int = 384
  num_hidden_layers: int = 12
  num_attention_heads: int = 12
  intermediate_size: int = 1536
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12
  position_offset: int = 0  # 0 for BERT; padding_idx + 1 (= 2) for RoBERTa / XLM-R.
  pooling: str = "mean"
  has_pooler: bool = False
  dtype: str = "float32"  # compute dtype; params are always float32.

  def __post_init__(self):
    if self.pooling not in POOLINGS:
      raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
    if self.pooling == "pooler" and not self.has_pooler:
      raise ValueError("pooling='pooler' needs a model with a pooler (has_pooler=True)")
    if self.hidden_size % self.num_attention_heads:
      raise ValueError(f"hidden_size {self.hidden_size} is not divisible by "
                       f"num_attention_heads {self.num_attention_heads}")
    if self.dtype not in ("float32", "bfloat16"):
      raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {self.dtype!r}")


def _init(spec: tuple, init=None):
  init = init or nnx.initializers.normal(0.02)
  # eager_sharding=False: annotate only; the trainer places params on its own mesh.
  return nnx.with_partitioning(init, spec, eager_sharding=False)


def _dense(din: int, dout: int, kernel_spec: tuple, bias_spec: tuple, dtype, rngs) -> nnx.Linear:
  return nnx.Linear(din, dout, dtype=dtype, param_dtype=jnp.float32, rngs=rngs,
                    kernel_init=_init(kernel_spec),
                    bias_init=_init(bias_spec, nnx.initializers.zeros_init()))


def _layernorm(dim: int, eps: float, rngs) -> nnx.LayerNorm:
  return nnx.LayerNorm(dim, epsilon=eps, dtype=jnp.float32, param_dtype=jnp.float32, rngs=rngs)


class Layer(nnx.Module):
  """One post-LN transformer block (self-attention + GELU FFN), as in HF BertLayer."""

  def __init__(self, cfg: BertConfig, rngs: nnx.Rngs):
    h, dt = cfg.hidden_size, jnp.dtype(cfg.dtype)
    self.num_heads = cfg.num_attention_heads
    self.query = _dense(h, h, ("fsdp", "model"), ("model",), dt, rngs)
    self.key = _dense(h, h, ("fsdp", "model"), ("model",), dt, rngs)
    self.value = _dense(h, h, ("fsdp", "model"), ("model",), dt, rngs)
    self.attention_out = _dense(h, h, ("model", "fsdp"), (None,), dt, rngs)
    self.attention_ln = _layernorm(h, cfg.layer_norm_eps, rngs)
    self.intermediate = _dense(h, cfg.intermediate_size, ("fsdp", "model"), ("model",), dt, rngs)
    self.output = _dense(cfg.intermediate_size, h, ("model", "fsdp"), (None,), dt, rngs)
    self.output_ln = _layernorm(h, cfg.layer_norm_eps, rngs)

  def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
    b, t, h = x.shape
    heads = lambda y: y.reshape(b, t, self.num_heads, h // self.num_heads)
    q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
    # mask: [B, 1, 1, T] booleans -> padding keys get no attention.
    ctx = jax.nn.dot_product_attention(q, k, v, mask=mask).reshape(b, t, h)
    x = self.attention_ln(x + self.attention_out(ctx))
    y = self.output(gelu(self.intermediate(x)))
    return self.output_ln(x + y)


def gelu(x: jax.Array) -> jax.Array:
  """The exact GELU, x * Phi(x), written with erf as PyTorch and HF BERT write it.
  `jax.nn.gelu(approximate=False)` goes through erfc, which XLA:CPU runs slower than erf: it was
  the train step's largest elementwise cost (benchmarks/profile_step.py), and the step with it
  took 1.04x as long (benchmarks/bench_step_variants.py). The two differ by under 1e-6."""
  return 0.5 * x * (1.0 + jax.lax.erf(x * 0.7071067811865476))


class BertModel(nnx.Module):
  """BERT / XLM-R encoder. `__call__` returns (hidden [B, T, H] f32, pooled [B, H] f32 or None)."""

  def __init__(self, cfg: BertConfig, rngs: nnx.Rngs):
    self.cfg = cfg
    h, dt = cfg.hidden_size, jnp.dtype(cfg.dtype)
    emb = lambda n: nnx.Embed(n, h, dtype=dt, param_dtype=jnp.float32, rngs=rngs,
                              embedding_init=_init(("model", "fsdp")))
    self.word_embeddings = emb(cfg.vocab_size)
    self.position_embeddings = emb(cfg.max_position_embeddings)
    self.token_type_embeddings = emb(cfg.type_vocab_size)
    self.embeddings_ln = _layernorm(h, cfg.layer_norm_eps, rngs)
    self.num_layers = cfg.num_hidden_layers
    # Named attributes (layer_0, layer_1, ...) rather than a list: string keys in the params
    # pytree survive every checkpoint format unchanged.
    for i in range(cfg.num_hidden_layers):
      setattr(self, f"layer_{i}", Layer(cfg, rngs))
    if cfg.has_pooler:
      self.pooler = _dense(h, h, ("fsdp", "model"), ("model",), dt, rngs)

  def __call__(self, input_ids: jax.Array, attention_mask: jax.Array,
               example: jax.Array | None = None, position: jax.Array | None = None):
    """example, position [B, T]: a packed batch (tokenizers.pack_ids): attention stays within
    each token's text, and positions count from each text's start."""
    cfg = self.cfg
    t = input_ids.shape[1]
    if t + cfg.position_offset > cfg.max_position_embeddings:
      raise ValueError(f"sequence length {t} (+ position offset {cfg.position_offset}) exceeds "
                       f"max_position_embeddings {cfg.max_position_embeddings}")
    positions = (jnp.arange(t)[None, :] if position is None else position) + cfg.position_offset
    x = (self.word_embeddings(input_ids) + self.position_embeddings(positions)
         + self.token_type_embeddings(jnp.zeros_like(input_ids)))
    x = self.embeddings_ln(x)
    if example is None:
      mask = attention_mask.astype(bool)[:, None, None, :]
    else:
      # Padding tokens share the example id len(texts): they attend only to each other, so no
      # softmax row is empty, and no real token sees them.
      mask = (example[:, :, None] == example[:, None, :])[:, None]
    for i in range(self.num_layers):
      x = getattr(self, f"layer_{i}")(x, mask)
    x = x.astype(jnp.float32)
    pooled = jnp.tanh(self.pooler(x[:, 0])).astype(jnp.float32) if cfg.has_pooler else None
    return x, pooled


def pool(cfg: BertConfig, hidden: jax.Array, pooled, attention_mask: jax.Array) -> jax.Array:
  """Sentence vectors [B, H] (not normalised) by `cfg.pooling`."""
  if cfg.pooling == "pooler":
    return pooled
  if cfg.pooling == "cls":
    return hidden[:, 0]
  m = attention_mask.astype(jnp.float32)[..., None]
  return (hidden * m).sum(1) / jnp.maximum(m.sum(1), 1.0)


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  x = x.astype(jnp.float32)
  return x * jax.lax.rsqrt(jnp.maximum((x * x).sum(-1, keepdims=True), eps))


# ------------------------------------------------------------------------------------------------
# The Encoder interface: what every model family gives the trainer, evaluators and search.
# ------------------------------------------------------------------------------------------------

class Encoder:
  """A text encoder as a pure function of a params pytree.

  Attributes:
    name: the model_config.name it came from.
    params: plain nested dict of float32 jax arrays (Orbax-saveable; str keys only).
    partition_specs: same structure, jax.sharding.PartitionSpec per leaf (see module docstring).
    tokenizer: a `tokenizers_lib.BucketTokenizer` (prefixes, buckets, `stats` of truncations).
    dim: embedding size.
    token_table: path in `params` of the token-embedding table ([vocab, H], indexed by
      input_ids only), or None; what optimizer.embedding_update='lazy'/'frozen' acts on.
  Methods:
    tokenize(texts, kind) -> {'input_ids', 'attention_mask'} int32 numpy, padded to a bucket.
    tokenize_packed(texts, kind, row_multiple) -> a packed batch (where `packs`).
    apply(params, batch, basis=None) -> [B, D] L2-normalised float32 (pure, jit-able).
    encode(params, texts, kind, batch_size=64, progress=True, basis=None) -> [N, D] float32.
    basis: None, or [D, r] orthonormal columns whose span is removed before the normalisation
      (language-subspace removal, `hybrid_ir.lsar`).
    hidden(params, batch) -> model-specific raw outputs (for tests / parity checks).
  """

  def __init__(self, *, name: str, module: nnx.Module, params: dict | None,
               tokenizer: tokenizers_lib.BucketTokenizer,
               embed_fn: Callable[[nnx.Module, dict], jax.Array],
               token_table: tuple[str, ...] | None = None, packs: bool = False):
    """`module` may be abstract (from nnx.eval_shape); `params` then supplies the values.
    packs: `embed_fn` also takes packed batches (tokenizers.pack_ids)."""
    self.name = name
    self.tokenizer = tokenizer
    self._graphdef, state = nnx.split(module)
    self._state_template = state
    self.partition_specs = nnx.to_pure_dict(nnx.get_partition_spec(state))
    if params is None:
      params = nnx.to_pure_dict(state)
    _check_params(name, params, nnx.to_pure_dict(state))
    self.params = jax.tree.map(jnp.asarray, params)
    self._embed_fn = embed_fn
    self.token_table = token_table
    self.packs = packs
    self._jit_apply = jax.jit(self.apply)
    probe = tokenizer.pad([[tokenizer.pad_id]], tokenizer.buckets[0])
    self.dim = int(jax.eval_shape(self.apply, self.params, probe).shape[-1])

  def module(self, params: dict) -> nnx.Module:
    """Rebuilds the NNX module around `params` (works on tracers inside jit)."""
    state = jax.tree.map(lambda x: x, self._state_template)
    nnx.replace_by_pure_dict(state, params)
    return nnx.merge(self._graphdef, state)

  def tokenize(self, texts: Sequence[str], kind: str) -> dict[str, np.ndarray]:
    return self.tokenizer(texts, kind)

  def tokenize_packed(self, texts: Sequence[str], kind: str, row_multiple: int = 1,
                      chunks: int = 1) -> dict[str, np.ndarray]:
    """Texts -> a packed batch (tokenizers.pack_ids), which `apply` embeds as it would
    `tokenize`'s, in the texts' order; chunks > 1: one that GradCache's chunks embed so
    (tokenizers.pack_chunks)."""
    if not self.packs:
      raise ValueError(f"{self.name}: this model family takes no packed batches "
                       "(input.packing); only the BERT / XLM-R family does")
    return self.tokenizer.pack(texts, kind, row_multiple, chunks)

  def apply(self, params: dict, batch: dict, basis: jax.Array | None = None) -> jax.Array:
    """Pure: (params pytree, {'input_ids','attention_mask'}) -> [B, D] L2-normalised f32.
    basis [D, r]: that subspace is projected out first (`hybrid_ir.lsar.remove`); normalising
    after it equals projecting the normalised vector and normalising again."""
    x = self._embed_fn(self.module(params), batch)
    if basis is not None:
      x = lsar.remove(x.astype(jnp.float32), jnp.asarray(basis, jnp.float32))
    return l2_normalize(x)

  def hidden(self, params: dict, batch: dict):
    """Raw model outputs (BERT: (hidden [B,T,H], pooled or None)), for parity tests."""
    return self.module(params)(batch["input_ids"], batch["attention_mask"])

  def encode(self, params: dict, texts: Sequence[str], kind: str, batch_size: int = 64,
             progress: bool = True, basis: np.ndarray | None = None) -> np.ndarray:
    """Embeds `texts` -> float32 [N, D], rows in input order, L2-normalised.

    Texts are sorted by token length so each batch pads to the smallest of the tokenizer's
    `encode_buckets` it can, and every batch is padded to exactly `batch_size` rows so jit sees
    only len(encode_buckets) shapes.
    Recommended batch_size on our 2-core CPU: 32-64; on accelerators: 256+.
    basis: an LSAR basis [D, r] (`apply`), applied inside the same jitted call.
    """
    import tqdm
    texts = list(texts)
    if not texts:
      return np.zeros((0, self.dim), np.float32)
    ids = self.tokenizer.encode_ids(texts, kind)
    order = np.argsort([len(x) for x in ids], kind="stable")
    out = np.zeros((len(texts), self.dim), np.float32)
    starts = range(0, len(texts), batch_size)
    for s in tqdm.tqdm(starts, desc=f"encode {kind} ({self.name})", disable=not progress,
                       total=len(starts), unit="batch"):
      idx = order[s:s + batch_size]
      length = self.tokenizer.bucket_for(len(ids[idx[-1]]), self.tokenizer.encode_buckets)
      batch = self.tokenizer.pad([ids[i] for i in idx], length, batch_size=batch_size)
      args = (params, batch) if basis is None else (params, batch, basis)
      out[idx] = np.asarray(self._jit_apply(*args))[:len(idx)]
    return out


def bert_embed(module: BertModel, batch: dict) -> jax.Array:
  if "example" in batch:
    return packed_embed(module, batch)
  hidden, pooled = module(batch["input_ids"], batch["attention_mask"])
  return pool(module.cfg, hidden, pooled, batch["attention_mask"])


def packed_embed(module: BertModel, batch: dict) -> jax.Array:
  """Sentence vectors [N, H] of a packed batch (tokenizers.pack_ids), in the texts' order: the
  same function of each text as `pool` over a padded batch."""
  cfg = module.cfg
  hidden, _ = module(batch["input_ids"], batch["attention_mask"], batch["example"],
                     batch["position"])
  flat = hidden.reshape(-1, hidden.shape[-1])
  n = batch["example_length"].shape[0]
  if cfg.pooling == "mean":
    # Padding tokens carry example id n: segment n, cut off.
    sums = jax.ops.segment_sum(flat, batch["example"].reshape(-1), num_segments=n + 1)[:n]
    return sums / jnp.maximum(batch["example_length"], 1).astype(jnp.float32)[:, None]
  first = flat[batch["example_start"]]
  if cfg.pooling == "cls":
    return first
  return jnp.tanh(module.pooler(first)).astype(jnp.float32)


def abstract_bert(cfg: BertConfig) -> BertModel:
  """The module with shapes only (no random init of a 250k-row table when weights get loaded)."""
  return nnx.eval_shape(lambda: BertModel(cfg, nnx.Rngs(0)))


def bert_encoder(name: str, cfg: BertConfig, params: dict | None,
                 tokenizer: tokenizers_lib.BucketTokenizer, seed: int = 0) -> Encoder:
  """An `Encoder` for a BERT / XLM-R config; params=None -> random init (tests, from-scratch)."""
  module = BertModel(cfg, nnx.Rngs(seed)) if params is None else abstract_bert(cfg)
  return Encoder(name=name, module=module, params=params, tokenizer=tokenizer, embed_fn=bert_embed,
                 token_table=("word_embeddings", "embedding"), packs=True)


def _check_params(name: str, params: dict, template: dict) -> None:
  """Raises listing every missing / unexpected / mis-shaped leaf of `params` vs `template`."""
  flat_p = {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_flatten_with_path(params)[0]}
  flat_t = {jax.tree_util.keystr(k): v for k, v in
            jax.tree_util.tree_flatten_with_path(template)[0]}
  missing = sorted(set(flat_t) - set(flat_p))
  unexpected = sorted(set(flat_p) - set(flat_t))
  shapes = sorted(f"{k}: got {tuple(np.shape(flat_p[k]))}, want {tuple(flat_t[k].shape)}"
                  for k in set(flat_p) & set(flat_t)
                  if tuple(np.shape(flat_p[k])) != tuple(flat_t[k].shape))
  if missing or unexpected or shapes:
    raise ValueError(f"{name}: params do not match the model: missing={missing} "
                     f"unexpected={unexpected} mis-shaped={shapes}")
