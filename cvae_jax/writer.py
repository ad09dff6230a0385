"""Metric events to <workdir>/metrics.jsonl and TensorBoard (tensorboardX).

Each event is one JSON object: {"step": int, "split": "train"|"valid"|...,
<metric>: float, ...}; TensorBoard gets `<split>/<metric>` scalars.
"""

import json
import math
import os
from typing import Mapping

import jax
from tensorboardX import SummaryWriter


class MetricWriter:
  """Writes from process 0 only; `truncate_after(step)` drops events past a resume."""

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.enabled = jax.process_index() == 0
    self._tb = SummaryWriter(os.path.join(workdir, "tb")) if self.enabled else None

  def truncate_after(self, step: int) -> None:
    """Forget the events a killed run wrote after the checkpoint it resumes from,
    and the test events, which every run recomputes at its end."""
    if not (self.enabled and os.path.exists(self.path)):
      return
    with open(self.path) as f:
      events = [json.loads(line) for line in f if line.strip()]
    kept = [json.dumps(e) + "\n" for e in events
            if e["step"] <= step and e["split"] != "test"]
    with open(self.path + ".tmp", "w") as f:
      f.writelines(kept)
    os.replace(self.path + ".tmp", self.path)

  def write(self, step: int, split: str, values: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    event = {"step": int(step), "split": split,
             **{k: _json_float(v) for k, v in values.items()}}
    with open(self.path, "a") as f:
      f.write(json.dumps(event) + "\n")
    for name, value in values.items():
      self._tb.add_scalar(f"{split}/{name}", value, step)
    self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


def _json_float(v) -> float | str | None:
  v = float(v)
  return v if math.isfinite(v) else str(v)


def read_events(workdir: str) -> list[dict]:
  """All events of a run's metrics.jsonl, in order."""
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f if line.strip()]
