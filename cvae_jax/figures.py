"""The figures that a set of runs supports, written to a folder.

  training_curves.png        train/validation reconstruction and KL of every run
  diagnostics.png            validation MI and active units against steps
  lambda_sweep_<dataset>_<size>.png
                             final metrics against lambda, for the copula runs of one
                             dataset and model size with >= 2 distinct lambdas
                             (paper's Fig. 5)
  lambda_training_curves_<dataset>_<size>.png
                             the same runs' training curves (paper's Fig. 4)
  posterior_means_<run>.png  for each synthetic run with a latent and a checkpoint:
                             true latents against posterior means
"""

import json
import os

import jax
import ml_collections
import numpy as np

from cvae_jax import data, parallel, plotting, results
from cvae_jax.errors import CvaeError
from cvae_jax.models import TextVAE
from cvae_jax.trained import load_trained


def posterior_means(workdir: str, split: str = "test") -> tuple[np.ndarray, np.ndarray]:
  """True latents [n, dz] and posterior means [n, latent] of a synthetic run's `split`.

  The means are E_q[z|x] of the run's best checkpoint, one row per sentence.
  """
  with open(os.path.join(workdir, "config.json")) as f:
    config = ml_collections.ConfigDict(json.load(f))
  corpus = data.load_corpus(config.data)
  mesh = parallel.make_mesh()
  trained = load_trained(config, workdir, mesh)
  encode = jax.jit(lambda variables, tokens, lengths: trained.model.apply(
      variables, tokens, lengths, method=TextVAE.encode).mean())
  latents, means = [], []
  for batch in data.eval_batches(corpus.splits[split],
                                 batch_size=config.data.eval_batch_size,
                                 bucket_lengths=config.data.bucket_lengths):
    inputs = parallel.to_global({k: batch[k] for k in ("tokens", "lengths")}, mesh)
    real = batch["weights"] == 1
    means.append(np.asarray(encode(trained.state.variables, **inputs))[real])
    latents.append(batch["latent"][real])
  return np.concatenate(latents), np.concatenate(means)


def _has_posterior_means(workdir: str, run: plotting.Run) -> bool:
  """A synthetic run with a latent and at least one checkpoint."""
  checkpoints = [os.path.join(workdir, d) for d in ("best", "checkpoints")]
  return (run.dataset == "synthetic" and run.posterior != "none" and
          any(os.path.isdir(d) and os.listdir(d) for d in checkpoints))


def write_figures(paths: list[str], out: str) -> tuple[list[str], list[str]]:
  """Writes the figures that the runs in `paths` (run folders or folders of
  runs, such as a grid's root) support into `out`.

  Returns their paths, and notes naming the runs left out and why: runs with
  no metric events yet (just started) from every figure, others from a λ sweep.
  """
  if not paths:
    raise CvaeError("no run directories given: python launch/plot.py RUN [RUN ...] "
                    "--out DIR")
  workdirs, runs, not_started = [], [], []
  for workdir in results.find_runs(paths):
    try:
      runs.append(plotting.load_run(workdir))
      workdirs.append(workdir)
    except plotting.NotStarted as e:
      not_started.append(str(e))
  if not runs:
    raise CvaeError("no run has metric events yet: " + "; ".join(not_started))
  os.makedirs(out, exist_ok=True)
  written = []

  def write(figure, filename, *args, **kwargs):
    written.append(os.path.join(out, filename))
    figure(*args, written[-1], **kwargs)

  write(plotting.training_curves, "training_curves.png", runs)
  if any(run.curve("valid", "mi")[0].size for run in runs):
    write(plotting.diagnostics_over_training, "diagnostics.png", runs)
  sweeps, notes = lambda_sweeps(runs)
  notes = [f"left out of every figure: {why}" for why in not_started] + notes
  for key, sweep in sweeps.items():
    write(plotting.lambda_sweep, f"lambda_sweep_{key}.png", sweep)
    write(plotting.training_curves, f"lambda_training_curves_{key}.png", sweep)
  for workdir, run in zip(workdirs, runs):
    if _has_posterior_means(workdir, run):
      true_latents, means = posterior_means(workdir)
      write(plotting.posterior_means_figure, f"posterior_means_{run.name}.png",
            true_latents, means, name=f"{run.name}, test split")
  return written, notes


def lambda_sweeps(runs: list[plotting.Run]) -> tuple[dict[str, list[plotting.Run]], list[str]]:
  """The λ sweeps the runs support, one per dataset and model size, and notes.

  Lambda weighs the 'copula' posterior's log c term only: a sweep is the
  copula runs of one dataset and size that have final metrics, when they span
  at least two λ, keyed '<dataset>_<size>' and ordered by λ. The notes name,
  for each sweep, the runs it leaves out and why, and the groups of copula
  runs that make no sweep when together they span several λ.
  """
  copulas = [run for run in runs if run.posterior == "copula"]
  groups = {}
  for run in copulas:
    groups.setdefault(f"{run.dataset}_{run.model_size}", []).append(run)
  sweeps, notes = {}, []
  for key, group in groups.items():
    finished = [run for run in group if run.final_test()]
    if len({run.copula_weight for run in finished}) < 2:
      continue
    sweeps[key] = sorted(finished, key=lambda run: (run.copula_weight, run.name))
    for why, left_out in (
        ("no test or validation metrics yet", [r for r in group if r not in finished]),
        ("not the 'copula' posterior, whose log c term λ weighs",
         [r for r in runs if r.posterior != "copula"]),
        ("another dataset or model size", [r for r in copulas if r not in group])):
      if left_out:
        notes.append(f"the λ sweep of {key} leaves out {_names(left_out)}: {why}")
  finished = [run for run in copulas if run.final_test()]
  if not sweeps and len({run.copula_weight for run in finished}) >= 2:
    notes.append("no lambda_sweep: no copula runs of one dataset and model size span "
                 "two λ with metrics (" + "; ".join(
                     f"{key}: {_names(group)}" for key, group in groups.items()) + ")")
  return sweeps, notes


def _names(runs: list[plotting.Run]) -> str:
  return ", ".join(run.name for run in runs)
