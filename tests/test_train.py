"""train.py end to end on 8 fake CPU devices with a tiny from-scratch BERT (tests/configs_test_train.py).

Proves: loss goes down in 20 steps; exact resume after SIGKILL (bit-identical params); SIGTERM
saves and exits 0; packed batches train as padded ones; misspelt config keys are reported. The
update step's own unit tests are in tests/test_train_step.py.
"""
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from hybrid_ir import checkpoint, config_flags, train, train_step

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIG = REPO / "tests" / "configs_test_train.py"


def get_config(**overrides):
  return config_flags.load_config_file(str(CONFIG), overrides)


def launch(workdir, *flags):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
  return subprocess.Popen(
      [sys.executable, "-m", "hybrid_ir.train", f"--config={CONFIG}", f"--workdir={workdir}",
       *flags], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for_step(workdir, proc, at_least, timeout=120):
  t = time.time()
  while time.time() - t < timeout:
    step = checkpoint.latest_finished_step(workdir)
    if step is not None and step >= at_least:
      return step
    if proc.poll() is not None:
      pytest.fail(f"trainer exited early (rc {proc.returncode}):\n{proc.stdout.read()[-3000:]}")
    time.sleep(0.2)
  proc.kill()
  pytest.fail(f"no checkpoint >= {at_least} after {timeout}s")


def final_params(workdir, step):
  mngr = checkpoint.make_manager(workdir, read_only=True, async_save=False)
  meta = mngr.item_metadata(step)["params"]
  mngr.close()
  abstract = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), meta)
  return jax.device_get(checkpoint.restore_params(workdir, step, abstract))


def test_tiny_config_trains_and_loss_goes_down(tmp_path):
  train.train(get_config(), tmp_path)
  rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in rows] == [5, 10, 15, 20]
  assert rows[-1]["train/loss"] < rows[0]["train/loss"] - 0.2, rows
  for k in ("train/grad_norm", "train/param_norm", "train/update_norm", "train/examples_per_s",
            "train/tokens_per_s"):
    assert np.isfinite(rows[-1][k]) and rows[-1][k] > 0, k
  assert any(k.startswith("train/loss_mono") for r in rows for k in r)
  assert any(k.startswith("train/loss_cross") for r in rows for k in r)
  assert checkpoint.latest_finished_step(tmp_path) == 20
  # The sampler keeps passage identities distinct, so the loss's safety net never fires.
  assert all(r["train/masked_in_batch"] == 0 for r in rows)


def test_exact_resume_after_sigkill(tmp_path):
  n = 8
  straight, killed = tmp_path / "straight", tmp_path / "killed"
  proc = launch(killed, f"--config.total_steps={n}", "--config.checkpoint.every=3")
  step = wait_for_step(killed, proc, 3)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  resumed_from = checkpoint.latest_finished_step(killed)
  assert step <= resumed_from < n, "the run must be cut short for this test to mean anything"
  train.train(get_config(total_steps=n, **{"checkpoint.every": 3}), killed)
  train.train(get_config(total_steps=n, **{"checkpoint.every": 100}), straight)
  a, b = final_params(straight, n), final_params(killed, n)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)  # bit-identical


def test_sigterm_saves_and_exits_zero(tmp_path):
  proc = launch(tmp_path, "--config.total_steps=1000", "--config.checkpoint.every=1000")
  wait_for_step(tmp_path, proc, 1)  # Orbax saves the first step; then the loop is running
  time.sleep(2)
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode == 0, out[-3000:]
  step = checkpoint.latest_finished_step(tmp_path)
  assert 1 < step < 1000  # a checkpoint written because of the signal, not the interval
  # The console says where things go, where the run started and how it ended; JAX's backend
  # probe and Orbax's INFO lines go to the log file only.
  assert f"log:         {tmp_path}/train.INFO" in out and "starting at step 0 of 1000" in out
  assert f"SIGTERM at step {step}: checkpoint {tmp_path}/checkpoints/{step} saved" in out, out
  assert "Unable to initialize backend" not in out and "orbax" not in out.lower(), out[-3000:]
  assert "orbax" in (tmp_path / "train.INFO").read_text().lower()


def test_packed_batches_train_as_the_padded_ones(tmp_path):
  # The same batches with several texts packed to a row: the same losses and parameters.
  # With GradCache too: each chunk packs its own texts (tokenizers.pack_chunks).
  n = 10
  runs = {"padded": {"input.packing": False}, "packed": {"input.packing": True},
          "packed_gradcache": {"input.packing": True, "grad_cache_chunks": 2}}
  for name, overrides in runs.items():
    train.train(get_config(total_steps=n, **overrides), tmp_path / name)
  rows = {name: [json.loads(l) for l in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
          for name in runs}
  assert len(rows["packed"]) == len(rows["padded"]) == len(rows["packed_gradcache"]) == 2
  for a, c in zip(rows["padded"], rows["packed_gradcache"]):
    assert a["train/batch_fingerprint"] == c["train/batch_fingerprint"]
    np.testing.assert_allclose(c["train/loss"], a["train/loss"], rtol=1e-4)
    np.testing.assert_allclose(c["train/grad_norm"], a["train/grad_norm"], rtol=1e-3)
  for a, b in zip(rows["padded"], rows["packed"]):
    assert a["train/batch_fingerprint"] == b["train/batch_fingerprint"]
    np.testing.assert_allclose(b["train/loss"], a["train/loss"], rtol=1e-4)
    np.testing.assert_allclose(b["train/grad_norm"], a["train/grad_norm"], rtol=1e-3)
    # 16 texts of <= 64 tokens: padded 47% real; packed 63%, its rows rounded up to the 8 devices.
    assert b["train/real_token_share"] > 1.25 * a["train/real_token_share"], (a, b)
  a, b = final_params(tmp_path / "padded", n), final_params(tmp_path / "packed", n)
  # Adam divides by sqrt(v): where an entry's gradient is near zero, float-level differences in
  # it flip the step's sign, and each flip moves it by up to a step's size (lr 3e-3). 1-2 of 8M
  # entries did so in a run, once on two steps (3.9e-3); the rest agree to 1e-5.
  for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(a)[0], jax.tree.leaves(b)):
    np.testing.assert_allclose(y, x, atol=2 * 3e-3, err_msg=jax.tree_util.keystr(path))
    assert np.mean(np.abs(y - x) > 1e-5) < 1e-5, jax.tree_util.keystr(path)
  # What packing cannot do is refused before anything compiles.
  from hybrid_ir import models, sharding
  config = get_config(**{"input.packing": True})
  encoder, mesh = models.load_encoder(config.model), sharding.make_mesh(config.mesh)
  encoder.packs = False
  with pytest.raises(ValueError, match="takes no packed batches"):
    train_step.training_tokenizer(encoder, get_config(**{"input.packing": True}), mesh)


def test_misspelt_config_key_lists_valid_keys(tmp_path):
  proc = launch(tmp_path, "--config.optimizer.lrr=1e-3")
  out, _ = proc.communicate(timeout=60)
  assert proc.returncode != 0
  assert "--config.optimizer has no field 'lrr'" in out and "'lr'" in out, out[-2000:]
