"""Train-step throughput of the real update step (encoder fwd+bwd, InfoNCE, AdamW) per model.

  python benchmarks/bench_train.py [--models e5-small,use-m3] [--batch 32] [--steps 5]
      [--peak_gflops 256] [--dtype float32] [--q_len 32] [--p_len 64] [--log_dir DIR]

Prints per model: step time (median of --steps after 2 compile/warm-up steps), examples/s
(queries), tokens/s (non-pad query + passage tokens), FLOPs/step from XLA's cost analysis of the
compiled step, and MFU (`train_step.mfu`, the trainer's formula: one device's share of the FLOPs/step
/ step time / one device's peak). The default peak, 256 GFLOP/s, is this 2-core CPU's f32 limit
(2 cores x 2 FMA units x 8 f32 lanes (AVX2) x 2 flops x ~4 GHz); pass the accelerator's
peak (e.g. H100 and H200 bf16 dense: 989000) when run on one.
Batch: B queries of q_len tokens + B passages of p_len (default 32 and 64).
--models takes configs/common.py's presets, among them e5-small-shape and xlmr-base-shape: random
weights of those models' shapes, which need no bundled weights (benchmarks/accelerator.sh).
"""
import argparse
import pathlib
import time

import jax
import ml_collections
import numpy as np

from configs import common
from hybrid_ir import models, sharding, train_step

WORDS = ("the river city museum history science north language music water children "
         "government century football island market ancient energy").split()


def texts(n: int, words: int, seed: int) -> list[str]:
  rng = np.random.default_rng(seed)
  return [" ".join(rng.choice(WORDS, size=words)) for _ in range(n)]


def bench(model: str, batch_size: int, steps: int, peak: float, dtype: str, q_len: int = 32,
          p_len: int = 64, distill_weight: float = 0.0) -> dict:
  """One model's step, timed; distill_weight > 0 adds the distillation term (loss.distill) with
  random unit teacher targets in the batch, as train.py attaches them."""
  config = ml_collections.ConfigDict(dict(
      total_steps=1000, grad_cache_chunks=0, model=common.model(model),
      optimizer=dict(lr=3e-5, weight_decay=0.01, warmup_steps=100, decay="linear", grad_clip=1.0),
      loss=dict(common.loss(), distill=dict(weight=distill_weight))))
  config.model.dtype = dtype
  encoder = models.load_encoder(config.model)
  mesh = sharding.make_mesh({"data": -1})
  # 3 words per 4 tokens: enough to fill every row after subword tokenization.
  ids = lambda kind, length: [x[:length] for x in encoder.tokenizer.encode_ids(
      texts(batch_size, 3 * length // 4, seed=length), kind)]
  q = encoder.tokenizer.pad(ids("query", q_len), q_len)
  p = encoder.tokenizer.pad(ids("passage", p_len), p_len)
  host = {"query": q, "passage": p, "identity": np.arange(batch_size, dtype=np.int32)}
  if distill_weight:
    dim = jax.eval_shape(encoder.apply, encoder.params, q).shape[-1]
    targets = np.random.default_rng(0).normal(size=(2, batch_size, dim)).astype(np.float32)
    targets /= np.linalg.norm(targets, axis=-1, keepdims=True)
    host.update(teacher_query=targets[0], teacher_passage=targets[1])
  batch = sharding.host_local_to_global(host, mesh)
  tokens = int(q["attention_mask"].sum() + p["attention_mask"].sum())
  # The trainer's own update step (sharding, AdamW, finite flag), so the bench measures what
  # train.py runs.
  step_fn = train_step.make_train_step(encoder, config, mesh)
  state = step_fn.init(encoder.params)
  flops = train_step.step_flops(step_fn.update.lower(state, batch).compile())
  times = []
  for i in range(steps + 2):
    t = time.perf_counter()
    state, m = step_fn.update(state, batch)
    loss = m["loss"].block_until_ready()
    if i >= 2:
      times.append(time.perf_counter() - t)
  step = float(np.median(times))
  n_params = sum(x.size for x in jax.tree.leaves(encoder.params))
  return dict(model=model, dtype=dtype, device=jax.devices()[0].device_kind, params_m=n_params / 1e6,
              batch=batch_size, step_s=step, examples_per_s=batch_size / step,
              tokens_per_s=tokens / step, gflops_per_step=flops / 1e9,
              mfu=train_step.mfu(flops, step, peak * 1e9), loss=float(loss))


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--models", default="e5-small,use-m3")
  ap.add_argument("--batch", type=int, default=32)
  ap.add_argument("--steps", type=int, default=5)
  ap.add_argument("--peak_gflops", type=float, default=256.0, help="per device")
  ap.add_argument("--dtype", default="float32")
  ap.add_argument("--q_len", type=int, default=32, help="query tokens")
  ap.add_argument("--p_len", type=int, default=64, help="passage tokens")
  ap.add_argument("--log_dir", default=None,
                  help="also write the output to <log_dir>/<device kind>.log")
  args = ap.parse_args()
  kind = jax.devices()[0].device_kind
  log = None
  if args.log_dir:
    log = open(pathlib.Path(args.log_dir) / f"{kind.replace(' ', '_')}.log", "w")

  def say(line: str) -> None:
    print(line, flush=True)
    if log:
      log.write(line + "\n")
      log.flush()

  say(f"jax {jax.__version__}, {jax.device_count()} x {kind}; "
      f"{args.batch} queries x {args.q_len} tokens + {args.batch} passages x {args.p_len}; "
      f"peak {args.peak_gflops:g} GFLOP/s per device")
  say("model            dtype    params  batch  step_s  ex/s    tok/s    GFLOP/step  MFU")
  for m in args.models.split(","):
    r = bench(m, args.batch, args.steps, args.peak_gflops, args.dtype, args.q_len, args.p_len)
    say(f"{r['model']:16s} {r['dtype']:8s} {r['params_m']:5.0f}M  {r['batch']:5d}  "
        f"{r['step_s']:6.2f}  {r['examples_per_s']:6.1f}  {r['tokens_per_s']:7.0f}  "
        f"{r['gflops_per_step']:10.1f}  {r['mfu']:.1%}")


if __name__ == "__main__":
  main()
