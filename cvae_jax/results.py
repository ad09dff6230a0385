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
import functools
import json
import math
import os
import re
import shutil
from typing import Optional, Sequence

import numpy as np

from cvae_jax.config import base_config, flat_fields
from cvae_jax.errors import CvaeError
from cvae_jax.writer import finite, read_events

# (metric key, column title, decimals)
BOUNDS = (("iw_nll", "IW-NLL", 2), ("nll_elbo", "-ELBO", 2), ("kl", "KL", 2),
          ("mi", "MI (batch)", 2), ("mi_split", "MI (split)", 2),
          ("active_units", "AU", 1), ("ppl_iw", "PPL (IW)", 1))
PAPER_CONVENTION = (("nll_paper", "paper-conv. NLL", 2), ("ppl_paper", "paper-conv. PPL", 1))
# The paper's Tables 3-5 (PTB, Yelp13, Yahoo; emb/hidden 512, Z 32): NLL / KL /
# PPL in its own convention (rec + KL - log c: not a bound for the copula rows),
# keyed by dataset, model (`_model_key`) and training procedure (`procedure`).
PUBLISHED = {
    ("ptb", "none", ""): "LSTM-LM 116.2 / - / 104.2",
    ("ptb", "gaussian", ""): "VAE 105.2 / 1.74 / 121",
    ("ptb", "copula λ=0.4", ""): "Copula-VAE λ=0.4 92.2 / 7.3 / 67.2",
    ("ptb", "vmf", ""): "vmf-VAE 96.0 / 5.7 / 79.6",
    ("ptb", "flow", ""): "VAE-NF 96.8 / 0.87 / 82.9",
    ("ptb", "full_gaussian", ""): "non-diag-VAE 105.1 / 4.9 / 121.0",
    ("yelp13", "gaussian", ""): "VAE 197.1 / 0.03 / 58.2",
    ("yelp13", "copula λ=0.5", ""): "Copula-VAE λ=0.5 187.7 / 10.0 / 48.0",
    ("yelp13", "vmf", ""): "vmf-VAE 198.0 / 6.4 / 59.3",
    ("yelp13", "flow", ""): "VAE-NF 200.4 / 0.1 / 62.5",
    ("yelp13", "full_gaussian", ""): "non-diag-VAE 198.3 / 4.7 / 59.7",
    ("yahoo", "gaussian", ""): "VAE 351.6 / 0.3 / 81.6",
    ("yahoo", "copula λ=0.5", ""): "Copula-VAE λ=0.5 344.2 / 15.4 / 74.4",
    ("yahoo", "vmf", ""): "vmf-VAE 359.3 / 17.9 / 89.9",
    ("yahoo", "flow", ""): "VAE-NF 353.8 / 0.1 / 83.0",
    ("yahoo", "full_gaussian", ""): "non-diag-VAE 352.2 / 5.7 / 82.3",
    ("yahoo", "gaussian", "lagging"): "lagging-VAE 326.6 / 6.7 / 64.9",
}
PAPER_TABLES = {"ptb": "Table 3", "yelp13": "Table 4", "yahoo": "Table 5"}
# Honest numbers of later work (bounds on -log p(x), test split), keyed
# likewise: PTB as tabulated by Li et al. 2019, Yahoo by He et al. 2019.
# Their models' sizes are their own.
LITERATURE = {
    ("ptb", "none", ""): "LSTM-LM NLL 101.04",
    ("ptb", "gaussian", ""): "VAE + annealing -ELBO 101.28, KL 0, MI 0, AU 0",
    ("ptb", "gaussian", "cyclical"): "cyclical -ELBO 102.81, KL 1.37, MI 1.27, AU 5",
    ("ptb", "gaussian", "lagging"): "lagging -ELBO 101.19, KL 0.93, MI 0.83, AU 4",
    ("ptb", "gaussian", "pretraining + free bits"):
        "pretraining + free bits -ELBO 102.41, KL 6.54, MI 5.31, AU 32",
    ("yahoo", "none", ""): "LSTM-LM NLL 328.0",
    ("yahoo", "gaussian", ""): "VAE + annealing IW-NLL 328.6, KL 0",
    ("yahoo", "gaussian", "lagging"): "lagging IW-NLL 326.6, KL 6.7, MI 3.2, AU 15",
}
# The training procedures that the published rows name, by the config fields
# that switch them on (any other procedure field set: no published row).
_PROCEDURES = {frozenset(): "", frozenset({"train.kl_cycles"}): "cyclical",
               frozenset({"train.aggressive"}): "lagging",
               frozenset({"train.ae_pretrain_steps", "train.free_bits"}):
                   "pretraining + free bits"}
_PROCEDURE_FIELDS = ("model.word_dropout", "model.bn_gamma", "train.kl_cycles",
                     "train.free_bits", "train.aggressive", "train.ae_pretrain_steps")
PAPER_SIZE = (512, 512, 32)
# Fields that never separate rows: the seed (averaged over) and where data live.
_NOT_A_ROW = {"seed", "data.source_dir", "data.tfds_dir"}
# Fields that only one posterior reads: a run of another posterior has no value for them.
_POSTERIOR_FIELDS = {"model.vmf_kappa": "vmf", "model.flow_steps": "flow"}


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
  for root, names in _by_root(workdirs).items():
    entries += [e for e in _grid_entries(root, names) if e not in entries]
  if entries:
    with open(os.path.join(dest, "grid.json.tmp"), "w") as f:
      json.dump(entries, f, indent=2)
    os.replace(os.path.join(dest, "grid.json.tmp"), os.path.join(dest, "grid.json"))
  return kept


def _is_record_file(name: str) -> bool:
  return name in ("config.json", "metrics.jsonl") or bool(
      re.fullmatch(r"eval_[a-z]+\.json", name))


def _grid_entries(root: str, names: Optional[set[str]] = None) -> list[dict]:
  """The grid.json entries of `root`; with `names`, those of the grids that
  made one of these runs (a grid just started has no run folder yet; entries
  from before grids named their runs are always included)."""
  path = os.path.join(root, "grid.json")
  entries = _read_json(path) if os.path.isfile(path) else []
  return [e for e in entries if names is None or "runs" not in e or names & set(e["runs"])]


def _by_root(workdirs: Sequence[str]) -> dict[str, set[str]]:
  """{grid root: names of its run folders among `workdirs`}, roots sorted."""
  roots: dict[str, set[str]] = {}
  for w in sorted(os.path.normpath(w) for w in workdirs):
    roots.setdefault(os.path.dirname(w), set()).add(os.path.basename(w))
  return dict(sorted(roots.items()))


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


def row_labels(configs: Sequence[dict], with_lambda: bool = True) -> list[str]:
  """Posterior plus the fields that set a run (its config.json) apart from the
  others, never the seed: lambda on every copula row (unless not
  `with_lambda`), and any other field that differs between the configs where
  its value is not the one most of them share (with no such value, on every
  row). E.g. 'copula, λ=0.4', 'gaussian' and 'gaussian, word_dropout=0.25'.
  A run from before a field existed has its default. A field that only one
  posterior reads (`vmf_kappa`, `flow_steps`) is compared among that
  posterior's runs alone."""
  flat = [{k: v for k, v in _flat_config(c).items()
           if _POSTERIOR_FIELDS.get(k, c["model"]["posterior"]) == c["model"]["posterior"]}
          for c in configs]
  values = {k: [json.dumps(f[k]) for f in flat if k in f] for k in set().union(*flat)}
  varying = sorted(k for k, v in values.items() if k not in _NOT_A_ROW
                   and not k.startswith("eval.")
                   and k not in ("model.posterior", "model.copula_weight")
                   and len(set(v)) > 1)
  usual = {k: _most_common(values[k]) for k in varying}
  labels = []
  for f in flat:
    parts = [f["model.posterior"]]
    if with_lambda and f["model.posterior"] == "copula":
      parts.append(f"λ={f['model.copula_weight']:g}")
    parts += [f"{k.rsplit('.', 1)[-1]}={f[k]}" for k in varying
              if k in f and json.dumps(f[k]) != usual[k]]
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
  for label, r in zip(row_labels([r.config for r in results]), results):
    rows.setdefault(label, []).append(r)
  convention = _has_copula_term([r.metrics for r in results if r.metrics])
  published = (emb, hidden, latent) == PAPER_SIZE and dataset in PAPER_TABLES
  columns = [*BOUNDS, *(PAPER_CONVENTION if convention else ())]
  head = ["model", "runs", "K", *(title for _, title, _ in columns)]
  if published:
    head += [f"paper's {PAPER_TABLES[dataset]} (NLL / KL / PPL, its convention)",
             "later work (honest bounds, their sizes)"]
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
      key = (dataset, _model_key(rs[0].config["model"]), procedure(rs[0].config))
      cells += [PUBLISHED.get(key, ""), LITERATURE.get(key, "")]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def _has_copula_term(metrics: list[dict]) -> bool:
  """The paper's convention differs from the ELBO only with a log c term."""
  return any(abs(m.get("log_copula", 0.0)) > 0 for m in metrics)


def procedure(config: dict) -> Optional[str]:
  """The run's training procedure as the published rows name it: '' for the
  recipe alone, None for a combination that no published row has."""
  flat = _flat_config(config)
  switched = frozenset(k for k in _PROCEDURE_FIELDS if flat[k] != _defaults()[k])
  return _PROCEDURES.get(switched)


@functools.cache
def _defaults() -> dict:
  return flat_fields(base_config().to_dict())


def _flat_config(config: dict) -> dict:
  """A run's config.json as {'group.field': value}; a field newer than the
  run has its default."""
  return {**_defaults(), **flat_fields(config)}


def _model_key(model: dict) -> str:
  """'copula λ=0.4' for the paper's copula, else the posterior's name."""
  if model["posterior"] == "copula":
    return f"copula λ={model['copula_weight']:g}"
  return model["posterior"]


def provenance(workdirs: Sequence[str]) -> str:
  """The grid commands and hardware recorded beside the runs (grid.json)."""
  lines = []
  for root, names in _by_root(workdirs).items():
    entries = _grid_entries(root, names)
    if not entries:
      lines.append(f"- `{root}`: runs of launch/train.py (no grid.json beside them)")
    lines += [f"- `{entry['command']}` on {entry['hardware']}" for entry in entries]
  return "\n".join(lines)


def training(workdir: str) -> Optional[dict]:
  """A run's course from its metrics.jsonl: its last step, its best validation
  -ELBO and that step, and the validations after which the plateau rule cut
  the learning rate (where the train events' lr_scale changes). None before
  the first validation."""
  events = read_events(workdir) if os.path.isfile(
      os.path.join(workdir, "metrics.jsonl")) else []
  valid = [e for e in events if e["split"] == "valid"]
  if not valid:
    return None
  best = min(valid, key=lambda e: finite(e.get("nll_elbo"), math.inf))  # the first of equals
  cuts, last_valid, scale = [], None, None
  for e in events:
    if e["split"] == "valid":
      last_valid = e["step"]
    elif e["split"] == "train" and "lr_scale" in e:
      if scale is not None and e["lr_scale"] != scale:
        cuts.append(last_valid)
      scale = e["lr_scale"]
  return {"last_step": max(e["step"] for e in events if e["split"] in ("train", "valid")),
          "best": finite(best.get("nll_elbo")), "best_step": best["step"], "cuts": cuts}


def training_table(workdirs: Sequence[str]) -> str:
  """One line per run: `training` as Markdown."""
  lines = ["Training of each run (its metrics.jsonl):", "",
           "| run | last step | best valid -ELBO | at step | learning rate cut at the "
           "validations of steps |", "|---|---|---|---|---|"]
  for w in workdirs:
    t = training(w)
    cells = ["—"] * 4 if t is None else [
        f"{t['last_step']:,}", f"{t['best']:.2f}", f"{t['best_step']:,}",
        ", ".join(f"{s:,}" for s in t["cuts"]) or "none"]
    lines.append(f"| {os.path.basename(w)} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def report(paths: Sequence[str], split: str, command: str, with_training: bool = False) -> str:
  """The Markdown block: tables (and, `with_training`, each run's course), then
  how they were made."""
  workdirs = find_runs(paths)
  results = [load_result(w, split) for w in workdirs]
  course = f"\n\n{training_table(workdirs)}" if with_training else ""
  return (f"{tables(results)}{course}\n\nRuns:\n{provenance(workdirs)}\n\n"
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
