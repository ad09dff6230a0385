"""The lagging encoder's aggressive phase (He et al. 2019).

While the phase lasts, each training step first optimises the inference
network alone: encoder-only steps on the step's batch and then on random
training batches, until the loss per token of the last `check_every` encoder
steps is not below that of the `check_every` before (their code breaks when
it rose), at most `max_inner` steps. Then one step updates the generative
model (decoder and embedding) alone on the step's batch. After each
validation pass the phase ends for good unless the mutual information I_q
rose; from then on the steps are the usual joint ones.

The inner steps' batches and randomness are functions of (seed, step, inner
index), and the phase flag and the last MI are plain JSON saved in every
checkpoint's meta, so a run killed in the phase resumes exactly.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax

from cvae_jax.pacing import Paced

Step = Callable[[Any, dict, jax.Array], tuple[Any, dict]]  # (state, batch, key) -> (state, sums)


@dataclasses.dataclass
class Phase:
  """Whether the aggressive phase lasts, and the MI of the last validation."""

  active: bool = True
  previous_mi: float = -math.inf

  def update(self, mi: float) -> bool:
    """After a validation pass with MI `mi`; True when the phase ends now."""
    ended = self.active and not mi > self.previous_mi
    self.active, self.previous_mi = self.active and not ended, mi
    return ended

  def to_json(self) -> dict:
    previous = self.previous_mi if math.isfinite(self.previous_mi) else None
    return {"active": self.active, "previous_mi": previous}

  @classmethod
  def from_json(cls, saved: dict | None) -> Phase:
    if not saved:
      return cls()
    previous = -math.inf if saved["previous_mi"] is None else saved["previous_mi"]
    return cls(saved["active"], previous)


def encoder_steps(step_fn: Callable[[Any, int], tuple[Any, dict]], state: Any,
                  max_inner: int, check_every: int) -> tuple[Any, int]:
  """Inner steps until the loss stops falling; the state and the steps taken.

  step_fn(state, i) runs inner step i and returns the state and its summed
  metrics (`loss` and `tokens` are read, on the host, every `check_every`
  steps). Stops after the first check whose loss per token over its
  `check_every` steps is not below the previous check's, or after `max_inner`.
  """
  previous, loss, tokens = math.inf, 0.0, 0.0
  paced = Paced()
  for i in range(max_inner):
    state, sums = step_fn(state, i)
    loss, tokens = loss + sums["loss"], tokens + sums["tokens"]
    paced((loss, tokens))
    if (i + 1) % check_every == 0:
      current = float(loss) / float(tokens)
      if not current < previous:
        return state, i + 1
      previous, loss, tokens = current, 0.0, 0.0
  return state, max_inner


@dataclasses.dataclass
class LaggingEncoder:
  """One training step of a run with the lagging encoder.

  joint, generative: jitted train steps updating every parameter group, and
  the decoder and embedding alone; encoder: a jitted encoder-only step that
  leaves `state.step` as it is. random_batch(step, i): inner step i's batch
  (a global batch) at training step `step`.
  """

  phase: Phase
  joint: Step
  generative: Step
  encoder: Step
  random_batch: Callable[[int, int], dict]
  key: jax.Array  # the inner steps' randomness
  max_inner: int
  check_every: int

  def __call__(self, state: Any, batch: dict, key: jax.Array, step: int
               ) -> tuple[Any, dict]:
    """Training step `step` (= state.step) on `batch` with randomness `key`;
    the sums gain `aggressive` (1 in the phase) and `inner_steps`, each times
    the sentences."""
    active, inner = self.phase.active, 0
    if active:
      def inner_step(state, i):
        inputs = batch if i == 0 else self.random_batch(step, i)
        return self.encoder(state, inputs, jax.random.fold_in(self.key, i))

      state, inner = encoder_steps(inner_step, state, self.max_inner, self.check_every)
      state, sums = self.generative(state, batch, key)
    else:
      state, sums = self.joint(state, batch, key)
    return state, dict(sums, aggressive=float(active) * sums["sentences"],
                       inner_steps=inner * sums["sentences"])
