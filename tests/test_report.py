"""launch/evaluate.py on a trained run: the run's own data and model, the table before
any write."""

import json
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

from cvae_jax import data, report, train
from cvae_jax.checkpointing import Checkpoints
from cvae_jax.config import model_config
from cvae_jax.errors import CvaeError
from cvae_jax.models import TextVAE
from cvae_jax.workdir import prepare_workdir
from configs import ptb
from tests.helpers import launcher_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
  """A configs/ptb.py:tiny run of the Gaussian VAE on a small corpus in its own
  source_dir, with an untrained best checkpoint (step 0)."""
  tmp = tmp_path_factory.mktemp("text_run")
  rng = np.random.default_rng(0)
  words = [f"w{i}" for i in range(40)]
  (tmp / "src").mkdir()
  for split, n in (("train", 64), ("valid", 16), ("test", 16)):
    lines = [" ".join(rng.choice(words, rng.integers(2, 9))) for _ in range(n)]
    (tmp / "src" / f"{split}.txt").write_text("\n".join(lines) + "\n")
  config = ptb.get_config("tiny")
  config.data.source_dir, config.data.tfds_dir = str(tmp / "src"), str(tmp / "tfds")
  config.model.posterior = "gaussian"
  corpus = data.load_corpus(config.data)
  prepare_workdir(str(tmp / "run"), config, corpus.vocab)
  example = {"tokens": np.array([[data.BOS, data.EOS]], np.int32),
             "lengths": np.array([2], np.int32)}
  state = jax.jit(train.create_train_state, static_argnums=(0, 1))(
      TextVAE(model_config(config, len(corpus.vocab))),
      train.make_optimizer(config.train), jax.random.key(0), example)
  ckpts = Checkpoints(str(tmp / "run"))
  ckpts.save(ckpts.best, 0, state, {"step": 0, "valid_nll_elbo": 0.0})
  ckpts.close()
  return tmp


def test_evaluate_reads_the_run_s_data_and_model_and_prints_the_table_before_a_failed_write(
    text_run):
  workdir = text_run / "run"
  (workdir / "eval_test.json").mkdir()  # the write fails, even for root
  result = subprocess.run(
      [sys.executable, "launch/evaluate.py", "--config", "configs/ptb.py:tiny",
       f"--workdir={workdir}"],  # no source_dir, tfds_dir or posterior
      cwd=ROOT, capture_output=True, text=True, timeout=300,
      env=launcher_env())
  assert result.returncode == 2
  assert f"note: {workdir}: the run's config.model.posterior='gaussian'" in result.stderr
  assert "NLL, importance-weighted (nats/sentence)" in result.stdout
  assert re.search(r"^checkpoint's train step +0$", result.stdout, re.MULTILINE)
  assert result.stderr.splitlines()[-1] == (
      f"error: cannot write {workdir}/eval_test.json: Is a directory; the metrics "
      "are printed above")
  assert "Traceback" not in result.stderr
  assert not (workdir / "eval_test.json.tmp").exists()
  assert not (text_run / "tfds" / "cvae_ptb" / "public").exists()  # no download


def test_write_evaluation_writes_json_or_fails_cleanly(tmp_path):
  metrics = {"split": "valid", "nll_elbo": 1.5, "checkpoint": "best"}
  path = report.write_evaluation(str(tmp_path), metrics)
  with open(path) as f:
    assert json.load(f) == metrics
  with pytest.raises(CvaeError, match="cannot write .*eval_valid.json"):
    report.write_evaluation(str(tmp_path / "missing"), metrics)
