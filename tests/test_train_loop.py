"""train_and_evaluate end to end: metrics, resume after a kill, failures."""

import os
import re
import signal
import subprocess
import sys
import time

from absl import flags
import jax
import numpy as np
import pytest

from cvae_jax import cli, evaluate, train
from cvae_jax.config import validate
from cvae_jax.errors import CvaeError
from cvae_jax.writer import read_events
from configs import synthetic
from tests.helpers import launcher_env, tb_scalars

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(tmp_path, **train_overrides):
  c = synthetic.get_config("tiny")
  c.data.tfds_dir = str(tmp_path / "tfds")
  c.train.update(train_overrides)
  return c


def _latest_params(workdir):
  from cvae_jax.checkpointing import Checkpoints
  import orbax.checkpoint as ocp
  ckpts = Checkpoints(str(workdir))
  step = ckpts.latest.latest_step()
  restored = ckpts.latest.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  ckpts.close()
  return step, restored.state["params"]


def test_a_run_writes_metrics_checkpoints_and_test_figures(tmp_path):
  test = train.train_and_evaluate(tiny_config(tmp_path), str(tmp_path / "run"))
  events = read_events(str(tmp_path / "run"))
  assert [(e["step"], e["split"]) for e in events] == [
      (20, "train"), (20, "valid"), (40, "train"), (40, "valid"), (40, "test")]
  for key in ("rec", "kl", "nll_elbo", "ppl_elbo", "log_copula", "nll_paper", "ppl_paper"):
    assert np.isfinite(test[key])
  assert test["sentences"] == 100
  assert events[2]["rec"] < events[0]["rec"]  # it learns
  assert os.listdir(tmp_path / "run" / "tb")


ONE_SHAPE = {"data.bucket_lengths": (24,), "data.max_length": 22}  # fewer compilations


def _killed_after_step_25(step_fn):
  """The run is killed between steps 25 and 26 (a Ctrl-C lands in step 26)."""
  calls = [0]

  def step(*a):
    calls[0] += 1
    if calls[0] > 25:
      raise KeyboardInterrupt
    return step_fn(*a)
  return step


def _terminated_in_step_23(step_fn):
  """SIGTERM comes while step 23 runs, between the logs of steps 20 and 25."""
  calls = [0]

  def step(*a):
    calls[0] += 1
    if calls[0] == 23:
      os.kill(os.getpid(), signal.SIGTERM)
    return step_fn(*a)
  return step


def _count_traces(monkeypatch) -> dict:
  """{function: times traced} of the train and evaluation steps from now on."""
  traces = {"train_step": 0, "batch_metrics": 0}

  def counted(module, name):
    real = getattr(module, name)

    def fn(*args, **kwargs):
      traces[name] += 1
      return real(*args, **kwargs)
    monkeypatch.setattr(module, name, fn)
  counted(train, "train_step")
  counted(evaluate, "batch_metrics")
  return traces


KILLED = (_killed_after_step_25, 130, 20, "interrupted at step 25; the checkpoint of step 20 "
          "is kept; run the same command to resume")
TERMINATED = (_terminated_in_step_23, 143, 23, "terminated at step 23; its checkpoint is kept; "
              "run the same command to resume")


@pytest.mark.parametrize("options, stop", [
    ({}, KILLED),
    # Every training procedure at once, on the flow posterior.
    ({**ONE_SHAPE, "model.posterior": "flow", "model.word_dropout": 0.3,
      "model.bn_gamma": 0.5, "train.free_bits": 0.2, "train.kl_cycles": 2}, KILLED),
    # Resumed between two logs: the train metrics summed since step 20 come back too.
    ({}, TERMINATED),
    # The posteriors with their own sampler or covariance, not covered above.
    ({**ONE_SHAPE, "model.posterior": "vmf"}, TERMINATED),
    ({**ONE_SHAPE, "model.posterior": "full_gaussian"}, KILLED),
], ids=["default", "procedures_flow", "sigterm", "vmf", "full_gaussian"])
def test_stopped_and_resumed_equals_uninterrupted(tmp_path, monkeypatch, capsys, options,
                                                  stop):
  config = tiny_config(tmp_path, checkpoint_every=10, log_every=5)
  config.update_from_flattened_dict(options)
  traces = _count_traces(monkeypatch)
  train.train_and_evaluate(config, str(tmp_path / "straight"))
  first_run = dict(traces)

  stops, code, checkpoint, message = stop
  real = train.jit_train_step
  monkeypatch.setattr(train, "jit_train_step", lambda *a, **k: stops(real(*a, **k)))
  flags.FLAGS.mark_as_parsed()  # cli.run reads --multihost
  sigterm = signal.getsignal(signal.SIGTERM)
  with pytest.raises(SystemExit) as exit_:
    cli.run(lambda: train.train_and_evaluate(config, str(tmp_path / "resumed")))
  assert exit_.value.code == code
  assert capsys.readouterr().err.splitlines()[-1] == message
  assert signal.getsignal(signal.SIGTERM) is sigterm  # outside training, as it was
  assert _latest_params(tmp_path / "resumed")[0] == checkpoint
  monkeypatch.setattr(train, "jit_train_step", real)
  train.train_and_evaluate(config, str(tmp_path / "resumed"))
  assert f"resuming from step {checkpoint}," in capsys.readouterr().err

  assert traces == first_run  # the later runs reuse the first one's traces
  straight, resumed = _latest_params(tmp_path / "straight"), _latest_params(tmp_path / "resumed")
  assert straight[0] == resumed[0] == 40
  jax.tree.map(np.testing.assert_array_equal, resumed[1], straight[1])
  assert read_events(str(tmp_path / "resumed")) == read_events(str(tmp_path / "straight"))
  # TensorBoard too: the steps 21-25 written before the kill are not there twice.
  assert tb_scalars(tmp_path / "resumed" / "tb") == tb_scalars(tmp_path / "straight" / "tb")


def test_nan_loss_stops_at_its_step_and_keeps_the_last_good_checkpoint(tmp_path):
  config = tiny_config(tmp_path, num_steps=20)
  train.train_and_evaluate(config, str(tmp_path / "run"))
  config = tiny_config(tmp_path, num_steps=40, learning_rate=float("nan"))
  with pytest.raises(CvaeError, match="NaN or inf at step 22"):
    train.train_and_evaluate(config, str(tmp_path / "run"))
  assert _latest_params(tmp_path / "run")[0] == 20
  # The first run's test row stays: only a new test row replaces it.
  events = read_events(str(tmp_path / "run"))
  assert [(e["step"], e["split"]) for e in events] == [
      (20, "train"), (20, "valid"), (20, "test")]


def _launch(tmp_path, *args):
  return subprocess.run(
      [sys.executable, "launch/train.py", "--config", "configs/synthetic.py:tiny",
       f"--config.data.tfds_dir={tmp_path / 'tfds'}", *args],
      cwd=ROOT, capture_output=True, text=True, timeout=300,
      env=launcher_env())


@pytest.mark.parametrize("args, message", [
    (["--config.model.nope=1"], "error: unknown config field config.model.nope; "
     "config.model has bn_gamma, copula_weight, dropout,"),
    (["--config.data.batch_size=0"], "error: config.data.batch_size=0 must be a positive "
     "multiple of the 1 devices"),
    (["--config.model.posterior=iaf"], "unknown posterior 'iaf'"),
    (["--config.data.name=ptb", "--config.data.source_dir=/nonexistent/ptb"],
     "/nonexistent/ptb"),
    (["--config.data.name=imdb"], "imdb"),
    (["--config.data.max_length=500"], "exceeds the largest of config.data.bucket_lengths"),
])
def test_bad_input_exits_non_zero_with_one_clear_message(tmp_path, args, message):
  result = _launch(tmp_path, "--workdir", str(tmp_path / "run"), *args)
  assert result.returncode == 2
  assert message in result.stderr
  assert "Traceback" not in result.stderr
  assert not (tmp_path / "run").exists()  # nothing half-written


@pytest.mark.parametrize("options, message", [
    ({"model.word_dropout": 1.0}, r"config.model.word_dropout=1.0 must lie in \[0, 1\)"),
    ({"train.kl_cycle_rise": 0.0}, r"config.train.kl_cycle_rise=0.0 must lie in \(0, 1\]"),
    ({"train.free_bits": -0.5}, "config.train.free_bits=-0.5 must not be negative"),
    ({"train.kl_cycles": -1}, "config.train.kl_cycles=-1 must not be negative"),
    ({"model.bn_gamma": -1.0}, "config.model.bn_gamma=-1.0 must not be negative"),
    ({"model.posterior": "vmf", "model.bn_gamma": 0.5},
     "config.model.bn_gamma does not apply to the vmf posterior"),
    ({"model.posterior": "flow", "model.flow_steps": 0}, "config.model.flow_steps=0"),
    ({"model.posterior": "none", "train.aggressive": True},
     "config.train.aggressive=True needs an encoder; config.model.posterior='none' has none"),
    ({"model.posterior": "none", "train.ae_pretrain_steps": 5},
     "config.train.ae_pretrain_steps=5 needs an encoder"),
    ({"train.ae_pretrain_steps": -1}, "config.train.ae_pretrain_steps=-1 must not be negative"),
    ({"train.aggressive_max_inner": 0}, "config.train.aggressive_max_inner=0 must be at least 1"),
    ({"train.aggressive_check_every": 0},
     "config.train.aggressive_check_every=0 must be at least 1"),
])
def test_bad_settings_are_refused_before_a_run_starts(options, message):
  config = synthetic.get_config("tiny")
  config.update_from_flattened_dict(options)
  with pytest.raises(CvaeError, match=message):
    validate(config)


def test_a_missing_workdir_is_named_without_unrelated_hints(tmp_path):
  result = _launch(tmp_path)
  assert result.returncode == 2
  assert result.stderr == ("error: --workdir is required: Run directory: checkpoints, "
                           "metrics, logs.\n")


@pytest.mark.slow
def test_ctrl_c_ends_with_one_line_and_exit_130_keeping_the_checkpoint(tmp_path):
  workdir = tmp_path / "run"
  # A child inherits an ignored SIGINT (as in a background job): let it have Ctrl-C.
  previous = signal.signal(signal.SIGINT, signal.default_int_handler)
  try:
    proc = subprocess.Popen(
        [sys.executable, "launch/train.py", "--config", "configs/synthetic.py:tiny",
         f"--config.data.tfds_dir={tmp_path / 'tfds'}", f"--workdir={workdir}",
         "--config.train.num_steps=100000", "--config.train.checkpoint_every=10"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=launcher_env())
  finally:
    signal.signal(signal.SIGINT, previous)
  try:
    deadline = time.time() + 300
    while not (workdir / "checkpoints").is_dir() or not any(
        name.isdigit() for name in os.listdir(workdir / "checkpoints")):
      assert time.time() < deadline and proc.poll() is None
      time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
  finally:
    proc.kill()
  assert proc.returncode == 130
  assert "Traceback" not in stderr
  message = stderr.splitlines()[-1]
  match = re.fullmatch(r"interrupted at step (\d+); the checkpoint of step (\d+) is kept; "
                       "run the same command to resume", message)
  assert match, stderr[-3000:]
  step, checkpoint = map(int, match.groups())
  kept = [int(name) for name in os.listdir(workdir / "checkpoints") if name.isdigit()]
  assert checkpoint == max(kept) and checkpoint <= step
