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
# Prepared training stores go to a fresh folder per test process, never the user's cache.
os.environ["HYBRID_IR_STORES"] = tempfile.mkdtemp(prefix="hybrid_ir_stores_")
atexit.register(shutil.rmtree, os.environ["HYBRID_IR_STORES"], ignore_errors=True)

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
