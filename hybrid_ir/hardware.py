"""This host: what a measurement ran on, for run summaries and benchmark logs (timings are only
comparable on one machine, so every number carries its CPU model and accelerator), its memory,
and whether a process of it is still running (`process_alive`, for the workdir lease and a
store's half-written folder)."""
import os
import platform


def cpu_model() -> str:
  """The CPU's model name from /proc/cpuinfo, else what `platform` knows."""
  try:
    for line in open("/proc/cpuinfo"):
      if line.startswith("model name"):
        return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def describe() -> str:
  """The accelerator (if any), the CPU model and the core count, e.g. 'AMD EPYC 7B13, 2 cores'."""
  import jax  # pylint: disable=g-import-not-at-top  (benchmarks that never touch jax stay light)
  device = jax.devices()[0]
  accel = "" if device.platform == "cpu" else f"{jax.device_count()} x {device.device_kind}, "
  return f"{accel}{cpu_model()}, {os.cpu_count()} cores"


def host_memory() -> dict[str, float]:
  """This process's resident memory now and its peak since the last `reset_peak_memory`, in GiB
  (Linux /proc; empty elsewhere)."""
  out = {}
  try:
    for line in open("/proc/self/status"):
      key, _, value = line.partition(":")
      if key in ("VmRSS", "VmHWM"):
        out["rss" if key == "VmRSS" else "peak"] = int(value.split()[0]) / 2**20
  except OSError:
    pass
  return out


def reset_peak_memory() -> None:
  """Restarts the peak that `host_memory` reports (Linux: clear_refs 5), so that a peak can be
  read per phase of a program."""
  try:
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")
  except OSError:
    pass


def log_memory(phase: str) -> dict[str, float]:
  """Logs `host_memory` (and the device's bytes in use where its backend reports them) as
  'memory <phase>: ...', then restarts the peak; returns what it logged. benchmarks/bench_memory.py
  reads these lines from a trainer's log."""
  import jax  # pylint: disable=g-import-not-at-top
  from absl import logging  # pylint: disable=g-import-not-at-top
  mem = host_memory()
  stats = jax.local_devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    mem["device_peak"] = stats["peak_bytes_in_use"] / 2**30
  logging.info("memory %s: %s", phase, " ".join(f"{k} {v:.2f} GiB" for k, v in mem.items()))
  reset_peak_memory()
  return mem


def process_alive(pid: int) -> bool:
  """Whether a process `pid` of this host is running. Used to tell a writer that died (its
  lease or half-written store may be taken over) from one that is still at work: anything that
  is not a definite "no such process" (no permission to signal it, a pid out of range) counts
  as alive, so nothing of a live writer is ever removed."""
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except (PermissionError, OverflowError, ValueError):
    return True
  return True
