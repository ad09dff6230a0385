"""Figures of runs: each figure function, launch/plot.py, and a real synthetic run."""

import dataclasses
import json
import os
import subprocess
import sys

from matplotlib import image
import numpy as np
import pytest

from cvae_jax import figures, plotting
from cvae_jax.errors import CvaeError
from cvae_jax.writer import read_events
from tests.helpers import launcher_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _fake_run(workdir, copula_weight, posterior="copula", nan=False, test=True,
              evaluation=None, dataset="ptb", hidden_dim=200, seed=0, train=None):
  """A run directory with config.json, metrics.jsonl and maybe eval_test.json."""
  os.makedirs(workdir)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump({"seed": seed, "data": {"name": dataset}, "train": train or {},
               "model": {"posterior": posterior, "copula_weight": copula_weight,
                         "emb_dim": 200, "hidden_dim": hidden_dim, "latent_dim": 32}}, f)
  events = []
  for i in range(1, 5):
    events.append({"step": 10 * i, "split": "train", "rec": 90.0 - i, "loss": 95.0 - i,
                   "kl": "nan" if nan and i == 2 else copula_weight * i})
    events.append({"step": 10 * i, "split": "valid", "rec": 92.0 - i, "kl": 1.0 + i,
                   "nll_elbo": 100.0 - i if i < 4 else 120.0, "ppl_elbo": 150.0 - i,
                   "ppl_paper": 140.0 - i, "mi": 0.1 * i,
                   "mi_split": "inf" if nan else 0.2 * i, "active_units": i})
  if test:
    events.append({"step": 40, "split": "test", "rec": 85.0, "kl": 2.0 + copula_weight,
                   "nll_elbo": 95.0, "ppl_elbo": 130.0, "ppl_paper": 120.0})
  with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
    f.writelines(json.dumps(e) + "\n" for e in events)
  if evaluation is not None:
    with open(os.path.join(workdir, "eval_test.json"), "w") as f:
      json.dump(evaluation, f)
  return str(workdir)


@pytest.fixture
def sweep(tmp_path):
  """Three copula runs (lambda 0.1, 0.5 with 'nan's, 1.0 without a test) and a VAE."""
  return [
      _fake_run(tmp_path / "l01", 0.1, evaluation={
          "rec": 84.0, "kl": 2.5, "ppl_elbo": 128.0, "ppl_paper": 118.0, "ppl_iw": 125.0}),
      _fake_run(tmp_path / "l05", 0.5, nan=True),
      _fake_run(tmp_path / "l10", 1.0, test=False),
      _fake_run(tmp_path / "vae", 0.5, posterior="gaussian"),
  ]


def _assert_png(path):
  pixels = image.imread(path)
  assert pixels.ndim == 3 and pixels.shape[2] in (3, 4)
  assert min(pixels.shape[:2]) > 200
  assert np.ptp(pixels) > 0  # not blank


@pytest.mark.parametrize("figure", [plotting.training_curves, plotting.lambda_sweep,
                                    plotting.diagnostics_over_training])
def test_each_run_figure_writes_a_readable_png(sweep, tmp_path, figure):
  path = str(tmp_path / "figure.png")
  figure([plotting.load_run(w) for w in sweep], path)
  _assert_png(path)


def test_final_metrics_come_from_eval_json_then_test_event_then_best_valid(sweep):
  runs = [plotting.load_run(w) for w in sweep[:3]]
  assert runs[0].final_test() == (runs[0].evaluation, "test")
  assert runs[1].final_test()[0]["rec"] == 85.0
  assert runs[2].final_test()[0]["step"] == 30  # the lowest validation nll_elbo
  steps, kl = runs[1].curve("train", "kl")
  np.testing.assert_array_equal(steps, [10, 20, 30, 40])
  assert np.isnan(kl[1]) and np.isfinite(kl[[0, 2, 3]]).all()


def test_posterior_means_figure_writes_a_readable_png(tmp_path):
  rng = np.random.default_rng(0)
  latents = rng.normal(size=(300, 2))
  means = np.concatenate([rng.normal(size=(300, 2)), latents[:, ::-1] * 0.5,
                          np.zeros((300, 1))], axis=1)  # a constant, dead dimension
  path = str(tmp_path / "means.png")
  plotting.posterior_means_figure(latents, means, path, name="toy")
  _assert_png(path)


def test_a_directory_without_metrics_is_refused(tmp_path):
  with pytest.raises(CvaeError, match="holds no config.json"):
    plotting.load_run(str(tmp_path))
  started = _started_run(tmp_path / "started")
  with pytest.raises(plotting.NotStarted, match="holds no metrics.jsonl yet"):
    plotting.load_run(started)
  open(os.path.join(started, "metrics.jsonl"), "w").close()
  with pytest.raises(plotting.NotStarted, match="holds no metric events yet"):
    plotting.load_run(started)
  with pytest.raises(CvaeError, match="no run has metric events yet: .*started holds no"):
    figures.write_figures([str(tmp_path)], str(tmp_path / "out"))
  assert not os.path.exists(tmp_path / "out")  # nothing half-written


def _launch(script, *args):
  """launch/<script> on one CPU device (conftest's 8 simulated ones are slower)."""
  return subprocess.run([sys.executable, f"launch/{script}", *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=300,
                        env=launcher_env())


def _started_run(workdir) -> str:
  """A run folder as training leaves it before its first log: a config, no metrics."""
  os.makedirs(workdir)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump({"seed": 0, "data": {"name": "ptb"}, "train": {},
               "model": {"posterior": "flow", "emb_dim": 200, "hidden_dim": 200,
                         "latent_dim": 32}}, f)
  return str(workdir)


def test_cli_writes_the_figures_the_runs_support(sweep, tmp_path):
  started = _started_run(tmp_path / "zz_started")
  out = tmp_path / "figures"
  result = _launch("plot.py", str(tmp_path), "--out", str(out))  # the runs' folder
  assert result.returncode == 0, result.stderr
  names = ["training_curves.png", "diagnostics.png",
           "lambda_sweep_ptb_emb200_hidden200_z32.png",
           "lambda_training_curves_ptb_emb200_hidden200_z32.png"]
  assert result.stdout.split() == [str(out / name) for name in names]
  assert result.stderr == (
      f"note: left out of every figure: {started} holds no metrics.jsonl yet\n"
      "note: the λ sweep of ptb_emb200_hidden200_z32 leaves out vae: "
      "not the 'copula' posterior, whose log c term λ weighs\n")
  for name in names:
    _assert_png(out / name)


def test_lambda_sweeps_group_runs_by_dataset_and_size_and_name_the_runs_left_out(
    sweep, tmp_path):
  others = [_fake_run(tmp_path / "syn", 0.9, dataset="synthetic"),
            _fake_run(tmp_path / "big", 0.3, hidden_dim=512),
            _fake_run(tmp_path / "new", 0.7)]
  with open(os.path.join(others[-1], "metrics.jsonl"), "w") as f:
    f.write(json.dumps({"step": 10, "split": "train", "rec": 90.0}) + "\n")
  runs = [plotting.load_run(w) for w in sweep + others]
  sweeps, notes = figures.lambda_sweeps(runs[2::-1] + runs[3:])  # ordered by lambda
  assert {key: [run.name for run in group] for key, group in sweeps.items()} == {
      "ptb_emb200_hidden200_z32": ["l01", "l05", "l10"]}
  sweep_of = "the λ sweep of ptb_emb200_hidden200_z32 leaves out"
  assert notes == [
      f"{sweep_of} new: no test or validation metrics yet",
      f"{sweep_of} vae: not the 'copula' posterior, whose log c term λ weighs",
      f"{sweep_of} syn, big: another dataset or model size"]
  # No group spans two lambdas: no sweep across datasets or sizes, and a note says so.
  sweeps, notes = figures.lambda_sweeps(runs[:1] + runs[3:6])
  assert sweeps == {}
  assert notes == ["no lambda_sweep: no copula runs of one dataset and model size span "
                   "two λ with metrics (ptb_emb200_hidden200_z32: l01; "
                   "synthetic_emb200_hidden200_z32: syn; ptb_emb200_hidden512_z32: big)"]


def test_train_curves_pool_the_events_of_each_validation_interval(tmp_path):
  run = plotting.load_run(_fake_run(tmp_path / "run", 0.5))
  events = [{"step": 100, "split": "train", "rec": 10.0, "sentences": 300},
            {"step": 131, "split": "train", "rec": 20.0, "sentences": 100},
            {"step": 131, "split": "valid", "rec": 1.0},
            {"step": 200, "split": "train", "rec": 30.0, "sentences": 200},
            {"step": 262, "split": "train", "rec": "nan", "sentences": 100},
            {"step": 262, "split": "valid", "rec": 1.0},
            {"step": 300, "split": "train", "rec": 40.0, "sentences": 50},
            {"step": 310, "split": "train", "rec": 50.0, "sentences": 150}]
  steps, rec = dataclasses.replace(run, events=events).interval_curve("rec")
  np.testing.assert_array_equal(steps, [131, 262, 310])  # and one after the last validation
  np.testing.assert_allclose(rec[[0, 2]], [(10 * 300 + 20 * 100) / 400,
                                           (40 * 50 + 50 * 150) / 200])
  assert np.isnan(rec[1])  # a non-finite event makes its interval's mean a gap
  without_validation = [e for e in events if e["split"] == "train"]
  steps, rec = dataclasses.replace(run, events=without_validation).interval_curve("rec")
  np.testing.assert_array_equal(steps, [100, 131, 200, 262, 300, 310])


def test_sweep_lines_average_seeds_and_keep_other_settings_apart(tmp_path):
  dirs = [_fake_run(tmp_path / "a", 0.2), _fake_run(tmp_path / "b", 0.2, seed=1),
          _fake_run(tmp_path / "c", 0.6),
          _fake_run(tmp_path / "d", 0.2, train={"free_bits": 0.25}),
          _fake_run(tmp_path / "e", 0.6, train={"free_bits": 0.25})]
  runs = [plotting.load_run(d) for d in dirs]
  finals = [(run, run.final_test()) for run in runs]
  lines = plotting._sweep_lines(finals)
  assert {line: {lam: len(ms) for lam, ms in points.items()}
          for line, points in lines.items()} == {
              "copula": {0.2: 2, 0.6: 1}, "copula, free_bits=0.25": {0.2: 1, 0.6: 1}}
  assert plotting._mean_sd([84.0, 86.0]) == (85.0, pytest.approx(np.sqrt(2.0)))
  assert plotting._mean_sd([84.0]) == (84.0, 0.0)
  # Figure lines are labelled as the tables' rows; repeated labels name the run.
  assert plotting._labels(runs[:3] + [plotting.load_run(
      _fake_run(tmp_path / "v", 0.4, posterior="gaussian"))]) == [
          "copula, λ=0.2 (a)", "copula, λ=0.2 (b)", "copula, λ=0.6", "gaussian"]


@pytest.mark.parametrize("args, message", [
    (["{tmp}/nothing_here"], "is not a run folder or a folder of runs"),
    (["{tmp}"], "holds no run (no config.json in it or its sub-folders)"),
    ([], "no run directories given"),
])
def test_cli_exits_2_with_one_line_on_bad_runs(tmp_path, args, message):
  result = _launch("plot.py", *[a.format(tmp=tmp_path) for a in args],
                   "--out", str(tmp_path / "out"))
  assert result.returncode == 2
  assert result.stderr.startswith("error:") and message in result.stderr
  assert "Traceback" not in result.stderr


def test_posterior_means_of_a_real_synthetic_run(tmp_path):
  trained = _launch("train.py", "--config", "configs/synthetic.py:tiny",
                    f"--workdir={tmp_path / 'run'}",
                    f"--config.data.tfds_dir={tmp_path / 'tfds'}")
  assert trained.returncode == 0, trained.stderr
  # Training ends with the test metrics of the best checkpoint, as a table.
  table = trained.stdout[trained.stdout.index("split "):].splitlines()
  rows = {label.strip(): value for label, value in (row.rsplit("  ", 1) for row in table)}
  best = min((e for e in read_events(str(tmp_path / "run")) if e["split"] == "valid"),
             key=lambda e: e["nll_elbo"])
  test = [e for e in read_events(str(tmp_path / "run")) if e["split"] == "test"]
  assert rows["checkpoint's train step"] == str(best["step"])
  assert rows["NLL, -ELBO (nats/sentence, upper bound)"] == f"{test[0]['nll_elbo']:,.2f}"
  out = tmp_path / "figures"
  result = _launch("plot.py", str(tmp_path / "run"), "--out", str(out))
  assert result.returncode == 0, result.stderr
  assert result.stdout.split() == [str(out / name) for name in (
      "training_curves.png", "diagnostics.png", "posterior_means_run.png")]
  _assert_png(out / "posterior_means_run.png")
