"""Ctrl-C that is never lost, and blocks that finish before it takes effect.

Python raises Ctrl-C's KeyboardInterrupt wherever the main thread is, also
inside a garbage-collector callback (JAX registers one), where the exception
is printed as "Exception ignored" with its traceback and dropped, and the run
would go on. While `handled()` is active, Ctrl-C is also recorded, `check()`
(called between training steps and evaluation batches) raises it again, and
a recorded Ctrl-C dropped that way is not printed.
"""

import contextlib
import signal
import sys
import threading
from typing import Iterator

_received = [False]


def _record_and_raise(signum, frame):
  _received[0] = True
  raise KeyboardInterrupt


def _raises() -> bool:
  """Whether Ctrl-C raises KeyboardInterrupt here (in the main thread, not ignored)."""
  return (threading.current_thread() is threading.main_thread()
          and signal.getsignal(signal.SIGINT) in (signal.default_int_handler,
                                                  _record_and_raise))


@contextlib.contextmanager
def handled() -> Iterator[None]:
  """Inside the block, a Ctrl-C is remembered for `check()` (and not printed
  where Python drops it); an ignored Ctrl-C (a background job's) stays ignored."""
  if not _raises():
    yield
    return
  previous = signal.signal(signal.SIGINT, _record_and_raise)
  previous_hook = sys.unraisablehook

  def unraisable_hook(unraisable):
    if not (_received[0] and isinstance(unraisable.exc_value, KeyboardInterrupt)):
      previous_hook(unraisable)
  sys.unraisablehook = unraisable_hook
  try:
    yield
  finally:
    signal.signal(signal.SIGINT, previous)
    sys.unraisablehook = previous_hook
    _received[0] = False


def check() -> None:
  """Raises KeyboardInterrupt if Ctrl-C came and its own was dropped."""
  if _received[0]:
    raise KeyboardInterrupt


@contextlib.contextmanager
def deferred() -> Iterator[None]:
  """Ctrl-C inside the block raises KeyboardInterrupt when the block ends."""
  if not _raises():
    yield
    return
  came = []
  previous = signal.signal(signal.SIGINT, lambda *_: came.append(True))
  try:
    yield
  finally:
    signal.signal(signal.SIGINT, previous)
  if came:
    raise KeyboardInterrupt
