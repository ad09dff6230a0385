"""Markdown tables of many runs' test metrics: mean ± sd over seeds.

Runs are grouped into one table per dataset and model size, and into one row
per configuration that differs in more than its seed. A row says how many of
its runs have finished; unfinished runs are left out of the means and never
count as zeros. Metrics come from `eval_<split>.json` (launch/evaluate.py,
with the importance-weighted NLL) or else from the test event that training
writes at its end (no IW-NLL).

A run's record is what the tables and figures read: config.json,
metrics.jsonl and eval_<split>.json, without checkpoints (a few hundred KB).
`keep_records` copies records into a folder that can live beside the docs,
so that the tables are regenerated from it after the workdirs are gone and
runs trained at different times share one table.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from typing import Optional, Sequence

import numpy as np

from cvae_jax.config import base_config, flat_fields
from cvae_jax.errors import CvaeError
from cvae_jax.writer import read_events

# (metric key, column title, decimals)
BOUNDS = (("iw_nll", "IW-NLL", 2), ("nll_elbo", "-ELBO", 2), ("kl", "KL", 2),
          ("mi", "MI (batch)", 2), ("mi_split", "MI (split)", 2),
          ("active_units", "AU", 1), ("ppl_iw", "PPL (IW)", 1))
PAPER_CONVENTION = (("nll_paper", "paper-conv. NLL", 2), ("ppl_paper", "paper-conv. PPL", 1))
# The paper's Table 3 (PTB, emb/hidden 512, Z 32): NLL / KL / PPL in its own
# convention (rec + KL - log c: not a bound for the copula rows).
PUBLISHED = {
    ("ptb", "none"): "LSTM-LM 116.2 / - / 104.2",
    ("ptb", "gaussian"): "VAE 105.2 / 1.74 / 121",
    ("ptb", "copula", 0.4): "Copula-VAE λ=0.4 92.2 / 7.3 / 67.2",
    ("ptb", "vmf"): "vmf-VAE 96.0 / 5.7 / 79.6",
    ("ptb", "flow"): "VAE-NF 96.8 / 0.87 / 82.9",
    ("ptb", "full_gaussian"): "non-diag-VAE 105.1 / 4.9 / 121.0",
}
PAPER_SIZE = (512, 512, 32)
# Fields that never separate rows: the seed (averaged over) and where data live.
_NOT_A_ROW = {"seed", "data.source_dir", "data.tfds_dir"}


@dataclasses.dataclass(frozen=True)
class RunResult:
  workdir: str
  config: dict  # the run's config.json
  metrics: Optional[dict]  # None while the run is unfinished

  @property
  def table_key(self) -> tuple:
    m = self.config["model"]
    return (self.config["data"]["name"], m["emb_dim"], m["hidden_dim"], m["latent_dim"])


def find_runs(paths: Sequence[str]) -> list[str]:
  """Run folders (holding config.json): the paths themselves or their children."""
  runs = []
  for path in paths:
    if os.path.isfile(os.path.join(path, "config.json")):
      runs.append(path)
      continue
    if not os.path.isdir(path):
      raise CvaeError(f"{path} is not a run folder or a folder of runs")
    children = sorted(os.path.join(path, c) for c in os.listdir(path)
                      if os.path.isfile(os.path.join(path, c, "config.json")))
    if not children:
      raise CvaeError(f"{path} holds no run (no config.json in it or its sub-folders)")
    runs.extend(children)
  return runs


def keep_records(paths: Sequence[str], dest: str) -> list[str]:
  """Copies the record of every run in `paths` into `dest/<run folder name>/`
  (replacing an older record of that name, one folder at a time) and adds the
  grid.json entries beside the runs to `dest/grid.json`; the folders written."""
  workdirs = [w for w in find_runs(paths)
              if os.path.normpath(os.path.dirname(w)) != os.path.normpath(dest)]
  kept = []
  for workdir in workdirs:
    target = os.path.join(dest, os.path.basename(os.path.normpath(workdir)))
    names = [n for n in sorted(os.listdir(workdir)) if _is_record_file(n)]
    shutil.rmtree(target + ".tmp", ignore_errors=True)
    try:
      os.makedirs(target + ".tmp")
      for name in names:
        shutil.copy2(os.path.join(workdir, name), target + ".tmp")
      shutil.rmtree(target, ignore_errors=True)
      os.replace(target + ".tmp", target)
    except OSError as e:
      shutil.rmtree(target + ".tmp", ignore_errors=True)
      raise CvaeError(f"cannot keep the record of {workdir} in {target}: "
                      f"{e.strerror or e}") from e
    kept.append(target)
  entries = _grid_entries(dest)
  for root in sorted({os.path.dirname(os.path.normpath(w)) for w in workdirs}):
    entries += [e for e in _grid_entries(root) if e not in entries]
  if entries:
    with open(os.path.join(dest, "grid.json.tmp"), "w") as f:
      json.dump(entries, f, indent=2)
    os.replace(os.path.join(dest, "grid.json.tmp"), os.path.join(dest, "grid.json"))
  return kept


def _is_record_file(name: str) -> bool:
  return name in ("config.json", "metrics.jsonl") or bool(
      re.fullmatch(r"eval_[a-z]+\.json", name))


def _grid_entries(root: str) -> list[dict]:
  path = os.path.join(root, "grid.json")
  return _read_json(path) if os.path.isfile(path) else []


def load_result(workdir: str, split: str) -> RunResult:
  """A run's config and its `split` metrics (None if unfinished)."""
  config = _read_json(os.path.join(workdir, "config.json"))
  eval_path = os.path.join(workdir, f"eval_{split}.json")
  if os.path.isfile(eval_path):
    return RunResult(workdir, config, _read_json(eval_path))
  metrics = None
  if split == "test" and os.path.isfile(os.path.join(workdir, "metrics.jsonl")):
    tests = [e for e in read_events(workdir) if e.get("split") == "test"]
    metrics = tests[-1] if tests else None
  return RunResult(workdir, config, metrics)


def row_labels(results: Sequence[RunResult]) -> list[str]:
  """Posterior plus the fields that set a run apart (never the seed): lambda
  on every copula row, and any other field that differs between the results
  where its value is not the one most of them share (with no such value,
  on every row). E.g. 'gaussian' and 'gaussian, word_dropout=0.25'. A run
  from before a field existed has its default."""
  defaults = flat_fields(base_config().to_dict())  # of fields newer than a run
  flat = [{**defaults, **flat_fields(r.config)} for r in results]
  varying = sorted(k for k in set().union(*flat) if k not in _NOT_A_ROW
                   and not k.startswith("eval.") and k != "model.posterior"
                   and len({json.dumps(f.get(k)) for f in flat}) > 1)
  usual = {k: _most_common([json.dumps(f.get(k)) for f in flat]) for k in varying}
  labels = []
  for f in flat:
    parts = [f["model.posterior"]]
    for k in varying:
      if k == "model.copula_weight":
        if f["model.posterior"] == "copula":
          parts.append(f"λ={f[k]:g}")
      elif json.dumps(f.get(k)) != usual[k]:
        parts.append(f"{k.rsplit('.', 1)[-1]}={f.get(k)}")
    labels.append(", ".join(parts))
  return labels


def _most_common(values: list[str]) -> Optional[str]:
  """The value more frequent than any other, or None if there is a tie."""
  counts = sorted(((values.count(v), v) for v in set(values)), reverse=True)
  return counts[0][1] if len(counts) == 1 or counts[0][0] > counts[1][0] else None


def cell(values: Sequence[float], decimals: int) -> str:
  """'mean ± sd' (sd over seeds, ddof 1), the value alone for one, '—' for none."""
  values = [v for v in values if v is not None]
  if not values:
    return "—"
  mean = float(np.mean(values))
  if len(values) == 1:
    return f"{mean:.{decimals}f}"
  return f"{mean:.{decimals}f} ± {float(np.std(values, ddof=1)):.{decimals}f}"


def tables(results: Sequence[RunResult]) -> str:
  """One Markdown table per dataset and size."""
  by_table: dict[tuple, list[RunResult]] = {}
  for r in results:
    by_table.setdefault(r.table_key, []).append(r)
  return "\n\n".join(_table(key, rs) for key, rs in sorted(by_table.items()))


def _table(key: tuple, results: list[RunResult]) -> str:
  dataset, emb, hidden, latent = key
  rows: dict[str, list[RunResult]] = {}
  for label, r in zip(row_labels(results), results):
    rows.setdefault(label, []).append(r)
  convention = _has_copula_term([r.metrics for r in results if r.metrics])
  published = (emb, hidden, latent) == PAPER_SIZE
  columns = [*BOUNDS, *(PAPER_CONVENTION if convention else ())]
  head = ["model", "runs", "K", *(title for _, title, _ in columns)]
  if published:
    head.append("paper's Table 3 (NLL / KL / PPL, its convention)")
  lines = [f"**{dataset}**, emb {emb}, hidden {hidden}, Z {latent}; test split, "
           "nats per sentence, mean ± sd over seeds", "",
           "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for label, rs in rows.items():
    done = [r.metrics for r in rs if r.metrics]
    ks = sorted({int(m.get("iw_samples", 0)) for m in done})
    cells = [label, f"{len(done)} of {len(rs)}", "/".join(map(str, ks)) or "—"]
    for metric, _, decimals in columns:
      paper_only = metric in {k for k, _, _ in PAPER_CONVENTION}
      values = [] if paper_only and not _has_copula_term(done) else [
          m.get(metric) for m in done]
      cells.append(cell(values, decimals))
    if published:
      cells.append(_published(dataset, rs[0].config["model"]))
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def _has_copula_term(metrics: list[dict]) -> bool:
  """The paper's convention differs from the ELBO only with a log c term."""
  return any(abs(m.get("log_copula", 0.0)) > 0 for m in metrics)


def _published(dataset: str, model: dict) -> str:
  keys = [(dataset, model["posterior"], model["copula_weight"]),
          (dataset, model["posterior"])]
  return next((PUBLISHED[k] for k in keys if k in PUBLISHED), "")


def provenance(workdirs: Sequence[str]) -> str:
  """The grid commands and hardware recorded beside the runs (grid.json)."""
  lines = []
  for root in sorted({os.path.dirname(os.path.normpath(w)) for w in workdirs}):
    entries = _grid_entries(root)
    if not entries:
      lines.append(f"- `{root}`: runs of launch/train.py (no grid.json beside them)")
    lines += [f"- `{entry['command']}` on {entry['hardware']}" for entry in entries]
  return "\n".join(lines)


def report(paths: Sequence[str], split: str, command: str) -> str:
  """The Markdown block: tables, then how they were made."""
  workdirs = find_runs(paths)
  results = [load_result(w, split) for w in workdirs]
  return (f"{tables(results)}\n\nRuns:\n{provenance(workdirs)}\n\n"
          f"Tables made by `{command}`.")


def write_block(path: str, name: str, text: str) -> None:
  """Puts `text` between `<!-- report:name -->` markers in `path`: replaces
  the block if it is there, appends it otherwise (prose around stays)."""
  begin, end = f"<!-- report:{name} -->", f"<!-- /report:{name} -->"
  block = f"{begin}\n{text}\n{end}"
  old = ""
  if os.path.isfile(path):
    with open(path) as f:
      old = f.read()
  pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
  if pattern.search(old):
    new = pattern.sub(lambda _: block, old)
  else:
    new = f"{old.rstrip()}\n\n{block}\n" if old.strip() else f"{block}\n"
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path + ".tmp", "w") as f:
    f.write(new)
  os.replace(path + ".tmp", path)


def _read_json(path: str):
  try:
    with open(path) as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise CvaeError(f"{path} is not valid JSON: {e}") from e
