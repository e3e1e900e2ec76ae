r"""What the e5-small train step's extras cost: train.py's step against the same step without the
three global norms it reports (gradient, update, parameters) and its `ok` flag, interleaved in one
process, same weights and batch as bench_peer (32 queries x 32 tokens + 32 passages x 64).

Run it once per XLA_FLAGS setting to compare XLA CPU options side by side (XLA reads the flags at
start-up, so each setting needs its own process), e.g.:

  for f in "" --xla_cpu_use_onednn=true "" --xla_cpu_use_onednn=true; do
    XLA_FLAGS="$f" PYTHONPATH=. python benchmarks/bench_step_variants.py; done
"""
import argparse
import functools
import os
import pathlib
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--reps", type=int, default=4, help="interleaved rounds (medians of these)")
  ap.add_argument("--data_dir", default=str(REPO.parent / "shared" / "data"))
  args = ap.parse_args(argv)

  import jax
  import jax.numpy as jnp
  import optax
  import bench_peer
  from hybrid_ir import models, sharding, train
  from hybrid_ir.hardware import cpu_model
  config = bench_peer.train_config()
  encoder = models.load_encoder(config.model)
  mesh = sharding.make_mesh({"data": -1})
  batch = bench_peer.real_batch(encoder, args.data_dir)
  batch = sharding.host_local_to_global(dict(batch, identity=np.arange(32, dtype=np.int32)), mesh)
  step = train.make_train_step(encoder, config, mesh)
  tx, loss_and_grads = train.make_optimizer(config), train.make_loss_and_grads(encoder, config)

  @functools.partial(jax.jit, donate_argnums=(0,))
  def bare(state, b):
    trainable = {"params": state["params"], "loss_params": state["loss_params"]}
    (loss, _), grads = loss_and_grads(trainable, b)
    updates, opt_state = tx.update(grads, state["opt_state"], trainable)
    return dict(optax.apply_updates(trainable, updates), opt_state=opt_state,
                step=state["step"] + 1), {"loss": loss}

  fresh = lambda: step.init(jax.tree.map(jnp.copy, encoder.params))  # noqa: E731
  full, lean = "train.py's step", "without norms and ok"
  fns = {full: [step.update, fresh()], lean: [bare, fresh()]}
  times = {k: [] for k in fns}
  for r in range(2 + args.reps):  # 2 warm-up rounds (compile)
    for name, f in fns.items():
      t = time.perf_counter()
      f[1], m = f[0](f[1], batch)
      jax.block_until_ready(m["loss"])
      if r >= 2:
        times[name].append(time.perf_counter() - t)
  med = {k: float(np.median(v)) for k, v in times.items()}
  print(f"CPU: {cpu_model()}; jax {jax.__version__}; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; "
        f"last loss {float(m['loss']):.6f}")
  print("  " + ", ".join(f"{k} {v:.2f} s" for k, v in med.items()) +
        f"; ratio {med[lean] / med[full]:.2f}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
