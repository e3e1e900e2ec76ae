"""Device mesh, parameter sharding rules, and host-local -> global batch arrays.

One mesh over all devices with axes ('data', 'fsdp'[, 'model']). The batch is split over
('data', 'fsdp') together (FSDP also splits the batch; it only additionally shards parameters);
parameters are sharded over 'fsdp' (and 'model' where an annotation asks for it). Everything runs
under `jax.jit` with NamedShardings; no pmap.

Config (`config.mesh`, all optional): data, fsdp, model: ints, -1 = "all remaining devices"
(exactly one axis may be -1; default data=-1, fsdp=1, model=1).
"""
from collections.abc import Callable, Mapping, Sequence
import logging
import os
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

AXES = ("data", "fsdp", "model")
BATCH_AXES = ("data", "fsdp")


def mesh_shape(mesh_config: Mapping[str, int] | None, n_devices: int) -> dict[str, int]:
  """Resolves the axis sizes (one of them may be -1) for `n_devices` devices."""
  cfg = {"data": -1, "fsdp": 1, "model": 1}
  for k, v in dict(mesh_config or {}).items():
    if k not in AXES:
      raise ValueError(f"config.mesh: unknown axis {k!r} (= {v}); valid axes: {AXES}")
    cfg[k] = int(v)
  free = [k for k, v in cfg.items() if v == -1]
  if len(free) > 1:
    raise ValueError(f"config.mesh: only one axis may be -1; got {cfg}")
  fixed = int(np.prod([v for v in cfg.values() if v != -1]))
  if free:
    if n_devices % fixed:
      raise ValueError(f"config.mesh {cfg}: {n_devices} devices not divisible by {fixed}")
    cfg[free[0]] = n_devices // fixed
  if int(np.prod(list(cfg.values()))) != n_devices:
    raise ValueError(f"config.mesh {cfg} needs {np.prod(list(cfg.values()))} devices; "
                     f"have {n_devices}")
  return cfg


def make_mesh(mesh_config: Mapping[str, int] | None = None,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """Mesh ('data', 'fsdp'[, 'model']) over `devices` (default: all devices of all processes).

  Inputs: `config.mesh` (see module docstring). Recommended: data=-1 for models that fit on one
  device (e5-small, USE-m3, XLM-R base); fsdp=<devices per host> for large ones. Axis types are
  Auto: shardings propagate through jit as in classic GSPMD (jax >= 0.7 defaults to Explicit).
  """
  devices = list(devices if devices is not None else jax.devices())
  shape = mesh_shape(mesh_config, len(devices))
  names = [a for a in AXES if a != "model" or shape["model"] > 1]
  return jax.make_mesh(tuple(shape[a] for a in names), tuple(names),
                       axis_types=(AxisType.Auto,) * len(names), devices=devices)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dim split over data x fsdp; other dims replicated."""
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def _fsdp_spec(shape: tuple[int, ...], fsdp: int, min_size: int) -> P:
  """Shards the largest dim divisible by `fsdp`; small or indivisible arrays stay replicated."""
  if fsdp == 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
    return P()
  for d in sorted(range(len(shape)), key=lambda d: -shape[d]):
    if shape[d] % fsdp == 0:
      spec = [None] * len(shape)
      spec[d] = "fsdp"
      return P(*spec)
  return P()


def param_shardings(params: Any, mesh: Mesh, specs: Any = None,
                    min_fsdp_size: int = 2**14) -> Any:
  """NamedSharding for every leaf of `params` (arrays or ShapeDtypeStructs).

  Inputs: params pytree; optional `specs`, a pytree of the same structure with a PartitionSpec or
  None per leaf (e.g. from the model's sharding annotations, `nnx.get_partition_spec`). An
  annotated leaf uses its spec (axes missing from the mesh, e.g. 'model' when model=1, are
  dropped); otherwise the FSDP rule: shard the largest dim divisible by the fsdp size when the
  leaf has >= `min_fsdp_size` elements, else replicate. Recommended: the rule alone for encoders
  up to ~1B parameters. Related: `make_mesh`.
  """
  fsdp = mesh.shape.get("fsdp", 1)

  def clean(spec: P) -> P:
    dims = []
    for a in spec:
      axes = tuple(x for x in (a if isinstance(a, tuple) else (a,)) if x in mesh.axis_names)
      dims.append(axes if len(axes) > 1 else (axes[0] if axes else None))
    return P(*dims)

  def one(x, spec=None):
    if spec is None:
      spec = _fsdp_spec(tuple(x.shape), fsdp, min_fsdp_size)
    return NamedSharding(mesh, clean(spec))

  if specs is None:
    return jax.tree.map(one, params)
  return jax.tree.map(one, params, specs, is_leaf=lambda s: s is None or isinstance(s, P))


def local_batch_shards(mesh: Mesh) -> int:
  """How many shards of the batch this process holds: its devices over the model axis."""
  n_local = len([d for d in mesh.devices.flat if d.process_index == jax.process_index()])
  return n_local // mesh.shape.get("model", 1)


def host_rows(global_rows: int, process_index: int, process_count: int) -> slice:
  """The rows of a global batch that process `process_index` of `process_count` holds: the
  process_index-th of process_count equal, contiguous blocks.

  Inputs: the global batch's row count (a multiple of process_count) and the process. The one
  rule for "which rows are this host's": the input pipeline fetches these rows of the sampler's
  global batch, and `process_batch_start` checks that the mesh places a process's rows there
  (`make_mesh` lays devices out in process order). Related: `host_local_to_global`.
  """
  if not 0 <= process_index < process_count or global_rows % process_count:
    raise ValueError(f"host_rows: batch of {global_rows} over {process_count} processes "
                     f"(process_index {process_index}): batch_size must be a multiple of the "
                     "process count")
  k = global_rows // process_count
  return slice(process_index * k, (process_index + 1) * k)


def mesh_host_rows(mesh: Mesh, global_rows: int, process_index: int, process_count: int,
                   process_of: Callable[[jax.Device], int] = lambda d: d.process_index) -> slice:
  """`host_rows(global_rows, process_index, process_count)`, checked to be the rows of a
  `global_rows`-row batch field that the process's devices hold on `mesh` (split as
  `batch_sharding` splits it); ValueError naming the rows where they are not.

  Inputs: the mesh, the field's rows, the process and the process count, and which process owns
  a device (default: the device's own `process_index`; a test passes another owner to lay
  several processes out on one machine's devices). Related: `process_batch_start`.
  """
  rows = host_rows(global_rows, process_index, process_count)
  # Devices over the model axis hold the same rows: each distinct block counts once.
  blocks = {s.indices(global_rows)[:2] for d, (s, *_) in
            batch_sharding(mesh).devices_indices_map((global_rows,)).items()
            if process_of(d) == process_index}
  held = sorted(blocks)
  if [lo for lo, _ in held[1:]] != [hi for _, hi in held[:-1]] or not held or (
      held[0][0], held[-1][1]) != (rows.start, rows.stop):
    raise ValueError(f"process {process_index} of {process_count} holds rows {held} of a "
                     f"{global_rows}-row batch on the mesh, not the one block "
                     f"{rows.start}..{rows.stop} its input pipeline fetches: the mesh's batch axes "
                     "must lay out the processes' devices contiguously and in process order")
  return rows


def process_batch_start(mesh: Mesh, n_local: int) -> int:
  """Where this process's `n_local` rows start in a global batch field that `host_local_to_global`
  makes (every process passes n_local rows): `host_rows`, checked against the mesh."""
  count = jax.process_count()
  return mesh_host_rows(mesh, n_local * count, jax.process_index(), count).start


def host_local_to_global(batch: Any, mesh: Mesh) -> Any:
  """This process's slice of the batch (numpy, leading dim = local batch) -> global jax.Arrays.

  Inputs: a pytree of numeric numpy arrays whose leading dim is this host's share of the global
  batch (global batch / process count). On one host this is just a sharded device_put; on a pod
  every host passes its own rows and the result is one global array per leaf. Strings must be
  turned into ids before this point (jax has no string arrays).
  """
  sharding = batch_sharding(mesh)
  n_local_batch = local_batch_shards(mesh)

  def one(path, x):
    x = np.asarray(x)
    name = jax.tree_util.keystr(path)
    if x.dtype.kind not in "biuf":
      raise TypeError(f"host_local_to_global: batch field {name} has dtype {x.dtype}; "
                      "only numeric arrays can become jax arrays (map strings to ids first)")
    if x.ndim == 0 or x.shape[0] % n_local_batch:
      raise ValueError(f"host_local_to_global: batch field {name} has shape {x.shape}; its leading"
                       f" dim must be divisible by the {n_local_batch} local batch shards")
    return jax.make_array_from_process_local_data(sharding, x)

  return jax.tree_util.tree_map_with_path(one, batch)


_ENV = {"coordinator_address": "JAX_COORDINATOR_ADDRESS", "num_processes": "JAX_NUM_PROCESSES",
        "process_id": "JAX_PROCESS_ID"}


def define_distributed_flags() -> None:
  """--coordinator_address, --num_processes, --process_id (for clusters JAX cannot detect)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (or env "
                      "JAX_COORDINATOR_ADDRESS); only where JAX cannot detect the cluster.")
  flags.DEFINE_integer("num_processes", None, "Number of processes (or env JAX_NUM_PROCESSES).")
  flags.DEFINE_integer("process_id", None, "This process's index (or env JAX_PROCESS_ID).")


def distributed_args_from_flags() -> dict[str, Any]:
  from absl import flags  # pylint: disable=g-import-not-at-top
  return {k: getattr(flags.FLAGS, k) for k in _ENV}


def maybe_initialize_distributed(coordinator_address: str | None = None,
                                 num_processes: int | None = None,
                                 process_id: int | None = None) -> bool:
  """Initialises jax.distributed for a multi-process run; a no-op for one process.

  Inputs (each falls back to its environment variable, JAX_COORDINATOR_ADDRESS,
  JAX_NUM_PROCESSES, JAX_PROCESS_ID): with a coordinator address, the process count and index
  are required (a GPU cluster without SLURM, processes on one machine). Without one, TPU pod
  workers (TPU_WORKER_HOSTNAMES lists several hosts) and SLURM jobs of several tasks are left
  to JAX's own detection. Must run before any other jax call; calling it again is a no-op.
  """
  if jax.distributed.is_initialized():
    return True
  args = {"coordinator_address": coordinator_address, "num_processes": num_processes,
          "process_id": process_id}
  for k, env in _ENV.items():
    if args[k] is None and os.environ.get(env):
      args[k] = os.environ[env] if k == "coordinator_address" else int(os.environ[env])
  if args["coordinator_address"]:
    missing = [f"--{k} (or {_ENV[k]})" for k in ("num_processes", "process_id")
               if args[k] is None]
    if missing:
      raise ValueError(f"coordinator address {args['coordinator_address']!r} given, but not "
                       f"{' and '.join(missing)}: JAX cannot detect them outside TPU pods and "
                       "SLURM")
    jax.distributed.initialize(**args)
  else:
    hosts = [h for h in os.environ.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]
    if len(hosts) <= 1 and int(os.environ.get("SLURM_NTASKS", "1")) <= 1:
      return False
    jax.distributed.initialize()
  logging.info("jax.distributed initialised: process %d of %d", jax.process_index(),
               jax.process_count())
  return True
