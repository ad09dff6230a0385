"""A long evaluation's progress on disk, so that a stopped one (K = 500 at the
paper's size takes over an hour on a 2-core CPU) resumes after the last batch
it saved instead of starting over.

<workdir>/eval_<split>.progress.npz holds, for the split's first n batches,
their summed metrics and their rows (per-sentence posteriors, samples and
entropies: what the split-aggregate MI and the active units need), with a
fingerprint of what they were computed for (the checkpoint and the whole
config). A file with another fingerprint is ignored and replaced.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from typing import Any

import jax
import numpy as np


def path_of(workdir: str, split: str) -> str:
  """Where the evaluation of `split` keeps its progress."""
  return os.path.join(workdir, f"eval_{split}.progress.npz")


def batches_saved(path: str) -> int:
  """The batches the progress file at `path` holds (0 without one)."""
  if not os.path.isfile(path):
    return 0
  with np.load(path) as f:
    return int(f["done"])


class Progress:
  """Saves at most every `every_s` seconds; `load` returns what was saved."""

  def __init__(self, path: str, fingerprint: Any, every_s: float = 60.0):
    self.path = path
    self._key = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()
    self.every_s = every_s
    self._saved_at = time.monotonic()

  def load(self) -> tuple[int, dict | None, list[np.ndarray]]:
    """(batches done, their metric sums, the leaves of their rows, each
    concatenated over the rows); (0, None, []) without a matching file."""
    if not os.path.isfile(self.path):
      return 0, None, []
    with np.load(self.path) as f:
      if str(f["key"]) != self._key:
        return 0, None, []
      sums = {name[4:]: f[name] for name in f.files if name.startswith("sum/")}
      return int(f["done"]), sums, [f[f"row/{i}"] for i in range(int(f["leaves"]))]

  def save(self, done: int, sums: dict, rows: list) -> None:
    """Records the first `done` batches (their `sums` and `rows`, a list of
    pytrees of [rows, ...] arrays), if `every_s` has passed since the last save."""
    if time.monotonic() - self._saved_at < self.every_s:
      return
    leaves = [np.concatenate(parts) for parts in zip(*(jax.tree.leaves(r) for r in rows))]
    arrays = {"key": np.asarray(self._key), "done": np.asarray(done),
              "leaves": np.asarray(len(leaves)),
              **{f"sum/{k}": np.asarray(v) for k, v in sums.items()},
              **{f"row/{i}": x for i, x in enumerate(leaves)}}
    np.savez(self.path + ".tmp.npz", **arrays)
    os.replace(self.path + ".tmp.npz", self.path)
    self._saved_at = time.monotonic()

  def remove(self) -> None:
    if os.path.isfile(self.path):
      os.remove(self.path)
