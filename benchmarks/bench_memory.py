r"""Peak host memory of one e5-small training step: the peer's, our bare step's, our trainer's.

Each side runs in a fresh process, one after the other, and its peak resident memory (Linux
wait4's ru_maxrss) is read when it exits:
  peer     a sentence-transformers step (MultipleNegativesRankingLoss at scale 20, torch AdamW,
           clip 1.0; eager) on our e5-small weights exported with `hybrid_ir.export`, batch
           `--batch` of `--q_len` + `--p_len` tokens, `--steps` steps. The export is written by
           its own process first, so the peer's process holds torch and the model only.
  bare     our jitted update step alone (`train_step.make_train_step`, as bench_peer times it) on the
           same shapes, `--steps` steps.
  trainer  `python -m hybrid_ir.train` on XQuAD-R (configs/experiments/base.py, e5-small, batch
           `--batch`, `--steps` steps, a checkpoint at the first step and the last) with the
           model's buckets set to (q_len, p_len), so no batch is longer than the peer's. Its log's
           'memory <phase>' lines (hybrid_ir.hardware.log_memory) give the breakdown: RSS after
           each phase and the peak within it.
Then the ratios to the peer. `jax.devices()[0].memory_stats()` is printed where the backend
reports it (not on CPU).

  PYTHONPATH=. python benchmarks/bench_memory.py                    # ~6 min on 2 cores
  PYTHONPATH=. python benchmarks/bench_memory.py --repo /tmp/old    # another checkout's trainer
  PYTHONPATH=. python benchmarks/bench_memory.py --trainer_flag=--config.checkpoint.async_save=False
  PYTHONPATH=. python benchmarks/bench_memory.py --suite          # make test's workers, ~20 min

`--suite` instead runs `make test`'s pytest command with HYBRID_IR_TEST_MEMORY set (tests/
conftest.py then records each module's peak RSS per worker) and prints each worker's peak and
the modules with the largest peaks.

`--repo` runs the bare step and the trainer from another checkout (e.g. `git worktree add
/tmp/old <commit>`), for a before/after in one run; the peer always runs from this one.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
# The checkout whose code a child imports: this one, or --repo's (set by the parent).
sys.path.insert(0, os.environ.get("BENCH_MEMORY_REPO", str(REPO)))
from hybrid_ir.hardware import cpu_model  # noqa: E402

GIB = 2**30


def peak_rss() -> float:
  """This process's peak RSS so far, GiB (Linux VmHWM)."""
  for line in open("/proc/self/status"):
    if line.startswith("VmHWM:"):
      return int(line.split()[1]) / 2**20
  return float("nan")


def run_child(args: list[str], cwd: pathlib.Path, env: dict | None = None,
              log: pathlib.Path | None = None) -> tuple[float, str]:
  """Runs a command to its end; (its peak RSS in GiB, its output). Raises on failure."""
  proc = subprocess.Popen(args, cwd=cwd, env=env or os.environ.copy(), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  out = proc.stdout.read()
  _, status, usage = os.wait4(proc.pid, 0)
  proc.returncode = os.waitstatus_to_exitcode(status)
  if proc.returncode:
    raise RuntimeError(f"{' '.join(args)} exited {proc.returncode}:\n{out[-4000:]}")
  if log is not None:
    log.write_text(out)
  return usage.ru_maxrss / 2**20, out  # ru_maxrss is in KiB on Linux


# ------------------------------------------------------------------------------------------------
# Children: each runs in its own process.
# ------------------------------------------------------------------------------------------------

def child_export(out_dir: str) -> None:
  from configs import common
  from hybrid_ir import export, models
  encoder = models.load_encoder(common.model("e5-small"))
  export.export_encoder(encoder, encoder.params, out_dir, provenance="bench_memory")


def child_peer(model_dir: str, batch: int, q_len: int, p_len: int, steps: int) -> None:
  import numpy as np
  import torch
  import transformers
  from sentence_transformers import SentenceTransformer, util
  try:
    from sentence_transformers.sentence_transformer import losses
  except ImportError:  # sentence-transformers < 6
    from sentence_transformers import losses
  transformers.logging.set_verbosity_error()
  torch.set_num_threads(os.cpu_count())
  model = SentenceTransformer(model_dir, device="cpu")
  for m in model.modules():  # our encoder has no dropout
    if isinstance(m, torch.nn.Dropout):
      m.p = 0.0
  model.train()
  params = [p for p in model.parameters() if p.requires_grad]
  opt = torch.optim.AdamW([{"params": [p for p in params if p.ndim >= 2], "weight_decay": 0.01},
                           {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}],
                          lr=3e-5)
  rng = np.random.default_rng(0)
  vocab = model.tokenizer.vocab_size
  features = [{"input_ids": torch.from_numpy(rng.integers(5, vocab, (batch, n))),
               "attention_mask": torch.ones(batch, n, dtype=torch.int64)} for n in (q_len, p_len)]
  loss_fn = losses.MultipleNegativesRankingLoss(model, scale=20.0, similarity_fct=util.cos_sim)
  for _ in range(steps):
    loss = loss_fn(features, None)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
  print(json.dumps({"loss": float(loss), "peak_gib": peak_rss()}))


def child_bare(batch: int, q_len: int, p_len: int, steps: int) -> None:
  import jax
  import numpy as np
  from benchmarks import bench_train
  from configs import common
  import ml_collections
  from hybrid_ir import models, sharding, train_step
  config = ml_collections.ConfigDict(dict(
      total_steps=1000, grad_cache_chunks=0, model=common.model("e5-small"),
      optimizer=dict(lr=3e-5, weight_decay=0.01, warmup_steps=0, decay="constant", grad_clip=1.0),
      loss=common.loss()))
  encoder = models.load_encoder(config.model)
  mesh = sharding.make_mesh({"data": -1})
  ids = lambda kind, n: [x[:n] for x in encoder.tokenizer.encode_ids(  # noqa: E731
      bench_train.texts(batch, 3 * n // 4, seed=n), kind)]
  global_batch = sharding.host_local_to_global(
      {"query": encoder.tokenizer.pad(ids("query", q_len), q_len),
       "passage": encoder.tokenizer.pad(ids("passage", p_len), p_len),
       "identity": np.arange(batch, dtype=np.int32)}, mesh)
  step = train_step.make_train_step(encoder, config, mesh)
  state = step.init(encoder.params)
  encoder.params = None  # as the trainer: the state holds the weights
  update = step.update.lower(state, global_batch).compile()
  temp = update.memory_analysis().temp_size_in_bytes / GIB  # XLA's scratch buffers for a step
  for _ in range(steps):
    state, m = update(state, global_batch)
  loss = float(jax.device_get(m["loss"]))
  print(json.dumps({"loss": loss, "peak_gib": peak_rss(), "xla_temp_gib": temp,
                    "device": jax.local_devices()[0].memory_stats()}))


# ------------------------------------------------------------------------------------------------
# The parent: runs each side, prints the table.
# ------------------------------------------------------------------------------------------------

PHASE = re.compile(r"memory (?P<phase>.+?): (?P<values>(?:\w+ [\d.]+ GiB ?)+)$")


def trainer_phases(log_text: str) -> list[tuple[str, dict[str, float]]]:
  """The 'memory <phase>: peak X GiB rss Y GiB' lines of a trainer's log, in order."""
  out = []
  for line in log_text.splitlines():
    m = PHASE.search(line)
    if m:
      vals = re.findall(r"(\w+) ([\d.]+) GiB", m["values"])
      out.append((m["phase"], {k: float(v) for k, v in vals}))
  return out


def suite(log: str | None) -> None:
  """make test's pytest run, with each module's peak RSS per worker recorded."""
  with tempfile.TemporaryDirectory(prefix="bench_memory_suite_") as tmp:
    record = pathlib.Path(tmp) / "modules.jsonl"
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "not slow", "-n", "2", "--dist", "loadfile",
           "-rf"]
    t = time.time()
    proc = subprocess.run(cmd, cwd=REPO, env=dict(os.environ, HYBRID_IR_TEST_MEMORY=str(record)),
                          capture_output=True, text=True)
    minutes = (time.time() - t) / 60
    rows = [json.loads(l) for l in record.read_text().splitlines()] if record.exists() else []
  tail = [l for l in proc.stdout.splitlines() if " passed" in l or " failed" in l][-1:]
  lines = ["# PYTHONPATH=. python benchmarks/bench_memory.py --suite",
           f"CPU: {cpu_model()}, {os.cpu_count()} cores; {time.strftime('%Y-%m-%d %H:%M')}",
           f"{' '.join(cmd[1:])}: {tail[0] if tail else 'rc ' + str(proc.returncode)} in "
           f"{minutes:.1f} min", "", "| worker | modules | peak RSS (GiB) | RSS at its end (GiB) |",
           "|---|---|---|---|"]
  for w in sorted({r["worker"] for r in rows}):
    mine = [r for r in rows if r["worker"] == w]
    lines.append(f"| {w} | {len(mine)} | {max(r['peak'] for r in mine):.2f} | "
                 f"{mine[-1]['rss']:.2f} |")
  lines += [l for l in proc.stdout.splitlines() if l.startswith("FAILED")]
  lines += ["", "| largest module peaks | worker | peak RSS (GiB) |", "|---|---|---|"]
  for r in sorted(rows, key=lambda r: -r["peak"])[:8]:
    lines.append(f"| {r['module']} | {r['worker']} | {r['peak']:.2f} |")
  text = "\n".join(lines)
  print(text)
  if log:
    with open(log, "a") as f:
      f.write(text + "\n\n")


def main(argv=None) -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--child", choices=("export", "peer", "bare"), help=argparse.SUPPRESS)
  ap.add_argument("--model_dir", help=argparse.SUPPRESS)
  ap.add_argument("--batch", type=int, default=32)
  ap.add_argument("--q_len", type=int, default=32)
  ap.add_argument("--p_len", type=int, default=64)
  ap.add_argument("--steps", type=int, default=4)
  ap.add_argument("--repo", default=str(REPO), help="checkout whose bare step and trainer run")
  ap.add_argument("--trainer_flag", action="append", default=[],
                  help="extra flag for the trainer (repeatable), e.g. --config.x=y")
  ap.add_argument("--sides", default="peer,bare,trainer")
  ap.add_argument("--log", default=None, help="append the report to this file")
  ap.add_argument("--suite", action="store_true", help="measure make test's workers instead")
  a = ap.parse_args(argv)
  if a.suite:
    return suite(a.log)
  if a.child == "export":
    return child_export(a.model_dir)
  if a.child == "peer":
    return child_peer(a.model_dir, a.batch, a.q_len, a.p_len, a.steps)
  if a.child == "bare":
    return child_bare(a.batch, a.q_len, a.p_len, a.steps)

  repo = pathlib.Path(a.repo).resolve()
  sides = a.sides.split(",")
  env = dict(os.environ, PYTHONPATH=str(repo), BENCH_MEMORY_REPO=str(repo), TF_CPP_MIN_LOG_LEVEL="3")
  me = [sys.executable, str(pathlib.Path(__file__).resolve())]
  shape = ["--batch", str(a.batch), "--q_len", str(a.q_len), "--p_len", str(a.p_len),
           "--steps", str(a.steps)]
  lines = [f"# PYTHONPATH=. python benchmarks/bench_memory.py {' '.join(sys.argv[1:])}".rstrip(),
           f"CPU: {cpu_model()}, {os.cpu_count()} cores; {time.strftime('%Y-%m-%d %H:%M')}",
           f"e5-small, batch {a.batch}: {a.q_len} + {a.p_len} tokens, {a.steps} steps; "
           f"bare step and trainer from {repo}"]
  peaks = {}
  with tempfile.TemporaryDirectory(prefix="bench_memory_") as tmp:
    tmp = pathlib.Path(tmp)
    if "peer" in sides:
      model_dir = tmp / "exported"
      run_child([*me, "--child", "export", "--model_dir", str(model_dir)], REPO,
                dict(os.environ, PYTHONPATH=str(REPO)))
      peaks["peer (sentence-transformers step)"], out = run_child(
          [*me, "--child", "peer", "--model_dir", str(model_dir), *shape], REPO,
          dict(os.environ, PYTHONPATH=str(REPO)))
    if "bare" in sides:
      peaks["bare (our jitted step alone)"], out = run_child(
          [*me, "--child", "bare", *shape], repo, env)
      bare = json.loads(out.strip().splitlines()[-1])
      lines.append(f"bare step: XLA temp {bare['xla_temp_gib']:.3f} GiB, loss {bare['loss']:.6f}")
      stats = bare.get("device")
      if stats:
        lines.append(f"bare step, jax.devices()[0].memory_stats(): {stats}")
    phases = []
    if "trainer" in sides:
      workdir = tmp / "trainer"
      cmd = [sys.executable, "-m", "hybrid_ir.train", "--config",
             f"configs/experiments/base.py:model=e5-small,steps={a.steps},batch={a.batch}",
             f"--config.model.buckets=({a.q_len},{a.p_len})", f"--workdir={workdir}",
             f"--config.checkpoint.every={a.steps}", *a.trainer_flag]
      lines.append("trainer: " + " ".join(cmd[1:]).replace(str(workdir), "W"))
      peaks["trainer (python -m hybrid_ir.train)"], _ = run_child(
          cmd, repo, dict(env, HYBRID_IR_STORES=str(tmp / "stores")))
      info = workdir / "train.INFO"
      phases = trainer_phases(info.read_text()) if info.exists() else []
      # log_memory restarts the kernel's peak per phase, which ru_maxrss reads too: the
      # process's peak is the largest phase peak.
      name = "trainer (python -m hybrid_ir.train)"
      peaks[name] = max([peaks[name], *(v.get("peak", 0.0) for _, v in phases)])

  peer = peaks.get("peer (sentence-transformers step)")
  lines += ["", "| process | peak RSS (GiB) | x peer |", "|---|---|---|"]
  for name, gib in peaks.items():
    lines.append(f"| {name} | {gib:.2f} | {gib / peer:.2f} |" if peer else f"| {name} | {gib:.2f} | |")
  if phases:
    lines += ["", "| trainer phase | RSS after (GiB) | peak within (GiB) |", "|---|---|---|"]
    lines += [f"| {p} | {v.get('rss', float('nan')):.2f} | {v.get('peak', float('nan')):.2f} |"
              for p, v in phases]
  text = "\n".join(lines)
  print(text)
  if a.log:
    with open(a.log, "a") as f:
      f.write(text + "\n\n")


if __name__ == "__main__":
  main()
