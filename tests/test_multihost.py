"""Two processes (hosts) with per-host input give the same run as one process."""

import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from cvae_jax.writer import read_events
from tests.helpers import launcher_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _train(tmp_path, workdir, *extra):
  return [sys.executable, "launch/train.py", "--config", "configs/synthetic.py:tiny",
          f"--config.data.tfds_dir={tmp_path / 'tfds'}", "--config.train.num_steps=20",
          "--workdir", str(workdir), *extra]


def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_equal_one(tmp_path):
  env = launcher_env()
  subprocess.run(_train(tmp_path, tmp_path / "one"), cwd=ROOT, env=env, check=True,
                 capture_output=True, timeout=600)
  port = _free_port()
  procs = [subprocess.Popen(
      _train(tmp_path, tmp_path / "two", "--multihost", f"--coordinator_address=localhost:{port}",
             "--num_processes=2", f"--process_id={i}"),
      cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for i in range(2)]
  for p in procs:
    assert p.wait(timeout=600) == 0, p.stderr.read().decode()[-2000:]
  one, two = read_events(str(tmp_path / "one")), read_events(str(tmp_path / "two"))
  assert [(e["step"], e["split"]) for e in one] == [(e["step"], e["split"]) for e in two]
  for a, b in zip(one, two):
    for key in ("loss", "rec", "kl", "nll_elbo", "mi_split", "sentences", "tokens"):
      if key in a:
        np.testing.assert_allclose(b[key], a[key], rtol=1e-4, atol=1e-4)
