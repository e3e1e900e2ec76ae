"""Test-wide set-up: 8 fake CPU devices for sharding tests, and paths to the shared data."""
import atexit
import os
import pathlib
import shutil
import tempfile

# Must be set before jax is imported anywhere.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Everything a test process and its children write to a temporary folder (pytest's tmp_path,
# TensorFlow's autograph files, prepared training stores) goes into one folder of this process,
# removed when it exits: the suite leaves nothing in /tmp, and never touches the user's cache.
_TMP = tempfile.mkdtemp(prefix="hybrid_ir_tests_")
atexit.register(shutil.rmtree, _TMP, ignore_errors=True)
os.environ["TMPDIR"] = tempfile.tempdir = _TMP
os.environ["HYBRID_IR_STORES"] = os.path.join(_TMP, "stores")

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = pathlib.Path(os.environ.get("HYBRID_IR_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
  if not SHARED_DATA.is_dir():
    pytest.fail(f"shared data not found at {SHARED_DATA} (set HYBRID_IR_DATA)")
  return SHARED_DATA


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
  """Each experiment run in a test builds fresh jitted functions of the same shapes; an on-disk
  cache for this session compiles each once, which halves the miniature experiments' time."""
  import jax
  jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("jax_cache")))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def _release_host_memory() -> None:
  """Drops jax's compiled functions and the garbage of a finished module, and hands the freed
  heap back to the OS (glibc keeps it otherwise, and a worker's RSS only grows)."""
  import ctypes
  import gc
  import jax
  jax.clear_caches()
  gc.collect()
  try:
    ctypes.CDLL("libc.so.6").malloc_trim(0)
  except (OSError, AttributeError):
    pass


@pytest.fixture(scope="module", autouse=True)
def release_memory_after_each_module(request):
  """A worker holds one test module's models and executables at a time, not the sum of all the
  modules it ran. With HYBRID_IR_TEST_MEMORY=<file>, each module's peak RSS is appended there
  (benchmarks/bench_memory.py --suite reads it)."""
  from hybrid_ir import hardware
  hardware.reset_peak_memory()
  yield
  _release_host_memory()
  path = os.environ.get("HYBRID_IR_TEST_MEMORY")
  if path:
    import json
    mem = hardware.host_memory()
    with open(path, "a") as f:
      f.write(json.dumps({"worker": os.environ.get("PYTEST_XDIST_WORKER", "main"),
                          "module": request.module.__name__, **mem}) + "\n")
