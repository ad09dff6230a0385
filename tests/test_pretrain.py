"""Autoencoder pretraining, then a fresh decoder (Li et al. 2019)."""

import functools
import math

import jax
from jax.sharding import Mesh
import numpy as np
import pytest

from cvae_jax import partition, train
from cvae_jax.objectives import Objective
from cvae_jax.plateau import Plateau, PlateauRule
from cvae_jax.train import create_train_state, train_step
from cvae_jax.writer import read_events
from configs import synthetic
from tests.helpers import random_batch, tiny_model


def _leaves(tree, params, groups):
  return [x for g, x in zip(jax.tree.leaves(partition.labels(params)), jax.tree.leaves(tree))
          if g in groups]


def test_the_reset_gives_the_decoder_a_fresh_start_and_keeps_the_rest():
  model, batch = tiny_model("gaussian"), random_batch(batch=16)
  create = jax.jit(create_train_state, static_argnums=(0, 1))
  tx = partition.make_optimizer(1e-2, 5.0, partitioned=True)
  state = create(model, tx, jax.random.key(0), batch)
  step = jax.jit(functools.partial(train_step, objective=Objective(free_bits=0.1, latent_dim=3)))
  for i in range(2):
    state, _ = step(state, random_batch(i, batch=16), jax.random.key(1))
  key = jax.random.key(7)
  reset = train.reset_decoder(state, model, key, batch, Mesh(np.asarray(jax.devices()[:1]),
                                                             ("data",)))
  fresh = create(model, tx, key, batch)  # what a run started from `key` would have
  kept = ("encoder", "embedding")
  for got, want in ((_leaves(reset.params, state.params, ("decoder",)),
                     _leaves(fresh.params, state.params, ("decoder",))),
                    (_leaves(reset.params, state.params, kept),
                     _leaves(state.params, state.params, kept))):
    assert len(got) == len(want) > 0
    for a, b in zip(got, want):
      np.testing.assert_array_equal(a, b)
  assert any(not np.array_equal(a, b) for a, b in zip(
      _leaves(reset.params, state.params, ("decoder",)),
      _leaves(state.params, state.params, ("decoder",))))
  adam = {g: s[0][0] for g, s in partition.group_states(reset.opt_state).items()}
  before = {g: s[0][0] for g, s in partition.group_states(state.opt_state).items()}
  assert int(adam["decoder"].count) == 0
  assert all(not np.any(x) for x in jax.tree.leaves((adam["decoder"].mu, adam["decoder"].nu)))
  for group in kept:
    jax.tree.map(np.testing.assert_array_equal, adam[group], before[group])
  assert int(reset.step) == int(state.step)


@pytest.mark.parametrize("cycles", [0, 2])
def test_beta_is_zero_in_pretraining_and_the_schedule_starts_after_it(cycles):
  config = synthetic.get_config("tiny")
  config.train.update(ae_pretrain_steps=10, kl_anneal_start=2, kl_anneal_steps=4,
                      kl_cycles=cycles, kl_cycle_rise=0.5)
  objective = Objective.from_config(config, total_steps=30)
  start, period = 12, math.ceil((30 - 12) / 2)
  for s in range(30):
    if cycles:
      want = 0.0 if s < start else min(1.0, ((s - start) % period) / (0.5 * period))
    else:
      want = min(1.0, max(0.0, (s - start) / 4))
    assert float(objective.kl_weight(s)) == pytest.approx(want), s


def test_validations_in_pretraining_are_not_tracked_and_plateau_start_counts_after_it():
  t = synthetic.get_config("tiny").train
  t.update(ae_pretrain_steps=10, plateau_start=5, early_stop_patience=1)
  plateau = Plateau(PlateauRule.from_config(t))
  actions = [plateau.update(nll, step) for nll, step in
             ((5.0, 5), (1.0, 10), (80.0, 12), (90.0, 14), (95.0, 15))]
  assert actions == ["wait", "wait", "improved", "wait", "stop"]
  assert plateau.best == 80.0


def _config(tmp_path):
  c = synthetic.get_config("tiny")
  c.data.tfds_dir = str(tmp_path / "tfds")
  c.data.bucket_lengths, c.data.max_length = (24,), 22  # one shape: fewer compilations
  c.train.update(num_steps=20, log_every=5, eval_every=5, checkpoint_every=5,
                 ae_pretrain_steps=10, kl_anneal_steps=5, free_bits=0.1)
  return c


def _checkpoint(workdir, manager="latest"):
  from cvae_jax.checkpointing import Checkpoints
  import orbax.checkpoint as ocp
  ckpts = Checkpoints(str(workdir))
  m = getattr(ckpts, manager)
  step = m.latest_step()
  restored = m.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  ckpts.close()
  return step, restored.state


def test_a_run_killed_at_the_reset_resumes_exactly(tmp_path, monkeypatch):
  train.train_and_evaluate(_config(tmp_path), str(tmp_path / "straight"))
  events = read_events(str(tmp_path / "straight"))
  # beta per step 0 until step 10, then 0, 0.2, ..., 1: the windows' means
  assert [e["beta"] for e in events if e["split"] == "train"] == pytest.approx(
      [0.0, 0.0, 0.4, 1.0])
  assert _checkpoint(tmp_path / "straight", "best")[0] in (15, 20)  # none from pretraining
  _, state = _checkpoint(tmp_path / "straight")
  counts = {g: int(s["inner_state"][0]["count"])
            for g, s in state["opt_state"][1]["inner_states"].items()}
  assert counts == {"encoder": 20, "embedding": 20, "decoder": 10}

  # Killed at the start of step 12: it resumes at 10, so the reset happens
  # right after the restart.
  real = train.make_step

  def dies(*args, **kwargs):
    step_fn = real(*args, **kwargs)

    def step(state, batch, step):
      if step + 1 == 12:
        raise KeyboardInterrupt
      return step_fn(state, batch, step)
    return step

  monkeypatch.setattr(train, "make_step", dies)
  with pytest.raises(KeyboardInterrupt):
    train.train_and_evaluate(_config(tmp_path), str(tmp_path / "resumed"))
  monkeypatch.setattr(train, "make_step", real)
  train.train_and_evaluate(_config(tmp_path), str(tmp_path / "resumed"))
  assert read_events(str(tmp_path / "resumed")) == events
  jax.tree.map(np.testing.assert_array_equal, _checkpoint(tmp_path / "resumed"),
               _checkpoint(tmp_path / "straight"))
