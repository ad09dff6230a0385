"""Gaussian copula posterior, the paper's Cholesky approach (Algorithm 1).

The marginals are the factorised Gaussian of the VAE; a dependency structure
Sigma = diag(w) + a a^T (positive definite by construction) defines the copula.
The decoder's z comes from the marginals; a separate copula sample q = L eps
enters the objective through lambda (log c(q) + sum_i log q(z_i|x)) (Wang &
Wang 2019, and the authors' code). So q(z|x), its log_prob, KL and entropy are
those of the marginals.
"""

import math

import flax.linen as nn
from flax import struct
import jax
import jax.numpy as jnp

from cvae_jax.models.posteriors.base import EXTRA_LOSS, StandardNormal
from cvae_jax.models.posteriors.dependence import (cholesky, covariance, dependence_head,
                                                   solve_lower)
from cvae_jax.models.posteriors.gaussian import DiagonalGaussian, GaussianPosterior


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
  white = solve_lower(chol, q[..., None])[..., 0]
  half_log_det = jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)
  return (0.5 * jnp.sum(jnp.log(diag), axis=-1) - half_log_det
          + 0.5 * jnp.sum(jnp.square(q) / diag - jnp.square(white), axis=-1))


def uninformative_kl(copula_weight: float, latent_dim: int, beta: float = 1.0) -> float:
  """KL(q(z|x) || N(0, I)) at the minimum of the loss without the reconstruction,
  beta KL - lambda (log c + sum_i log q(z_i|x)), over the q that ignore x.

  log c does not depend on the marginals and, at a reparameterised z,
  log q(z_i|x) = -log sigma_i + const, so each sigma_i^2 settles at
  1 - lambda / beta (with mu_i = 0): the KL that this objective makes a
  posterior pay while carrying no information about x,
  Z/2 (-r - log(1 - r)) with r = lambda / beta; infinite for lambda >= beta,
  where nothing stops sigma -> 0.
  """
  ratio = copula_weight / beta
  if ratio >= 1.0:
    return math.inf
  return 0.5 * latent_dim * (-ratio - math.log1p(-ratio))


@struct.dataclass
class GaussianCopula:
  """Gaussian marginals and a Gaussian copula; w, a: [batch, latent]; lambda static."""

  marginals: DiagonalGaussian
  w: jax.Array
  a: jax.Array
  copula_weight: float = struct.field(pytree_node=False)
  prior = StandardNormal

  def sample(self, key, num_samples=None):
    return self.marginals.sample(key, num_samples)

  def log_prob(self, z):
    return self.marginals.log_prob(z)

  def kl(self, key):
    return self.marginals.kl(key)

  def kl_groups(self, key):
    return self.marginals.kl_groups(key)

  def entropy(self, key):
    return self.marginals.entropy(key)

  def mean(self):
    return self.marginals.mean()

  def sample_copula(self, key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """q = L eps, eps ~ N(0, I), with Sigma and L: [batch, latent] and 2x [b, l, l]."""
    sigma = covariance(self.w, self.a)
    chol = cholesky(sigma)
    eps = jax.random.normal(key, self.w.shape, self.w.dtype)
    return jnp.einsum("bij,bj->bi", chol, eps), sigma, chol

  def objective_terms(self, z: jax.Array, key: jax.Array) -> dict[str, jax.Array]:
    """At a fresh copula sample q ~ N(0, Sigma), each [batch]: `log_copula` log c(q);
    `copula_term` log c(q) + sum_i log q(z_i|x) at the decoder's z; and the loss's
    share of it, -lambda * copula_term."""
    q, sigma, chol = self.sample_copula(key)
    log_c = log_copula_density(sigma, chol, q)
    copula_term = log_c + self.log_prob(z)
    return {"log_copula": log_c, "copula_term": copula_term,
            EXTRA_LOSS: -self.copula_weight * copula_term}


class CopulaPosterior(nn.Module):
  """The Gaussian marginals beside w and a from `dependence_head`."""

  latent_dim: int
  copula_weight: float  # lambda
  bn_gamma: float = 0.0  # BN-VAE's fixed scale of the marginals' means (0: off)
  prior = StandardNormal

  @classmethod
  def from_config(cls, config) -> "CopulaPosterior":
    """From the model's static config (a `ModelConfig`)."""
    return cls(config.latent_dim, config.copula_weight, config.bn_gamma)

  @nn.compact
  def __call__(self, hc: jax.Array, train: bool) -> GaussianCopula:
    """hc: [batch, 2 * hidden] final encoder state -> q(z|x) with its copula."""
    marginals = GaussianPosterior(self.latent_dim, self.bn_gamma, name="marginals")(hc, train)
    w, a = dependence_head(hc, self.latent_dim, train)
    return GaussianCopula(marginals=marginals, w=w, a=a, copula_weight=self.copula_weight)
