"""The planar-flow posterior: log-determinants against jacfwd, exact inverse, identity start."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cvae_jax.errors import CvaeError
from cvae_jax.models import ModelConfig
from cvae_jax.models.posteriors import DiagonalGaussian, flow, log_standard_normal

BATCH, LATENT, STEPS = 4, 3, 3


def random_flow(seed=0, dtype=jnp.float32):
  """A flow far from the identity: u, w, b ~ N(0, 1) (u then constrained)."""
  k = jax.random.split(jax.random.key(seed), 5)
  normal = lambda key, shape, scale=1.0: scale * jax.random.normal(key, shape, dtype)
  w = normal(k[2], (BATCH, STEPS, LATENT))
  base = DiagonalGaussian(loc=normal(k[0], (BATCH, LATENT)),
                          log_var=normal(k[1], (BATCH, LATENT), 0.5))
  return flow.PlanarFlow(base=base, u=flow.constrain(normal(k[3], w.shape, 2.0), w), w=w,
                         b=normal(k[4], (BATCH, STEPS)))


def test_the_constraint_keeps_every_step_invertible_and_zero_at_zero():
  w = jax.random.normal(jax.random.key(0), (1000, 4))
  u = 5.0 * jax.random.normal(jax.random.key(1), (1000, 4))
  assert np.all(np.sum(w * flow.constrain(u, w), -1) > -0.991)
  np.testing.assert_array_equal(flow.constrain(jnp.zeros_like(w), w), 0.0)  # exactly


def test_log_det_against_jacfwd_in_float64():
  with jax.enable_x64(True):
    q = random_flow(dtype=jnp.float64)
    z0 = jax.random.normal(jax.random.key(2), (BATCH, LATENT), jnp.float64)
    _, log_det = q.forward(z0)
    assert log_det.dtype == jnp.float64
    for row in range(BATCH):
      one = jax.tree.map(lambda x: x[row:row + 1], q)
      jacobian = jax.jacfwd(lambda z: one.forward(z[None])[0][0])(z0[row])
      sign, want = jnp.linalg.slogdet(jacobian)
      assert sign > 0
      np.testing.assert_allclose(log_det[row], want, rtol=1e-12, atol=1e-12)


def test_many_samples_in_one_jitted_call_match_float64():
  """A fused broadcast product and reduction over more than 32,768 outputs is
  miscomputed by XLA on CPU (JAX 0.10.2) unless written as a contraction."""
  q = random_flow(seed=20)
  z0 = q.base.sample(jax.random.key(21), 16_384)
  got = jax.jit(lambda q, z0: q.forward(z0))(q, z0)
  with jax.enable_x64(True):
    q64 = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), q)
    want = q64.forward(jnp.asarray(z0, jnp.float64))
  chex.assert_trees_all_close(got, want, rtol=1e-4, atol=1e-4)


def test_log_prob_inverts_the_flow_exactly():
  with jax.enable_x64(True):
    q = random_flow(seed=3, dtype=jnp.float64)
    z0 = q.base.sample(jax.random.key(4), 50)
    z, log_det = q.forward(z0)
    back, inverse_log_det = q.inverse(z)
    np.testing.assert_allclose(back, z0, atol=1e-10)
    np.testing.assert_allclose(inverse_log_det, log_det, atol=1e-10)
  q = random_flow(seed=3)  # float32: log_prob of own samples = forward pass's log q
  z, log_q = q.sample_and_log_prob(jax.random.key(5))
  np.testing.assert_allclose(q.log_prob(z), log_q, rtol=1e-4, atol=1e-4)


def test_log_prob_gradient_matches_finite_differences():
  with jax.enable_x64(True):
    q = random_flow(seed=6, dtype=jnp.float64)
    z = q.sample(jax.random.key(7))
    f = lambda q, z: jnp.sum(q.log_prob(z))
    grads = jax.grad(f, argnums=(0, 1))(q, z)
    eps = 1e-6
    for leaf_path in ("b", "w"):
      x = getattr(q, leaf_path)
      direction = jax.random.normal(jax.random.key(8), x.shape, jnp.float64)
      shifted = lambda s: f(q.replace(**{leaf_path: x + s * direction}), z)
      numeric = (shifted(eps) - shifted(-eps)) / (2 * eps)
      np.testing.assert_allclose(jnp.sum(getattr(grads[0], leaf_path) * direction), numeric,
                                 rtol=1e-6)
    direction = jax.random.normal(jax.random.key(9), z.shape, jnp.float64)
    numeric = (f(q, z + eps * direction) - f(q, z - eps * direction)) / (2 * eps)
    np.testing.assert_allclose(jnp.sum(grads[1] * direction), numeric, rtol=1e-6)


def test_kl_entropy_mean_and_normalisation_by_monte_carlo():
  q = random_flow(seed=10)
  n = 20_000
  z = q.sample(jax.random.key(11), n)
  log_q = q.log_prob(z)  # through the inverse: independent of the forward log q
  keys = jax.random.split(jax.random.key(12), n)
  within = lambda a, b: np.all(np.abs(a.mean(0) - b.mean(0))
                               < 4 * np.sqrt((a.var(0) + b.var(0)) / n))
  assert within(jax.vmap(q.kl)(keys), log_q - log_standard_normal(z))
  assert within(jax.vmap(q.entropy)(keys), -log_q)
  se = np.sqrt(z.var(0) * (1 / flow.MEAN_SAMPLES + 1 / n))  # mean() is Monte Carlo too
  assert np.all(np.abs(q.mean() - z.mean(0)) < 4 * se)
  r = 4.0 * jax.random.normal(jax.random.key(13), (400_000, BATCH, LATENT))
  log_r = log_standard_normal(r / 4.0) - LATENT * np.log(4.0)
  np.testing.assert_allclose(jnp.mean(jnp.exp(q.log_prob(r) - log_r), 0), 1.0, rtol=0.03)


def test_identity_initialisation_leaves_the_gaussian_unchanged():
  config = ModelConfig(vocab_size=2, latent_dim=LATENT, posterior="flow", flow_steps=STEPS)
  module = flow.FlowPosterior.from_config(config)
  hc = jax.random.normal(jax.random.key(14), (BATCH, 8))
  q = module.apply(module.init(jax.random.key(15), hc, False), hc, False)
  assert np.all(np.abs(q.w) > 0)  # the steps have directions, but u = 0
  key = jax.random.key(16)
  chex.assert_trees_all_close(q.sample(key, 5), q.base.sample(key, 5))
  z = q.sample(key, 5)
  chex.assert_trees_all_close(q.log_prob(z), q.base.log_prob(z), rtol=1e-6)
  chex.assert_trees_all_close(q.kl(key), q.base.log_prob(q.base.sample(key))
                              - log_standard_normal(q.base.sample(key)), rtol=1e-6)


def test_at_least_one_step():
  with pytest.raises(CvaeError, match="config.model.flow_steps=0 must be at least 1"):
    flow.FlowPosterior.from_config(ModelConfig(vocab_size=2, posterior="flow", flow_steps=0))
