"""The exception types that reach users as a clean message."""


class CvaeError(Exception):
  """Bad input or state a user can fix; launchers print it and exit 2."""


class DataError(CvaeError):
  """A data file is missing, empty or malformed."""


class Interrupted(KeyboardInterrupt):
  """Ctrl-C during training; launchers print where the run stands and exit 130.

  A KeyboardInterrupt still, so that callers that stop on Ctrl-C keep doing so.
  """

  def __init__(self, step: int, checkpoint_step: int | None):
    super().__init__(step, checkpoint_step)
    self.step = step  # train steps done when the run stopped
    self.checkpoint_step = checkpoint_step  # the newest checkpoint's, None before the first

  def __str__(self) -> str:
    if self.checkpoint_step is None:
      return (f"interrupted at step {self.step}, before the first checkpoint; "
              "run the same command to start again")
    return (f"interrupted at step {self.step}; the checkpoint of step "
            f"{self.checkpoint_step} is kept; run the same command to resume")


class Terminated(Exception):
  """SIGTERM during training, after the checkpoint of the step it stopped at
  was written; launchers print it and exit 143 (128 + SIGTERM)."""

  def __init__(self, step: int):
    super().__init__(step)
    self.step = step

  def __str__(self) -> str:
    return (f"terminated at step {self.step}; its checkpoint is kept; "
            "run the same command to resume")
