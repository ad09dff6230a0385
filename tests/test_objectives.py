"""KL schedules and free bits on hand-computed cases."""

import chex
import jax
import jax.numpy as jnp
import numpy as np

from cvae_jax import objectives
from cvae_jax.models.posteriors import EXTRA_LOSS
from cvae_jax.objectives import Objective


def _betas(objective, steps):
  return np.asarray(jax.vmap(objective.kl_weight)(jnp.arange(steps)))


def test_monotonic_schedule_rises_linearly_after_its_start():
  np.testing.assert_allclose(_betas(Objective(kl_anneal_start=2, kl_anneal_steps=4), 8),
                             [0, 0, 0, 0.25, 0.5, 0.75, 1, 1])
  np.testing.assert_allclose(_betas(Objective(kl_anneal_start=2, kl_anneal_steps=0), 4),
                             [0, 0, 1, 1])


def test_cyclical_schedule_by_hand():
  # 3 cycles of 4 steps over steps 0..11, rising over half of each (Fu et al.).
  objective = Objective(kl_cycles=3, kl_cycle_rise=0.5, total_steps=12)
  np.testing.assert_allclose(_betas(objective, 12), [0, .5, 1, 1] * 3)
  # After a start of 2, 2 cycles of ceil(9 / 2) = 5 steps rising over 0.4 * 5 = 2
  # steps; the last cycle is cut short by the end of training.
  objective = Objective(kl_anneal_start=2, kl_cycles=2, kl_cycle_rise=0.4, total_steps=11)
  np.testing.assert_allclose(_betas(objective, 11), [0, 0, 0, .5, 1, 1, 1, 0, .5, 1, 1])
  # The linear ramp's length plays no part; rise 1 is a sawtooth.
  objective = Objective(kl_anneal_steps=100, kl_cycles=2, kl_cycle_rise=1.0, total_steps=8)
  np.testing.assert_allclose(_betas(objective, 8), [0, .25, .5, .75] * 2)


def test_cyclical_schedule_without_room_for_a_cycle_stays_zero():
  objective = Objective(kl_anneal_start=5, kl_cycles=2, total_steps=5)
  np.testing.assert_allclose(_betas(objective, 8), np.zeros(8))


KL = np.array([[0.1, 2.0], [0.3, 1.0], [5.0, 5.0]], np.float32)  # [batch, dims]
WEIGHTS = np.array([1.0, 1.0, 0.0], np.float32)  # the last row is padding


def test_free_bits_by_hand():
  # Real rows' mean KL per dimension: (0.2, 1.5); with target 0.5 the first
  # dimension is free (counted as 0.5, no gradient), the second is penalised.
  got = objectives.free_bits_kl(KL, WEIGHTS, 0.5)
  np.testing.assert_allclose(got, [0.5 + 2.0, 0.5 + 1.0, 0.5 + 5.0], rtol=1e-6)
  mean = lambda kl: jnp.sum(objectives.free_bits_kl(kl, WEIGHTS, 0.5) * WEIGHTS) / 2
  np.testing.assert_allclose(mean(KL), max(0.5, 0.2) + max(0.5, 1.5), rtol=1e-6)
  np.testing.assert_allclose(jax.grad(mean)(KL), [[0, .5], [0, .5], [0, 0]])
  # Target 0: the plain KL.
  np.testing.assert_allclose(objectives.free_bits_kl(KL, WEIGHTS, 0.0), KL.sum(-1))


def test_free_bits_of_a_whole_latent_group_targets_every_dimension():
  """A posterior whose KL does not split is one group of latent_dim targets."""
  objective = Objective(kl_anneal_steps=1, free_bits=0.5, latent_dim=4)
  terms = {"rec": jnp.zeros(3)}
  total = KL.sum(-1, keepdims=True)  # [batch, 1]; mean over real rows 1.7 < 4 * 0.5
  np.testing.assert_allclose(objective.sentence_loss(terms, total, WEIGHTS, 1.0), [2.0] * 3)
  objective = Objective(kl_anneal_steps=1, free_bits=0.25, latent_dim=4)  # 1.7 >= 1
  np.testing.assert_allclose(objective.sentence_loss(terms, total, WEIGHTS, 1.0),
                             total[:, 0], rtol=1e-6)


def test_sentence_loss_weighs_each_term():
  objective = Objective(free_bits=0.5, latent_dim=2)
  terms = {"rec": jnp.array([10.0, 20.0, 30.0]), EXTRA_LOSS: jnp.array([1.0, 2.0, 3.0])}
  got = objective.sentence_loss(terms, jnp.asarray(KL), WEIGHTS, jnp.float32(0.5))
  want = terms["rec"] + 0.5 * np.array([2.5, 1.5, 5.5]) + terms[EXTRA_LOSS]
  chex.assert_trees_all_close(got, want, rtol=1e-6)


def test_no_latent_no_free_bits():
  """The language model's empty KL groups add nothing, whatever the target."""
  objective = Objective(free_bits=1.0, latent_dim=2)
  terms = {"rec": jnp.ones(3)}
  got = objective.sentence_loss(terms, jnp.zeros((3, 0)), WEIGHTS, 1.0)
  np.testing.assert_allclose(got, np.ones(3))
