"""Flexible copula posterior: the coupled Gaussian copula over non-Gaussian marginals.

u = L_R eps ~ N(0, R) as in `coupled_copula`, and each coordinate goes through
a sinh-arcsinh transform (Jones & Pewsey 2009), strictly increasing, with skew
epsilon_i and tail weight delta_i > 0 from the encoder:

  z_i = mu_i + sigma_i T(u_i),  T(u) = sinh((asinh(u) + epsilon) / delta),
  T^-1(x) = sinh(delta asinh(x) - epsilon),

the identity at epsilon = 0, delta = 1 (delta < 1: heavier tails). By change
of variables, with x = (z - mu) / sigma and u = T^-1(x),

  log q(z|x) = log N(u; 0, R) + sum_i [log delta_i + 1/2 log(1 + u_i^2)
               - 1/2 log(1 + x_i^2) - log sigma_i],

since dT^-1/dx = delta cosh(delta asinh(x) - epsilon) / sqrt(1 + x^2) and
cosh(asinh(u)) = sqrt(1 + u^2). KL(q || N(0, I)) and the entropy are Monte
Carlo estimates with this exact density; the objective is the plain ELBO.
"""

import math
from typing import Optional

import flax.linen as nn
from flax import struct
import jax
import jax.numpy as jnp
import numpy as np

from cvae_jax.models.posteriors import dependence
from cvae_jax.models.posteriors.base import MonteCarloKL, StandardNormal, log_standard_normal
from cvae_jax.models.posteriors.coupled_copula import copula_factor
from cvae_jax.models.posteriors.gaussian import DiagonalGaussian, GaussianPosterior, OnGaussianHeads

MAX_SKEW = 2.0  # |epsilon| < MAX_SKEW
MAX_LOG_TAIL = math.log(3.0)  # 1/3 < delta < 3
# log_prob clips delta asinh(x) - epsilon to this: beyond |u| = sinh(20) ~ 2.4e8
# the true log density is below -1e16 and the clipped one is too, while u^2
# and the triangular solve stay finite in float32.
_MAX_ARG = 20.0
# Gauss-Hermite nodes and weights for E[T(u)], u ~ N(0, 1).
_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(64)
_WEIGHTS = _WEIGHTS / math.sqrt(2.0 * math.pi)


def sinh_arcsinh(u: jax.Array, skew: jax.Array, tail: jax.Array) -> jax.Array:
  """T(u) = sinh((asinh(u) + skew) / tail), element-wise (broadcasting)."""
  return jnp.sinh((jnp.arcsinh(u) + skew) / tail)


def inverse_sinh_arcsinh(x: jax.Array, skew: jax.Array, tail: jax.Array) -> jax.Array:
  """T^-1(x) = sinh(tail asinh(x) - skew), its argument clipped to +-20 (see _MAX_ARG)."""
  return jnp.sinh(jnp.clip(tail * jnp.arcsinh(x) - skew, -_MAX_ARG, _MAX_ARG))


@struct.dataclass
class FlexibleCopula(MonteCarloKL):
  """q(z|x) for a batch; `chol`: [b, l, l] factor of R; `skew`, `tail`: [b, l]."""

  marginals: DiagonalGaussian  # mu and sigma of z = mu + sigma T(u)
  chol: jax.Array
  skew: jax.Array
  tail: jax.Array
  prior = StandardNormal

  def sample(self, key: jax.Array, num_samples: Optional[int] = None) -> jax.Array:
    """z = mu + sigma T(L_R eps): [batch, latent] or [num_samples, batch, latent]."""
    return self.sample_and_log_prob(key, num_samples)[0]

  def sample_and_log_prob(self, key: jax.Array, num_samples: Optional[int] = None
                          ) -> tuple[jax.Array, jax.Array]:
    """z as `sample` draws it and log q(z|x) from its u (no inverse): [..., b, l], [..., b]."""
    u = dependence.correlated_normal(self.chol, key, num_samples)
    x = sinh_arcsinh(u, self.skew, self.tail)
    return self.marginals.loc + self.marginals.scale() * x, self._log_density(u, x)

  def log_prob(self, z: jax.Array) -> jax.Array:
    """Exact log q(z|x) through the inverse transform: [..., batch, latent] -> [..., batch]."""
    x = (z - self.marginals.loc) / self.marginals.scale()
    return self._log_density(inverse_sinh_arcsinh(x, self.skew, self.tail), x)

  def mean(self) -> jax.Array:
    """mu + sigma E[T(u)], u ~ N(0, 1), by 64-node Gauss-Hermite: [batch, latent]."""
    nodes = jnp.asarray(_NODES, self.skew.dtype)
    weights = jnp.asarray(_WEIGHTS, self.skew.dtype)
    moments = jnp.einsum("k,kbl->bl", weights, sinh_arcsinh(nodes[:, None, None],
                                                             self.skew, self.tail))
    return self.marginals.loc + self.marginals.scale() * moments

  def objective_terms(self, z: jax.Array, key: jax.Array) -> dict[str, jax.Array]:
    """None: the plain ELBO."""
    del z, key
    return {}

  def _log_density(self, u: jax.Array, x: jax.Array) -> jax.Array:
    """log q at z = mu + sigma x with x = T(u): u, x [..., b, l] -> [..., b]."""
    log_jacobian = (jnp.log(self.tail) + jnp.log(jnp.hypot(1.0, u))
                    - jnp.log(jnp.hypot(1.0, x)) - 0.5 * self.marginals.log_var)
    return (dependence.log_copula(self.chol, u) + log_standard_normal(u)
            + jnp.sum(log_jacobian, axis=-1))


class FlexibleCopulaPosterior(OnGaussianHeads):
  """`coupled_copula`'s mu, sigma and R, with skew and tail heads.

  epsilon = 2 tanh(W3 hc + c3) and log delta = log 3 tanh(W4 hc + c4), both
  zero-initialised: training starts from the coupled copula.
  """

  @nn.compact
  def __call__(self, hc: jax.Array, train: bool) -> FlexibleCopula:
    """hc: [batch, 2 * hidden] final encoder state -> q(z|x)."""
    marginals = GaussianPosterior(self.latent_dim, self.bn_gamma, name="marginals")(hc, train)
    def head(name):
      return jnp.tanh(nn.Dense(self.latent_dim, kernel_init=nn.initializers.zeros,
                               name=name)(hc))
    return FlexibleCopula(marginals=marginals, chol=copula_factor(hc, self.latent_dim, train),
                          skew=MAX_SKEW * head("skew_dense"),
                          tail=jnp.exp(MAX_LOG_TAIL * head("tail_dense")))
