"""What a measurement ran on, for run summaries and benchmark logs (timings are only comparable
on one machine, so every number carries its CPU model and accelerator)."""
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
