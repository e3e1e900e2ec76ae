r"""What the e5-small train step's extras cost: train.py's step against the same step without the
three global norms it reports (gradient, update, parameters) and its `ok` flag, and against the
same step with jax's own exact GELU (`jax.nn.gelu(approximate=False)`, through erfc, which the
encoder used before its erf form), interleaved in one process, same weights and batch as
bench_peer (32 queries x 32 tokens + 32 passages x 64).

`--dots` compares the libraries XLA:CPU can hand its matmuls to, on the same step. XLA reads
XLA_FLAGS once, at start-up, so each library runs in its own child process, the libraries taking
turns for `--passes` passes (background load then hits each alike); the table gives each one's
median step time over its passes, its ratio to XLA's default, the 1024x384x1536 matmul probe's
rate in the same process, and its last loss. jax 0.10's
default is YNNPACK ("__ynn_fusion"), and it claims every dot before the older switches are read:
`--xla_cpu_use_onednn=true` alone changes nothing. Each other library therefore turns YNNPACK off
first (`--xla_cpu_experimental_ynn_fusion_type=` with an empty list).

  PYTHONPATH=. python benchmarks/bench_step_variants.py                 # one process, ~3 min
  PYTHONPATH=. python benchmarks/bench_step_variants.py --dots --passes 2   # ~10 min on 2 cores
"""
import argparse
import functools
import os
import pathlib
import re
import subprocess
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

NO_YNN = "--xla_cpu_experimental_ynn_fusion_type="
DOT_LIBRARIES = {
    "XLA default (YNNPACK)": "",
    "oneDNN": f"{NO_YNN} --xla_cpu_use_onednn=true",
    "XNNPACK": f"{NO_YNN} --xla_cpu_experimental_xnn_fusion_type=dot",
    "Eigen (XLA's own)": NO_YNN,
}


def compare_dots(reps: int, passes: int, data_dir: str) -> int:
  """Runs this benchmark once per dot library per pass, in child processes, and tabulates them."""
  runs = {name: [] for name in DOT_LIBRARIES}
  for p in range(passes):
    for name, flags in DOT_LIBRARIES.items():
      env = dict(os.environ, XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} {flags}".strip())
      child = subprocess.run([sys.executable, __file__, "--step_only", "--reps", str(reps),
                              "--data_dir", data_dir], env=env, capture_output=True, text=True)
      if child.returncode:
        raise SystemExit(f"{name} (XLA_FLAGS={env['XLA_FLAGS']!r}) failed:\n{child.stderr[-3000:]}")
      out = child.stdout
      step = float(re.search(r"train.py's step ([\d.]+) s", out).group(1))
      loss = re.search(r"last loss ([\d.]+)", out).group(1)
      probe = float(re.search(r"matmul probe (\d+) GFLOP/s", out).group(1))
      runs[name].append((step, probe, loss))
      print(f"  pass {p + 1}/{passes}, {name}: XLA_FLAGS={env['XLA_FLAGS']!r}: step {step:.2f} s, "
            f"probe {probe:.0f} GFLOP/s, last loss {loss}", flush=True)
  base = float(np.median([r[0] for r in runs["XLA default (YNNPACK)"]]))
  print(f"\ne5-small train step by XLA:CPU dot library ({passes} passes, medians of {reps} steps "
        f"each; the 1024x384x1536 matmul probe in the same process):\n"
        f"  {'library':24s} {'s/step':>7s} {'/ default':>9s} {'probe GFLOP/s':>14s}  last loss")
  for name, r in runs.items():
    step, probe = (float(np.median(x)) for x in list(zip(*r))[:2])
    print(f"  {name:24s} {step:7.2f} {step / base:9.2f} {probe:14.0f}  "
          f"{' '.join(sorted({x[2] for x in r}))}")
  return 0


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--reps", type=int, default=4, help="interleaved rounds (medians of these)")
  ap.add_argument("--dots", action="store_true",
                  help="compare XLA:CPU's dot libraries (one child process each, per pass)")
  ap.add_argument("--passes", type=int, default=2, help="with --dots: turns of every library")
  ap.add_argument("--step_only", action="store_true",
                  help="time train.py's step alone (what --dots runs in each child)")
  ap.add_argument("--data_dir", default=str(REPO.parent / "shared" / "data"))
  args = ap.parse_args(argv)
  if args.dots:
    from hybrid_ir.hardware import cpu_model
    print(f"CPU: {cpu_model()}, {len(os.sched_getaffinity(0))} usable cores", flush=True)
    return compare_dots(args.reps, args.passes, args.data_dir)

  import jax
  import jax.numpy as jnp
  import optax
  import bench_peer
  from hybrid_ir import train_step
  from hybrid_ir.hardware import cpu_model
  from hybrid_ir.models import encoder as encoder_lib
  # The probe first, before the model and the compiles. Either way some processes read about one
  # core's rate (~105 GFLOP/s of ~200 on a 2-core EPYC), at random; the passes spread that out.
  probe_flops, probes = bench_peer.matmul_probes()
  probe = bench_peer.interleaved({"xla": probes["probe XLA matmul"]}, 10, verbose=False)
  config, encoder, mesh, batch, step = bench_peer.our_step(args.data_dir)
  tx, loss_and_grads = train_step.make_optimizer(config), train_step.make_loss_and_grads(encoder, config)

  @functools.partial(jax.jit, donate_argnums=(0,))
  def bare(state, b):
    trainable = {"params": state["params"], "loss_params": state["loss_params"]}
    (loss, _), grads = loss_and_grads(trainable, b)
    updates, opt_state = tx.update(grads, state["opt_state"], trainable)
    return dict(optax.apply_updates(trainable, updates), opt_state=opt_state,
                step=state["step"] + 1), {"loss": loss}

  def with_erfc_gelu(state, b):
    # The encoder reads `gelu` when jit traces it (the first call), so the swap sticks to this
    # step's compiled program and leaves the others alone.
    saved, encoder_lib.gelu = encoder_lib.gelu, lambda x: jax.nn.gelu(x, approximate=False)
    try:
      return erfc_step.update(state, b)
    finally:
      encoder_lib.gelu = saved

  fresh = lambda: step.init(jax.tree.map(jnp.copy, encoder.params))  # noqa: E731
  full, lean, erfc = "train.py's step", "without norms and ok", "with jax's erfc GELU"
  fns = {full: [step.update, fresh()]}
  if not args.step_only:
    erfc_step = train_step.make_train_step(encoder, config, mesh)
    fns.update({lean: [bare, fresh()], erfc: [with_erfc_gelu, fresh()]})
  times, losses = {k: [] for k in fns}, {}
  for r in range(2 + args.reps):  # 2 warm-up rounds (compile)
    for name, f in fns.items():
      t = time.perf_counter()
      f[1], m = f[0](f[1], batch)
      jax.block_until_ready(m["loss"])
      losses[name] = float(m["loss"])
      if r >= 2:
        times[name].append(time.perf_counter() - t)
  med = {k: float(np.median(v)) for k, v in times.items()}
  print(f"CPU: {cpu_model()}; jax {jax.__version__}; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; "
        f"last loss {losses[full]:.6f}" + (f" ({erfc}: {losses[erfc]:.6f})" if erfc in losses else ""))
  ratios = "" if args.step_only else (f"; ratio {med[lean] / med[full]:.2f}; "
                                      f"{erfc} / train.py's {med[erfc] / med[full]:.2f}")
  print("  " + ", ".join(f"{k} {v:.2f} s" for k, v in med.items()) + ratios +
        f"; matmul probe {probe_flops / np.median(probe['xla']) / 1e9:.0f} GFLOP/s")
  return 0


if __name__ == "__main__":
  sys.exit(main())
