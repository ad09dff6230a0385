"""Coupled Gaussian copula posterior: the copula's dependency reaches z.

The marginals N(mu_i, sigma_i^2) come from the encoder as in the Gaussian
posterior, and the correlation R of the paper's Sigma = diag(w) + a a^T (see
`dependence`) couples them: z = mu + sigma * u with u = L_R eps ~ N(0, R), so
q(z|x) = N(mu, S R S), S = diag(sigma). Unlike the paper's copula (`copula`),
the decoder sees these dependent z, and the objective is the plain ELBO with
the exact density

  log q(z|x) = log c_R(u) + sum_i log N(z_i; mu_i, sigma_i^2),
  log c_R(u) = -1/2 log|R| - 1/2 u^T (R^-1 - I) u,  u = (z - mu) / sigma,

and the analytic KL(q || N(0, I)) = KL_diag(mu, sigma) - 1/2 log|R|.
"""

from typing import Optional

import flax.linen as nn
from flax import struct
import jax

from cvae_jax.models.posteriors import dependence
from cvae_jax.models.posteriors.base import StandardNormal, WholeKL
from cvae_jax.models.posteriors.gaussian import DiagonalGaussian, GaussianPosterior, OnGaussianHeads


@struct.dataclass
class CoupledCopula(WholeKL):
  """q(z|x) = N(mu, S R S); `chol`: [batch, latent, latent] lower Cholesky factor of R."""

  marginals: DiagonalGaussian
  chol: jax.Array
  prior = StandardNormal

  def sample(self, key: jax.Array, num_samples: Optional[int] = None) -> jax.Array:
    """z = mu + sigma * L_R eps: [batch, latent] or [num_samples, batch, latent]."""
    u = dependence.correlated_normal(self.chol, key, num_samples)
    return self.marginals.loc + self.marginals.scale() * u

  def log_prob(self, z: jax.Array) -> jax.Array:
    """log c_R(u) + sum_i log N(z_i; mu_i, sigma_i^2): [..., batch, latent] -> [..., batch]."""
    u = (z - self.marginals.loc) / self.marginals.scale()
    return dependence.log_copula(self.chol, u) + self.marginals.log_prob(z)

  def kl(self, key: jax.Array) -> jax.Array:
    """Analytic KL_diag(mu, sigma) - 1/2 log|R|: [batch]."""
    return self.marginals.kl(key) - dependence.half_log_det(self.chol)

  def entropy(self, key: jax.Array) -> jax.Array:
    """Analytic H_diag(sigma) + 1/2 log|R|: [batch]."""
    return self.marginals.entropy(key) + dependence.half_log_det(self.chol)

  def mean(self) -> jax.Array:
    """mu: [batch, latent]."""
    return self.marginals.loc

  def objective_terms(self, z: jax.Array, key: jax.Array) -> dict[str, jax.Array]:
    """None: the plain ELBO."""
    del z, key
    return {}


def copula_factor(hc: jax.Array, latent_dim: int, train: bool) -> jax.Array:
  """The Cholesky factor of R from the paper's head (inside a compact module): [b, l, l]."""
  w, a = dependence.dependence_head(hc, latent_dim, train)
  return dependence.cholesky(dependence.correlation(w, a))


class CoupledCopulaPosterior(OnGaussianHeads):
  """The Gaussian posterior's marginals coupled by the correlation of Sigma = diag(w) + a a^T."""

  @nn.compact
  def __call__(self, hc: jax.Array, train: bool) -> CoupledCopula:
    """hc: [batch, 2 * hidden] final encoder state -> q(z|x)."""
    marginals = GaussianPosterior(self.latent_dim, self.bn_gamma, name="marginals")(hc, train)
    return CoupledCopula(marginals=marginals, chol=copula_factor(hc, self.latent_dim, train))
