"""Full-covariance Gaussian posterior q(z|x) = N(loc, L L^T): the paper's non-diag-VAE.

The encoder gives the Cholesky factor L: its diagonal exp(log sigma^2 / 2) from
the Gaussian posterior's heads (so it is positive, and BN-VAE applies to loc)
and its strictly lower triangle from a linear head of hc. Every quantity is
analytic:

  log q(z|x) = -d/2 log 2 pi - sum_i log L_ii - 1/2 |L^-1 (z - loc)|^2,
  KL(q || N(0, I)) = 1/2 (|L|_F^2 + |loc|^2 - d) - sum_i log L_ii,
  H(q) = d/2 (1 + log 2 pi) + sum_i log L_ii.
"""

import math
from typing import Optional

import flax.linen as nn
from flax import struct
import jax
import jax.numpy as jnp

from cvae_jax.models.posteriors.base import StandardNormal, WholeKL
from cvae_jax.models.posteriors.dependence import solve_lower
from cvae_jax.models.posteriors.gaussian import GaussianPosterior, OnGaussianHeads

_LOG_2PI = math.log(2.0 * math.pi)


@struct.dataclass
class FullGaussian(WholeKL):
  """N(loc, L L^T) for a batch; loc: [batch, latent], scale_tril: [batch, latent, latent]
  lower triangular with a positive diagonal."""

  loc: jax.Array
  scale_tril: jax.Array
  prior = StandardNormal

  def _log_diag(self) -> jax.Array:
    return jnp.log(jnp.diagonal(self.scale_tril, axis1=-2, axis2=-1))

  def sample(self, key: jax.Array, num_samples: Optional[int] = None) -> jax.Array:
    """z = loc + L eps: [batch, latent], or [num_samples, batch, latent]."""
    shape = self.loc.shape if num_samples is None else (num_samples, *self.loc.shape)
    eps = jax.random.normal(key, shape, self.loc.dtype)
    return self.loc + jnp.einsum("bij,...bj->...bi", self.scale_tril, eps)

  def log_prob(self, z: jax.Array) -> jax.Array:
    """z [..., batch, latent] -> [..., batch], by a triangular solve per row."""
    diff = z - self.loc  # [..., batch, latent]
    lead, (batch, latent) = diff.shape[:-2], diff.shape[-2:]
    columns = jnp.moveaxis(diff.reshape(-1, batch, latent), 0, -1)  # [batch, latent, n]
    white = solve_lower(self.scale_tril, columns)
    mahalanobis = jnp.moveaxis(jnp.sum(jnp.square(white), axis=-2), -1, 0)
    return (-0.5 * latent * _LOG_2PI - jnp.sum(self._log_diag(), axis=-1)
            - 0.5 * mahalanobis.reshape(*lead, batch))

  def kl(self, key: jax.Array) -> jax.Array:
    """Analytic KL(q || N(0, I)): [batch] (the key is unused)."""
    del key
    return 0.5 * (jnp.sum(jnp.square(self.scale_tril), axis=(-2, -1))
                  + jnp.sum(jnp.square(self.loc), axis=-1) - self.loc.shape[-1]
                  ) - jnp.sum(self._log_diag(), axis=-1)

  def entropy(self, key: jax.Array) -> jax.Array:
    """Analytic entropy: [batch] (the key is unused)."""
    del key
    return 0.5 * self.loc.shape[-1] * (1.0 + _LOG_2PI) + jnp.sum(self._log_diag(), axis=-1)

  def mean(self) -> jax.Array:
    """loc: [batch, latent]."""
    return self.loc

  def objective_terms(self, z: jax.Array, key: jax.Array) -> dict[str, jax.Array]:
    """None: the plain ELBO."""
    del z, key
    return {}


class FullGaussianPosterior(OnGaussianHeads):
  """loc and the diagonal of L from the Gaussian heads, the rest of L from Linear(hc)."""

  @nn.compact
  def __call__(self, hc: jax.Array, train: bool) -> FullGaussian:
    """hc: [batch, 2 * hidden] final encoder state -> q(z|x)."""
    diagonal = GaussianPosterior(self.latent_dim, self.bn_gamma, name="diagonal")(hc, train)
    d = self.latent_dim
    rows, cols = jnp.tril_indices(d, -1)
    lower = nn.Dense(d * (d - 1) // 2, name="tril_dense")(hc)
    scale_tril = (jnp.zeros((hc.shape[0], d, d), lower.dtype).at[:, rows, cols].set(lower)
                  + jax.vmap(jnp.diag)(jnp.exp(0.5 * diagonal.log_var)))
    return FullGaussian(loc=diagonal.loc, scale_tril=scale_tril)
