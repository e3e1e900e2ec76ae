"""Orbax checkpoints of a training run: train state, data/schedule state and config.

Layout: `<workdir>/checkpoints/<step>/{params, train_state, data, config}`.
  params       the encoder params (StandardSave) — a separate item so the eval binary can restore
               them alone, into an abstract (sharded) target, without the optimizer state.
  train_state  everything else in the state dict: opt_state, step (StandardSave).
  data         JSON: input pipeline / schedule position, enough to resume the exact stream.
  config       JSON: the run's config, for provenance.

Unfinished steps are invisible: Orbax writes a step into `<step>.orbax-checkpoint-tmp-*` and
renames it when every item is committed (on GCS, where rename is not atomic, it writes a
commit_success file instead); `CheckpointManager` lists only finalized steps. Readers here always
re-scan the directory, so a poller never sees a step before its rename.
"""
import json
import logging
import os
from typing import Any

from etils import epath
import jax
import ml_collections
import orbax.checkpoint as ocp

STATE_ITEMS = ("params", "train_state", "data", "config")


def checkpoint_dir(workdir: str | os.PathLike) -> epath.Path:
  """`<workdir>/checkpoints`, absolute; an epath, so gs:// workdirs work (pathlib mangles them)."""
  d = epath.Path(workdir) / "checkpoints"
  return d if "://" in str(workdir) else epath.Path(os.path.abspath(d))


def make_manager(workdir: str | os.PathLike, *, max_to_keep: int | None = 3,
                 save_interval_steps: int = 1, async_save: bool = True,
                 read_only: bool = False) -> ocp.CheckpointManager:
  """CheckpointManager for `<workdir>/checkpoints`.

  Inputs: max_to_keep (None keeps all), save_interval_steps (`save` is a no-op in between unless
  forced), async_save (writes in a background thread; call `manager.wait_until_finished()` before
  exiting), read_only (for the eval binary: never creates, deletes or writes).
  """
  options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep, save_interval_steps=save_interval_steps,
      enable_async_checkpointing=async_save, read_only=read_only, create=not read_only,
      cleanup_tmp_directories=not read_only)
  return ocp.CheckpointManager(checkpoint_dir(workdir), options=options,
                               item_names=STATE_ITEMS)


def _config_to_json(config: Any) -> dict:
  if isinstance(config, ml_collections.ConfigDict):
    return json.loads(config.to_json_best_effort())
  return json.loads(json.dumps(config, default=str))


def save(manager: ocp.CheckpointManager, step: int, state: dict[str, Any],
         data_state: dict[str, Any], config: Any, *, force: bool = False) -> bool:
  """Saves (asynchronously if the manager is async) when the interval says so or `force`.

  Inputs: state, a dict with at least 'params' (plus e.g. opt_state, step) of jax arrays;
  data_state, a JSON-able dict; config, a ConfigDict or JSON-able dict. Returns whether a save
  started. Related: `restore`, `restore_params`.
  """
  if "params" not in state:
    raise ValueError(f"checkpoint.save: state needs a 'params' entry; got keys {sorted(state)}")
  rest = {k: v for k, v in state.items() if k != "params"}
  return manager.save(step, args=ocp.args.Composite(
      params=ocp.args.StandardSave(state["params"]),
      train_state=ocp.args.StandardSave(rest),
      data=ocp.args.JsonSave(data_state),
      config=ocp.args.JsonSave(_config_to_json(config))), force=force)


def abstract(tree: Any) -> Any:
  """ShapeDtypeStructs (with shardings) of a pytree of arrays: a restore target."""
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)), tree)


def restore(manager: ocp.CheckpointManager, step: int, abstract_state: dict[str, Any]
            ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
  """Restores (state, data_state, config_dict) of `step` into the shardings of `abstract_state`.

  Inputs: abstract_state, the same structure as the saved state (see `abstract`).
  """
  rest = {k: v for k, v in abstract_state.items() if k != "params"}
  try:
    out = manager.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(abstract_state["params"]),
        train_state=ocp.args.StandardRestore(rest),
        data=ocp.args.JsonRestore(), config=ocp.args.JsonRestore()))
  except ValueError as e:
    raise _mismatch(manager, step) from e
  state = dict(out["train_state"], params=out["params"])
  return state, out["data"], out["config"]


def _mismatch(manager: ocp.CheckpointManager, step: int) -> ValueError:
  """The error for a checkpoint whose tree does not fit this config's model: typically a workdir
  reused for another model (Orbax's own message lists every parameter)."""
  try:
    saved = manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]
    model = (saved.get("model") or {}).get("name", "?")
  except Exception:  # an old or partial checkpoint: the message still names the directory
    model = "?"
  return ValueError(f"{manager.directory} step {step}: its parameters do not fit this config's "
                    f"model (the checkpoint was written for model {model!r}); use a fresh "
                    "--workdir, or the config the checkpoint was trained with")


def finished_steps(workdir: str | os.PathLike) -> list[int]:
  """Steps whose checkpoint is complete (re-scans the directory; tmp dirs are skipped)."""
  d = checkpoint_dir(workdir)
  if not d.is_dir():
    return []
  steps = []
  for p in d.iterdir():
    if p.is_dir() and p.name.isdigit() and ocp.step.is_checkpoint_finalized(p):
      steps.append(int(p.name))
    elif ocp.step.is_tmp_checkpoint(p):
      logging.debug("skipping unfinished checkpoint %s", p)
  return sorted(steps)


def latest_finished_step(workdir: str | os.PathLike) -> int | None:
  """The newest complete step in `<workdir>/checkpoints`, or None when there is none."""
  steps = finished_steps(workdir)
  return steps[-1] if steps else None


def restore_params(workdir: str | os.PathLike, step: int | None, abstract_params: Any) -> Any:
  """Params alone of a finished `step` (None: the latest), into `abstract_params`' shardings.

  Inputs: abstract_params, a pytree of jax.ShapeDtypeStruct (with .sharding) shaped like the
  encoder's params, e.g. `checkpoint.abstract(encoder.params)`. Recommended for the eval binary:
  it reads no optimizer state and cannot see an unfinished step. Raises FileNotFoundError naming
  the directory and the finished steps when `step` is not finished.
  """
  steps = finished_steps(workdir)
  step = steps[-1] if step is None and steps else step
  if step is None or step not in steps:
    raise FileNotFoundError(f"no finished checkpoint for step {step} in {checkpoint_dir(workdir)};"
                            f" finished steps: {steps}")
  manager = make_manager(workdir, read_only=True, async_save=False)
  try:
    out = manager.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(abstract_params)))
  except ValueError as e:
    raise _mismatch(manager, step) from e
  finally:
    manager.close()
  return out["params"]
