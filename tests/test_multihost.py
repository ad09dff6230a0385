"""Two processes (hosts) with per-host input give the same run as one process, and
stop together on a SIGTERM to one of them."""

import os
import re
import signal
import socket
import subprocess
import sys
import time

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


@pytest.mark.slow
def test_sigterm_on_one_host_stops_both_at_one_checkpointed_step(tmp_path):
  """JAX's preemption service passes the signal on and picks the step."""
  workdir, port = tmp_path / "two", _free_port()
  procs = [subprocess.Popen(
      _train(tmp_path, workdir, "--config.train.num_steps=100000",
             "--config.train.checkpoint_every=10", "--multihost",
             f"--coordinator_address=localhost:{port}", "--num_processes=2",
             f"--process_id={i}"),
      cwd=ROOT, env=launcher_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
      text=True) for i in range(2)]
  try:
    deadline = time.time() + 600
    while not (workdir / "checkpoints").is_dir() or not any(
        name.isdigit() for name in os.listdir(workdir / "checkpoints")):
      assert time.time() < deadline and all(p.poll() is None for p in procs)
      time.sleep(0.2)
    procs[1].send_signal(signal.SIGTERM)
    stderrs = [p.communicate(timeout=300)[1] for p in procs]
  finally:
    for p in procs:
      p.kill()
  assert [p.returncode for p in procs] == [143, 143], [e[-2000:] for e in stderrs]
  lines = {e.splitlines()[-1] for e in stderrs}
  assert len(lines) == 1  # the same step on both
  match = re.fullmatch(r"terminated at step (\d+); its checkpoint is kept; "
                       "run the same command to resume", lines.pop())
  assert match
  steps = [int(name) for name in os.listdir(workdir / "checkpoints") if name.isdigit()]
  assert max(steps) == int(match.group(1))
