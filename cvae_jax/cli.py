"""What every launcher shares: flags, multi-host start-up and clean errors."""

import sys
from typing import Callable

from absl import flags, logging
import jax
from ml_collections import config_flags

from cvae_jax.errors import CvaeError
from cvae_jax.host_memory import keep_freed_memory

CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/ptb.py (configs/ptb.py:tiny for a smoke run).",
    lock_config=True)
WORKDIR = flags.DEFINE_string("workdir", None, "Run directory: checkpoints, metrics, logs.")
MULTIHOST = flags.DEFINE_bool(
    "multihost", False, "Call jax.distributed.initialize() first (one process per host); "
    "on Cloud TPU, SLURM and similar clusters it finds its peers by itself.")
COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "With --multihost elsewhere: host:port of process 0.")
NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "With --multihost elsewhere.")
PROCESS_ID = flags.DEFINE_integer("process_id", None, "With --multihost elsewhere.")


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing where a bad flag or config override exits 2 with one line."""
  try:
    return flags.FLAGS(argv)
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
    what = "unknown config field" if isinstance(e, (AttributeError, KeyError)) else "bad flag"
    print(f"error: {what}: {e} "
          "(config fields are --config.<group>.<field>; see the config file)",
          file=sys.stderr)
    sys.exit(2)


def run(main: Callable[[], None]) -> None:
  """Runs `main` after multi-host start-up; a CvaeError exits 2 with its message."""
  keep_freed_memory()  # before JAX starts its threads
  if MULTIHOST.value:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU hosts only
    jax.distributed.initialize(COORDINATOR.value, NUM_PROCESSES.value, PROCESS_ID.value)
  logging.set_verbosity(logging.ERROR)
  try:
    main()
  except CvaeError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
