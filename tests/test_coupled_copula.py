"""The coupled and flexible copula posteriors against scipy, closed forms and jax.jacfwd."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from cvae_jax.models.posteriors import CoupledCopula, DiagonalGaussian, FlexibleCopula
from cvae_jax.models.posteriors.dependence import cholesky, correlation
from cvae_jax.models.posteriors.flexible_copula import (inverse_sinh_arcsinh,
                                                        sinh_arcsinh)
from tests.test_posteriors import make_posterior


def _coupled(seed, batch=4, latent=3, dtype=jnp.float32):
  """A coupled copula with random mu, sigma, w >= 0.5 and |a| <= 1, and its S R S."""
  rng = np.random.default_rng(seed)
  loc, log_var = rng.normal(size=(2, batch, latent))
  w, a = rng.uniform(0.5, 2.0, (batch, latent)), rng.uniform(-1, 1, (batch, latent))
  r = correlation(jnp.asarray(w, dtype), jnp.asarray(a, dtype))
  q = CoupledCopula(DiagonalGaussian(jnp.asarray(loc, dtype), jnp.asarray(log_var, dtype)),
                    cholesky(r))
  s = np.exp(0.5 * log_var)
  return q, loc, s[:, :, None] * np.asarray(r, np.float64) * s[:, None, :]


def _flexible(seed, **kw):
  coupled, _, _ = _coupled(seed, **kw)
  rng = np.random.default_rng(seed + 100)
  shape = coupled.marginals.loc.shape
  dtype = coupled.marginals.loc.dtype
  return FlexibleCopula(coupled.marginals, coupled.chol,
                        skew=jnp.asarray(rng.uniform(-2, 2, shape), dtype),
                        tail=jnp.asarray(np.exp(rng.uniform(-1.0, 1.0, shape)), dtype))


def test_coupled_log_prob_is_the_full_covariance_gaussian_in_float64():
  with jax.enable_x64(True):
    q, loc, cov = _coupled(0, dtype=jnp.float64)
    z = np.random.default_rng(1).normal(size=(5, *loc.shape)) * 2.0
    want = np.array([[stats.multivariate_normal(loc[b], cov[b]).logpdf(z[k, b])
                      for b in range(loc.shape[0])] for k in range(5)])
    np.testing.assert_allclose(q.log_prob(jnp.asarray(z)), want, rtol=1e-10)
  q32, _, _ = _coupled(0)  # and the float32 path the model runs
  np.testing.assert_allclose(q32.log_prob(jnp.asarray(z, jnp.float32)), want, rtol=1e-4)


def test_coupled_kl_and_entropy_are_the_full_covariance_closed_forms():
  q, loc, cov = _coupled(2)
  _, log_det = np.linalg.slogdet(cov)
  kl = 0.5 * (np.trace(cov, axis1=1, axis2=2) + np.sum(loc**2, -1) - loc.shape[-1] - log_det)
  entropy = 0.5 * (loc.shape[-1] * np.log(2 * np.pi * np.e) + log_det)
  key = jax.random.key(0)
  np.testing.assert_allclose(q.kl(key), kl, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(q.entropy(key), entropy, rtol=1e-4, atol=1e-5)


def test_coupled_samples_have_correlation_r_and_covariance_s_r_s():
  q, loc, cov = _coupled(3, batch=2, latent=4)
  z = np.asarray(jax.jit(lambda key: q.sample(key, 200_000))(jax.random.key(1)), np.float64)
  for b in range(2):
    s = np.sqrt(np.diag(cov[b]))
    np.testing.assert_allclose(np.corrcoef(z[:, b], rowvar=False), cov[b] / np.outer(s, s),
                               atol=0.01)
    np.testing.assert_allclose(np.cov(z[:, b], rowvar=False), cov[b], atol=0.03 * s.max()**2)
    np.testing.assert_allclose(z[:, b].mean(0), loc[b], atol=0.02 * s.max())


@pytest.mark.parametrize("scale", [1e-6, 1.0, 1e3, 1e6])
def test_correlation_is_unit_diagonal_and_positive_definite_for_extreme_encoder_outputs(scale):
  """w, a (and the flexible shapes) from heads whose parameters are scaled by `scale`."""
  for name in ("coupled_copula", "flexible_copula"):
    q = make_posterior(name, latent=6, head_scale=scale)
    r = np.asarray(q.chol, np.float64) @ np.swapaxes(np.asarray(q.chol, np.float64), 1, 2)
    np.testing.assert_allclose(np.diagonal(r, axis1=1, axis2=2), 1.0, atol=1e-5)
    assert np.linalg.eigvalsh(r).min() > 1 / 3 - 1e-4
    z = q.sample(jax.random.key(0), 3)
    assert np.all(np.isfinite(q.log_prob(z))) and np.all(np.isfinite(q.kl(jax.random.key(1))))


def test_correlation_at_the_heads_limits():
  w = jnp.array([[0.5, 0.5, 1e30, 0.5], [0.5, jnp.inf, 0.5, 2.0]])
  a = jnp.array([[1.0, -1.0, 1.0, 0.0], [-1.0, 1.0, 1.0, 1.0]])
  r = correlation(w, a)
  chex.assert_trees_all_equal(jnp.diagonal(r, axis1=1, axis2=2), jnp.ones((2, 4)))
  assert np.linalg.eigvalsh(np.asarray(r, np.float64)).min() > 1 / 3 - 1e-6
  assert np.all(np.isfinite(np.asarray(cholesky(r))))


def test_sinh_arcsinh_is_strictly_increasing_and_round_trips():
  u = np.linspace(-8.0, 8.0, 2001)[:, None]
  with jax.enable_x64(True):
    for skew, tail in ((0.0, 1.0), (1.9, 1 / 2.9), (-1.9, 2.9), (0.7, 0.6)):
      x = np.asarray(sinh_arcsinh(jnp.asarray(u), skew, tail))
      assert np.all(np.diff(x, axis=0) > 0)
      np.testing.assert_allclose(inverse_sinh_arcsinh(jnp.asarray(x), skew, tail), u,
                                 rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(sinh_arcsinh(jnp.asarray(u), 0.0, 1.0), u, rtol=1e-12)


def test_flexible_log_prob_is_the_brute_force_change_of_variables_in_float64():
  """log q(z) = log N(g(z); 0, R) + log|det dg/dz| with g = z -> u and its jacfwd."""
  with jax.enable_x64(True):
    q = _flexible(4, dtype=jnp.float64)
    z = q.sample(jax.random.key(0), 3)
    r = np.asarray(q.chol @ jnp.swapaxes(q.chol, 1, 2))

    def to_u(z_row, b):  # [latent] -> [latent] for row b
      x = (z_row - q.marginals.loc[b]) / q.marginals.scale()[b]
      return jnp.sinh(q.tail[b] * jnp.arcsinh(x) - q.skew[b])

    for k in range(3):
      for b in range(z.shape[1]):
        u = to_u(z[k, b], b)
        _, log_det = np.linalg.slogdet(np.asarray(jax.jacfwd(to_u)(z[k, b], b)))
        want = stats.multivariate_normal(np.zeros(len(u)), r[b]).logpdf(np.asarray(u)) + log_det
        np.testing.assert_allclose(q.log_prob(z)[k, b], want, rtol=1e-10)
    _, log_q = q.sample_and_log_prob(jax.random.key(0), 3)  # forward, without the inverse
    np.testing.assert_allclose(log_q, q.log_prob(z), rtol=1e-10)


def test_flexible_mean_is_the_quadrature_mean():
  q = _flexible(5)
  u_mean = np.array([[integrate.quad(
      lambda u, s=s, t=t: np.sinh((np.arcsinh(u) + s) / t) * stats.norm.pdf(u),
      -np.inf, np.inf)[0] for s, t in zip(srow, trow)]
      for srow, trow in zip(np.asarray(q.skew, np.float64), np.asarray(q.tail, np.float64))])
  want = np.asarray(q.marginals.loc) + np.asarray(q.marginals.scale()) * u_mean
  np.testing.assert_allclose(q.mean(), want, rtol=1e-4, atol=1e-4)


def test_flexible_at_identity_shapes_is_the_coupled_copula():
  coupled, _, _ = _coupled(6)
  ones = jnp.ones_like(coupled.marginals.loc)
  flexible = FlexibleCopula(coupled.marginals, coupled.chol, skew=0 * ones, tail=ones)
  key = jax.random.key(0)
  z = coupled.sample(key, 4)
  chex.assert_trees_all_close(flexible.sample(key, 4), z, atol=1e-6)
  wide = 3.0 * jax.random.normal(jax.random.key(1), z.shape)
  chex.assert_trees_all_close(flexible.log_prob(z), coupled.log_prob(z), atol=1e-5)
  chex.assert_trees_all_close(flexible.log_prob(wide), coupled.log_prob(wide), atol=1e-4)
  chex.assert_trees_all_close(flexible.mean(), coupled.mean(), atol=1e-6)
  keys = jax.random.split(key, 50_000)
  for method in ("kl", "entropy"):
    estimates = jax.jit(jax.vmap(getattr(flexible, method)))(keys)
    standard_error = jnp.std(estimates, 0) / np.sqrt(len(keys))
    assert jnp.all(jnp.abs(jnp.mean(estimates, 0) - getattr(coupled, method)(key))
                   < 5 * standard_error)
