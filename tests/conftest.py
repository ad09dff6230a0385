"""Test session setup, done before JAX is imported.

Every test sees 8 simulated CPU devices; single-device runs use a 1-device
mesh. The tests' programs are tiny and most of their time went to compiling
them, so XLA compiles them without its backend (LLVM) optimisation (the eager
train-step test 59 s -> 43 s) and with its older loop emitters instead of the
MLIR fusion emitters (a train step's compilation 1.6x faster, the eager
step's one-op programs 1.8x). The 8 devices' threads share the machine's
cores, so on a loaded machine a collective can wait on a starved device for
longer than XLA's default 40 s, after which XLA aborts the process: the
tests allow 600 s. A user's own XLA_FLAGS setting of any of these flags wins. All
tests, in every pytest-xdist worker (they inherit this process's
environment), and the launcher subprocesses they start, share one
persistent compilation cache that lives as long as the session: a killed run
and its resumption, or two tests with the same step, compile once.

A session started in the background (`pytest ... &`, nohup) inherits SIGINT
ignored, and Python then raises no KeyboardInterrupt on it: the Ctrl-C tests
would wait forever. Every test process takes SIGINT as a terminal's Python
does.
"""

import os
import shutil
import signal
import tempfile

_FLAGS = os.environ.get("XLA_FLAGS", "")
for _flag, _value in (("--xla_backend_optimization_level", "0"),
                      ("--xla_cpu_use_fusion_emitters", "false"),
                      ("--xla_cpu_collective_call_terminate_timeout_seconds", "600")):
  if _flag not in _FLAGS:
    _FLAGS += f" {_flag}={_value}"
os.environ["XLA_FLAGS"] = _FLAGS + " --xla_force_host_platform_device_count=8"
signal.signal(signal.SIGINT, signal.default_int_handler)

if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _CACHE_DIR = tempfile.mkdtemp(prefix="cvae_jax_test_xla_cache_")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE_DIR
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"

  def pytest_unconfigure():
    shutil.rmtree(_CACHE_DIR, ignore_errors=True)
