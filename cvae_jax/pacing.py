"""A host loop that stays at most a few steps ahead of the devices.

JAX dispatches asynchronously, so a Python loop can queue programs far ahead
of the devices. XLA:CPU with several devices (the tests' 8, or any
`--xla_force_host_platform_device_count`) runs every device's part of a
program on one pool of max(cores, devices) threads and lets a device hold 32
programs in flight. With that many small programs queued behind a collective
one, a device's part of the collective can wait for a reservation that only
the queued programs, waiting for a thread, would free: the process hangs, and
aborts when XLA's collective timeout ends it (a killed and resumed test run
did, on a loaded 2-core machine). Waiting for the step `depth` back costs
nothing where the devices are the bottleneck: `depth` steps stay queued.
"""

import collections
from typing import Any

import jax


class Paced:
  """Call once a step with that step's outputs; returns when the outputs of
  the step `depth` calls back are ready, so that at most `depth` steps (and
  their few programs) are in flight."""

  def __init__(self, depth: int = 2):
    self._recent: collections.deque = collections.deque()
    self._depth = depth

  def __call__(self, outputs: Any) -> None:
    self._recent.append(outputs)
    if len(self._recent) > self._depth:
      jax.block_until_ready(self._recent.popleft())
