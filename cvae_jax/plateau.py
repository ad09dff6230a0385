"""Learning-rate decay on a validation plateau, and early stopping.

After each validation pass the run asks `Plateau.update(valid_nll, step)` what
to do (He et al. 2019 halve the learning rate when the validation loss stops
improving and stop after a number of decays):

  'improved'  a new best validation NLL;
  'wait'      no improvement yet, patience left;
  'decay'     `lr_decay_patience` passes without improvement since the best or
              the last decay: multiply the learning rate by the decay factor
              (at most `max_lr_decays` times);
  'stop'      `early_stop_patience` passes without improvement since the best
              or the last decay, when no decay is due: end training.

Validation passes before `start_step` update the best value but never count
towards patience (the validation NLL moves for other reasons while the KL
weight is still rising). Passes up to `pretrain_steps` (the autoencoder
pretraining, whose NLL a reset decoder cannot be compared with) are ignored
altogether: the best is tracked from the decoder's reset on. The counters
are plain JSON, saved in every checkpoint's meta, so a run killed in the
middle of a plateau resumes it.
"""

from __future__ import annotations

import dataclasses
import math

import ml_collections


@dataclasses.dataclass(frozen=True)
class PlateauRule:
  """The static part: patiences in validation passes (0 disables each)."""

  lr_decay_patience: int = 0
  max_lr_decays: int = 0
  early_stop_patience: int = 0
  start_step: int = 0
  pretrain_steps: int = 0

  @classmethod
  def from_config(cls, t: ml_collections.ConfigDict) -> PlateauRule:
    """`t.plateau_start` counts from the end of `t.ae_pretrain_steps`."""
    return cls(t.lr_decay_patience, t.max_lr_decays, t.early_stop_patience,
               t.ae_pretrain_steps + t.plateau_start, t.ae_pretrain_steps)


@dataclasses.dataclass
class Plateau:
  """The counters: best NLL, passes since the best or last decay, decays so far."""

  rule: PlateauRule
  best: float = math.inf
  waited: int = 0
  decays: int = 0
  stopped: bool = False

  def update(self, valid_nll: float, step: int) -> str:
    """The action after a validation pass at `step` with NLL `valid_nll`."""
    if self.rule.pretrain_steps and step <= self.rule.pretrain_steps:
      return "wait"
    if valid_nll < self.best:
      self.best, self.waited = valid_nll, 0
      return "improved"
    if step < self.rule.start_step:
      return "wait"
    self.waited += 1
    r = self.rule
    if r.lr_decay_patience and self.decays < r.max_lr_decays and (
        self.waited >= r.lr_decay_patience):
      self.decays, self.waited = self.decays + 1, 0
      return "decay"
    if r.early_stop_patience and self.waited >= r.early_stop_patience:
      self.stopped = True
      return "stop"
    return "wait"

  def to_json(self) -> dict:
    return {"best": self.best if math.isfinite(self.best) else None,
            "waited": self.waited, "decays": self.decays, "stopped": self.stopped}

  @classmethod
  def from_json(cls, rule: PlateauRule, saved: dict | None) -> Plateau:
    if not saved:
      return cls(rule)
    best = math.inf if saved["best"] is None else saved["best"]
    return cls(rule, best, saved["waited"], saved["decays"], saved["stopped"])
