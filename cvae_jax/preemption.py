"""SIGTERM (a `kill`, a scheduler's or a Cloud TPU VM's preemption) during
training: the run finishes its step, saves a checkpoint of it and stops.

One process notes the signal while `watched()` is active and `requested()`
says so after the step. On several hosts JAX's preemption service (started by
`jax.distributed.initialize`) catches SIGTERM on any host and picks one step
at which every host's `requested()` is true, so that they save together.
"""

import contextlib
import signal
import threading
from typing import Iterator

import jax
from jax.experimental import multihost_utils

_received = [False]


def _record(signum, frame):
  _received[0] = True


@contextlib.contextmanager
def watched() -> Iterator[None]:
  """Inside the block, SIGTERM is noted for `requested()` instead of ending
  the process (a single process's main thread only)."""
  if jax.process_count() > 1 or threading.current_thread() is not threading.main_thread():
    yield
    return
  _received[0] = False  # a signal of an earlier block is not this one's
  previous = signal.signal(signal.SIGTERM, _record)
  try:
    yield
  finally:
    signal.signal(signal.SIGTERM, previous)


def requested(step: int) -> bool:
  """Whether to save and stop after train step `step` (on several hosts: call
  it after every step, on every host)."""
  if jax.process_count() > 1:
    return multihost_utils.reached_preemption_sync_point(step)
  return _received[0]
