r"""Where the e5-small train step's time goes, op by op: an XLA profile of bench_peer's step (same
weights and batch: 32 queries x 32 tokens + 32 passages x 64), its thunks grouped by kind.

XLA:CPU emits one trace event per executed op (thunk) when XLA_FLAGS has
--xla_cpu_enable_xprof_traceme=true, which this script sets for itself. The trace is jax's own
(`jax.profiler.trace(..., create_perfetto_trace=True)`); each event is matched by name to an
instruction of the compiled step, whose matmul FLOPs come from its operand shapes. Two cores run
ops side by side and a plain dot's event can end before its work does, so the kinds' seconds
overlap: read them as where the work is, not as shares that add up to the step.

  PYTHONPATH=. python benchmarks/profile_step.py     # ~2 min
"""
import argparse
import collections
import glob
import gzip
import json
import os
import pathlib
import re
import sys
import tempfile

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_cpu_enable_xprof_traceme=true").strip()

import numpy as np  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

SHAPED = re.compile(r"\s*(?:ROOT )?%([\w.\-]+) = \w+\[([\d,]*)\]")


def dims(text: str) -> list[int]:
  return [int(x) for x in text.split(",") if x]


def dot_flops(line: str, shapes: dict) -> int:
  """2 x output elements x contracted size of one HLO dot."""
  out = dims(SHAPED.match(line).group(2))
  lhs = shapes[re.search(r" dot\(%([\w.\-]+),", line).group(1)]
  contracted = dims(re.search(r"lhs_contracting_dims=\{([\d,]*)\}", line).group(1))
  return 2 * int(np.prod(out)) * int(np.prod([lhs[i] for i in contracted]))


def op_kinds(hlo: str) -> tuple[dict, dict, dict]:
  """({entry instruction: kind}, {entry instruction: matmul FLOPs}, {entry instruction: the jax
  operation it came from, e.g. 'transpose(jvp())/add_any' for a backward-pass add}) of a compiled
  module's text."""
  blocks = re.split(r"\n(?=\S)", hlo)
  bodies = {m.group(1): b for b in blocks if (m := re.match(r"%([\w.\-]+) ", b))}
  entry = next(b for b in blocks if b.startswith("ENTRY"))
  shapes_of = lambda b: {m.group(1): dims(m.group(2))  # noqa: E731
                         for m in map(SHAPED.match, b.splitlines()) if m}
  entry_shapes = shapes_of(entry)
  kind, flops, source = {}, {}, {}
  for line in entry.splitlines():
    m = re.match(r"\s*(?:ROOT )?%([\w.\-]+) = .*? ([a-z][\w\-]*)\(", line)
    if not m:
      continue
    name, op = m.groups()
    if (origin := re.search(r'op_name="(?:jit\(\w+\)/)?([^"]+)"', line)):
      source[name] = re.sub(r"\d+", "#", origin.group(1))
    if op == "dot":
      kind[name], flops[name] = "dot (XLA's own dot thunk)", dot_flops(line, entry_shapes)
    elif op == "fusion":
      body = bodies[re.search(r"calls=%([\w.\-]+)", line).group(1)]
      dots = [x for x in body.splitlines() if re.search(r" dot\(", x)]
      library = "YNNPACK fusion" if "__ynn_fusion" in line else "XLA fusion"
      kind[name] = f"{library} with a dot" if dots else f"{library}, elementwise/reduce"
      body_shapes = shapes_of(body)
      flops[name] = sum(dot_flops(x, body_shapes) for x in dots)
    else:
      kind[name] = op
  return kind, flops, source


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--steps", type=int, default=2, help="profiled steps (after 2 unprofiled)")
  ap.add_argument("--top", type=int, default=12,
                  help="list the jax operations behind the most time outside matmuls")
  ap.add_argument("--data_dir", default=str(REPO.parent / "shared" / "data"))
  args = ap.parse_args(argv)

  import jax
  import bench_peer
  from hybrid_ir.hardware import cpu_model
  _, encoder, _, batch, step = bench_peer.our_step(args.data_dir)
  state = step.init(encoder.params)
  # One compile: the program profiled is the one whose text names the ops.
  update = step.update.lower(state, batch).compile()
  kind, flops, source = op_kinds(update.as_text())
  for _ in range(2):  # first touch
    state, m = update(state, batch)
    jax.block_until_ready(m["loss"])
  with tempfile.TemporaryDirectory(prefix="profile_step_") as trace_dir:
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
      for _ in range(args.steps):
        state, m = update(state, batch)
        jax.block_until_ready(m["loss"])
    path, = glob.glob(f"{trace_dir}/**/perfetto_trace.json.gz", recursive=True)
    trace = json.load(gzip.open(path))
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  seconds, ops, gflop = collections.Counter(), collections.Counter(), collections.Counter()
  by_source, source_ops = collections.Counter(), collections.Counter()
  wall = sum(e["dur"] for e in events
             if e.get("ph") == "X" and e["name"] == "ThunkExecutor::Execute (wait for completion)")
  for e in events:
    if e.get("ph") == "X" and e["name"] in kind:
      k = kind[e["name"]]
      seconds[k] += e["dur"] / 1e6 / args.steps
      ops[k] += 1 / args.steps
      gflop[k] += flops.get(e["name"], 0) / 1e9 / args.steps
      if not flops.get(e["name"]):
        by_source[source.get(e["name"], "?")] += e["dur"] / 1e6 / args.steps
        source_ops[source.get(e["name"], "?")] += 1 / args.steps
  print(f"CPU: {cpu_model()}, {len(os.sched_getaffinity(0))} usable cores; jax {jax.__version__}; "
        f"XLA_FLAGS={os.environ['XLA_FLAGS']!r}")
  print(f"e5-small train step, {args.steps} profiled steps: {wall / 1e6 / args.steps:.2f} s a step "
        f"(the executor's wait); per step, by kind of op (seconds overlap, see the docstring):")
  print(f"  {'kind':42s} {'ops':>6s} {'s':>7s} {'GFLOP':>7s} {'GFLOP/s':>8s}")
  for k, s in seconds.most_common():
    rate = f"{gflop[k] / s:8.0f}" if gflop[k] else f"{'':8s}"
    print(f"  {k:42s} {ops[k]:6.0f} {s:7.2f} {gflop[k]:7.1f} {rate}")
  print(f"outside matmuls, the {args.top} jax operations with the most op time (jvp: forward, "
        f"transpose(jvp): backward, neither: the optimizer and norms; # = any number):")
  for k, s in by_source.most_common(args.top):
    print(f"  {s:6.3f} s {source_ops[k]:5.0f} ops  {k[:100]}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
