"""Figures of runs' metrics: training curves, the lambda sweep, diagnostics.

Each figure function takes data (runs read by `load_run`, or arrays) and
writes one PNG; none of them runs a model. Non-finite metric values ("nan",
"inf") are drawn as gaps.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Optional, Sequence

import matplotlib
from matplotlib import pyplot as plt
from matplotlib.lines import Line2D
import numpy as np

from cvae_jax.errors import CvaeError
from cvae_jax.models.posteriors.copula import uninformative_kl
from cvae_jax.results import row_labels
from cvae_jax.writer import finite, read_events

matplotlib.use("Agg")

_DPI = 120
_STYLE = {"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11,
          "legend.fontsize": 9, "figure.titlesize": 13}
_STEPS = "training step"
_PER_SENTENCE = "nats/sentence"

# Panels of `training_curves`: (split, metric, title, y label).
_CURVES = (
    ("train", "rec", "Train reconstruction\n(mean over each validation interval)",
     f"reconstruction ({_PER_SENTENCE})"),
    ("valid", "rec", "Validation reconstruction", f"reconstruction ({_PER_SENTENCE})"),
    ("train", "kl", "Train KL\n(mean over each validation interval)",
     f"KL(q(z|x) || p(z)) ({_PER_SENTENCE})"),
    ("valid", "kl", "Validation KL", f"KL(q(z|x) || p(z)) ({_PER_SENTENCE})"),
)
# Lines of the perplexity panel of `lambda_sweep`: (metric, format, label).
_PERPLEXITIES = (
    ("ppl_elbo", "o-", "PPL from -ELBO (bound)"),
    ("ppl_paper", "s--", "paper PPL (paper convention, not a bound)"),
    ("ppl_iw", "^:", "PPL from IW NLL (bound)"),
)


@dataclasses.dataclass(frozen=True)
class Run:
  """What the figures read of one run directory."""

  name: str  # the directory's base name
  config: dict  # config.json
  events: list[dict]  # metrics.jsonl
  evaluation: Optional[dict]  # eval_test.json, when launch/evaluate.py wrote it

  @property
  def copula_weight(self) -> float:
    return float(self.config["model"]["copula_weight"])

  @property
  def posterior(self) -> str:
    return self.config["model"]["posterior"]

  @property
  def dataset(self) -> str:
    return self.config["data"]["name"]

  @property
  def model_size(self) -> str:
    """'emb<E>_hidden<H>_z<Z>': runs of different sizes are not one λ sweep."""
    m = self.config["model"]
    return f"emb{m['emb_dim']}_hidden{m['hidden_dim']}_z{m['latent_dim']}"

  def curve(self, split: str, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Steps and values of `metric` over the `split` events that hold it."""
    events = self._holding(split, metric)
    return (np.array([e["step"] for e in events], np.int64),
            np.array([finite(e[metric]) for e in events], np.float64))

  def _holding(self, split: str, metric: str) -> list[dict]:
    return [e for e in self.events if e["split"] == split and metric in e]

  def interval_curve(self, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """The train `metric` averaged over each validation interval.

    Each train event is a mean over the steps since the one before (100 by
    default, fewer before a validation or checkpoint), so single events are
    noisy. Here they are pooled, weighted by their sentences, into the
    intervals that end at each validation (and one after the last), and each
    mean is placed at its interval's last step; a non-finite value makes its
    interval's mean non-finite. Without validations: the train events as they are.
    """
    steps, values = self.curve("train", metric)
    ends = np.unique(np.array([e["step"] for e in self.events if e["split"] == "valid"],
                              np.int64))
    if not ends.size or not steps.size:
      return steps, values
    if steps.max() > ends[-1]:
      ends = np.append(ends, steps.max())
    weights = np.array([float(e.get("sentences", 1.0))
                        for e in self._holding("train", metric)])
    interval = np.searchsorted(ends, steps)  # the first end at or after each step
    totals = np.bincount(interval, weights, len(ends))
    sums = np.bincount(interval, weights * values, len(ends))
    used = totals > 0
    return ends[used], sums[used] / totals[used]

  def final_test(self) -> Optional[tuple[dict, str]]:
    """The run's final metrics and their source, or None without any.

    The source is eval_test.json if present, else the last test event, else
    the validation event with the lowest -ELBO (the best checkpoint's).
    """
    if self.evaluation is not None:
      return self.evaluation, "test"
    tests = [e for e in self.events if e["split"] == "test"]
    if tests:
      return tests[-1], "test"
    valid = [e for e in self.events if e["split"] == "valid"]
    if valid:
      return min(valid, key=lambda e: finite(e.get("nll_elbo"), math.inf)), "valid"
    return None


class NotStarted(CvaeError):
  """A run folder with a config and no metric events yet (its first log is to come)."""


def load_run(workdir: str) -> Run:
  """The run in `workdir`; CvaeError if it holds no config, NotStarted if no
  metric events."""
  if not os.path.isfile(os.path.join(workdir, "config.json")):
    raise CvaeError(f"{workdir} holds no config.json; give run directories of "
                    "launch/train.py")
  if not os.path.isfile(os.path.join(workdir, "metrics.jsonl")):
    raise NotStarted(f"{workdir} holds no metrics.jsonl yet")
  try:
    events = read_events(workdir)
    config = _read_json(os.path.join(workdir, "config.json"))
    eval_path = os.path.join(workdir, "eval_test.json")
    evaluation = _read_json(eval_path) if os.path.isfile(eval_path) else None
  except json.JSONDecodeError as e:
    raise CvaeError(f"{workdir} holds a malformed JSON file: {e}") from e
  if not events:
    raise NotStarted(f"{workdir} holds no metric events yet")
  return Run(os.path.basename(os.path.normpath(workdir)), config, events, evaluation)


def training_curves(runs: Sequence[Run], path: str) -> None:
  """Reconstruction and KL on train and validation against steps (the paper's Fig. 4).

  A 2x2 grid (train rec, valid rec, train KL, valid KL), one line per run,
  labelled as the result tables' rows; train metrics are means over each
  validation interval (`Run.interval_curve`).
  """
  with plt.rc_context(_STYLE):
    fig, axes = plt.subplots(2, 2, figsize=(11, 8), sharex=True)
    labels = _labels(runs)
    for ax, (split, metric, title, ylabel) in zip(axes.flat, _CURVES):
      for i, run in enumerate(runs):
        curve = run.interval_curve(metric) if split == "train" else run.curve(split, metric)
        ax.plot(*curve, "o-", markersize=3, color=_color(i), label=labels[i])
      ax.set(title=title, ylabel=ylabel)
    for ax in axes[1]:
      ax.set_xlabel(_STEPS)
    _save(fig, path, f"Reconstruction and KL during training ({_datasets(runs)})",
          axes.flat[0])


def lambda_sweep(runs: Sequence[Run], path: str) -> None:
  """Final reconstruction, KL and perplexities against lambda (the paper's Fig. 5).

  Lambda weighs the 'copula' posterior's log c term only, so only its runs
  are drawn: one line per setting of their other fields (labelled as the
  result tables' rows, without lambda), each point the mean over the runs
  (seeds) of one lambda, with ± one sd where there are several. Runs without
  any validation or test metrics are left out. The KL panel also draws, for
  lambda < 1, the KL that the objective alone makes a posterior pay when it
  carries no information about x (`uninformative_kl` at beta = 1).
  """
  finals = [(run, final) for run in runs
            if run.posterior == "copula" and (final := run.final_test())]
  with plt.rc_context(_STYLE):
    fig, (rec_ax, kl_ax, ppl_ax) = plt.subplots(1, 3, figsize=(16, 4.8))
    lines = _sweep_lines(finals)
    for i, (line, points) in enumerate(lines.items()):
      lambdas = sorted(points)
      panels = [(rec_ax, "rec", "o-", line), (kl_ax, "kl", "o-", line)]
      panels += [(ppl_ax, key, fmt, f"{line}: {what}") for key, fmt, what in _PERPLEXITIES
                 if any(key in m for lam in lambdas for m in points[lam])]
      for ax, key, fmt, label in panels:
        stats = [_mean_sd([finite(m.get(key)) for m in points[lam]]) for lam in lambdas]
        ax.errorbar(lambdas, [mean for mean, _ in stats], yerr=[sd for _, sd in stats],
                    fmt=fmt, color=_color(i), capsize=3, label=label)
    _uninformative_kl_lines(kl_ax, [run for run, _ in finals])
    rec_ax.set(title="Reconstruction", ylabel=f"reconstruction ({_PER_SENTENCE})")
    kl_ax.set(title="KL", ylabel=f"KL(q(z|x) || p(z)) ({_PER_SENTENCE})")
    ppl_ax.set(title="Perplexity", ylabel="perplexity (per token)")
    for ax in (rec_ax, kl_ax, ppl_ax):
      ax.set_xlabel("copula weight λ")
    rec_ax.legend(loc="best")
    ppl_ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0))
    sizes = ", ".join(sorted({run.model_size for run in runs}))
    title = f"Final test metrics against λ ({_datasets(runs)}, {sizes})"
    if any(len(ms) > 1 for points in lines.values() for ms in points.values()):
      title += "\n(points: mean over seeds; bars: ± one sd)"
    if any(split == "valid" for _, (_, split) in finals):
      title += "\n(runs without a test result: their best validation event)"
    fig.suptitle(title)
    fig.tight_layout()
    _write(fig, path)


def _uninformative_kl_lines(ax: plt.Axes, runs: Sequence[Run]) -> None:
  """On `ax`, `uninformative_kl` over 0 <= lambda <= the runs' largest lambda
  below 1, one dashed line per latent size among `runs`."""
  below_one = [run.copula_weight for run in runs if run.copula_weight < 1.0]
  if not below_one or max(below_one) <= 0.0:
    return
  grid = np.linspace(0.0, max(below_one), 50)
  for latent_dim in sorted({run.config["model"]["latent_dim"] for run in runs}):
    ax.plot(grid, [uninformative_kl(lam, latent_dim) for lam in grid], "--", color="0.5",
            label=f"q(z|x) ignores x: σ² = 1 − λ (Z = {latent_dim})")
  ax.legend(loc="upper left")


def diagnostics_over_training(runs: Sequence[Run], path: str) -> None:
  """Validation mutual information (two estimators) and active units against steps."""
  with plt.rc_context(_STYLE):
    fig, (mi_ax, au_ax) = plt.subplots(1, 2, figsize=(13, 4.8))
    labels = _labels(runs)
    for i, run in enumerate(runs):
      mi_ax.plot(*run.curve("valid", "mi"), "o-", markersize=3, color=_color(i))
      mi_ax.plot(*run.curve("valid", "mi_split"), "s--", markersize=3, color=_color(i))
      au_ax.plot(*run.curve("valid", "active_units"), "o-", markersize=3,
                 color=_color(i), label=labels[i])
    mi_ax.legend(handles=[
        Line2D([], [], color="k", marker="o", label="batch aggregate"),
        Line2D([], [], color="k", marker="s", linestyle="--", label="split aggregate")],
                 loc="best")
    mi_ax.set(title="Mutual information I(x; z) on validation", ylabel="MI (nats)",
              xlabel=_STEPS)
    au_ax.set(title="Active units on validation", ylabel="active units (count)",
              xlabel=_STEPS)
    _save(fig, path, f"Latent diagnostics during training ({_datasets(runs)})", au_ax)


def posterior_means_figure(true_latents: np.ndarray, posterior_means: np.ndarray,
                           path: str, name: str = "") -> None:
  """Each of the first two true latents against its most correlated posterior mean.

  He et al. (2019)'s picture of how much of the true latent the encoder
  recovers.

  Args:
    true_latents: [n, dz] the sentences' true latents.
    posterior_means: [n, latent] E_q[z | x] of the same sentences.
    path: the PNG to write.
    name: the run, for the title.
  """
  corr = _correlations(true_latents, posterior_means)
  dims = min(2, true_latents.shape[1])
  with plt.rc_context(_STYLE):
    fig, axes = plt.subplots(1, dims, figsize=(5.5 * dims, 5), squeeze=False)
    for d, ax in enumerate(axes[0]):
      k = int(np.argmax(np.abs(corr[d])))
      ax.scatter(true_latents[:, d], posterior_means[:, k], s=8, alpha=0.5,
                 label=f"{len(true_latents)} sentences")
      ax.set(title=f"True z{d + 1} vs. posterior mean μ{k + 1} (r = {corr[d, k]:.2f})",
             xlabel=f"true latent z{d + 1}",
             ylabel=f"posterior mean μ{k + 1} = E_q[z{k + 1} | x]")
      ax.legend(loc="best")
    fig.suptitle("Posterior means against the true latents" + (f" ({name})" if name else ""))
    _write(fig, path)


def _correlations(x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """Pearson correlation of each column of x [n, a] with each of y [n, b]: [a, b].

  A constant column correlates 0 with everything.
  """
  def standardize(m):
    m = np.asarray(m, np.float64) - np.mean(m, axis=0)
    std = np.std(m, axis=0)
    return m / np.where(std > 0, std, np.inf)
  return standardize(x).T @ standardize(y) / len(x)


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
  """Mean and sample sd (0 for one value); NaN if any value is."""
  return float(np.mean(values)), (float(np.std(values, ddof=1)) if len(values) > 1 else 0.0)


def _sweep_lines(finals: Sequence[tuple[Run, tuple[dict, str]]]) -> dict[str, dict[float, list[dict]]]:
  """Line label -> lambda -> the final metrics of its runs, for `lambda_sweep`.

  A line is the runs whose configs agree but for lambda and the seed; its
  label is their tables' row label without lambda (e.g. 'copula',
  'copula, free_bits=0.25').
  """
  lines: dict[str, dict[float, list[dict]]] = {}
  labels = row_labels([run.config for run, _ in finals], with_lambda=False)
  for label, (run, (metrics, _)) in zip(labels, finals):
    lines.setdefault(label, {}).setdefault(run.copula_weight, []).append(metrics)
  return lines


def _labels(runs: Sequence[Run]) -> list[str]:
  """Each run's result-table row label, with its directory name where labels repeat."""
  labels = row_labels([run.config for run in runs])
  return [f"{label} ({run.name})" if labels.count(label) > 1 else label
          for run, label in zip(runs, labels)]


def _color(i: int):
  """The i-th line's colour: tab10, then tab20's lighter shades (20 distinct)."""
  return plt.get_cmap("tab10")(i) if i < 10 else plt.get_cmap("tab20")(2 * (i - 10) % 20 + 1)


def _datasets(runs: Sequence[Run]) -> str:
  return ", ".join(sorted({run.dataset for run in runs}))


def _read_json(path: str):
  with open(path) as f:
    return json.load(f)


def _save(fig: plt.Figure, path: str, title: str, legend_ax: plt.Axes) -> None:
  """Title, one legend of the runs to the right of the figure, then `_write`."""
  fig.suptitle(title)
  handles, labels = legend_ax.get_legend_handles_labels()
  fig.tight_layout()
  fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5))
  _write(fig, path)


def _write(fig: plt.Figure, path: str) -> None:
  fig.savefig(path, dpi=_DPI, bbox_inches="tight")
  plt.close(fig)
