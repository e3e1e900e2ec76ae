r"""Packed against padded training batches: the e5-small train step on the same real batches, side
by side in one run.

  PYTHONPATH=. python benchmarks/bench_packing.py                       # ~10 min on 2 cores
  PYTHONPATH=. python benchmarks/bench_packing.py --arg model=e5-small,train=xquad-r,negatives=3

Reads the first --batches batches of an experiment run's pipeline twice, padded to buckets and
packed (input.packing; the same examples, checked by fingerprint), and keeps the --use batches of
the most common (padded, packed) shape pair, so each form compiles once. Two train states start
from the same weights; every round steps each of them on each batch, interleaved. Prints the
median step time of each form and their ratio, the token slots per step, XLA's FLOPs per step,
and the largest loss difference between the two forms on the same batch (packing is exact up to
float reassociation; the states drift apart only by that).
"""
import argparse
import collections
import functools
import os
import pathlib
import statistics
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--arg", default="model=e5-small,train=xquad-r,mono=0.5,cross=0.5",
                  help="configs/experiments/base.py arg (hybrid_ir.grids)")
  ap.add_argument("--batches", type=int, default=24, help="batches read to pick from")
  ap.add_argument("--use", type=int, default=3, help="batches timed")
  ap.add_argument("--reps", type=int, default=2, help="rounds over the timed batches")
  args = ap.parse_args(argv)

  import jax
  import jax.numpy as jnp
  import numpy as np
  from hybrid_ir import experiments, input_pipeline, models, sharding, train_step
  from hybrid_ir.hardware import cpu_model
  config = experiments.load_config(experiments.find_config(), args.arg)
  encoder = models.load_encoder(config.model)
  mesh = sharding.make_mesh({"data": -1})
  forms = {"padded": encoder.tokenize,
           "packed": functools.partial(encoder.tokenize_packed,
                                       row_multiple=sharding.local_batch_shards(mesh))}
  read = {}
  for form, tokenize in forms.items():
    pipeline = input_pipeline.make_pipeline(config.input, tokenize)
    read[form] = [next(pipeline) for _ in range(args.batches)]
    pipeline.close()
  assert ([b["fingerprint"] for b in read["padded"]] ==
          [b["fingerprint"] for b in read["packed"]]), "the two pipelines drew other batches"

  keys = [k for k in ("query", "passage", "negative") if k in read["padded"][0]]
  shape = lambda b: tuple(b[k]["input_ids"].shape for k in keys)  # noqa: E731
  pairs = collections.Counter((shape(a), shape(b)) for a, b in zip(read["padded"], read["packed"]))
  common = pairs.most_common(1)[0][0]
  chosen = [i for i, (a, b) in enumerate(zip(read["padded"], read["packed"]))
            if (shape(a), shape(b)) == common][:args.use]
  batches = {form: [train_step.to_device_batch(read[form][i], mesh) for i in chosen] for form in forms}
  slots = {form: sum(read[form][chosen[0]][k]["attention_mask"].size for k in keys)
           for form in forms}
  real = sum(int(read["padded"][chosen[0]][k]["attention_mask"].sum()) for k in keys)

  step = train_step.make_train_step(encoder, config, mesh)
  states, compiled, flops, times, loss = {}, {}, {}, collections.defaultdict(list), {}
  for form in forms:
    states[form] = step.init(jax.tree.map(jnp.copy, encoder.params))
    t = time.time()
    compiled[form] = step.update.lower(states[form], batches[form][0]).compile()
    print(f"{form}: compiled in {time.time() - t:.0f} s", flush=True)
    flops[form] = train_step.step_flops(compiled[form])
  worst = 0.0
  for _ in range(args.reps):
    for i in range(len(chosen)):
      for form in forms:
        t = time.perf_counter()
        states[form], m = compiled[form](states[form], batches[form][i])
        loss[form] = float(jax.block_until_ready(m["loss"]))
        times[form].append(time.perf_counter() - t)
      worst = max(worst, abs(loss["packed"] - loss["padded"]))

  print(f"CPU: {cpu_model()}, {os.cpu_count()} CPUs; {jax.device_count()} devices")
  print(f"{args.arg}: {len(chosen)} batches of the most common shapes (of {args.batches} read: "
        f"{pairs[common]}), {args.reps} rounds, interleaved")
  print(f"  shapes ({' x '.join(keys)}): padded {common[0]}, packed {common[1]}")
  for form in forms:
    print(f"  {form}: {statistics.median(times[form]):.2f} s/step (median of "
          f"{len(times[form])}), {slots[form]} token slots ({real / slots[form]:.0%} real), "
          f"{flops[form] / 1e9:.0f} GFLOP")
  ratio = statistics.median(times["packed"]) / statistics.median(times["padded"])
  print(f"  packed / padded step time: {ratio:.2f}; FLOPs {flops['packed'] / flops['padded']:.2f}; "
        f"largest loss difference on the same batch {worst:.1e}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
