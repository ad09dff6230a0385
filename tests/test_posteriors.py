"""Every registered posterior against the interface of `posteriors.base.Distribution`."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cvae_jax import objectives
from cvae_jax.models import ModelConfig
from cvae_jax.models import posteriors
from cvae_jax.models.posteriors import log_standard_normal

BATCH, LATENT = 5, 2


def make_posterior(name, seed=0, scale=1.0, batch=BATCH, latent=LATENT):
  """The distribution of a randomly initialised posterior module on random states."""
  module = posteriors.build(ModelConfig(vocab_size=2, latent_dim=latent, posterior=name))
  hc = scale * jax.random.normal(jax.random.key(seed), (batch, 8))
  variables = module.init(jax.random.key(seed + 1), hc, False)
  return module.apply(variables, hc, False)


@pytest.fixture(params=list(posteriors.POSTERIORS))
def q(request):
  return make_posterior(request.param)


def test_shapes_and_rows(q):
  key = jax.random.key(0)
  chex.assert_shape(q.sample(key), (BATCH, LATENT))
  z = q.sample(key, 7)
  chex.assert_shape(z, (7, BATCH, LATENT))
  chex.assert_shape([q.log_prob(z), q.log_prob(z[:, :1])], (7, BATCH))
  chex.assert_shape([q.kl(key), q.entropy(key)], (BATCH,))
  chex.assert_shape(q.mean(), (BATCH, LATENT))
  for leaf in jax.tree.leaves(q):  # the rows lead every leaf: gather, shard, concatenate
    assert leaf.shape[0] == BATCH
  row = jax.tree.map(lambda x: x[2:3], q)
  chex.assert_trees_all_close(row.log_prob(z[:, 2:3]), q.log_prob(z)[:, 2:3], atol=1e-5)
  chex.assert_trees_all_close(q.log_prob(z[:, :1]),  # a batch of 1 broadcasts over rows
                              q.log_prob(jnp.broadcast_to(z[:, :1], z.shape)), atol=1e-5)


def test_log_prob_is_a_normalised_density(q):
  """E_r[q(z) / r(z)] = 1 for a wide Gaussian proposal r = N(0, 3^2 I)."""
  z = 3.0 * jax.random.normal(jax.random.key(1), (400_000, BATCH, LATENT))
  log_r = log_standard_normal(z / 3.0) - LATENT * np.log(3.0)
  mass = jnp.mean(jnp.exp(q.log_prob(z) - log_r), axis=0)
  np.testing.assert_allclose(mass, np.ones(BATCH), rtol=0.03)


def test_kl_entropy_and_mean_match_monte_carlo_over_its_samples(q):
  z = q.sample(jax.random.key(2), 200_000)
  log_q = q.log_prob(z)
  key = jax.random.key(3)
  np.testing.assert_allclose(q.kl(key), jnp.mean(log_q - log_standard_normal(z), 0),
                             rtol=0.05, atol=0.02)
  np.testing.assert_allclose(q.entropy(key), -jnp.mean(log_q, 0), rtol=0.05, atol=0.02)
  np.testing.assert_allclose(q.mean(), jnp.mean(z, 0), atol=0.02)


@pytest.mark.parametrize("name, copula_weight", [("gaussian", 0.0), ("copula", 0.5)])
def test_the_loss_is_rec_plus_beta_kl_minus_lambda_times_the_copula_term(name, copula_weight):
  q = make_posterior(name)
  z = q.sample(jax.random.key(4))
  terms = {"rec": jnp.arange(BATCH, dtype=jnp.float32), "kl": jnp.ones(BATCH),
           **q.objective_terms(z, jax.random.key(5))}
  want = terms["rec"] + 0.3 * terms["kl"] - copula_weight * terms.get("copula_term", 0.0)
  chex.assert_trees_all_close(objectives.sentence_loss(terms, jnp.float32(0.3)), want)
