"""Orbax checkpoints in a run's workdir: the latest few, and the best.

<workdir>/checkpoints/<step>/  for resuming (the latest `keep` are kept)
<workdir>/best/<step>/         the one with the lowest validation NLL
Each holds the train state and a JSON `meta` (epoch, best NLL so far, ...).
"""

import os
from typing import Any, Optional

import orbax.checkpoint as ocp

from cvae_jax import ctrl_c
from cvae_jax.errors import CvaeError


class Checkpoints:
  """Latest-and-best checkpoint managers of one run."""

  def __init__(self, workdir: str, keep: int = 2):
    # Both managers often save the same step at once; on several hosts their
    # barriers (named after the step) must not collide, so each has its own prefix.
    options = lambda n, name: ocp.CheckpointManagerOptions(
        max_to_keep=n, create=True,
        multiprocessing_options=ocp.options.MultiprocessingOptions(
            barrier_sync_key_prefix=name))
    self.latest = ocp.CheckpointManager(
        os.path.join(os.path.abspath(workdir), "checkpoints"),
        options=options(keep, "latest"))
    self.best = ocp.CheckpointManager(
        os.path.join(os.path.abspath(workdir), "best"), options=options(1, "best"))

  def save(self, manager: ocp.CheckpointManager, step: int, state: Any,
           meta: dict) -> None:
    """Starts writing a checkpoint (Ctrl-C takes effect once it has started)."""
    with ctrl_c.deferred():
      manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))

  def restore(self, manager: ocp.CheckpointManager, abstract_state: Any,
              step: Optional[int] = None) -> Optional[tuple[Any, dict]]:
    """(state, meta) of `step` (default: the newest), or None if there is none.

    A checkpoint that does not fit `abstract_state` (another model's) raises
    CvaeError.
    """
    step = manager.latest_step() if step is None else step
    if step is None:
      return None
    try:
      restored = manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
    except (ValueError, KeyError, TypeError) as e:
      raise CvaeError(
          f"the checkpoint {manager.directory}/{step} does not fit this model "
          f"({type(e).__name__}: {str(e)[:300]}); use another --workdir") from e
    return restored.state, restored.meta

  def wait(self) -> None:
    """Waits until the checkpoints being written are complete (Ctrl-C waits too).

    Orbax treats an interrupted save or wait as a failed save and logs it, even
    though the checkpoint may complete; deferring Ctrl-C keeps its bookkeeping
    and the files in step.
    """
    with ctrl_c.deferred():
      self.latest.wait_until_finished()
      self.best.wait_until_finished()

  def close(self) -> None:
    """Completes the checkpoints being written and stops the writers."""
    with ctrl_c.deferred():
      self.latest.close()
      self.best.close()
