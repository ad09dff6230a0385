"""The full-covariance Gaussian posterior against scipy in float64."""

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from cvae_jax.models import ModelConfig
from cvae_jax.models.posteriors import full_gaussian

BATCH, LATENT = 3, 4


def _posterior(dtype=jnp.float32):
  """The module's distribution on random encoder states."""
  module = full_gaussian.FullGaussianPosterior.from_config(
      ModelConfig(vocab_size=2, latent_dim=LATENT, posterior="full_gaussian"))
  hc = jax.random.normal(jax.random.key(0), (BATCH, 8))
  q = module.apply(module.init(jax.random.key(1), hc, False), hc, False)
  return jax.tree.map(lambda x: x.astype(dtype), q)


def test_the_encoder_gives_a_cholesky_factor_with_a_positive_diagonal():
  l = np.asarray(_posterior().scale_tril)
  np.testing.assert_array_equal(np.triu(l, 1), 0.0)
  assert np.all(np.diagonal(l, axis1=1, axis2=2) > 0)
  assert np.all(np.abs(l[:, *np.tril_indices(LATENT, -1)]) > 0)  # correlated dimensions


def test_log_prob_kl_and_entropy_against_scipy_in_float64():
  with jax.enable_x64(True):
    q = _posterior(jnp.float64)
    z = q.sample(jax.random.key(2), 7)  # [7, batch, latent]
    log_q = q.log_prob(z)
    kl, entropy = q.kl(None), q.entropy(None)
    for row in range(BATCH):
      loc, l = np.asarray(q.loc[row]), np.asarray(q.scale_tril[row])
      dist = stats.multivariate_normal(loc, l @ l.T)
      np.testing.assert_allclose(log_q[:, row], dist.logpdf(np.asarray(z[:, row])),
                                 rtol=1e-12)
      np.testing.assert_allclose(entropy[row], dist.entropy(), rtol=1e-12)
      # KL(q || N(0, I)) = -H(q) - E_q[log N(z; 0, I)], the latter in closed form.
      cross = 0.5 * (LATENT * np.log(2 * np.pi) + np.trace(l @ l.T) + loc @ loc)
      np.testing.assert_allclose(kl[row], cross - dist.entropy(), rtol=1e-12)


def test_samples_have_the_covariance_and_the_kl_matches_monte_carlo():
  q = _posterior()
  z = q.sample(jax.random.key(3), 200_000)
  for row in range(BATCH):
    l = np.asarray(q.scale_tril[row])
    np.testing.assert_allclose(np.cov(np.asarray(z[:, row]).T), l @ l.T, atol=0.03)
  mc = jnp.mean(q.log_prob(z) - q.prior.log_prob(z), axis=0)
  np.testing.assert_allclose(q.kl(None), mc, rtol=0.02, atol=0.02)
