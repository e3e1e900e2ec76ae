"""What the distillation term (loss.distill, hybrid_ir.distill) costs per train step, side by side.

  python benchmarks/bench_distill.py [--model e5-small] [--batch 32] [--steps 5] [--rounds 2]

Times train.py's update step (benchmarks/bench_train.py's `bench`: same batch, same model) without
and with the term, alternating for --rounds rounds so that drift in the machine's speed hits both,
and prints each round and the ratio of the medians. The teacher's embeddings are precomputed and
ride in the batch (two [B, D] arrays), so the term adds two squared distances per row and no
teacher forward pass.
"""
import argparse

import jax
import numpy as np

from benchmarks import bench_train


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--model", default="e5-small")
  ap.add_argument("--batch", type=int, default=32)
  ap.add_argument("--steps", type=int, default=5)
  ap.add_argument("--rounds", type=int, default=2)
  args = ap.parse_args()
  print(f"jax {jax.__version__}, {jax.device_count()} x {jax.devices()[0].device_kind}; "
        f"{args.model}, {args.batch} queries x 32 tokens + {args.batch} passages x 64", flush=True)
  times = {"without": [], "with": []}
  for r in range(args.rounds):
    for name, weight in (("without", 0.0), ("with", 1.0)):
      out = bench_train.bench(args.model, args.batch, args.steps, 256.0, "float32",
                              distill_weight=weight)
      times[name].append(out["step_s"])
      print(f"round {r + 1}: {name:7s} the term: {out['step_s']:.3f} s/step "
            f"(loss {out['loss']:.3f})", flush=True)
  a, b = np.median(times["without"]), np.median(times["with"])
  print(f"median s/step: without {a:.3f}, with {b:.3f}; with / without = {b / a:.3f}")


if __name__ == "__main__":
  main()
