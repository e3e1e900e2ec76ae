"""hybrid_ir.hardware: the machine's description, host memory per phase, live processes."""
import os
import subprocess
import sys

import numpy as np
import pytest

from hybrid_ir import hardware


def test_describe_names_the_cpu_and_the_core_count():
  text = hardware.describe()
  assert text.endswith(f'{hardware.cpu_model()}, {os.cpu_count()} cores')
  assert hardware.cpu_model().strip()


@pytest.mark.skipif(not os.path.exists('/proc/self/status'), reason='Linux /proc only')
def test_peak_memory_is_per_phase():
  hardware.reset_peak_memory()
  before = hardware.host_memory()
  assert 0 < before['rss'] <= before['peak'] + 1e-3
  block = np.ones(256 << 20, np.uint8)  # 0.25 GiB, touched
  during = hardware.host_memory()
  del block
  assert during['peak'] - before['rss'] > 0.2
  hardware.reset_peak_memory()
  after = hardware.host_memory()
  assert after['peak'] < during['peak'] - 0.2  # the freed block is no longer the peak


def test_process_alive_tells_a_running_process_from_a_finished_one():
  assert hardware.process_alive(os.getpid())
  child = subprocess.Popen([sys.executable, '-c', 'pass'])
  child.wait()  # reaped: its pid names no process now
  assert not hardware.process_alive(child.pid)
  # A pid that cannot be signalled or checked counts as alive: nothing of it may be removed.
  assert hardware.process_alive(2**80)
