"""Fault injection (issue #14): each fault a long run meets, reproduced with the tiny test config
(tests/configs_test_train.py), and the behaviour the binaries promise instead.

   1  a checkpoint vanishes (keep-N) or is unreadable while the evaluator reads it -> skipped,
      said so, counted in the summary (7: the count)
   2  a damaged latest checkpoint (a data file deleted, truncated or bit-flipped; the params'
      manifest.ocdbt missing) -> train and `eval --once` fall back to the newest good step,
      naming the bad one in a short message, no traceback; train moves it aside
   3  resume does not repeat metrics.jsonl rows
   4  SIGTERM -> exit 0 soon after a checkpoint announced only once final
   5  the evaluator ends on the trainer's finished.json or saved total_steps, not its own config;
      Ctrl-C stops it with its summary, no traceback
   6  a read-only workdir: eval fails before evaluating, naming the path
   8  a config changed on resume is refused with the differences, unless allowed
   9  a file as --workdir: a clear error
  10  NaN, or parameters blowing up: an error naming the first bad step; no checkpoint holds it
  11  no test asserts wall-clock time
  12  two trainers on one workdir: the second refuses, naming the first; the evaluator reads on
  13  SIGTERM during an in-training evaluation: abandoned, the step saved, the truth said
  14  a torn last line of metrics.jsonl is cut on resume; damage before it is named file:line
  15  a full disk (a small tmpfs): named at the failing save, with the last good checkpoint
  16  --allow_config_change on a data-state key: refused before anything is touched
  17  SIGTERM to an experiment grid: passed on to its trainer once, which saves; the grid exits
      saying where training stopped, with no summary
Store faults (a folder in the way, damaged stores, the same data elsewhere) are in
tests/integration/test_faults_store.py.

One trained run (15 steps, checkpoints 1, 5, 10, 15) serves the tests, each on its own copy.
"""
import ast
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from hybrid_ir import checkpoint, config_flags, run_dir, sharding, train, train_step
from hybrid_ir import evaluation as eval_lib

REPO = pathlib.Path(__file__).resolve().parents[2]
CONFIG = REPO / "tests" / "integration" / "configs_test_faults.py"
TOTAL = 15
STEPS = [1, 5, 10, TOTAL]  # checkpoints: every 5, and Orbax saves the first step
ENV = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu",
           TF_CPP_MIN_LOG_LEVEL="3")


def get_config(**overrides):
  return config_flags.load_config_file(str(CONFIG), overrides)


def binary(module, workdir, *flags, timeout=600):
  """`python -m hybrid_ir.<module> --config tests/integration/configs_test_faults.py
  --workdir W ...`."""
  return subprocess.run([sys.executable, "-m", f"hybrid_ir.{module}", f"--config={CONFIG}",
                         f"--workdir={workdir}", *flags], cwd=REPO, env=ENV, capture_output=True,
                        text=True, timeout=timeout)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("trained")
  train.train(get_config(), workdir)
  assert checkpoint.finished_steps(workdir) == STEPS
  return workdir


@pytest.fixture()
def run(trained, tmp_path):
  """A copy of the trained run, for a test to damage."""
  return pathlib.Path(shutil.copytree(trained, tmp_path / "run"))


@pytest.fixture(scope="module")
def evaluation():
  """(config, encoder, evaluators) for in-process evaluation, built once."""
  from hybrid_ir import models
  config = get_config()
  encoder = models.load_encoder(config.model)
  return config, encoder, eval_lib.make_evaluators(config, encoder)


# ------------------------------------------------------------------------------------------------
# Damage, as it happens to files on disk.
# ------------------------------------------------------------------------------------------------

def largest_file(step_dir: pathlib.Path) -> pathlib.Path:
  """The params' biggest data file (the embedding table's chunk)."""
  return max((p for p in (step_dir / "params").rglob("*") if p.is_file()),
             key=lambda p: p.stat().st_size)


def delete_file(step_dir):
  largest_file(step_dir).unlink()


def truncate_file(step_dir):
  f = largest_file(step_dir)
  os.truncate(f, f.stat().st_size // 2)


def flip_bit(step_dir):
  f = largest_file(step_dir)
  data = bytearray(f.read_bytes())
  data[len(data) // 2] ^= 0x10
  f.write_bytes(bytes(data))


def delete_manifest(step_dir):
  (step_dir / "params" / "manifest.ocdbt").unlink()


DAMAGE = {"deleted_file": delete_file, "truncated_file": truncate_file, "bit_flip": flip_bit,
          "missing_manifest": delete_manifest}


def out_dir(tmp_path) -> pathlib.Path:
  """Where poll writes results (eval.run makes it; poll takes it made)."""
  (tmp_path / "eval").mkdir(exist_ok=True)
  return tmp_path / "eval"


def step_dir(workdir, step) -> pathlib.Path:
  return pathlib.Path(checkpoint.checkpoint_dir(workdir)) / str(step)


def start_trainer(workdir, config=CONFIG, *flags):
  """The train binary in the background: 1000 steps with only the first checkpointed (Orbax
  saves the first step), unless `flags` say otherwise; its output in proc.stdout."""
  flags = flags or ("--config.total_steps=1000", "--config.checkpoint.every=1000")
  return subprocess.Popen(
      [sys.executable, "-m", "hybrid_ir.train", f"--config={config}", f"--workdir={workdir}",
       *flags], cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def sigterm_when(proc, condition, what) -> tuple[str, float]:
  """Waits for `condition`, sends the trainer SIGTERM a second later; (its output, the seconds
  from the signal to its exit)."""
  try:
    wait_for(condition, proc, what)
    time.sleep(1)
    t = time.time()
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=300)
    return out, time.time() - t
  finally:
    proc.kill()


def wait_for(condition, proc, what, timeout=300):
  t = time.time()
  while not condition():
    if proc.poll() is not None:
      pytest.fail(f"exited (rc {proc.returncode}) before {what}:\n{proc.communicate()[0]}")
    if time.time() - t > timeout:
      pytest.fail(f"no {what} after {timeout} s")
    time.sleep(0.2)


def assert_short_error(text: str, must_name: str):
  """A fault's message: named, a paragraph at most, and no traceback around it."""
  assert "Traceback" not in text, text[-3000:]
  lines = [l for l in text.splitlines() if must_name in l]
  assert lines, f"nothing names {must_name!r}:\n{text[-3000:]}"
  assert all(len(l) < 800 for l in lines), lines


# ------------------------------------------------------------------------------------------------
# 1, 7: the evaluator and checkpoints that vanish or are damaged while it reads them.
# ------------------------------------------------------------------------------------------------

def test_evaluator_skips_and_counts_checkpoints_that_vanish_or_are_unreadable(
    run, evaluation, tmp_path, monkeypatch, capsys):
  config, encoder, built = evaluation
  truncate_file(step_dir(run, 10))
  original = ocp.CheckpointManager.restore

  def restore_while_keep_n_deletes_5(self, step, *args, **kwargs):
    # Step 5's integrity record has been read; keep-N now deletes the step under the reader.
    composite = kwargs.get("args") or (args[0] if args else None)
    if step == 5 and composite is not None and "params" in composite:
      shutil.rmtree(step_dir(run, 5))
    return original(self, step, *args, **kwargs)

  monkeypatch.setattr(ocp.CheckpointManager, "restore", restore_while_keep_n_deletes_5)
  done = eval_lib.poll(config, encoder, run, once=False, poll_seconds=0.1,
                       max_idle_seconds=300, out_dir=out_dir(tmp_path), built=built)
  assert list(done) == ["step_1", "step_15"]
  assert sorted(done.skipped) == [5, 10]
  assert "deleted while it was being read" in done.skipped[5]
  assert "damaged" in done.skipped[10]
  out = capsys.readouterr()
  assert "skipped 2 checkpoint(s)" in out.out, out.out
  assert "finished.json" in done.stopped_by  # polling ended on the trainer's marker


# ------------------------------------------------------------------------------------------------
# 2: a damaged latest checkpoint.
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_latest_falls_back_to_the_previous_good_step(run, evaluation, tmp_path, damage):
  config, encoder, built = evaluation
  DAMAGE[damage](step_dir(run, TOTAL))
  # The trainer's restore: its full state, as train.py builds the target.
  mesh = sharding.make_mesh(config.mesh)
  state = train_step.make_train_step(encoder, config, mesh).init(encoder.params)
  manager = checkpoint.make_manager(run, read_only=True, async_save=False)
  passed_over = []
  restored = checkpoint.restore_latest(manager, checkpoint.abstract(state),
                                       on_bad=lambda s, why: passed_over.append((s, why)))
  manager.close()
  assert restored.step == 10 and list(restored.bad) == [TOTAL]
  assert int(restored.state["step"]) == 10
  [(step, why)] = passed_over
  assert step == TOTAL and f"checkpoints/{TOTAL}" in why and len(why) < 800, why
  assert "another model" not in why and "fresh --workdir" not in why  # the good ones are kept
  # eval --once: the newest good one, naming the damaged one.
  done = eval_lib.poll(config, encoder, run, once=True, out_dir=out_dir(tmp_path), built=built)
  assert list(done) == ["step_10"] and list(done.skipped) == [TOTAL]
  assert (tmp_path / "eval" / "step_10.json").is_file()


def test_train_binary_resumes_from_the_good_step_moves_the_damaged_one_aside(run):
  """... and 3: the steps after the restored checkpoint are trained again, each logged once."""
  delete_manifest(step_dir(run, TOTAL))
  (run / run_dir.FINISHED).unlink()  # as after a crash before the marker
  out = binary("train", run)
  assert out.returncode == 0, out.stderr[-3000:]
  assert_short_error(out.stderr, f"checkpoint {TOTAL} is damaged")
  assert f"resumed from step 10 of {TOTAL}" in out.stderr
  assert (run / checkpoint.QUARANTINE / str(TOTAL) / "params").is_dir()  # kept, not deleted
  assert checkpoint.finished_steps(run) == STEPS
  assert run_dir.read_finished(run)["step"] == TOTAL
  steps = [json.loads(l)["step"] for l in (run / "metrics.jsonl").read_text().splitlines()]
  assert steps == list(range(1, TOTAL + 1))


def test_eval_binary_once_names_the_damaged_step_and_evaluates_the_good_one(run):
  flip_bit(step_dir(run, TOTAL))
  out = binary("eval", run, "--once")
  assert out.returncode == 0, out.stderr[-3000:]
  assert_short_error(out.stderr, f"checkpoint {TOTAL} is damaged")
  assert "evaluating checkpoint 10, the newest good one" in out.stderr
  assert "skipped 1 checkpoint(s)" in out.stdout
  assert (run / "eval" / "step_10.json").is_file()


# ------------------------------------------------------------------------------------------------
# 4: SIGTERM (preemption).
# ------------------------------------------------------------------------------------------------

def test_sigterm_exits_zero_soon_after_a_final_checkpoint(tmp_path):
  proc = start_trainer(tmp_path)
  out, seconds = sigterm_when(proc, lambda: checkpoint.latest_finished_step(tmp_path) is not None,
                             "the trainer's first checkpoint")  # Orbax saves the first step
  # The issue asks for <= 10 s on this machine; the time is printed, not asserted (a loaded
  # machine is slower). benchmarks/bench_sigterm.py measures it.
  print(f"SIGTERM -> exit: {seconds:.1f} s")
  assert proc.returncode == 0, out[-3000:]
  step = checkpoint.latest_finished_step(tmp_path)
  assert 1 < step < 1000, out[-3000:]  # written because of the signal
  # Announced once final, for the step that exists; no traceback from the shutdown.
  assert f"SIGTERM at step {step}: checkpoint" in out and "saved; exiting" in out, out[-3000:]
  assert "Traceback" not in out, out[-3000:]
  assert run_dir.read_finished(tmp_path) is None  # not finished: resume continues it


# ------------------------------------------------------------------------------------------------
# 5: when the evaluator stops.
# ------------------------------------------------------------------------------------------------

def test_evaluator_ends_on_the_trainers_marker_or_saved_total_steps(run, evaluation, tmp_path):
  config, encoder, built = evaluation
  own = get_config(total_steps=1000)  # the evaluator's config says 1000 steps; the trainer's 15
  out = out_dir(tmp_path)
  poll = lambda **kw: eval_lib.poll(own, encoder, run, once=False, poll_seconds=0.1,  # noqa: E731
                                    out_dir=out, built=built, **kw)
  done = poll(max_idle_seconds=300)
  assert list(done) == [f"step_{s}" for s in STEPS]
  assert "finished.json" in done.stopped_by
  # No marker (a trainer from before it existed): the newest checkpoint's saved config says it
  # is the last. Results already written are not evaluated again.
  (run / run_dir.FINISHED).unlink()
  done = poll(max_idle_seconds=300)
  assert list(done) == [] and f"total_steps={TOTAL}" in done.stopped_by, done.stopped_by
  # A trainer that died at step 10: polling ends after --max_idle_seconds.
  shutil.rmtree(step_dir(run, TOTAL))
  done = poll(max_idle_seconds=1)
  assert "max_idle_seconds" in done.stopped_by


def test_ctrl_c_stops_the_polling_evaluator_with_its_summary(tmp_path):
  proc = subprocess.Popen(
      [sys.executable, "-m", "hybrid_ir.eval", f"--config={CONFIG}", f"--workdir={tmp_path}",
       "--poll_seconds=0.2"],
      cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    log = tmp_path / "eval" / "eval.INFO"
    wait_for(lambda: log.exists() and "eval: polling" in log.read_text(), proc, "polling")
    time.sleep(1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
  finally:
    proc.kill()
  assert proc.returncode == 130, err[-3000:]  # the shell's code for Ctrl-C
  assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
  assert "Stopped: SIGINT received" in out, out


# ------------------------------------------------------------------------------------------------
# 6: a read-only workdir.
# ------------------------------------------------------------------------------------------------

def read_only(workdir: pathlib.Path) -> list[str] | None:
  """A command prefix under which `workdir` is a read-only mount (a private mount namespace: the
  machine's mounts are untouched), or None where that cannot be made. chmod cannot stand in: root
  (CI) writes through it."""
  if shutil.which("unshare") is None:
    return None
  script = f'mount --bind -o ro "{workdir}" "{workdir}" && exec "$0" "$@"'
  probe = subprocess.run(["unshare", "-rm", "sh", "-c", script, "touch", str(workdir / "x")],
                         capture_output=True, text=True)
  if "Read-only file system" not in probe.stderr:
    return None
  return ["unshare", "-rm", "sh", "-c", script]


def test_eval_on_a_read_only_workdir_fails_before_evaluating(run):
  prefix = read_only(run)
  if prefix is None:
    pytest.skip("cannot make a read-only mount here (needs unshare -rm)")
  t = time.time()
  out = subprocess.run(
      [*prefix, sys.executable, "-m", "hybrid_ir.eval", f"--config={CONFIG}",
       f"--workdir={run}", "--once"], cwd=REPO, env=ENV, capture_output=True, text=True,
      timeout=600)
  print(f"read-only refusal after {time.time() - t:.1f} s")
  assert out.returncode == 1, out.stderr[-3000:]
  assert_short_error(out.stderr, "hybrid_ir.eval: error:")
  assert f"{run}/eval" in out.stderr and "Read-only file system" in out.stderr, out.stderr[-2000:]
  assert "###" not in out.stdout, out.stdout  # no table: nothing was evaluated
  assert not (run / "eval").exists()


# ------------------------------------------------------------------------------------------------
# 8, 9: the config and the workdir given on resume.
# ------------------------------------------------------------------------------------------------

def test_a_changed_config_on_resume_is_refused_with_the_differences(run):
  with pytest.raises(checkpoint.ConfigChangedError) as e:
    train.train(get_config(**{"optimizer.lr": 1e-2, "total_steps": 17}), run)
  message = str(e.value)
  assert f"checkpoint {TOTAL}" in message
  assert "optimizer.lr: 0.003 (checkpoint) -> 0.01 (now)" in message, message
  assert "total_steps: 15 (checkpoint) -> 17 (now)" in message, message
  assert "--allow_config_change=optimizer.lr,total_steps" in message
  assert checkpoint.finished_steps(run) == STEPS  # nothing trained
  # Allowed by name: it resumes and trains the 2 extra steps.
  train.train(get_config(total_steps=17), run, allow_config_change=("total_steps",))
  assert checkpoint.finished_steps(run)[-1] == 17
  assert checkpoint.saved_config(run, 17)["total_steps"] == 17


def test_changed_config_refused_by_the_binary_in_a_paragraph(run):
  out = binary("train", run, "--config.optimizer.lr=0.01")
  assert out.returncode == 1
  assert_short_error(out.stderr, "hybrid_ir.train: error: the config differs")
  assert "optimizer.lr: 0.003 (checkpoint) -> 0.01 (now)" in out.stderr


def test_a_file_as_workdir_is_a_clear_error(tmp_path, evaluation):
  config, _, _ = evaluation
  f = tmp_path / "run.txt"
  f.write_text("not a directory")
  for call in (lambda: train.train(config, f), lambda: eval_lib.run(config, f, once=True)):
    with pytest.raises(run_dir.WorkdirError, match=rf"--workdir={f} is a file, not a directory"):
      call()
  with pytest.raises(run_dir.WorkdirError, match=r"cannot create"):
    train.train(config, f / "sub")  # under a file


# ------------------------------------------------------------------------------------------------
# 10: NaN, and parameters blowing up before any NaN.
# ------------------------------------------------------------------------------------------------

def param_norms(workdir) -> dict[int, float]:
  out = {}
  for step in checkpoint.finished_steps(workdir):
    mngr = checkpoint.make_manager(workdir, read_only=True, async_save=False)
    meta = mngr.item_metadata(step)["params"]
    mngr.close()
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), meta)
    out[step] = train_step.params_norm(checkpoint.restore_params(workdir, step, target))
  return out


def test_nan_names_the_first_bad_step_and_no_checkpoint_follows_it(tmp_path, monkeypatch):
  """A NaN injected into the loss and gradients of step 7 alone (between checkpoints 6 and 8,
  not a log step): the trainer names step 7, and checkpoints stop at 6."""
  real_loss_and_grads, real_to_device = train_step.make_loss_and_grads, train_step.to_device_batch
  calls = []

  def to_device_batch(batch, mesh):
    calls.append(1)
    return dict(real_to_device(batch, mesh), poison=jnp.float32(np.nan if len(calls) == 7 else 1))

  def make_loss_and_grads(encoder, config):
    f = real_loss_and_grads(encoder, config)

    def poisoned(trainable, batch):
      (loss, m), grads = f(trainable, {k: v for k, v in batch.items() if k != "poison"})
      return (loss * batch["poison"], m), jax.tree.map(lambda g: g * batch["poison"], grads)
    return poisoned

  monkeypatch.setattr(train_step, "to_device_batch", to_device_batch)
  monkeypatch.setattr(train_step, "make_loss_and_grads", make_loss_and_grads)
  with pytest.raises(FloatingPointError, match=r"^step 7: non-finite training values") as e:
    train.train(get_config(total_steps=12, log_every=5, **{"checkpoint.every": 2}), tmp_path)
  assert "the last good checkpoint is 6" in str(e.value)
  assert checkpoint.finished_steps(tmp_path) == [1, 2, 4, 6]
  assert all(np.isfinite(n) for n in param_norms(tmp_path).values())


def test_parameters_blowing_up_are_caught_before_a_nan(tmp_path):
  """A learning rate of 1e3 (no monkeypatch): the parameters grow past 100x their initial norm
  while every value is still finite, which the finite check alone would have saved."""
  config = get_config(total_steps=6, log_every=3, **{"optimizer.lr": 1e3, "checkpoint.every": 1})
  with pytest.raises(FloatingPointError, match=r"^step \d+: the parameter norm is") as e:
    train.train(config, tmp_path)
  bad = int(str(e.value).split()[1].rstrip(":"))
  from hybrid_ir import models
  limit = 100 * train_step.params_norm(models.load_encoder(config.model).params)
  norms = param_norms(tmp_path)
  assert sorted(norms) == list(range(1, bad)), (norms, bad)
  assert all(n <= limit for n in norms.values()), (norms, limit)


# ------------------------------------------------------------------------------------------------
# 11: tests and wall-clock time.
# ------------------------------------------------------------------------------------------------

CLOCKS = {"time", "perf_counter", "monotonic"}


def _reads_clock(node: ast.AST, timed: set[str]) -> bool:
  for n in ast.walk(node):
    if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr in CLOCKS:
      return True
    if isinstance(n, ast.Name) and n.id in timed:
      return True
  return False


def test_no_test_asserts_wall_clock_time():
  """An assert on a value computed from the clock fails on a loaded machine (the timing tests
  print their numbers; benchmarks/ measure)."""
  found = []
  for path in sorted((REPO / "tests").rglob("test_*.py")):  # unit and integration
    tree = ast.parse(path.read_text())
    for fn in ast.walk(tree):
      if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
        continue
      timed = {t.id for n in ast.walk(fn) if isinstance(n, ast.Assign)
               and _reads_clock(n.value, set()) for t in n.targets if isinstance(t, ast.Name)}
      for n in ast.walk(fn):
        if isinstance(n, ast.Assert) and _reads_clock(n.test, timed):
          found.append(f"{path.relative_to(REPO)}:{n.lineno}")
  assert not found, found


# ------------------------------------------------------------------------------------------------
# 12: two trainers on one workdir.
# ------------------------------------------------------------------------------------------------

def metric_steps(workdir) -> list[int]:
  return [json.loads(l)["step"] for l in (workdir / "metrics.jsonl").read_text().splitlines()
          if "train/loss" in l]


def test_a_second_trainer_refuses_the_workdir_and_the_first_goes_on(tmp_path):
  first = start_trainer(tmp_path)
  try:
    wait_for(lambda: checkpoint.latest_finished_step(tmp_path) is not None, first,
             "the first trainer's first checkpoint")
    lease = json.loads((tmp_path / run_dir.LEASE).read_text())
    assert lease["pid"] == first.pid
    second = binary("train", tmp_path)
    assert second.returncode == 1, second.stderr[-3000:]
    assert_short_error(second.stderr, "is in use by another trainer")
    assert f"pid {first.pid}" in second.stderr, second.stderr
    # The evaluator only reads: it runs beside the trainer and leaves the lease alone.
    evaluated = binary("eval", tmp_path, "--once")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert json.loads((tmp_path / run_dir.LEASE).read_text())["token"] == lease["token"]
    assert first.poll() is None  # the first trainer was not disturbed
    first.send_signal(signal.SIGTERM)
    out, _ = first.communicate(timeout=300)
  finally:
    first.kill()
  assert first.returncode == 0, out[-3000:]
  steps = metric_steps(tmp_path)
  assert steps == list(range(1, len(steps) + 1)), steps  # no step twice, none lost
  assert not (tmp_path / run_dir.LEASE).exists()  # released on exit
  assert not list((tmp_path / "checkpoints").glob("*tmp*"))


def test_a_stale_lease_is_taken_over_with_a_message(run, capsys):
  dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                        capture_output=True, text=True, check=True)
  import socket
  (run / run_dir.LEASE).write_text(json.dumps({
      "host": socket.gethostname(), "pid": int(dead.stdout), "started": "earlier",
      "token": "x", "heartbeat": time.time()}))
  train.train(get_config(total_steps=TOTAL + 1), run, allow_config_change=("total_steps",))
  err = capsys.readouterr().err
  assert "took over the stale lease" in err and f"its process {int(dead.stdout)}" in err, err
  assert checkpoint.finished_steps(run)[-1] == TOTAL + 1
  assert not (run / run_dir.LEASE).exists()


# ------------------------------------------------------------------------------------------------
# 13: SIGTERM during an in-training evaluation.
# ------------------------------------------------------------------------------------------------

def test_sigterm_during_an_evaluation_abandons_it_and_saves_that_step(tmp_path):
  # Evaluate at step 7, which is no checkpoint step (every 5): the signal must save it.
  proc = start_trainer(tmp_path, f"{CONFIG}:long_eval", "--config.eval_every=7")
  # A second after step 7's metrics: the evaluation of all MLQA-R languages takes far longer.
  out, seconds = sigterm_when(
      proc, lambda: (tmp_path / "metrics.jsonl").exists() and 7 in metric_steps(tmp_path),
      "step 7's metrics")
  print(f"SIGTERM during an evaluation -> exit: {seconds:.1f} s")
  assert proc.returncode == 0, out[-3000:]
  assert "SIGTERM during the mlqa-r evaluation at step 7: evaluation abandoned" in out, out[-3000:]
  assert "SIGTERM at step 7: checkpoint" in out and "saved; exiting" in out, out[-3000:]
  assert checkpoint.finished_steps(tmp_path) == [1, 5, 7]
  rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert not [r for r in rows if any(k.startswith("mlqa-r/") for k in r)]  # no half result
  assert "Traceback" not in out, out[-3000:]


# ------------------------------------------------------------------------------------------------
# 14: a torn metrics.jsonl.
# ------------------------------------------------------------------------------------------------

def test_a_torn_last_metrics_line_is_cut_on_resume(run, capsys):
  path = run / "metrics.jsonl"
  rows = path.read_text()
  path.write_text(rows + '{"step": 16, "train/lo')  # as a crash or a full disk leaves it
  train.train(get_config(total_steps=TOTAL + 1), run, allow_config_change=("total_steps",))
  err = capsys.readouterr().err
  assert f"{path}:{len(rows.splitlines()) + 1}: cut a torn last line" in err, err
  text = path.read_text()
  assert text.startswith(rows)  # nothing before the torn line was lost
  assert metric_steps(run) == list(range(1, TOTAL + 2))


def test_a_damaged_metrics_line_before_the_last_is_named_and_nothing_is_cut(run):
  path = run / "metrics.jsonl"
  lines = path.read_text().splitlines(keepends=True)
  lines[2] = lines[2][:10] + "\n"
  path.write_text("".join(lines))
  before = path.read_text()
  out = binary("train", run, "--config.total_steps=16", "--allow_config_change=total_steps")
  assert out.returncode == 1
  assert_short_error(out.stderr, f"{path}:3: not a metrics row")
  assert path.read_text() == before
  assert checkpoint.finished_steps(run) == STEPS  # nothing trained


# ------------------------------------------------------------------------------------------------
# 15: a full disk.
# ------------------------------------------------------------------------------------------------

@pytest.fixture()
def small_disk(tmp_path):
  """A 150 MiB tmpfs: room for the log and one checkpoint of the test model (~96 MiB), not two."""
  mount = tmp_path / "disk"
  mount.mkdir()
  done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=150m", "tmpfs", str(mount)],
                        capture_output=True, text=True)
  if done.returncode:
    pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
  try:
    yield mount
  finally:
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_is_named_at_the_failing_save_with_the_last_good_checkpoint(small_disk):
  workdir = small_disk / "run"
  out = binary("train", workdir, "--config.checkpoint.every=1", "--config.checkpoint.keep=10")
  assert out.returncode == 1, out.stderr[-3000:]
  assert_short_error(out.stderr, "disk full: checkpoint")
  failed = int(re.search(r"disk full: checkpoint (\d+) could not be written", out.stderr)[1])
  good = int(re.search(r"The last good checkpoint is (\d+)\.", out.stderr)[1])
  assert checkpoint.finished_steps(workdir)[-1] == good < failed, out.stderr
  assert "Traceback" in pathlib.Path(workdir / "train.INFO").read_text()  # details in the log
  # Once there is room, the same command resumes from it.
  moved = shutil.copytree(workdir, small_disk.parent / "moved")
  done = binary("train", moved, "--config.checkpoint.every=1", "--config.checkpoint.keep=10")
  assert done.returncode == 0, done.stderr[-3000:]
  assert f"resumed from step {good} of {TOTAL}" in done.stderr


# ------------------------------------------------------------------------------------------------
# 16: a data-state key in --allow_config_change.
# ------------------------------------------------------------------------------------------------

def test_allowing_a_data_state_change_is_refused_before_anything_is_touched(run):
  before = sorted((p.relative_to(run), p.stat().st_mtime_ns) for p in run.rglob("*"))
  out = binary("train", run, "--config.input.batch_size=8", "--allow_config_change=input.batch_size")
  assert out.returncode == 1
  assert_short_error(out.stderr, "--allow_config_change=input.batch_size: these keys decide")
  assert run_dir.read_finished(run)["step"] == TOTAL  # the finished run is still finished
  assert sorted((p.relative_to(run), p.stat().st_mtime_ns) for p in run.rglob("*")) == before


# ------------------------------------------------------------------------------------------------
# 17: SIGTERM to an experiment grid while its trainer (a child process) runs.
# ------------------------------------------------------------------------------------------------

def test_sigterm_to_a_grid_reaches_its_trainer_which_saves_and_the_grid_says_so(tmp_path):
  grid = subprocess.Popen(
      [sys.executable, "-m", "hybrid_ir.experiments", "strategies", "--model=use-m3",
       "--size=mini", "--steps=1000", "--batch=8", "--only=xquad-r-hybrid",
       f"--results={tmp_path / 'results'}", f"--workdirs={tmp_path / 'w'}"],
      cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  workdir = tmp_path / "w" / "strategies" / "use-m3_1000_8_mini" / "xquad-r-hybrid"
  out, _ = sigterm_when(grid, lambda: (workdir / "checkpoints").is_dir()
                        and checkpoint.latest_finished_step(workdir) is not None,
                        "the grid's trainer's first checkpoint")
  step = checkpoint.latest_finished_step(workdir)
  assert 1 < step < 1000, out[-3000:]  # the trainer got the signal once, saved, and exited
  assert f"SIGTERM at step {step}: checkpoint" in out, out[-3000:]
  assert grid.returncode == 1 and (f"xquad-r-hybrid: training stopped at step {step} of 1000"
                                   in out), out[-3000:]
  assert "Traceback" not in out, out[-3000:]
  assert not (tmp_path / "results" / "strategies" / "xquad-r-hybrid.json").exists()
