"""Gaussian copula posterior, the paper's Cholesky approach (Algorithm 1).

The marginals are the factorised Gaussian of the VAE; a dependency structure
Sigma = diag(w) + a a^T (positive definite by construction) defines the copula.
The decoder's z comes from the marginals; a separate copula sample q = L eps
enters the objective through log c(q) (Wang & Wang 2019, and the authors' code).
"""

import flax.linen as nn
from flax import struct
import jax
import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular

from cvae_jax.models.posteriors.gaussian import DiagonalGaussian, GaussianPosterior


def covariance(w: jax.Array, a: jax.Array) -> jax.Array:
  """Sigma = diag(w) + a a^T: w > 0, a: [batch, latent] -> [batch, latent, latent]."""
  return jax.vmap(jnp.diag)(w) + a[:, :, None] * a[:, None, :]


def cholesky(sigma: jax.Array) -> jax.Array:
  """Lower Cholesky factor: [..., n, n] -> [..., n, n].

  `jnp.linalg.cholesky` on GPU and TPU. On CPU its LAPACK custom call slows
  the whole jitted train step (about 20% at hidden size 512, measured with
  launch/benchmark.py), so there the same factor comes from a column loop of
  plain jnp ops, n steps of O(n^2), which XLA fuses and differentiates.
  """
  return jax.lax.platform_dependent(sigma, cpu=_cholesky_columns,
                                    default=jnp.linalg.cholesky)


def _cholesky_columns(sigma: jax.Array) -> jax.Array:
  n = sigma.shape[-1]
  rows = jnp.arange(n)

  def column(j, chol):  # columns < j of chol are final, the rest are zero
    v = sigma[..., :, j] - jnp.einsum("...ik,...k->...i", chol, chol[..., j, :])
    d = jnp.sqrt(v[..., j])
    col = jnp.where(rows > j, v / d[..., None], jnp.where(rows == j, d[..., None], 0.0))
    return chol.at[..., :, j].set(col)

  return jax.lax.fori_loop(0, n, column, jnp.zeros_like(sigma))


def log_copula_density(sigma: jax.Array, chol: jax.Array, q: jax.Array) -> jax.Array:
  """Log density of the Gaussian copula with covariance Sigma at the point q.

  log c(q) = log N(q; 0, Sigma) - sum_i log N(q_i; 0, Sigma_ii)
           = sum_i log s_i - 1/2 log|Sigma| + 1/2 q^T (diag(Sigma)^-1 - Sigma^-1) q,
  with s_i = sqrt(Sigma_ii), log|Sigma| from the Cholesky factor and
  q^T Sigma^-1 q = |L^-1 q|^2 from a triangular solve (no inverse).

  Args:
    sigma: [batch, latent, latent] covariance.
    chol: [batch, latent, latent] lower Cholesky factor of sigma.
    q: [batch, latent].

  Returns:
    [batch] float32.
  """
  diag = jnp.diagonal(sigma, axis1=-2, axis2=-1)
  white = solve_triangular(chol, q[..., None], lower=True)[..., 0]
  half_log_det = jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)
  return (0.5 * jnp.sum(jnp.log(diag), axis=-1) - half_log_det
          + 0.5 * jnp.sum(jnp.square(q) / diag - jnp.square(white), axis=-1))


@struct.dataclass
class GaussianCopula:
  """Gaussian marginals and a Gaussian copula; w, a: [batch, latent]."""

  marginals: DiagonalGaussian
  w: jax.Array
  a: jax.Array

  def sample(self, key, num_samples=None):
    return self.marginals.sample(key, num_samples)

  def log_prob(self, z):
    return self.marginals.log_prob(z)

  def kl(self):
    return self.marginals.kl()

  def kl_groups(self):
    return self.marginals.kl_groups()

  def sample_copula(self, key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """q = L eps, eps ~ N(0, I), with Sigma and L: [batch, latent] and 2x [b, l, l]."""
    sigma = covariance(self.w, self.a)
    chol = cholesky(sigma)
    eps = jax.random.normal(key, self.w.shape, self.w.dtype)
    return jnp.einsum("bij,bj->bi", chol, eps), sigma, chol

  def copula_terms(self, z: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """log c(q) at a fresh copula sample q ~ N(0, Sigma), and the objective's
    copula term log c(q) + sum_i log q(z_i|x) at the decoder's z; each [batch]."""
    q, sigma, chol = self.sample_copula(key)
    log_c = log_copula_density(sigma, chol, q)
    return log_c, log_c + self.log_prob(z)


class CopulaPosterior(nn.Module):
  """w = ReLU(W1 hc) + 0.5, a = tanh(BN(W2 hc)), beside the Gaussian marginals."""

  latent_dim: int
  bn_gamma: float = 0.0  # BN-VAE's fixed scale of the marginals' means (0: off)

  @nn.compact
  def __call__(self, hc: jax.Array, train: bool) -> GaussianCopula:
    """hc: [batch, 2 * hidden] final encoder state -> q(z|x) with its copula."""
    marginals = GaussianPosterior(self.latent_dim, self.bn_gamma, name="marginals")(hc, train)
    w = nn.relu(nn.Dense(self.latent_dim, name="w_dense")(hc)) + 0.5
    a = nn.Dense(self.latent_dim, use_bias=False, name="a_dense")(hc)  # BN has the bias
    a = jnp.tanh(nn.BatchNorm(use_running_average=not train, momentum=0.9,
                              name="a_bn")(a))
    return GaussianCopula(marginals=marginals, w=w, a=a)
