"""Orbax checkpoints of a training run: train state, data/schedule state, config, checksums.

Layout: `<workdir>/checkpoints/<step>/{params, train_state, data, config, integrity}`.
  params       the encoder params (StandardSave) — a separate item so the eval binary can restore
               them alone, into an abstract (sharded) target, without the optimizer state.
  train_state  everything else in the state dict: opt_state, step (StandardSave).
  data         JSON: input pipeline / schedule position, enough to resume the exact stream.
  config       JSON: the run's config (resume compares it with the config given; see train.py).
  integrity    JSON: per array its shape, dtype and two 32-bit checksums computed on device when
               it was saved, and a sha256 of the data and config items. Orbax and TensorStore
               restore a bit-flipped data file without complaint, so every restore here
               recomputes and compares them (tests/integration/test_faults.py flips bits).

Unfinished steps are invisible: Orbax writes a step into `<step>.orbax-checkpoint-tmp-*` and
renames it when every item is committed (on GCS, where rename is not atomic, it writes a
commit_success file instead); `CheckpointManager` lists only finalized steps. Readers here always
re-scan the directory, so a poller never sees a step before its rename.

What a reader gets instead of a restored step:
  FileNotFoundError       the step is not there, or vanished while read (keep-N deleted it);
  ModelMismatchError      its arrays have other names or shapes than the target: written for
                          another model (checked against the integrity record, before reading);
  CorruptCheckpointError  the step is there but unreadable or fails its checksums; `train.py`
                          and `eval.py` fall back to the newest good step (`restore_latest`).
Also here: `corrupt_checkpoints/` (steps the trainer moved aside, never deleted). The rest of the
run directory (lease, metrics, log, finished marker) is `hybrid_ir.run_dir`'s.

Keeping the best step: `make_manager(keep_best=<metric>)` keeps, besides the latest `max_to_keep`
steps, the saved step with the best value of a metric handed to `save(metrics=...)` (e.g. a
validation loss, measured at that step before it is saved), chosen by `hybrid_ir.selection`
(ties: the earliest step), so that the experiment runner finds the checkpoint it selects from
metrics.jsonl. Orbax stores a step's metrics in the step (`<step>/metrics`), so a resumed run
still knows the best step saved before it.
"""
import contextlib
import dataclasses
import errno
import functools
import hashlib
import json
import logging
import os
import pathlib
import shutil
from collections.abc import Mapping
from typing import Any, Callable, NamedTuple, Sequence

from etils import epath
import jax
import jax.numpy as jnp
import ml_collections
import orbax.checkpoint as ocp

from hybrid_ir import config_flags
from hybrid_ir import selection

STATE_ITEMS = ("params", "train_state", "data", "config", "integrity")
QUARANTINE = "corrupt_checkpoints"


class CheckpointError(Exception):
  """A checkpoint that cannot be used; the message names it and says what to do."""


class CorruptCheckpointError(CheckpointError):
  """A finished step whose files are unreadable or fail their checksums."""


class ModelMismatchError(CheckpointError, ValueError):
  """A readable step whose arrays do not fit the target (another model's checkpoint)."""




# ------------------------------------------------------------------------------------------------
# The checkpoint directory.
# ------------------------------------------------------------------------------------------------

def checkpoint_dir(workdir: str | os.PathLike) -> epath.Path:
  """`<workdir>/checkpoints`, absolute; an epath, so gs:// workdirs work (pathlib mangles them)."""
  d = epath.Path(workdir) / "checkpoints"
  return d if "://" in str(workdir) else epath.Path(os.path.abspath(d))



# ------------------------------------------------------------------------------------------------
# Checksums computed on device.
# ------------------------------------------------------------------------------------------------

def _words(x: jax.Array) -> jax.Array:
  """The array's bits as uint32 words (narrower types widened), same shape."""
  if x.dtype == jnp.bool_:
    return x.astype(jnp.uint32)
  unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}[x.dtype.itemsize]
  return jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32)


def _leaf_sums(x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(sum of words, sum of word * hash(position)) mod 2^32. The first changes with any single
  flipped bit (by +-2^k, never 0 mod 2^32); the second also with moved words. Positions come from
  iotas in the array's own shape, so a sharded array is summed where it lies (no reshape)."""
  w = _words(x)
  idx, stride = jnp.zeros(w.shape, jnp.uint32), 1
  for d in reversed(range(w.ndim)):
    idx = idx + jax.lax.broadcasted_iota(jnp.uint32, w.shape, d) * jnp.uint32(stride % 2**32)
    stride *= w.shape[d]
  weight = idx * jnp.uint32(2654435761) + jnp.uint32(1)
  # Two scalars, not a [2] array: a scalar can only be replicated, so every process of a
  # multi-host run can read it.
  return jnp.sum(w, dtype=jnp.uint32), jnp.sum(w * weight, dtype=jnp.uint32)


_tree_sums = jax.jit(lambda leaves: [_leaf_sums(x) for x in leaves])


def fingerprint(tree: Any) -> dict[str, dict]:
  """{leaf path: {'shape', 'dtype', 'sum': [a, b]}} of a pytree of jax arrays, summed on device
  (one jitted pass over the arrays; only 8 bytes per array come to the host)."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  sums = jax.device_get(_tree_sums([jnp.asarray(x) for _, x in leaves])) if leaves else []
  return {jax.tree_util.keystr(path): {"shape": list(x.shape), "dtype": str(x.dtype),
                                       "sum": [int(s) for s in sums[i]]}
          for i, (path, x) in enumerate(leaves)}


def _json_sha256(obj: Any) -> str:
  return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


# ------------------------------------------------------------------------------------------------
# Save.
# ------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class KeepBest:
  """Orbax preservation policy: preserves the step `selection.best_step` picks among the saved
  steps whose metrics (`save(metrics=...)`) hold `metric`, and no other. Combined with Orbax's
  LatestN in `make_manager`, which keeps the latest steps whatever their metric."""
  metric: str
  mode: str

  def should_preserve(self, checkpoints, *, context) -> list[bool]:
    del context
    rows = [dict(c.metrics, step=c.step) for c in checkpoints
            if c.metrics and self.metric in c.metrics]
    if not rows:
      return [False] * len(checkpoints)
    try:
      best = selection.best_step(rows, self.metric, self.mode).step
    except ValueError as e:  # every value NaN: no best step; the latest ones are kept regardless
      logging.warning("checkpoint keep_best: %s", e)
      return [False] * len(checkpoints)
    return [c.step == best for c in checkpoints]


def _metric_value(metric: str, metrics: dict) -> float:
  return float(metrics.get(metric, float("nan")))


def make_manager(workdir: str | os.PathLike, *, max_to_keep: int | None = 3,
                 save_interval_steps: int = 1, async_save: bool = True,
                 read_only: bool = False, keep_best: str | None = None,
                 best_mode: str | None = None) -> ocp.CheckpointManager:
  """CheckpointManager for `<workdir>/checkpoints`.

  Inputs: max_to_keep (None keeps all), save_interval_steps (`save` is a no-op in between unless
  forced), async_save (writes in a background thread; call `manager.wait_until_finished()` before
  saying a step is saved, or exiting), read_only (for the eval binary: never creates, deletes or
  writes).
  keep_best: a metric name (e.g. 'validation/loss'); the step with its best value among the
  steps saved with it (`save(metrics={keep_best: value, ...})`) is kept too, besides the latest
  max_to_keep, which are never deleted for it. Steps saved without it are kept only while they
  are among the latest. best_mode: 'min' or 'max' (default `selection.direction(keep_best)`).
  """
  keep = dict(max_to_keep=max_to_keep)
  if keep_best and not read_only:
    mode = best_mode or selection.direction(keep_best)
    if mode not in selection.MODES:
      raise ValueError(f"best_mode={mode!r}; expected one of {selection.MODES}")
    managers = ocp.checkpoint_managers
    # The policy decides what is kept; best_fn is set because Orbax writes a step's metrics
    # (and reads them back on a resume) only when it is.
    keep = dict(preservation_policy=managers.AnyPreservationPolicy(
                    [managers.LatestN(n=max_to_keep), KeepBest(keep_best, mode)]),
                best_fn=functools.partial(_metric_value, keep_best), best_mode=mode)
  options = ocp.CheckpointManagerOptions(
      save_interval_steps=save_interval_steps, enable_async_checkpointing=async_save,
      read_only=read_only, create=not read_only, cleanup_tmp_directories=not read_only, **keep)
  return ocp.CheckpointManager(checkpoint_dir(workdir), options=options,
                               item_names=STATE_ITEMS)


def config_to_json(config: Any) -> dict:
  """A ConfigDict (or dict) as the JSON dict saved with a checkpoint (tuples become lists)."""
  if isinstance(config, ml_collections.ConfigDict):
    return json.loads(config.to_json_best_effort())
  return json.loads(json.dumps(config, default=str))


def save(manager: ocp.CheckpointManager, step: int, state: dict[str, Any],
         data_state: dict[str, Any], config: Any, *, force: bool = False,
         metrics: dict[str, float] | None = None) -> bool:
  """Saves (asynchronously if the manager is async) when the interval says so or `force`.

  Inputs: state, a dict with at least 'params' (plus e.g. opt_state, step) of jax arrays;
  data_state, a JSON-able dict; config, a ConfigDict or JSON-able dict; metrics, {name: number}
  measured on this step's params (its evaluations), which a `make_manager(keep_best=...)`
  manager keeps the best step by (others ignore them). Returns whether a save started; it is
  final once `manager.wait_until_finished()` returns. Related: `restore`, `restore_params`.
  """
  if "params" not in state:
    raise ValueError(f"checkpoint.save: state needs a 'params' entry; got keys {sorted(state)}")
  if not (force or manager.should_save(step)):
    return False
  if metrics is not None:
    bad = {k: v for k, v in metrics.items() if isinstance(v, bool) or not isinstance(v, (int, float))}
    if bad:
      raise ValueError(f"checkpoint.save: step {step}'s metrics must be numbers; got {bad}")
    metrics = {k: float(v) for k, v in metrics.items()}
  rest = {k: v for k, v in state.items() if k != "params"}
  config_json = config_to_json(config)
  integrity = {"version": 1, "params": fingerprint(state["params"]),
               "train_state": fingerprint(rest), "data_sha256": _json_sha256(data_state),
               "config_sha256": _json_sha256(config_json)}
  return manager.save(step, args=ocp.args.Composite(
      params=ocp.args.StandardSave(state["params"]),
      train_state=ocp.args.StandardSave(rest),
      data=ocp.args.JsonSave(data_state),
      config=ocp.args.JsonSave(config_json),
      integrity=ocp.args.JsonSave(integrity)), force=force, metrics=metrics)


class DiskFullError(CheckpointError):
  """A checkpoint could not be written for want of space."""


def _is_disk_full(e: BaseException) -> bool:
  text = str(e)[:4000]
  return (getattr(e, "errno", None) == errno.ENOSPC or "No space left" in text
          or "RESOURCE_EXHAUSTED" in text)


def _disk_full_message(manager: ocp.CheckpointManager, step: int, detail: str) -> str:
  good = latest_finished_step(epath.Path(manager.directory).parent)
  return (f"disk full: checkpoint {step} could not be written to {manager.directory} ({detail}). "
          f"The last good checkpoint is {good}. Free space (or move the workdir to a larger "
          "disk) and run the same command to resume from it")


def check_free_space(manager: ocp.CheckpointManager, step: int) -> None:
  """Raises DiskFullError, before writing anything, when a local checkpoint directory has less
  free space than its newest checkpoint takes (the next one is about as large; the first one is
  not checked). Remote directories (gs://) are not checked: their writes fail instead, and
  `disk_full_named` names that."""
  directory = str(manager.directory)
  latest = manager.latest_step()
  if "://" in directory or latest is None:
    return
  need = sum(f.stat().st_size for f in pathlib.Path(directory, str(latest)).rglob("*")
             if f.is_file())
  free = shutil.disk_usage(directory).free
  if free < need:
    raise DiskFullError(_disk_full_message(
        manager, step, f"checkpoint {latest} took {need / 2**20:.1f} MiB, {free / 2**20:.1f} MiB "
        "are free"))


@contextlib.contextmanager
def disk_full_named(manager: ocp.CheckpointManager, step: int):
  """Turns a write that failed for want of space (ENOSPC, TensorStore's RESOURCE_EXHAUSTED)
  into one DiskFullError naming the checkpoint directory and the last good step. Wrap both
  `save` and `manager.wait_until_finished()`: an async write fails at the next of them."""
  try:
    yield
  except Exception as e:  # noqa: BLE001
    if isinstance(e, DiskFullError) or not _is_disk_full(e):
      raise
    raise DiskFullError(_disk_full_message(manager, step, _first_line(e, 160))) from e


# ------------------------------------------------------------------------------------------------
# Restore, verified.
# ------------------------------------------------------------------------------------------------

def abstract(tree: Any) -> Any:
  """ShapeDtypeStructs (with shardings) of a pytree of arrays: a restore target."""
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)), tree)


def _first_line(e: BaseException, limit: int = 240) -> str:
  """Orbax / TensorStore errors run to hundreds of lines of JSON spec: their gist."""
  lines = [l.strip() for l in str(e).splitlines() if l.strip()]
  text = lines[0] if lines else type(e).__name__
  text = text.split(" See full TensorStore details")[0]  # a repr of the whole spec follows
  return text if len(text) <= limit else text[:limit] + " ..."


def _is_resource_error(e: BaseException) -> bool:
  # Out of memory is no property of the files: never call such a checkpoint corrupt.
  return isinstance(e, MemoryError) or "RESOURCE_EXHAUSTED" in str(e)[:2000]


def _read_json_items(manager: ocp.CheckpointManager, step: int, *names: str) -> dict:
  return manager.restore(step, args=ocp.args.Composite(
      **{n: ocp.args.JsonRestore() for n in names}))


def _unreadable(manager: ocp.CheckpointManager, step: int, err: BaseException,
                what: str = "unreadable") -> Exception:
  """The error for a step whose read failed: vanished (FileNotFoundError) or corrupt."""
  path = epath.Path(manager.directory) / str(step)
  if not path.exists():
    return FileNotFoundError(f"{path} was deleted while it was being read (a trainer's keep-N "
                             "removes old steps)")
  return CorruptCheckpointError(f"{path} is {what}: {_first_line(err)}")


def _integrity(manager: ocp.CheckpointManager, step: int) -> dict | None:
  """The step's integrity record; None for a checkpoint written before it existed."""
  if not (epath.Path(manager.directory) / str(step) / "integrity").exists():
    return None
  try:
    return _read_json_items(manager, step, "integrity")["integrity"]
  except Exception as e:  # noqa: BLE001  (any read error of the record is damage)
    raise _unreadable(manager, step, e) from None


def _saved_model_name(manager: ocp.CheckpointManager, step: int) -> str:
  try:
    saved = _read_json_items(manager, step, "config")["config"]
    return str((saved.get("model") or {}).get("name", "?"))
  except Exception:  # noqa: BLE001  (a damaged config: the message still names the directory)
    return "?"


def _check_fits(manager: ocp.CheckpointManager, step: int, item: str, target: Any,
                record: dict | None) -> None:
  """ModelMismatchError when `target`'s array names or shapes differ from those saved (a None
  target restores the arrays as saved: nothing to compare)."""
  if record is None or target is None:
    return
  saved = {k: v["shape"] for k, v in record[item].items()}
  want = {jax.tree_util.keystr(p): list(x.shape)
          for p, x in jax.tree_util.tree_flatten_with_path(target)[0]}
  if saved == want:
    return
  diffs = [f"{k}: saved {saved.get(k, 'absent')}, this config {want.get(k, 'absent')}"
           for k in sorted(set(saved) | set(want)) if saved.get(k) != want.get(k)]
  raise ModelMismatchError(
      f"{manager.directory} step {step}: its parameters do not fit this config's model (the "
      f"checkpoint was written for model {_saved_model_name(manager, step)!r}; {len(diffs)} "
      f"arrays differ, e.g. {diffs[0]}); use a fresh --workdir, or the config the checkpoint "
      "was trained with")


def _check_indexes(manager: ocp.CheckpointManager, step: int, items: tuple[str, ...]) -> None:
  """CorruptCheckpointError when an array item's OCDBT index (manifest.ocdbt, at the item's top
  and per process) is missing. Checked before Orbax reads: its read of such an item fails after
  starting every array's read, and the reads still pending print 'Event loop is closed'
  tracebacks on stderr when they end (seen here)."""
  for item in items:
    d = epath.Path(manager.directory) / str(step) / item
    if not d.is_dir():
      continue  # Orbax names a missing item itself
    indexes = [d] + [p for p in d.iterdir() if p.name.startswith("ocdbt.process_")]
    missing = [p / "manifest.ocdbt" for p in indexes if not (p / "manifest.ocdbt").exists()]
    if len(indexes) > 1 and missing:
      raise CorruptCheckpointError(f"{missing[0]} is missing (the index of the {item} arrays): "
                                   "the checkpoint is damaged")


def _verify(manager: ocp.CheckpointManager, step: int, item: str, tree: Any,
            record: dict | None) -> None:
  """CorruptCheckpointError when a restored array's checksums differ from those saved."""
  if record is None:
    return
  got = fingerprint(tree)
  # An array restored into another dtype (Orbax casts to the target's) cannot be compared.
  bad = [k for k, r in record[item].items()
         if k in got and got[k]["dtype"] == r["dtype"] and got[k]["sum"] != r["sum"]]
  if bad:
    raise CorruptCheckpointError(
        f"{epath.Path(manager.directory) / str(step)}: {item}{bad[0]}"
        f"{f' and {len(bad) - 1} more arrays' if len(bad) > 1 else ''} differ from the "
        "checksums saved with them (the files changed after they were written: a bit flip, a "
        "truncated or partial copy)")


def _mismatch_or_corrupt(manager: ocp.CheckpointManager, step: int, e: BaseException
                         ) -> Exception:
  """For a checkpoint with no integrity record (older ones) whose restore failed: Orbax's error
  does not tell a damaged file from another model's tree, so the message gives both causes."""
  err = _unreadable(manager, step, e)
  if isinstance(err, FileNotFoundError):
    return err
  return CorruptCheckpointError(
      f"{epath.Path(manager.directory) / str(step)} could not be restored: {_first_line(e)}. It "
      f"is damaged, or was written for another model (its config names "
      f"{_saved_model_name(manager, step)!r}); such older checkpoints carry no checksums")


def _restore_verified(manager: ocp.CheckpointManager, step: int, record: dict | None,
                      arrays: dict[str, Any], json_items: Sequence[str] = ()) -> dict[str, Any]:
  """Restores the array items of `step` (item name -> abstract pytree) and its JSON items, each
  array item checked against the integrity `record` before (shapes, indexes) and after
  (checksums) it is read. Used by `restore` (the whole state) and `restore_params`.

  Raises ModelMismatchError or CorruptCheckpointError; resource errors (out of host or device
  memory) propagate as they are.
  """
  for name, abstract_tree in arrays.items():
    _check_fits(manager, step, name, abstract_tree, record)
  _check_indexes(manager, step, tuple(arrays))
  args = {name: ocp.args.StandardRestore(a) for name, a in arrays.items()}
  args.update({name: ocp.args.JsonRestore() for name in json_items})
  try:
    out = manager.restore(step, args=ocp.args.Composite(**args))
  except Exception as e:  # noqa: BLE001  (Orbax/TensorStore raise plain Exception, ValueError, ...)
    if _is_resource_error(e):
      raise
    raise (_unreadable(manager, step, e) if record else _mismatch_or_corrupt(manager, step, e)
           ) from None
  for name in arrays:
    _verify(manager, step, name, out[name], record)
  return out


def restore(manager: ocp.CheckpointManager, step: int, abstract_state: dict[str, Any]
            ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
  """Restores and verifies (state, data_state, config_dict) of `step` into the shardings of
  `abstract_state` (the same structure as the saved state; see `abstract`).

  Raises FileNotFoundError, ModelMismatchError or CorruptCheckpointError (module docstring).
  """
  rest = {k: v for k, v in abstract_state.items() if k != "params"}
  record = _integrity(manager, step)
  out = _restore_verified(manager, step, record,
                          {"params": abstract_state["params"], "train_state": rest},
                          json_items=("data", "config"))
  if record:
    for name in ("data", "config"):
      if _json_sha256(out[name]) != record[f"{name}_sha256"]:
        raise CorruptCheckpointError(f"{epath.Path(manager.directory) / str(step)}: its {name} "
                                     "item differs from the checksum saved with it")
  return dict(out["train_state"], params=out["params"]), out["data"], out["config"]


class Restored(NamedTuple):
  """What `restore_latest` found: the newest good step, and the newer ones that were bad."""
  step: int
  state: dict[str, Any]
  data: dict[str, Any]
  config: dict[str, Any]
  bad: dict[int, str]  # step -> why it could not be used


def restore_latest(manager: ocp.CheckpointManager, abstract_state: dict[str, Any],
                   on_bad: Callable[[int, str], None] | None = None) -> Restored | None:
  """The newest step that restores and verifies, falling back over corrupt ones.

  Inputs: on_bad(step, reason), called for each step passed over (say so there). Returns None
  when there is no step at all. Raises CorruptCheckpointError naming every step when none is
  good, and ModelMismatchError at once (every step of a workdir is the same model's).
  """
  bad = {}
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      state, data, config = restore(manager, step, abstract_state)
    except (CorruptCheckpointError, FileNotFoundError) as e:
      bad[step] = str(e)
      if on_bad:
        on_bad(step, str(e))
      continue
    return Restored(step, state, data, config, bad)
  if bad:
    raise CorruptCheckpointError(
        f"no usable checkpoint in {manager.directory}: every step is damaged ("
        + "; ".join(f"step {s}: {r}" for s, r in sorted(bad.items())) + "). Restore them from a "
        "copy, or move checkpoints/ away to train from scratch")
  return None


def quarantine(workdir: str | os.PathLike, step: int) -> epath.Path:
  """Moves a damaged step out of `checkpoints/` into `<workdir>/corrupt_checkpoints/` (never
  deletes it), so training can write that step again; returns where it went."""
  src = checkpoint_dir(workdir) / str(step)
  dst_dir = epath.Path(src).parent.parent / QUARANTINE
  dst_dir.mkdir(parents=True, exist_ok=True)
  dst = dst_dir / str(step)
  n = 1
  while dst.exists():
    dst, n = dst_dir / f"{step}.{n}", n + 1
  src.rename(dst)
  return dst


def saved_config(workdir: str | os.PathLike, step: int) -> dict:
  """The config JSON saved with finished `step` (e.g. the trainer's total_steps, for the eval
  binary). Raises FileNotFoundError or CorruptCheckpointError."""
  manager = make_manager(workdir, read_only=True, async_save=False)
  try:
    return _read_json_items(manager, step, "config")["config"]
  except Exception as e:  # noqa: BLE001
    raise _unreadable(manager, step, e) from None
  finally:
    manager.close()


def finished_steps(workdir: str | os.PathLike) -> list[int]:
  """Steps whose checkpoint is complete (re-scans the directory; tmp dirs are skipped)."""
  d = checkpoint_dir(workdir)
  if not d.is_dir():
    return []
  steps = []
  for p in d.iterdir():
    try:
      if p.is_dir() and p.name.isdigit() and ocp.step.is_checkpoint_finalized(p):
        steps.append(int(p.name))
      elif ocp.step.is_tmp_checkpoint(p):
        logging.debug("skipping unfinished checkpoint %s", p)
    except (FileNotFoundError, ValueError):  # deleted (keep-N) between the listing and the check
      continue
  return sorted(steps)


def latest_finished_step(workdir: str | os.PathLike) -> int | None:
  """The newest complete step in `<workdir>/checkpoints`, or None when there is none."""
  steps = finished_steps(workdir)
  return steps[-1] if steps else None


def restore_params(workdir: str | os.PathLike, step: int | None, abstract_params: Any) -> Any:
  """Params alone of a finished `step` (None: the latest), verified, into `abstract_params`'
  shardings.

  Inputs: abstract_params, a pytree of jax.ShapeDtypeStruct (with .sharding) shaped like the
  encoder's params, e.g. `checkpoint.abstract(encoder.params)` (None: as saved, on the default
  device). Recommended for the eval binary:
  it reads no optimizer state and cannot see an unfinished step. Raises FileNotFoundError naming
  the directory and the finished steps when `step` is not finished (or vanished while read),
  ModelMismatchError or CorruptCheckpointError.
  """
  steps = finished_steps(workdir)
  step = steps[-1] if step is None and steps else step
  if step is None or step not in steps:
    raise FileNotFoundError(f"no finished checkpoint for step {step} in {checkpoint_dir(workdir)};"
                            f" finished steps: {steps}")
  manager = make_manager(workdir, read_only=True, async_save=False)
  try:
    out = _restore_verified(manager, step, _integrity(manager, step),
                            {"params": abstract_params})
  finally:
    manager.close()
  return out["params"]


# ------------------------------------------------------------------------------------------------
# Resume policy: the config given against the config saved in the checkpoint.
# ------------------------------------------------------------------------------------------------

# Keys that may differ on resume without --allow_config_change: they change how a run is watched,
# stored or laid out on devices, not what it computes (resume is exact on any mesh; GradCache
# gives the plain gradients, packing the padded batch's embeddings; a store is checked against
# its sources by hybrid_ir.data itself; model.lsar acts at evaluation only, hybrid_ir.lsar).
RESUME_SAFE_KEYS = ("log_every", "eval_every", "evals", "train_evals", "eval_batch_size", "cache_dir",
                    "peak_flops", "mesh", "grad_cache_chunks", "checkpoint.every",
                    "checkpoint.keep", "checkpoint.async_save", "input.prefetch",
                    "input.store_dir", "input.prepare", "input.packing", "model.lsar")

# Keys added to the configs after checkpoints had been written without them, with the value that
# an absent key meant then: a checkpoint saved before the key existed resumes under that value.
ADDED_KEYS = {"optimizer.embedding_update": "dense", "loss.temperature_lr": 0.0}


# Keys that decide which example comes at which step: the input pipeline's saved position means
# nothing under other values, so no --allow_config_change can let them differ on resume.
DATA_STATE_KEYS = ("input", "seed")


def check_allowed_changes(allow: Sequence[str]) -> None:
  """Refuses an --allow_config_change naming a data-state key (DATA_STATE_KEYS, except those in
  RESUME_SAFE_KEYS) up front, before anything in the workdir is touched."""
  refused = [k for k in allow if any(_covers(d, k) or _covers(k, d) for d in DATA_STATE_KEYS)
             and not any(_covers(safe, k) for safe in RESUME_SAFE_KEYS)]
  if refused:
    raise ConfigChangedError(
        f"--allow_config_change={','.join(refused)}: these keys decide which examples the input "
        "pipeline draws at each step, and the checkpoint's saved position in that stream means "
        "nothing under other values, so a run cannot resume with them changed. Train with them "
        "in a fresh --workdir (nothing in this one was touched)")


class ConfigChangedError(ValueError):
  """Resuming with a config that differs from the checkpoint's in keys not allowed to change."""


def _covers(allowed: str, key: str) -> bool:
  return key == allowed or key.startswith(allowed + ".") or key.startswith(allowed + "[")


def config_changes(saved: Mapping, current: Mapping, allow: Sequence[str] = ()
                   ) -> tuple[list[tuple[str, Any, Any]], list[tuple[str, Any, Any]]]:
  """(refused, allowed) differences [(key, saved value, current value)] between two JSON configs
  (see `checkpoint.config_to_json`); a key in `allow` or RESUME_SAFE_KEYS allows its sub-keys.
  A key absent on one side shows as '<absent>', except that one of ADDED_KEYS absent from the
  saved config takes the value it stood for."""
  now = config_flags.flatten(current)
  then = {**{k: v for k, v in ADDED_KEYS.items() if k in now}, **config_flags.flatten(saved)}
  diffs = config_flags.differences(then, now)
  ok = lambda k: any(_covers(x, k) for x in (*RESUME_SAFE_KEYS, *allow))  # noqa: E731
  return [d for d in diffs if not ok(d[0])], [d for d in diffs if ok(d[0])]


def check_resume_config(saved: Mapping, current: Mapping, allow: Sequence[str], where: str
                        ) -> list[tuple[str, Any, Any]]:
  """Raises ConfigChangedError listing the refused differences; returns the allowed ones.

  where: the checkpoint the saved config comes from (named in the message).
  """
  refused, allowed = config_changes(saved, current, allow)
  if refused:
    lines = "\n".join(f"  {k}: {s!r} (checkpoint) -> {c!r} (now)" for k, s, c in refused)
    keys = ",".join(k for k, _, _ in refused)
    raise ConfigChangedError(
        f"the config differs from the one saved with {where} in {len(refused)} key(s):\n{lines}\n"
        f"Resume with the checkpoint's config, use a fresh --workdir, or allow these changes "
        f"with --allow_config_change={keys}")
  return allowed
