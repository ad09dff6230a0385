"""A grid of runs: every combination of swept config fields, one workdir each.

  <root>/<field>=<value>,<field>=<value>/   one run of launch/train.py
  <root>/grid.json                          the commands, hardware and run names

Runs go one after another (or `parallel` at a time, each logging to its
workdir's `log.txt`). A finished run (its test event written, and its
`eval_<split>.json` when evaluating) is skipped; an unfinished one resumes
from its checkpoint, so the same grid command can be repeated until done.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import itertools
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from typing import Sequence

import jax
import ml_collections

from cvae_jax import eval_progress
from cvae_jax.config import flat_fields
from cvae_jax.errors import CvaeError
from cvae_jax.workdir import holder

LAUNCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "launch")
CTRL_C_GRACE_S = 10.0  # how long the runs get to end on a Ctrl-C of their own


@dataclasses.dataclass(frozen=True)
class GridRun:
  name: str  # the workdir's base name
  overrides: tuple[str, ...]  # '--config.<field>=<value>' flags


def parse_sweeps(config: ml_collections.ConfigDict, sweeps: Sequence[str]
                 ) -> list[tuple[str, list[str]]]:
  """'model.posterior=none,gaussian' -> [('model.posterior', ['none', 'gaussian'])].

  Raises CvaeError for a malformed sweep or a field the config does not have.
  """
  fields = set(flat_fields(config.to_dict()))
  parsed = []
  for sweep in sweeps:
    field, sep, values = sweep.partition("=")
    field = field.removeprefix("config.")
    if not sep or not field or not values:
      raise CvaeError(f"bad --sweep {sweep!r}: use --sweep <group>.<field>=v1,v2,...")
    if field not in fields:
      raise CvaeError(f"bad --sweep {sweep!r}: unknown config field config.{field}")
    if field in (f for f, _ in parsed):
      raise CvaeError(f"config.{field} is swept twice")
    parsed.append((field, values.split(",")))
  return parsed


def grid_runs(sweeps: list[tuple[str, list[str]]]) -> list[GridRun]:
  """Every combination, named by its short field names (the last dotted part
  where that is unambiguous)."""
  short = {f: f.rsplit(".", 1)[-1] for f, _ in sweeps}
  if len(set(short.values())) < len(short):
    short = {f: f for f in short}
  runs = []
  for values in itertools.product(*(v for _, v in sweeps)):
    pairs = list(zip((f for f, _ in sweeps), values))
    runs.append(GridRun(",".join(f"{short[f]}={v}" for f, v in pairs),
                        tuple(f"--config.{f}={v}" for f, v in pairs)))
  return runs


def is_finished(workdir: str, split: str | None) -> bool:
  """Training's last event is its test event (a run restarted for more steps
  and stopped again is not finished), and evaluation wrote eval_<split>.json
  after it."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.isfile(path):
    return False
  with open(path) as f:
    lines = [line for line in f if line.strip()]
  if not lines or '"split": "test"' not in lines[-1]:
    return False
  evaluation = os.path.join(workdir, f"eval_{split}.json")
  return not split or (os.path.isfile(evaluation)
                       and os.path.getmtime(evaluation) >= os.path.getmtime(path))


def state(workdir: str, split: str | None) -> str:
  """Where a run stands: 'finished', 'trained, not evaluated' (with the
  batches an unfinished evaluation saved), 'checkpoint of step N' (its newest,
  where it resumes), 'no checkpoint yet' or 'not started'; 'training now (pid
  P), ...' while a process holds the run."""
  if is_finished(workdir, split):
    return "finished"
  checkpoints = os.path.join(workdir, "checkpoints")
  steps = [int(d) for d in os.listdir(checkpoints) if d.isdigit()] if os.path.isdir(
      checkpoints) else []
  if is_finished(workdir, None):
    where = "trained, not evaluated"
    saved = eval_progress.batches_saved(eval_progress.path_of(workdir, split))
    if saved:
      where += f" (the evaluation saved {saved} batches)"
  elif steps:
    where = f"checkpoint of step {max(steps):,}"
  else:
    where = "no checkpoint yet" if os.path.isdir(workdir) else "not started"
  pid = holder(workdir)
  return where if pid is None else f"training now (pid {pid}), {where}"


def commands(run: GridRun, workdir: str, config_flags: Sequence[str],
             split: str | None) -> list[list[str]]:
  """The train command, then the evaluate command when `split` is given."""
  common = [*config_flags, *run.overrides, f"--workdir={workdir}"]
  cmds = [[sys.executable, os.path.join(LAUNCH, "train.py"), *common]]
  if split:
    cmds.append([sys.executable, os.path.join(LAUNCH, "evaluate.py"), *common,
                 f"--split={split}"])
  return cmds


def hardware() -> str:
  """The devices and, on CPU, the processor: e.g. '1 x NVIDIA H100 80GB HBM3'."""
  kind = jax.devices()[0].device_kind
  if jax.default_backend() == "cpu":
    kind = f"{_cpu_model()} ({os.cpu_count()} cores), JAX CPU"
  return f"{jax.device_count()} x {kind}, jax {jax.__version__}"


def _cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "CPU"


def config_flags(argv: Sequence[str]) -> list[str]:
  """The --config flags of a command line (with the value of a bare --config)."""
  out = []
  for i, arg in enumerate(argv):
    if arg.lstrip("-").startswith("config") and arg.startswith("-"):
      out.append(arg)
      if arg.lstrip("-") == "config" and i + 1 < len(argv):
        out.append(argv[i + 1])
  return out


def record(root: str, argv: Sequence[str], runs: Sequence[GridRun]) -> None:
  """Appends this grid command, the hardware and the names of its runs to
  <root>/grid.json (the report names a command only beside its runs)."""
  os.makedirs(root, exist_ok=True)
  path = os.path.join(root, "grid.json")
  entries = []
  if os.path.isfile(path):
    with open(path) as f:
      entries = json.load(f)
  entry = {"command": " ".join(["python", "launch/grid.py", *argv]), "hardware": hardware(),
           "runs": [run.name for run in runs]}
  if entry not in entries:
    entries.append(entry)
  with open(path + ".tmp", "w") as f:
    json.dump(entries, f, indent=2)
  os.replace(path + ".tmp", path)


def run_grid(root: str, runs: list[GridRun], config_flags: Sequence[str],
             split: str | None, parallel: int = 1) -> dict[str, str]:
  """Runs the unfinished runs; {name: 'done' | 'skipped' | 'failed (exit N)'}.

  SIGTERM (a `kill`, a scheduler's preemption) passes SIGTERM to the runs in
  flight, waits for them to end, starts no other and raises SystemExit(143);
  Ctrl-C lets them end as after a Ctrl-C of their own, then raises
  KeyboardInterrupt: no run outlives its grid.
  """
  pending = [(run, os.path.join(root, run.name)) for run in runs
             if not is_finished(os.path.join(root, run.name), split)]
  env = dict(os.environ)
  if parallel > 1:  # several runs share one accelerator
    env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", f"{0.9 / parallel:.2f}")
  children = _Children()
  with children.stopped_by_signals(), concurrent.futures.ThreadPoolExecutor(parallel) as pool:
    codes = {run.name: pool.submit(children.run, commands(run, workdir, config_flags, split),
                                   workdir, env, parallel > 1, f"{i + 1}/{len(pending)}")
             for i, (run, workdir) in enumerate(pending)}
  status = {run.name: "skipped" for run in runs}
  status.update({name: "done" if not code.result() else f"failed (exit {code.result()})"
                 for name, code in codes.items()})
  return status


class _Children:
  """The grid's running processes; once stopped, it starts no more."""

  def __init__(self):
    self._lock = threading.Lock()
    self._running: set[subprocess.Popen] = set()
    self._stopped = False

  @contextlib.contextmanager
  def stopped_by_signals(self):
    """SIGTERM inside the block stops the children and raises SystemExit(143);
    Ctrl-C waits for them to end after a Ctrl-C of their own (`_interrupt`);
    any exception out of the block stops new starts."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, self._on_sigterm) if main else None
    try:
      yield
    except KeyboardInterrupt:
      self._interrupt(CTRL_C_GRACE_S)
      raise KeyboardInterrupt("interrupted: the runs in flight have stopped; "
                              "the same command resumes them") from None
    except BaseException:
      self._stopped = True
      raise
    finally:
      if main:
        signal.signal(signal.SIGTERM, previous)

  def _interrupt(self, grace: float) -> None:
    """Stops new starts and returns once every child has ended. Ctrl-C at a
    terminal reaches the children too; a SIGINT sent to the grid alone does
    not, so a child still running after `grace` seconds gets one from here
    (one only: a second would cut its own Ctrl-C handling short)."""
    running = self._stop()
    deadline = time.monotonic() + grace
    for proc in running:
      try:
        proc.wait(max(0.0, deadline - time.monotonic()))
      except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
    for proc in running:
      proc.wait()

  def _stop(self) -> list[subprocess.Popen]:
    """Stops new starts; the children running now."""
    with self._lock:
      self._stopped = True
      return list(self._running)

  def _on_sigterm(self, signum, frame):
    """Passes SIGTERM on, waits for the runs in flight to save and end."""
    running = self._stop()
    for proc in running:
      proc.terminate()
    print("terminated: the runs in flight save their step and stop; the same command "
          "resumes them", file=sys.stderr, flush=True)
    for proc in running:
      proc.wait()
    raise SystemExit(128 + signum)

  def run(self, cmds: list[list[str]], workdir: str, env: dict, to_log: bool,
          position: str) -> int:
    """Runs `cmds` in order until one fails; its exit code, or 0 (-15 once stopped)."""
    if self._stopped:
      return -signal.SIGTERM
    print(f"[{position}] {workdir}", file=sys.stderr, flush=True)
    log = None
    if to_log:
      os.makedirs(workdir, exist_ok=True)
      log = open(os.path.join(workdir, "log.txt"), "a")
    try:
      for cmd in cmds:
        with self._lock:
          if self._stopped:
            return -signal.SIGTERM
          proc = subprocess.Popen(cmd, env=env, stdout=log,
                                  stderr=subprocess.STDOUT if log else None)
          self._running.add(proc)
        code = proc.wait()
        with self._lock:
          self._running.discard(proc)
        if code:
          return code
      return 0
    finally:
      if log:
        log.close()
