"""Evaluate a trained run on a split, print its metrics, write <workdir>/eval_<split>.json."""

from __future__ import annotations

import json
import os

import jax
import ml_collections

from cvae_jax import data, eval_progress, parallel
from cvae_jax.errors import CvaeError
from cvae_jax.evaluate import Evaluator
from cvae_jax.train import root_keys
from cvae_jax.trained import load_trained
from cvae_jax.workdir import check_run, with_run_data

# Rows of the printed table: (key, label).
_TABLE = (
    ("split", "split"),
    ("checkpoint", "checkpoint ('best': lowest validation -ELBO)"),
    ("checkpoint_step", "checkpoint's train step"),
    ("nll_elbo", "NLL, -ELBO (nats/sentence, upper bound)"),
    ("iw_nll", "NLL, importance-weighted (nats/sentence)"),
    ("ppl_elbo", "PPL from -ELBO"),
    ("ppl_iw", "PPL from IW NLL"),
    ("rec", "reconstruction (nats/sentence)"),
    ("kl", "KL(q(z|x) || p(z)) (nats/sentence)"),
    ("mi", "MI, batch aggregate (nats)"),
    ("mi_split", "MI, split aggregate (nats)"),
    ("active_units", "active units"),
    ("log_copula", "log copula density (mean)"),
    ("nll_paper", "paper's NLL = rec + KL - log c (NOT a bound)"),
    ("ppl_paper", "paper's PPL (NOT a bound)"),
    ("sentences", "sentences"),
    ("tokens", "tokens (with </s>)"),
)


def evaluate_run(config: ml_collections.ConfigDict, workdir: str, split: str) -> dict:
  """All metrics of the run's best checkpoint on every sentence of `split`.

  Reads the run's own data where `config.data.source_dir` (or `tfds_dir`) is ''.
  On one process, a stopped evaluation resumes from
  <workdir>/eval_<split>.progress.npz (cvae_jax/eval_progress.py).
  """
  config = with_run_data(workdir, config)
  check_run(workdir, config)
  corpus = data.load_corpus(config.data)
  mesh = parallel.make_mesh()
  trained = load_trained(config, workdir, mesh)
  check_run(workdir, config, corpus.vocab)
  _, _, eval_key = root_keys(config.seed)
  evaluator = Evaluator(trained.model, mesh, config, eval_key)
  progress = None
  if jax.process_count() == 1:
    progress = eval_progress.Progress(eval_progress.path_of(workdir, split),
                                      [trained.which, trained.step, split, config.to_json()])
  metrics = evaluator(trained.state.variables, corpus.splits[split], config.eval.iw_samples,
                      progress)
  metrics.update(split=split, seed=config.seed, checkpoint_step=trained.step,
                 checkpoint=trained.which, posterior=config.model.posterior)
  return metrics


def write_evaluation(workdir: str, metrics: dict) -> str:
  """Writes `metrics` to <workdir>/eval_<split>.json; its path.

  A failed write is a CvaeError and leaves no partial file.
  """
  path = os.path.join(workdir, f"eval_{metrics['split']}.json")
  try:
    with open(path + ".tmp", "w") as f:
      json.dump(metrics, f, indent=2)
    os.replace(path + ".tmp", path)
  except OSError as e:
    if os.path.isfile(path + ".tmp"):
      os.remove(path + ".tmp")
    raise CvaeError(f"cannot write {path}: {e.strerror or e}; the metrics are "
                    "printed above") from e
  return path


def table(metrics: dict) -> str:
  """The metrics as aligned text lines."""
  rows = [(label, metrics[key]) for key, label in _TABLE if key in metrics]
  width = max(len(label) for label, _ in rows)
  return "\n".join(f"{label:<{width}}  {value:,.2f}" if isinstance(value, float)
                   else f"{label:<{width}}  {value}" for label, value in rows)
