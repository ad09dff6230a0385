"""Every registered posterior against the interface of `posteriors.base.Distribution`."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cvae_jax import objectives
from cvae_jax.models import ModelConfig
from cvae_jax.models import posteriors
from tests.helpers import perturb

BATCH, LATENT = 5, 2


def make_posterior(name, seed=0, batch=BATCH, latent=LATENT, head_scale=1.0):
  """The distribution of a posterior module with random parameters on random states
  (every parameter moved off its initial value, e.g. the flexible copula's shapes;
  those outside its `marginals` then times `head_scale`)."""
  module = posteriors.build(ModelConfig(vocab_size=2, latent_dim=latent, posterior=name))
  hc = jax.random.normal(jax.random.key(seed), (batch, 8))
  variables = module.init(jax.random.key(seed + 1), hc, False)
  params = perturb(variables["params"], seed + 2, scale=head_scale)
  return module.apply(dict(variables, params=params), hc, False)


@pytest.fixture(scope="module", params=list(posteriors.POSTERIORS))
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


# Densities on R^d; the vMF's lives on the unit sphere (test_vmf.py checks it by
# quadrature). test_flow.py checks the flow's far from the identity.
ON_R_D = [name for name in posteriors.POSTERIORS if name not in ("vmf", "flow")]


@pytest.mark.parametrize("name", ON_R_D)
def test_log_prob_is_a_normalised_density(name):
  """E_r[q(z) / r(z)] = 1 for a heavier-tailed proposal r: per row, independent
  Cauchy coordinates at the posterior's mean with its standard deviations."""
  q = make_posterior(name)

  @jax.jit
  def mass(q):
    center, spread = q.mean(), jnp.std(q.sample(jax.random.key(0), 10_000), axis=0)
    t = jax.random.cauchy(jax.random.key(1), (400_000, BATCH, LATENT))
    log_r = jnp.sum(-jnp.log(np.pi * spread * (1 + jnp.square(t))), axis=-1)
    return jnp.mean(jnp.exp(q.log_prob(center + spread * t) - log_r), axis=0)
  np.testing.assert_allclose(mass(q), np.ones(BATCH), rtol=0.03)


@pytest.mark.parametrize("name", [name for name in posteriors.POSTERIORS if name != "flow"])
def test_kl_entropy_and_mean_match_monte_carlo_over_its_samples(name):
  """Over many keys for the posteriors whose KL and entropy are themselves
  estimates (test_flow.py checks the flow's, far from the identity)."""
  q = make_posterior(name)

  @jax.jit
  def estimates(q):
    z = q.sample(jax.random.key(2), 200_000)
    log_q = q.log_prob(z)
    keys = jax.random.split(jax.random.key(3), 20_000)
    return (jnp.mean(jax.vmap(q.kl)(keys), 0), jnp.mean(log_q - q.prior.log_prob(z), 0),
            jnp.mean(jax.vmap(q.entropy)(keys), 0), -jnp.mean(log_q, 0),
            jnp.mean(z, 0), jnp.std(z, 0) / np.sqrt(z.shape[0]))
  kl, kl_mc, entropy, entropy_mc, mean_mc, standard_error = estimates(q)
  np.testing.assert_allclose(kl, kl_mc, rtol=0.05, atol=0.03)
  np.testing.assert_allclose(entropy, entropy_mc, rtol=0.05, atol=0.03)
  assert jnp.all(jnp.abs(q.mean() - mean_mc) < 5 * standard_error)


@pytest.mark.parametrize("name, copula_weight", [("gaussian", 0.0), ("copula", 0.5)])
def test_the_loss_is_rec_plus_beta_kl_minus_lambda_times_the_copula_term(name, copula_weight):
  q = make_posterior(name)
  z = q.sample(jax.random.key(4))
  terms = {"rec": jnp.arange(BATCH, dtype=jnp.float32),
           **q.objective_terms(z, jax.random.key(5))}
  kl_groups = q.kl_groups(jax.random.key(6))
  want = (terms["rec"] + 0.3 * jnp.sum(kl_groups, -1)
          - copula_weight * terms.get("copula_term", 0.0))
  got = objectives.Objective().sentence_loss(terms, kl_groups, jnp.ones(BATCH), jnp.float32(0.3))
  chex.assert_trees_all_close(got, want)


@pytest.mark.parametrize("name", list(posteriors.POSTERIORS))
def test_kl_groups_sum_to_the_kl_and_the_module_has_the_distributions_prior(name):
  q = make_posterior(name)
  key = jax.random.key(7)
  chex.assert_trees_all_close(jnp.sum(q.kl_groups(key), -1), q.kl(key), rtol=1e-6)
  assert posteriors.prior(name) is q.prior
