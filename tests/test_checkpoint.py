"""checkpoint.py: round trip of a sharded train state, keep-N, and unfinished steps stay invisible."""
import re
import shutil

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from hybrid_ir import checkpoint, sharding


def make_state(mesh, scale=1.0, size=64):
  params = {"emb": jnp.arange(size * 16, dtype=jnp.float32).reshape(size, 16) * scale,
            "b": jnp.ones((16,)) * scale}
  params = jax.device_put(params, sharding.param_shardings(params, mesh, min_fsdp_size=16))
  tx = optax.adamw(1e-3)
  opt_state = tx.init(params)
  grads = jax.tree.map(jnp.ones_like, params)
  _, opt_state = tx.update(grads, opt_state, params)  # non-trivial moments
  return {"params": params, "opt_state": opt_state, "step": jnp.asarray(7, jnp.int32),
          "rng": jax.random.key_data(jax.random.key(3))}


def assert_tree_equal(a, b):
  la, ta = jax.tree.flatten(a)
  lb, tb = jax.tree.flatten(b)
  assert ta == tb
  for x, y in zip(la, lb):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_round_trip_into_another_sharding(tmp_path):
  mesh = sharding.make_mesh({"data": 2, "fsdp": 4})
  state = make_state(mesh)
  config = ml_collections.ConfigDict({"lr": 3e-5, "buckets": (16, 32)})
  mngr = checkpoint.make_manager(tmp_path)
  assert checkpoint.save(mngr, 7, state, {"stream_pos": [3, 4], "seed": 0}, config)
  mngr.wait_until_finished()
  # Restore onto a different mesh layout (all replicated): Orbax reshards.
  mesh2 = sharding.make_mesh({"data": 8})
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                                       sharding=NamedSharding(mesh2, P())), state)
  got, data, cfg = checkpoint.restore(mngr, 7, target)
  assert_tree_equal(got, state)
  assert got["params"]["emb"].sharding == NamedSharding(mesh2, P())
  assert isinstance(got["opt_state"][0], optax.ScaleByAdamState)  # structure kept
  assert data == {"stream_pos": [3, 4], "seed": 0}
  assert cfg == {"lr": 3e-5, "buckets": [16, 32]}
  params = checkpoint.restore_params(tmp_path, None, checkpoint.abstract(state["params"]))
  assert_tree_equal(params, state["params"])
  assert params["emb"].sharding.spec == state["params"]["emb"].sharding.spec
  mngr.close()


def test_a_workdir_of_another_model_fails_naming_that_model(tmp_path):
  mesh = sharding.make_mesh({"data": 8})
  state = make_state(mesh)
  mngr = checkpoint.make_manager(tmp_path)
  config = ml_collections.ConfigDict({"model": {"name": "bundled:use-m3"}})
  checkpoint.save(mngr, 7, state, {}, config)
  mngr.wait_until_finished()
  other = make_state(mesh, size=32)  # another model: same names, other shapes
  other["params"]["extra"] = other["params"]["b"]  # ... and another tree
  for restore in (lambda: checkpoint.restore(mngr, 7, checkpoint.abstract(other)),
                  lambda: checkpoint.restore_params(tmp_path, 7, checkpoint.abstract(other["params"]))):
    with pytest.raises(ValueError, match=r"step 7: .*written for model 'bundled:use-m3'.*fresh --workdir"):
      restore()
  mngr.close()


def test_keep_n_and_interval(tmp_path):
  mesh = sharding.make_mesh({"data": 8})
  mngr = checkpoint.make_manager(tmp_path, max_to_keep=2, save_interval_steps=2)
  for step in range(1, 8):
    checkpoint.save(mngr, step, make_state(mesh, scale=step), {"step": step}, {})
  checkpoint.save(mngr, 7, make_state(mesh, scale=7), {"step": 7}, {}, force=True)
  mngr.wait_until_finished()
  assert checkpoint.finished_steps(tmp_path) == [6, 7]
  mngr.close()


def test_keep_best_keeps_the_best_validation_step_and_always_the_latest(tmp_path):
  mesh = sharding.make_mesh({"data": 8})
  state = make_state(mesh)
  # A validation loss that falls to its minimum at step 3 (tied at step 5) and rises after it.
  losses = {1: 3.0, 2: 2.0, 3: 1.0, 4: 1.5, 5: 1.0, 6: 2.5}
  mngr = checkpoint.make_manager(tmp_path, max_to_keep=1, keep_best="validation/loss",
                                 async_save=False)
  kept = []
  for step, loss in losses.items():
    checkpoint.save(mngr, step, state, {"step": step}, {},
                    metrics={"validation/loss": loss, "validation/mo_map": 0.5})
    kept.append(checkpoint.finished_steps(tmp_path))
  # The latest is never deleted for the best, even when its loss is the worst so far; ties go
  # to the earliest step, as `selection.best_step` picks.
  assert kept == [[1], [2], [3], [3, 4], [3, 5], [3, 6]]
  # A step saved without metrics (a save forced by a signal) is kept only while it is the latest.
  checkpoint.save(mngr, 7, state, {"step": 7}, {}, force=True)
  checkpoint.save(mngr, 8, state, {"step": 8}, {}, metrics={"validation/loss": 9.0})
  assert checkpoint.finished_steps(tmp_path) == [3, 8]
  mngr.close()
  # A resumed run reads the saved steps' metrics back: step 3 stays the best.
  mngr = checkpoint.make_manager(tmp_path, max_to_keep=1, keep_best="validation/loss",
                                 async_save=False)
  checkpoint.save(mngr, 9, state, {"step": 9}, {}, metrics={"validation/loss": 1.2})
  assert checkpoint.finished_steps(tmp_path) == [3, 9]
  checkpoint.save(mngr, 10, state, {"step": 10}, {}, metrics={"validation/loss": 0.5})
  assert checkpoint.finished_steps(tmp_path) == [10]
  mngr.close()
  # The kept steps restore as any other (the metrics item is no part of the state).
  restored = checkpoint.restore_params(tmp_path, 10, checkpoint.abstract(state["params"]))
  assert_tree_equal(restored, state["params"])


def test_keep_best_by_a_higher_is_better_metric_and_bad_metrics(tmp_path):
  mesh = sharding.make_mesh({"data": 8})
  state = make_state(mesh)
  mngr = checkpoint.make_manager(tmp_path, max_to_keep=2, keep_best="validation/mo_map")
  for step, value in enumerate([0.2, 0.6, 0.4, 0.5, 0.3], start=1):
    checkpoint.save(mngr, step, state, {"step": step}, {}, metrics={"validation/mo_map": value})
  mngr.wait_until_finished()
  assert checkpoint.finished_steps(tmp_path) == [2, 4, 5]
  with pytest.raises(ValueError, match=r"step 6's metrics must be numbers; got "
                                       r"\{'validation/mo_map': 'high'\}"):
    checkpoint.save(mngr, 6, state, {"step": 6}, {}, metrics={"validation/mo_map": "high"})
  mngr.close()
  with pytest.raises(ValueError, match=r"metric 'validation/num_questions': no known direction"):
    checkpoint.make_manager(tmp_path / "b", keep_best="validation/num_questions")
  with pytest.raises(ValueError, match=r"best_mode='best'; expected one of"):
    checkpoint.make_manager(tmp_path / "b", keep_best="validation/loss", best_mode="best")


def test_unfinished_step_is_never_read(tmp_path):
  mesh = sharding.make_mesh({"data": 8})
  state = make_state(mesh)
  mngr = checkpoint.make_manager(tmp_path)
  checkpoint.save(mngr, 1, state, {}, {})
  mngr.wait_until_finished()
  mngr.close()
  # What an interrupted Orbax write leaves behind: a step dir under its tmp name.
  tmp = checkpoint.checkpoint_dir(tmp_path) / "2.orbax-checkpoint-tmp-1700000000"
  shutil.copytree(checkpoint.checkpoint_dir(tmp_path) / "1", tmp)
  assert checkpoint.latest_finished_step(tmp_path) == 1
  with pytest.raises(FileNotFoundError, match=r"step 2 .* finished steps: \[1\]"):
    checkpoint.restore_params(tmp_path, 2, checkpoint.abstract(state["params"]))
  assert checkpoint.latest_finished_step(tmp_path / "nothing") is None


def test_poller_during_async_save_sees_only_finished_steps(tmp_path):
  """A reader polling while a (large, async) save runs never sees the step early."""
  mesh = sharding.make_mesh({"data": 8})
  state = make_state(mesh, size=2**16)  # 4 MiB params + 8 MiB moments: the write takes a while
  mngr = checkpoint.make_manager(tmp_path)
  checkpoint.save(mngr, 5, state, {}, {})
  seen, saw_tmp = [], False
  while mngr.is_saving_in_progress():
    saw_tmp |= any(p.name.startswith("5.orbax-checkpoint-tmp")
                   for p in checkpoint.checkpoint_dir(tmp_path).iterdir())
    step = checkpoint.latest_finished_step(tmp_path)
    seen.append(step)
    if step == 5:  # visible => complete and readable
      checkpoint.restore_params(tmp_path, 5, checkpoint.abstract(state["params"]))
  mngr.wait_until_finished()
  assert set(seen) <= {None, 5}
  if seen:  # the save was still running when polled: Orbax wrote under a tmp name meanwhile
    assert saw_tmp and seen[0] is None
  assert checkpoint.latest_finished_step(tmp_path) == 5
  assert_tree_equal(checkpoint.restore_params(tmp_path, 5, checkpoint.abstract(state["params"])),
                    state["params"])
  mngr.close()


def test_a_checkpoint_saved_before_a_key_was_added_resumes_under_its_old_meaning():
  saved = {"optimizer": {"lr": 0.1}}
  assert checkpoint.config_changes(
      saved, {"optimizer": {"lr": 0.1, "embedding_update": "dense"}}) == ([], [])
  refused, _ = checkpoint.config_changes(
      saved, {"optimizer": {"lr": 0.1, "embedding_update": "lazy"}})
  assert refused == [("optimizer.embedding_update", "dense", "lazy")]
  # A saved value is compared as saved.
  refused, _ = checkpoint.config_changes(
      {"optimizer": {"lr": 0.1, "embedding_update": "lazy"}}, {"optimizer": {"lr": 0.1}})
  assert refused == [("optimizer.embedding_update", "lazy", "<absent>")]


def test_resume_policy_allows_safe_and_named_keys_and_refuses_the_rest():
  saved = {"optimizer": {"lr": 0.1}, "log_every": 10, "mesh": {"data": 1}, "total_steps": 5}
  now = {"optimizer": {"lr": 0.2}, "log_every": 50, "mesh": {"data": 2}, "total_steps": 9}
  with pytest.raises(checkpoint.ConfigChangedError) as e:
    checkpoint.check_resume_config(saved, now, (), "checkpoint 4")
  message = str(e.value)
  assert "with checkpoint 4 in 2 key(s)" in message
  assert "optimizer.lr: 0.1 (checkpoint) -> 0.2 (now)" in message
  assert message.endswith("--allow_config_change=optimizer.lr,total_steps")
  # Watching and layout keys may change; a named key allows its sub-keys.
  allowed = checkpoint.check_resume_config(saved, now, ("optimizer", "total_steps"), "c")
  assert [k for k, _, _ in allowed] == ["log_every", "mesh.data", "optimizer.lr", "total_steps"]


@pytest.mark.parametrize("key", ["input", "input.batch_size", "seed", "input.sources[0].langs"])
def test_data_state_keys_can_never_be_allowed_to_change(key):
  with pytest.raises(checkpoint.ConfigChangedError,
                     match=re.escape(f"--allow_config_change={key}: these keys decide which")):
    checkpoint.check_allowed_changes(["total_steps", key])
  checkpoint.check_allowed_changes(["total_steps", "input.prefetch", "optimizer.lr"])
