"""Ctrl-C: never lost nor printed in a garbage-collector callback, deferred over a block."""

import gc
import os
import signal
import sys

import pytest

from cvae_jax import ctrl_c


@pytest.fixture
def ctrl_c_raises():
  """SIGINT raises KeyboardInterrupt in this process (a test worker may ignore it)."""
  previous = signal.signal(signal.SIGINT, signal.default_int_handler)
  yield
  signal.signal(signal.SIGINT, previous)


def _ctrl_c_during_a_gc_callback():
  """Sends Ctrl-C to this process from a gc callback, where Python prints the
  KeyboardInterrupt and drops it (as with JAX's own callback)."""
  sent = []

  def callback(phase, info):
    if phase == "start" and not sent:
      sent.append(True)
      os.kill(os.getpid(), signal.SIGINT)
  gc.callbacks.append(callback)
  try:
    gc.collect()
  finally:
    gc.callbacks.remove(callback)
  assert sent


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_ctrl_c_dropped_in_a_gc_callback_is_raised_by_check(ctrl_c_raises):
  _ctrl_c_during_a_gc_callback()  # without `handled`, nothing remembers it
  ctrl_c.check()
  with ctrl_c.handled():
    _ctrl_c_during_a_gc_callback()
    with pytest.raises(KeyboardInterrupt):
      ctrl_c.check()
  ctrl_c.check()  # forgotten when the block ends
  assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_ctrl_c_check_raises_again_is_not_printed_as_ignored(ctrl_c_raises, monkeypatch):
  def fails(phase, info):
    if phase == "start":
      raise ValueError("a callback's own error")

  reported = []
  monkeypatch.setattr(sys, "unraisablehook", reported.append)
  _ctrl_c_during_a_gc_callback()  # outside the block: reported
  with ctrl_c.handled():
    _ctrl_c_during_a_gc_callback()  # recorded for check(): not reported
    gc.callbacks.append(fails)
    try:
      gc.collect()  # another error: reported
    finally:
      gc.callbacks.remove(fails)
    with pytest.raises(KeyboardInterrupt):
      ctrl_c.check()
  assert sys.unraisablehook == reported.append
  assert [type(u.exc_value) for u in reported] == [KeyboardInterrupt, ValueError]


def test_ctrl_c_in_a_deferred_block_is_raised_when_the_block_ends(ctrl_c_raises):
  done = []
  with pytest.raises(KeyboardInterrupt):
    with ctrl_c.handled(), ctrl_c.deferred():
      os.kill(os.getpid(), signal.SIGINT)
      done.append(True)  # not interrupted
  assert done


def test_an_ignored_ctrl_c_stays_ignored():
  previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
  try:
    with ctrl_c.handled(), ctrl_c.deferred():
      assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
      os.kill(os.getpid(), signal.SIGINT)
    ctrl_c.check()
  finally:
    signal.signal(signal.SIGINT, previous)
