"""A real multi-process run: two processes on this machine (jax.distributed with a coordinator on
127.0.0.1, 4 fake CPU devices each) train a tiny model with checkpoints and are SIGKILLed; the run
is resumed as ONE process with 8 devices. Every step's loss matches an uninterrupted one-process
run to 1e-4 (the two processes sum gradients across processes in another order than one process
does, and float32 drift after 12 AdamW steps reached 4.5e-5 on CI), and every step's global batch holds the same examples (its fingerprint, logged per
step, equals the one-process run's and the sampler's own)."""
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from hybrid_ir import checkpoint, config_flags, input_pipeline, sampler, train

REPO = pathlib.Path(__file__).resolve().parents[2]
CONFIG = REPO / "tests" / "configs_test_train.py"
STEPS = 12
OVERRIDES = {"total_steps": STEPS, "log_every": 1, "checkpoint.every": 3, "checkpoint.keep": 10}


def get_config():
  return config_flags.load_config_file(str(CONFIG), OVERRIDES)


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def metrics(workdir):
  rows = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  return {r["step"]: r for r in rows}


def two_processes(workdir, overrides):
  """Two `hybrid_ir.train` processes of one run, 4 fake CPU devices each."""
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
             JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
  flags = [f"--config={CONFIG}", f"--workdir={workdir}",
           f"--coordinator_address=127.0.0.1:{free_port()}", "--num_processes=2",
           *[f"--config.{k}={v}" for k, v in overrides.items()]]
  return [subprocess.Popen([sys.executable, "-m", "hybrid_ir.train", *flags, f"--process_id={i}"],
                           cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True) for i in range(2)]


def test_two_processes_killed_then_resumed_as_one(tmp_path):
  multi = tmp_path / "multi"
  procs = two_processes(multi, OVERRIDES)
  try:
    deadline = time.time() + 300
    while (checkpoint.latest_finished_step(multi) or 0) < 6:
      if any(p.poll() is not None for p in procs):
        out = "\n".join(p.stdout.read()[-3000:] for p in procs)
        pytest.fail(f"a process exited early: {[p.returncode for p in procs]}\n{out}")
      if time.time() > deadline:
        pytest.fail("no checkpoint >= 6 from the two processes")
      time.sleep(0.2)
  finally:
    for p in procs:
      p.send_signal(signal.SIGKILL)
      p.wait()
  cut = checkpoint.latest_finished_step(multi)
  assert 6 <= cut < STEPS, "the run must be cut short for this test to mean anything"
  seen = metrics(multi)
  assert seen and min(seen) == 1  # the two-process run logged its steps

  # Resume with one process and all 8 devices (this test process has 8 fake CPU devices).
  train.train(get_config(), multi)
  train.train(get_config(), tmp_path / "single")
  resumed, single = metrics(multi), metrics(tmp_path / "single")
  assert sorted(resumed) == sorted(single) == list(range(1, STEPS + 1))  # no step twice
  for step in range(1, STEPS + 1):
    np.testing.assert_allclose(resumed[step]["train/loss"], single[step]["train/loss"],
                               rtol=1e-4, atol=1e-4, err_msg=f"step {step}")
    assert resumed[step]["train/batch_fingerprint"] == single[step]["train/batch_fingerprint"]
  # And those are the sampler's own batches, recomputed here without any training.
  sources = input_pipeline.open_sources(get_config().input)
  s = sampler.Sampler(sources, get_config().input)
  for step in range(1, STEPS + 1):
    assert sampler.batch_fingerprint(s.next_batch()) == single[step]["train/batch_fingerprint"]


@pytest.mark.parametrize("chunks", [0, 2])  # 2: GradCache, each chunk packed on its own
def test_two_processes_packing_their_own_texts_train_as_one_padded_process(tmp_path, chunks):
  # Each host packs its half of the batch to its own row count; they agree on the largest, and
  # every text keeps its global place (in-batch negatives, false-negative masks): the losses
  # are those of one process training the same batches padded.
  steps = 4
  procs = two_processes(tmp_path / "packed", {**OVERRIDES, "total_steps": steps,
                                              "input.packing": True, "grad_cache_chunks": chunks})
  outs = [p.communicate(timeout=300)[0] for p in procs]
  assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-3000:] for o in outs)
  train.train(config_flags.load_config_file(str(CONFIG), {**OVERRIDES, "total_steps": steps}),
              tmp_path / "padded")
  packed, padded = metrics(tmp_path / "packed"), metrics(tmp_path / "padded")
  assert sorted(packed) == sorted(padded) == list(range(1, steps + 1))
  for step in packed:
    np.testing.assert_allclose(packed[step]["train/loss"], padded[step]["train/loss"],
                               rtol=1e-4, atol=1e-4, err_msg=f"step {step}")
    assert packed[step]["train/batch_fingerprint"] == padded[step]["train/batch_fingerprint"]
    assert packed[step]["train/real_token_share"] > padded[step]["train/real_token_share"]
