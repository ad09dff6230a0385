"""What every launcher shares: flags, --help, multi-host start-up and clean errors.

A launcher defines its own flags and calls `launch(main, required=[...])`.
Every failure a user can fix ends in one `error:` line and exit status 2;
Ctrl-C ends in one line and exit status 130.
"""

import os
import re
import sys
import textwrap
from typing import Callable, Sequence

from absl import app, flags, logging
import jax
from jax.experimental import multihost_utils
import ml_collections
from ml_collections import config_flags

from cvae_jax import config_fields, ctrl_c
from cvae_jax.config import base_config
from cvae_jax.errors import CvaeError, Terminated
from cvae_jax.host_memory import keep_freed_memory

CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/ptb.py (configs/ptb.py:tiny for a smoke run).",
    lock_config=True)
WORKDIR = flags.DEFINE_string("workdir", None, "Run directory: checkpoints, metrics, logs.")
SHOW_CONFIG = flags.DEFINE_bool(
    "show_config", False, "Print every config field with its comment and its value "
    "(after the --config.<group>.<field>=value overrides), then exit.")
MULTIHOST = flags.DEFINE_bool(
    "multihost", False, "Call jax.distributed.initialize() first (one process per host); "
    "on Cloud TPU, SLURM and similar clusters it finds its peers by itself.")
COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "With --multihost elsewhere: host:port of process 0.")
NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "With --multihost elsewhere.")
PROCESS_ID = flags.DEFINE_integer("process_id", None, "With --multihost elsewhere.")

_INTERRUPTED = 130  # the exit status after Ctrl-C
_TERMINATED = 143  # after SIGTERM
_HELP = ("-h", "-help", "--help", "--helpshort", "-?")
_CONFIG_OVERRIDE = re.compile(r"^--?(?:no)?config\.([^=]+)")


def launch(main: Callable[[list[str]], None], required: Sequence[str] = ()) -> None:
  """Parses the flags (`required` must be given) and runs `main(argv)` under `run`.

  After Ctrl-C the process ends without tearing the interpreter down: a
  compilation that Ctrl-C abandoned goes on in an XLA thread, and the teardown
  under it crashes (SIGSEGV) or hangs. `run` has completed the checkpoints and
  printed its line by then.
  """
  try:
    app.run(lambda argv: run(lambda: main(argv)),
            flags_parser=lambda argv: parse_flags(argv, required))
  except BrokenPipeError:  # the reader of stdout has gone (`--help | head`)
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(1)
  except SystemExit as e:
    if e.code != _INTERRUPTED:
      raise
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_INTERRUPTED)


def parse_flags(argv: list[str], required: Sequence[str] = ()) -> list[str]:
  """absl flag parsing; --help and --show_config print and exit 0, a bad flag
  or config override exits 2 with one line."""
  if any(arg in _HELP for arg in argv[1:]):
    print(_help(argv[0], required))
    sys.exit(0)
  try:
    rest = flags.FLAGS(argv)
  except (AttributeError, KeyError, TypeError) as e:
    _exit(f"error: {_unknown_field(argv) or f'bad config override: {e}'}", 2)
  except (flags.Error, ValueError) as e:
    _exit(f"error: {e} (see --help)", 2)
  if SHOW_CONFIG.value:
    if CONFIG.value is None:
      _exit("error: --show_config needs --config, e.g. --config configs/ptb.py", 2)
    print(config_fields.describe(CONFIG.value))
    sys.exit(0)
  for name in required:
    if flags.FLAGS[name].value is None:
      _exit(f"error: --{name} is required: {flags.FLAGS[name].help}", 2)
  return rest


def given_fields(argv: Sequence[str]) -> tuple[str, ...]:
  """The config fields that `argv` (a command line) sets, as dotted names
  ('model.posterior'), in order."""
  return tuple(match.group(1) for arg in argv[1:] if (match := _CONFIG_OVERRIDE.match(arg)))


def run(main: Callable[[], None]) -> None:
  """Runs `main` after multi-host start-up; a CvaeError or an OSError exits 2 with
  its message, Ctrl-C 130, SIGTERM during training 143. A multi-host run ends
  with every host at a barrier, then shuts the distributed runtime down."""
  keep_freed_memory()  # before JAX starts its threads
  if MULTIHOST.value:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU hosts only
    jax.distributed.initialize(COORDINATOR.value, NUM_PROCESSES.value, PROCESS_ID.value)
  logging.set_verbosity(logging.ERROR)
  try:
    with ctrl_c.handled():
      main()
  except BrokenPipeError:
    raise  # not the run's error: `launch` ends quietly
  except (CvaeError, OSError) as e:
    _exit(f"error: {e}", 2)
  except KeyboardInterrupt as e:
    _exit(str(e) or "interrupted", _INTERRUPTED)
  except Terminated as e:
    _exit(str(e), _TERMINATED)
  if MULTIHOST.value:
    multihost_utils.sync_global_devices("cvae_jax: end of run")
    jax.distributed.shutdown()


def _exit(message: str, status: int):
  print(message, file=sys.stderr, flush=True)
  sys.exit(status)


def _unknown_field(argv: list[str]) -> str:
  """'unknown config field config.x.y; ...' for the first override that names no
  field of the base config, or '' if every override does."""
  for field in given_fields(argv):
    group, path = base_config(), "config"
    for part in field.split("."):
      if not isinstance(group, ml_collections.ConfigDict):
        return f"unknown config field config.{field}: {path} is a field, not a group"
      if part not in group:
        return (f"unknown config field config.{field}; {path} has "
                f"{', '.join(group)} (every field: --config FILE --show_config)")
      group, path = group[part], f"{path}.{part}"
  return ""


def _help(program: str, required: Sequence[str]) -> str:
  """The launcher's docstring, its flags and how to list the config fields."""
  main_module = sys.modules["__main__"]
  shown = list(flags.FLAGS.get_flags_for_module(main_module))
  if "config" in required:
    names = ["config", "workdir", "show_config", "multihost", "coordinator_address",
             "num_processes", "process_id"]
    shown = [flags.FLAGS[n] for n in names if n != "workdir" or n in required] + shown
  lines = [(main_module.__doc__ or "").strip(), "", "Flags:"]
  for flag in shown:
    name = f"--[no]{flag.name}" if flag.boolean else f"--{flag.name}"
    if flag.name in required:
      note = " (required)"
    elif flag.default is not None and not (flag.boolean and not flag.default):
      note = f" (default: {flag.default_as_str})"
    else:
      note = ""
    lines += textwrap.wrap(f"{name}: {flag.help}{note}", 88, initial_indent="  ",
                           subsequent_indent="      ")
  if "config" in required:
    lines += ["", "Config fields: override any with --config.<group>.<field>=VALUE; "
              "list them all,", "with their comments and values, with",
              f"  python {program} --config configs/ptb.py --show_config"]
  lines += ["", "Every flag, those of absl and the libraries included: --helpfull"]
  return "\n".join(lines)
