"""Metric events to <workdir>/metrics.jsonl and TensorBoard (tensorboardX).

Each event is one JSON object: {"step": int, "split": "train"|"valid"|...,
<metric>: float, ...}; TensorBoard gets `<split>/<metric>` scalars. The two
logs hold the same events: when a run resumes, or a test event replaces an
older one, <workdir>/tb/ is rewritten from metrics.jsonl.
"""

import json
import math
import os
import shutil
import sys
from typing import Mapping

import jax
from tensorboardX import SummaryWriter

from cvae_jax.errors import CvaeError


class MetricWriter:
  """Writes from process 0 only.

  `truncate_after(step)` drops the events that a killed run wrote after the
  checkpoint it resumes from; a new test event replaces the older ones.
  """

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.tb_dir = os.path.join(workdir, "tb")
    self.enabled = jax.process_index() == 0
    self._tb = self._open_tb() if self.enabled else None

  def truncate_after(self, step: int) -> None:
    """Forget the events after `step` (the checkpoint a run resumes from).

    tb/ is written anew from metrics.jsonl: tensorboardX writes from a queue,
    so a run that ended without `close()` (killed) may have left its last
    events out of it.
    """
    if not (self.enabled and os.path.exists(self.path)):
      return
    events = read_events(os.path.dirname(self.path))
    self._rewrite([e for e in events if e["step"] <= step])

  def write(self, step: int, split: str, values: Mapping[str, float]) -> None:
    """Appends one event; a test event replaces the run's earlier test events."""
    if not self.enabled:
      return
    if split == "test" and os.path.exists(self.path):
      events = read_events(os.path.dirname(self.path))
      if any(e["split"] == "test" for e in events):
        self._rewrite([e for e in events if e["split"] != "test"])
    event = {"step": int(step), "split": split,
             **{k: _json_float(v) for k, v in values.items()}}
    with open(self.path, "a") as f:
      f.write(json.dumps(event) + "\n")
    self._add_to_tb(event)
    self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()

  def _open_tb(self) -> SummaryWriter:
    try:
      return SummaryWriter(self.tb_dir)
    except OSError as e:
      raise CvaeError(f"cannot write TensorBoard logs to {self.tb_dir}: "
                      f"{e.strerror or e}") from e

  def _add_to_tb(self, event: dict) -> None:
    for name, value in event.items():
      if name not in ("step", "split"):
        self._tb.add_scalar(f"{event['split']}/{name}", float(value), event["step"])

  def _rewrite(self, events: list[dict]) -> None:
    """metrics.jsonl and tb/ hold exactly `events` (metrics.jsonl replaced atomically)."""
    with open(self.path + ".tmp", "w") as f:
      f.writelines(json.dumps(e) + "\n" for e in events)
    os.replace(self.path + ".tmp", self.path)
    self._tb.close()
    shutil.rmtree(self.tb_dir, ignore_errors=True)
    self._tb = self._open_tb()
    for event in events:
      self._add_to_tb(event)
    self._tb.flush()


def _json_float(v) -> float | str | None:
  v = float(v)
  return v if math.isfinite(v) else str(v)


def finite(value, default: float = math.nan) -> float:
  """An event's metric as a float; a missing or non-finite one ('nan', 'inf'
  in metrics.jsonl) as `default`."""
  value = math.nan if value is None else float(value)
  return value if math.isfinite(value) else default


def read_events(workdir: str) -> list[dict]:
  """All events of a run's metrics.jsonl, in order.

  A last line without its newline that is not JSON (the run stopped while
  writing it) is dropped with a warning; any other line that is not JSON is a
  CvaeError naming the line.
  """
  path = os.path.join(workdir, "metrics.jsonl")
  with open(path) as f:
    lines = f.read().split("\n")
  last = lines.pop()  # '' when the file ends with a newline
  events = []
  for number, line in enumerate(lines, start=1):
    if line.strip():
      try:
        events.append(json.loads(line))
      except json.JSONDecodeError as e:
        raise CvaeError(f"{path}, line {number} is not a JSON event ({e.msg}); "
                        "remove that line") from e
  if last.strip():
    try:
      events.append(json.loads(last))
    except json.JSONDecodeError:
      print(f"warning: {path}: dropped the unfinished last line {last[:40]!r}... "
            "(the run stopped while writing it)", file=sys.stderr)
  return events
