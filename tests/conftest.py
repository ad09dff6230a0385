"""Test session setup, done before JAX is imported.

Every test sees 8 simulated CPU devices; single-device runs use a 1-device
mesh. All tests, and the launcher subprocesses they start, share one
persistent compilation cache that lives as long as the session: a killed run
and its resumption, or two tests with the same step, compile once.
"""

import os
import shutil
import tempfile

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=8")

if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _CACHE_DIR = tempfile.mkdtemp(prefix="cvae_jax_test_xla_cache_")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE_DIR
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"

  def pytest_unconfigure():
    shutil.rmtree(_CACHE_DIR, ignore_errors=True)
