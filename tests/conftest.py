"""Every test sees 8 simulated CPU devices; single-device runs use a 1-device mesh.

Compiled programs are cached on disk for the session, so that the runs of one
test that build the same steps anew (uninterrupted, killed and resumed
training) compile them once.
"""

import atexit
import os
import shutil
import tempfile

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=8")

import jax  # pylint: disable=g-import-not-at-top (after XLA_FLAGS)

_CACHE = tempfile.mkdtemp(prefix="cvae_jax_tests_")
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
