r"""Encoder speed on this machine: JAX e5-small and USE-m3 vs the FLOP limit, and vs PyTorch.

Prints, for each model:
  * encode throughput (sentences/s) per length bucket, batches of full-length sequences;
  * one training step (InfoNCE, in-batch negatives, optax.adamw on ALL params) on 32 queries of
    length 32 + 32 passages of length 64;
each with XLA's FLOP count for the compiled program, achieved GFLOP/s and % of the machine's f32
limit (--peak_gflops; 256 = 2 AVX-512 cores x 2 GHz x 2 FMA units x 16 lanes x 2 flops), and for
e5-small the same weights run by PyTorch (transformers BertModel, torch.set_num_threads(2)) in the
same process, with the JAX/PyTorch time ratio (< 1 means JAX is faster).

Run (about 3-4 minutes on our 2-core CPU; other processes on the machine skew the numbers, so the
load average is printed too):
  python benchmarks/bench_encode.py
  python benchmarks/bench_encode.py --buckets=16,32 --reps=2 --skip_train   # quicker
"""
from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

import numpy as np

# Runs from a checkout without `pip install -e .`.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))


def timeit(fn, reps: int) -> float:
  """Best wall time of `reps` calls after one warm-up (compile) call.

  Best rather than median: the machine is shared, and other processes only ever add time.
  """
  fn()
  times = []
  for _ in range(reps):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return float(np.min(times))


def timeit_interleaved(fns, reps: int) -> list[float]:
  """Best time of each fn, calls alternating, so both see the same background load."""
  for fn in fns:
    fn()
  times = [[] for _ in fns]
  for _ in range(reps):
    for fn, ts in zip(fns, times):
      t = time.perf_counter()
      fn()
      ts.append(time.perf_counter() - t)
  return [float(np.min(ts)) for ts in times]


def xla_flops(jitted, *args) -> float:
  cost = jitted.lower(*args).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get("flops", float("nan")))


def batch_of(tokenizer, vocab: int, batch: int, length: int, seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  ids = rng.integers(5, vocab, size=(batch, length)).astype(np.int32)
  return {"input_ids": ids, "attention_mask": np.ones((batch, length), np.int32)}


def torch_bert(enc):
  """transformers BertModel holding the encoder's (dequantised) e5-small weights."""
  import torch
  import transformers
  cfg = enc.module(enc.params).cfg
  tcfg = transformers.BertConfig(
      vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size,
      num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
      intermediate_size=cfg.intermediate_size, max_position_embeddings=cfg.max_position_embeddings,
      type_vocab_size=cfg.type_vocab_size, layer_norm_eps=cfg.layer_norm_eps)
  model = transformers.BertModel(tcfg, add_pooling_layer=False).eval()
  p = enc.params
  sd = {"embeddings.word_embeddings.weight": p["word_embeddings"]["embedding"],
        "embeddings.position_embeddings.weight": p["position_embeddings"]["embedding"],
        "embeddings.token_type_embeddings.weight": p["token_type_embeddings"]["embedding"],
        "embeddings.LayerNorm.weight": p["embeddings_ln"]["scale"],
        "embeddings.LayerNorm.bias": p["embeddings_ln"]["bias"]}
  names = {"attention.self.query": "query", "attention.self.key": "key",
           "attention.self.value": "value", "attention.output.dense": "attention_out",
           "intermediate.dense": "intermediate", "output.dense": "output"}
  for i in range(cfg.num_hidden_layers):
    lp = p[f"layer_{i}"]
    for hf, us in names.items():
      sd[f"encoder.layer.{i}.{hf}.weight"] = np.asarray(lp[us]["kernel"]).T
      sd[f"encoder.layer.{i}.{hf}.bias"] = lp[us]["bias"]
    for hf, us in (("attention.output.LayerNorm", "attention_ln"), ("output.LayerNorm", "output_ln")):
      sd[f"encoder.layer.{i}.{hf}.weight"] = lp[us]["scale"]
      sd[f"encoder.layer.{i}.{hf}.bias"] = lp[us]["bias"]
  missing, unexpected = model.load_state_dict(
      {k: torch.tensor(np.array(v)) for k, v in sd.items()}, strict=False)
  missing = [k for k in missing if "position_ids" not in k]
  if missing or unexpected:
    raise RuntimeError(f"torch state dict mismatch: missing={missing} unexpected={unexpected}")
  return model


def torch_encode_fn(model, batch):
  import torch
  ids = torch.tensor(batch["input_ids"], dtype=torch.long)
  mask = torch.tensor(batch["attention_mask"], dtype=torch.long)

  def run():
    with torch.inference_mode():
      h = model(input_ids=ids, attention_mask=mask).last_hidden_state
      m = mask[..., None].float()
      e = (h * m).sum(1) / m.sum(1)
      return torch.nn.functional.normalize(e, dim=-1)
  return run


def train_step_fn(enc):
  """jit(step)(params, opt_state, q_batch, p_batch) with InfoNCE (temperature 0.05) + AdamW."""
  import jax
  import optax
  opt = optax.adamw(1e-5, weight_decay=0.01)

  def loss_fn(params, qb, pb):
    q, p = enc.apply(params, qb), enc.apply(params, pb)
    logits = q @ p.T / 0.05
    return optax.softmax_cross_entropy_with_integer_labels(
        logits, jax.numpy.arange(q.shape[0])).mean()

  def step(params, opt_state, qb, pb):
    loss, grads = jax.value_and_grad(loss_fn)(params, qb, pb)
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return opt, jax.jit(step, donate_argnums=(0, 1))


def matmul_probe(threads: int, reps: int = 30) -> None:
  """One [1024,384]x[384,1536] f32 matmul (e5-small's FFN shape) in XLA and in torch: explains
  most of the JAX/torch ratio (on AMD EPYC, torch's MKL sgemm runs well below XLA's kernels)."""
  import jax
  import jax.numpy as jnp
  a = np.random.default_rng(0).standard_normal((1024, 384), np.float32)
  b = np.random.default_rng(1).standard_normal((384, 1536), np.float32)
  flops = 2 * 1024 * 384 * 1536
  f, ja, jb = jax.jit(jnp.matmul), jnp.asarray(a), jnp.asarray(b)
  line = f"matmul probe 1024x384x1536: XLA {flops / timeit(lambda: f(ja, jb).block_until_ready(), reps) / 1e9:.0f} GFLOP/s"
  try:
    import torch
    torch.set_num_threads(threads)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    line += f", torch {flops / timeit(lambda: ta @ tb, reps) / 1e9:.0f} GFLOP/s"
  except ImportError:
    pass
  print(line, flush=True)


def bench_model(name: str, args, torch_model_fn=None) -> None:
  import jax
  from hybrid_ir import models
  enc = models.load_encoder({"name": name})
  emb = enc.params["word_embeddings" if "word_embeddings" in enc.params else "embedding"]
  vocab = int(emb["embedding"].shape[0])
  jit_apply = jax.jit(enc.apply)
  tmodel = None
  if torch_model_fn is not None and not args.skip_torch:
    import torch
    torch.set_num_threads(args.torch_threads)
    tmodel = torch_model_fn(enc)
  print(f"\n== {name}: encode, batch {args.batch} full-length sequences ==")
  hdr = f"{'len':>5} {'sent/s':>9} {'ms/batch':>9} {'GFLOP/s':>8} {'%peak':>6}"
  if tmodel is not None:
    hdr += f" {'torch sent/s':>12} {'torch GFLOP/s':>13} {'JAX/torch time':>14}"
  print(hdr)
  for length in args.buckets:
    b = batch_of(enc.tokenizer, vocab, args.batch, length)
    flops = xla_flops(jit_apply, enc.params, b)
    fns = [lambda: jit_apply(enc.params, b).block_until_ready()]
    if tmodel is not None:
      fns.append(torch_encode_fn(tmodel, b))
    t, *tt = timeit_interleaved(fns, args.reps)
    row = (f"{length:>5} {args.batch / t:>9.1f} {1e3 * t:>9.1f} {flops / t / 1e9:>8.1f} "
           f"{100 * flops / t / 1e9 / args.peak_gflops:>5.1f}%")
    if tmodel is not None:
      tt = tt[0]
      out_t = torch_encode_fn(tmodel, b)().numpy()
      out_j = np.asarray(jit_apply(enc.params, b))
      cos = float((out_t * out_j).sum(1).min())
      row += f" {args.batch / tt:>12.1f} {flops / tt / 1e9:>13.1f} {t / tt:>14.2f}"
      row += f"   (min cos JAX vs torch {cos:.6f})"
    print(row, flush=True)
  if args.skip_train:
    return
  opt, step = train_step_fn(enc)
  qb = batch_of(enc.tokenizer, vocab, 32, 32, seed=1)
  pb = batch_of(enc.tokenizer, vocab, 32, 64, seed=2)
  params = jax.tree.map(lambda x: x.copy(), enc.params)
  opt_state = opt.init(params)
  flops = xla_flops(step, params, opt_state, qb, pb)
  t0 = time.perf_counter()
  params, opt_state, loss = step(params, opt_state, qb, pb)
  loss.block_until_ready()
  compile_s = time.perf_counter() - t0
  times = []
  for _ in range(args.train_reps):
    t0 = time.perf_counter()
    params, opt_state, loss = step(params, opt_state, qb, pb)
    loss.block_until_ready()
    times.append(time.perf_counter() - t0)
  t = float(np.min(times))
  n_params = sum(x.size for x in jax.tree.leaves(params))
  print(f"train step (32 q x 32 tok + 32 p x 64 tok, AdamW on {n_params / 1e6:.1f}M params): "
        f"{t:.2f} s/step best of {args.train_reps} (first call incl. compile {compile_s:.1f} s), "
        f"{flops / 1e9:.1f} GFLOP -> {flops / t / 1e9:.1f} GFLOP/s = "
        f"{100 * flops / t / 1e9 / args.peak_gflops:.1f}% of {args.peak_gflops:.0f}; "
        f"loss {float(loss):.3f}", flush=True)


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--models", default="bundled:e5-small,bundled:use-m3")
  ap.add_argument("--buckets", default="16,32,64,128")
  ap.add_argument("--batch", type=int, default=32)
  ap.add_argument("--reps", type=int, default=3)
  ap.add_argument("--train_reps", type=int, default=3)
  ap.add_argument("--peak_gflops", type=float, default=256.0)
  ap.add_argument("--torch_threads", type=int, default=2)
  ap.add_argument("--skip_train", action="store_true")
  ap.add_argument("--skip_torch", action="store_true")
  args = ap.parse_args()
  args.buckets = [int(x) for x in args.buckets.split(",")]
  import jax
  print(f"jax {jax.__version__} on {jax.devices()[0].platform} x{jax.device_count()}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()}, "
        f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
  matmul_probe(args.torch_threads)
  for name in args.models.split(","):
    bench_model(name, args, torch_bert if "e5" in name else None)
  print(f"\nload average at end {os.getloadavg()}")


if __name__ == "__main__":
  main()
