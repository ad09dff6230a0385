"""The grid launcher: combinations, names, skipping finished runs, failures."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from cvae_jax import eval_progress, grid
from cvae_jax.errors import CvaeError
from cvae_jax.workdir import exclusive
from configs import synthetic
from tests.helpers import launcher_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_combination_is_one_named_run():
  sweeps = grid.parse_sweeps(synthetic.get_config(), [
      "model.posterior=gaussian,copula", "config.seed=0,1"])
  runs = grid.grid_runs(sweeps)
  assert [r.name for r in runs] == ["posterior=gaussian,seed=0", "posterior=gaussian,seed=1",
                                    "posterior=copula,seed=0", "posterior=copula,seed=1"]
  assert runs[3].overrides == ("--config.model.posterior=copula", "--config.seed=1")


def test_ambiguous_short_names_use_the_full_field():
  sweeps = grid.parse_sweeps(synthetic.get_config(), ["seed=1", "data.synthetic.seed=2"])
  assert grid.grid_runs(sweeps)[0].name == "seed=1,data.synthetic.seed=2"


@pytest.mark.parametrize("sweep, message", [
    ("model.nope=1,2", "unknown config field config.model.nope"),
    ("model.posterior", "use --sweep <group>.<field>=v1,v2"),
    ("=1", "use --sweep"),
])
def test_bad_sweeps_are_named(sweep, message):
  with pytest.raises(CvaeError, match=message):
    grid.parse_sweeps(synthetic.get_config(), [sweep])


def test_config_flags_keep_the_config_file_and_overrides():
  argv = ["--config", "configs/ptb.py", "--root=r", "--config.seed=3", "--sweep", "seed=1"]
  assert grid.config_flags(argv) == ["--config", "configs/ptb.py", "--config.seed=3"]


def _fake_commands(monkeypatch, exit_codes):
  """Each run's 'training' writes a test event, or exits with its code."""
  def commands(run, workdir, config_flags, split):
    code = exit_codes.get(run.name, 0)
    script = (f"import os, json; os.makedirs({workdir!r}, exist_ok=True); "
              f"open(os.path.join({workdir!r}, 'metrics.jsonl'), 'a').write("
              f"json.dumps({{'step': 1, 'split': 'test'}}) + '\\n'); raise SystemExit({code})")
    return [[sys.executable, "-c", script]]
  monkeypatch.setattr(grid, "commands", commands)


@pytest.mark.parametrize("parallel", [1, 2])
def test_finished_runs_are_skipped_and_failures_reported(tmp_path, monkeypatch, parallel):
  runs = grid.grid_runs([("seed", ["0", "1", "2"])])
  os.makedirs(tmp_path / "seed=0")
  with open(tmp_path / "seed=0" / "metrics.jsonl", "w") as f:
    f.write(json.dumps({"step": 9, "split": "test"}) + "\n")
  _fake_commands(monkeypatch, {"seed=2": 3})
  status = grid.run_grid(str(tmp_path), runs, [], None, parallel)
  assert status == {"seed=0": "skipped", "seed=1": "done", "seed=2": "failed (exit 3)"}
  assert grid.is_finished(str(tmp_path / "seed=1"), None)
  assert not grid.is_finished(str(tmp_path / "seed=1"), "test")  # no eval_test.json
  if parallel > 1:
    assert os.path.isfile(tmp_path / "seed=1" / "log.txt")


def test_sigterm_stops_the_run_in_flight_and_starts_no_other(tmp_path, monkeypatch):
  def commands(run, workdir, config_flags, split):  # writes its pid and waits; SIGTERM: saves, exits
    script = (f"import os, signal, sys, time; os.makedirs({workdir!r}); d = {workdir!r}\n"
              "def on_term(*_):  # takes a while to save\n"
              "  time.sleep(1); open(os.path.join(d, 'saved'), 'w').close(); sys.exit(143)\n"
              "signal.signal(signal.SIGTERM, on_term)\n"
              "open(os.path.join(d, 'pid'), 'w').write(str(os.getpid())); time.sleep(120)")
    return [[sys.executable, "-c", script]]
  monkeypatch.setattr(grid, "commands", commands)
  first = tmp_path / "seed=0" / "pid"

  def terminate_when_the_first_runs():
    deadline = time.time() + 60
    while not (first.is_file() and first.read_text()) and time.time() < deadline:
      time.sleep(0.05)
    os.kill(os.getpid(), signal.SIGTERM)
  threading.Thread(target=terminate_when_the_first_runs, daemon=True).start()
  before = signal.getsignal(signal.SIGTERM)
  with pytest.raises(SystemExit) as exit_:
    grid.run_grid(str(tmp_path), grid.grid_runs([("seed", ["0", "1"])]), [], None)
  assert exit_.value.code == 143
  assert (tmp_path / "seed=0" / "saved").is_file()  # the grid waited for its run
  assert signal.getsignal(signal.SIGTERM) is before
  pid, deadline = int(first.read_text()), time.time() + 30
  while _alive(pid) and time.time() < deadline:
    time.sleep(0.05)
  assert not _alive(pid)
  time.sleep(1)
  assert not (tmp_path / "seed=1").exists()


@pytest.mark.parametrize("to_the_group", [False, True])
def test_ctrl_c_lets_the_run_in_flight_end_once_and_starts_no_other(
    tmp_path, monkeypatch, to_the_group):
  """A terminal's Ctrl-C reaches the grid and its run; a SIGINT to the grid alone
  is passed on after the grace. Either way the run gets exactly one."""
  def commands(run, workdir, config_flags, split):  # notes each SIGINT, ends 1 s after
    script = (f"import os, signal, sys, time; os.makedirs({workdir!r}); "
              f"d = {workdir!r}; got = []\n"
              "def on_int(*_):\n"
              "  open(os.path.join(d, 'sigint'), 'a').write('x'); got.append(time.time())\n"
              "signal.signal(signal.SIGINT, on_int)\n"
              "open(os.path.join(d, 'pid'), 'w').write(str(os.getpid()))\n"
              "while not got or time.time() < got[0] + 1: time.sleep(0.01)\n"
              "sys.exit(130)")
    return [[sys.executable, "-c", script]]
  monkeypatch.setattr(grid, "commands", commands)
  monkeypatch.setattr(grid, "CTRL_C_GRACE_S", 5.0)
  first, ctrl_c = tmp_path / "seed=0", []

  def ctrl_c_when_the_first_runs():
    deadline = time.time() + 60
    while not ((first / "pid").is_file() and (first / "pid").read_text()) and (
        time.time() < deadline):
      time.sleep(0.05)
    if to_the_group:
      os.kill(int((first / "pid").read_text()), signal.SIGINT)
    ctrl_c.append(time.time())
    os.kill(os.getpid(), signal.SIGINT)
  threading.Thread(target=ctrl_c_when_the_first_runs, daemon=True).start()
  with pytest.raises(KeyboardInterrupt, match="the same command resumes them"):
    grid.run_grid(str(tmp_path), grid.grid_runs([("seed", ["0", "1"])]), [], None)
  took = time.time() - ctrl_c[0]
  assert (first / "sigint").read_text() == "x"
  assert not _alive(int((first / "pid").read_text()))  # ended before the grid returned
  assert took < 5 if to_the_group else took > 5
  time.sleep(1)
  assert not (tmp_path / "seed=1").exists()


def _alive(pid: int) -> bool:
  """Whether process `pid` exists (the grid's thread reaps its children)."""
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  return True


def test_a_run_restarted_for_more_steps_or_evaluated_before_it_is_not_finished(tmp_path):
  run = tmp_path / "run"
  os.makedirs(run)
  events = [{"step": 9, "split": "valid"}, {"step": 9, "split": "test"}]
  (run / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
  assert grid.is_finished(str(run), None)
  assert not grid.is_finished(str(run), "test")
  (run / "eval_test.json").write_text("{}")
  assert grid.is_finished(str(run), "test")
  os.utime(run / "eval_test.json", (1, 1))  # evaluated before training's end
  assert not grid.is_finished(str(run), "test")
  with open(run / "metrics.jsonl", "a") as f:  # restarted with more steps, stopped
    f.write(json.dumps({"step": 12, "split": "train"}) + "\n")
  assert not grid.is_finished(str(run), None)


def test_the_state_of_each_run(tmp_path):
  def at(name, metrics=(), checkpoints=(), evaluated=False):
    run = tmp_path / name
    os.makedirs(run / "checkpoints")
    (run / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in metrics))
    for c in checkpoints:
      os.makedirs(run / "checkpoints" / c)
    if evaluated:
      (run / "eval_test.json").write_text("{}")
    return str(run)
  test_event = [{"step": 9, "split": "test"}]
  assert grid.state(at("done", test_event, ["9"], True), "test") == "finished"
  assert grid.state(at("trained", test_event, ["9"]), "test") == "trained, not evaluated"
  eval_progress.Progress(str(tmp_path / "trained" / "eval_test.progress.npz"), "run",
                         every_s=0).save(3, {"rec": 1.0}, [])
  assert grid.state(str(tmp_path / "trained"), "test") == (
      "trained, not evaluated (the evaluation saved 3 batches)")
  assert grid.state(at("trained2", test_event, ["9"]), None) == "finished"
  midway = at("midway", [{"step": 1200, "split": "train"}],
              ["1000", "2000", "3000.orbax-checkpoint-tmp-1"])
  assert grid.state(midway, "test") == "checkpoint of step 2,000"
  assert grid.state(at("fresh"), "test") == "no checkpoint yet"
  assert grid.state(str(tmp_path / "absent"), "test") == "not started"
  if os.path.exists("/proc/locks"):
    with exclusive(midway):
      assert grid.state(midway, "test") == (
          f"training now (pid {os.getpid()}), checkpoint of step 2,000")


def test_the_launcher_trains_evaluates_then_skips(tmp_path):
  cmd = [sys.executable, "launch/grid.py", "--config", "configs/synthetic.py:tiny",
         f"--config.data.tfds_dir={tmp_path / 'tfds'}", "--config.train.num_steps=4",
         "--config.eval.iw_samples=2", "--sweep", "model.posterior=gaussian",
         f"--root={tmp_path / 'grid'}"]
  env = launcher_env()
  first = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
  assert first.returncode == 0, first.stderr[-2000:]
  run = tmp_path / "grid" / "posterior=gaussian"
  assert json.loads((run / "eval_test.json").read_text())["iw_samples"] == 2
  assert json.loads((run / "config.json").read_text())["train"]["num_steps"] == 4
  again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
  assert "posterior=gaussian  skipped" in again.stdout
  entries = json.loads((tmp_path / "grid" / "grid.json").read_text())
  assert len(entries) == 1 and "--sweep model.posterior=gaussian" in entries[0]["command"]
  assert entries[0]["runs"] == ["posterior=gaussian"]
  status = subprocess.run(cmd[:-2] + ["model.posterior=gaussian,copula", cmd[-1], "--status"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
  assert status.returncode == 0, status.stderr[-2000:]
  assert status.stdout.split("\n")[:2] == ["posterior=gaussian  finished",
                                            "posterior=copula    not started"]
  assert json.loads((tmp_path / "grid" / "grid.json").read_text()) == entries  # not recorded
  bad = subprocess.run(cmd[:-3] + ["--sweep", "model.nope=1", f"--root={tmp_path / 'g2'}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
  assert bad.returncode == 2 and "config.model.nope" in bad.stderr
  assert not (tmp_path / "g2").exists()
