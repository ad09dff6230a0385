"""Learning-rate decay on a plateau and early stopping: the rule and the run."""

import itertools

import jax
import numpy as np
import pytest

from cvae_jax import train
from cvae_jax.evaluate import Evaluator
from cvae_jax.plateau import Plateau, PlateauRule
from cvae_jax.writer import read_events
from configs import synthetic

# A scripted validation curve, one value per pass (every 5 steps).
CURVE = (10.0, 9.0, 9.5, 9.2, 8.9, 9.0, 9.1, 9.3)
RULE = dict(lr_decay_patience=2, max_lr_decays=1, early_stop_patience=2)


def test_the_rule_on_a_scripted_curve():
  plateau = Plateau(PlateauRule(**RULE))
  actions = [plateau.update(v, step) for v, step in zip(CURVE, range(5, 45, 5))][:7]
  assert actions == ["improved", "improved", "wait", "decay", "improved", "wait", "stop"]
  assert (plateau.best, plateau.decays, plateau.stopped) == (8.9, 1, True)


def test_patience_counts_only_after_the_start_step():
  plateau = Plateau(PlateauRule(early_stop_patience=1, start_step=20))
  assert [plateau.update(v, s) for v, s in ((5.0, 10), (6.0, 15), (7.0, 20))] == [
      "improved", "wait", "stop"]


def test_without_patience_nothing_decays_or_stops():
  plateau = Plateau(PlateauRule())
  actions = [plateau.update(v, 100 * i) for i, v in enumerate((1.0, 2, 3, 4, 5, 0.5))]
  assert actions == ["improved"] + ["wait"] * 4 + ["improved"]
  assert (plateau.decays, plateau.stopped) == (0, False)


def test_the_counters_round_trip_through_json():
  plateau = Plateau(PlateauRule(**RULE))
  for v, step in zip(CURVE[:4], range(5, 25, 5)):
    plateau.update(v, step)
  again = Plateau.from_json(plateau.rule, plateau.to_json())
  assert again == plateau
  assert Plateau.from_json(plateau.rule, None) == Plateau(plateau.rule)


def _scripted_evaluator(monkeypatch, start=0):
  """Evaluator.__call__ returning CURVE[start:] on 'valid' and a fixed test row."""
  values = itertools.chain(CURVE[start:], itertools.repeat(100.0))

  def call(self, variables, split, iw_samples=0):
    del self, variables, iw_samples
    nll = next(values) if split.name == "valid" else 1.0
    return {"nll_elbo": nll, "sentences": 100}

  monkeypatch.setattr(Evaluator, "__call__", call)


def _config(tmp_path):
  c = synthetic.get_config("tiny")
  c.data.tfds_dir = str(tmp_path / "tfds")
  c.train.update(num_steps=60, log_every=5, eval_every=5, checkpoint_every=5,
                 keep_checkpoints=20, **RULE)
  return c


def _latest_step(workdir):
  from cvae_jax.checkpointing import Checkpoints
  ckpts = Checkpoints(str(workdir))
  step = ckpts.latest.latest_step()
  ckpts.close()
  return step


def _params(workdir, manager="latest", step=None):
  from cvae_jax.checkpointing import Checkpoints
  import orbax.checkpoint as ocp
  ckpts = Checkpoints(str(workdir))
  m = getattr(ckpts, manager)
  step = m.latest_step() if step is None else step
  restored = m.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  ckpts.close()
  return restored.state


def test_a_run_decays_from_its_best_checkpoint_and_stops_by_itself(tmp_path, monkeypatch):
  _scripted_evaluator(monkeypatch)
  train.train_and_evaluate(_config(tmp_path), str(tmp_path / "run"))
  events = read_events(str(tmp_path / "run"))
  train_rows = {e["step"]: e for e in events if e["split"] == "train"}
  assert max(train_rows) == 35  # stopped at the 7th pass, not at num_steps=60
  assert [e["split"] for e in events if e["step"] == 35] == ["train", "valid", "test"]
  assert [train_rows[s]["lr_scale"] for s in (20, 25)] == [1.0, 0.5]
  # the decay at step 20 continued from the best state (step 10) at step 20
  after_decay, best = _params(tmp_path / "run", step=20), _params(tmp_path / "run", "best", 25)
  jax.tree.map(np.testing.assert_array_equal, after_decay["params"],
               _params(tmp_path / "run", step=10)["params"])
  assert int(after_decay["step"]) == 20 and float(after_decay["lr_scale"]) == 0.5
  assert int(best["step"]) == 25
  # a finished run restarted does not train again
  train.train_and_evaluate(_config(tmp_path), str(tmp_path / "run"))
  assert max(e["step"] for e in read_events(str(tmp_path / "run"))) == 35


@pytest.mark.parametrize("killed_after", [17])  # resumes at 15, one pass into a plateau
def test_a_run_killed_in_a_plateau_resumes_it_exactly(tmp_path, monkeypatch, killed_after,
                                                      capsys):
  _scripted_evaluator(monkeypatch)
  train.train_and_evaluate(_config(tmp_path), str(tmp_path / "straight"))

  real = train.jit_train_step

  def dies(*args, **kwargs):
    step_fn, calls = real(*args, **kwargs), [0]

    def step(*a):
      calls[0] += 1
      if calls[0] > killed_after:
        raise KeyboardInterrupt
      return step_fn(*a)
    return step

  _scripted_evaluator(monkeypatch)
  monkeypatch.setattr(train, "jit_train_step", dies)
  with pytest.raises(KeyboardInterrupt):
    train.train_and_evaluate(_config(tmp_path), str(tmp_path / "resumed"))
  monkeypatch.setattr(train, "jit_train_step", real)
  resume_step = _latest_step(tmp_path / "resumed")
  assert resume_step == killed_after // 5 * 5  # the interrupted run finished its saves
  _scripted_evaluator(monkeypatch, start=resume_step // 5)
  capsys.readouterr()
  train.train_and_evaluate(_config(tmp_path), str(tmp_path / "resumed"))
  err = capsys.readouterr().err
  assert f"resuming from step {resume_step}, checkpoint " in err
  assert "0 learning-rate decays, 1 validations without improvement" in err

  assert read_events(str(tmp_path / "resumed")) == read_events(str(tmp_path / "straight"))
  jax.tree.map(np.testing.assert_array_equal, _params(tmp_path / "resumed"),
               _params(tmp_path / "straight"))
