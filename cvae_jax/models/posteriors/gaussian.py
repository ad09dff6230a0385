"""Factorised Gaussian posterior q(z|x) = N(mu, diag(sigma^2)) (the VAE baseline).

It is the copula family with the independence copula: its log copula density
is exactly zero, and the copula weight lambda does not apply to it.
"""

import math
from typing import Optional

import flax.linen as nn
from flax import struct
import jax
import jax.numpy as jnp

_LOG_2PI = math.log(2.0 * math.pi)


@struct.dataclass
class DiagonalGaussian:
  """q(z|x) for a batch; `mean`, `log_var`: [batch, latent] float32."""

  mean: jax.Array
  log_var: jax.Array

  @property
  def marginals(self) -> "DiagonalGaussian":
    """The factorised Gaussian that z is sampled from: itself."""
    return self

  def sample(self, key: jax.Array, num_samples: Optional[int] = None) -> jax.Array:
    """z = mean + sigma * eps: [batch, latent], or [num_samples, batch, latent]."""
    shape = self.mean.shape if num_samples is None else (num_samples, *self.mean.shape)
    eps = jax.random.normal(key, shape, self.mean.dtype)
    return self.mean + jnp.exp(0.5 * self.log_var) * eps

  def log_prob(self, z: jax.Array) -> jax.Array:
    """sum_i log N(z_i; mu_i, sigma_i^2): z [..., batch, latent] -> [..., batch]."""
    return jnp.sum(_log_normal(z, self.mean, self.log_var), axis=-1)

  def kl(self) -> jax.Array:
    """Analytic KL(q(z|x) || N(0, I)): [batch]."""
    return jnp.sum(self.kl_groups(), axis=-1)

  def kl_groups(self) -> jax.Array:
    """The KL of each dimension, KL(q(z_i|x) || N(0, 1)): [batch, latent]."""
    return 0.5 * (jnp.square(self.mean) + jnp.exp(self.log_var) - 1.0 - self.log_var)

  def copula_terms(self, z: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The independence copula: log c = 0 and no copula term, each [batch]."""
    del z, key
    zeros = jnp.zeros(self.mean.shape[:1], self.mean.dtype)
    return zeros, zeros


def _log_normal(x, mean, log_var):
  return -0.5 * (_LOG_2PI + log_var + jnp.square(x - mean) * jnp.exp(-log_var))


def log_standard_normal(z: jax.Array) -> jax.Array:
  """log N(z; 0, I): [..., latent] -> [...]."""
  return jnp.sum(-0.5 * (_LOG_2PI + jnp.square(z)), axis=-1)


class GaussianPosterior(nn.Module):
  """mu = BN(Linear(hc)), log sigma^2 = BN(Linear(hc)), as in the paper.

  With `bn_gamma` > 0, mu = gamma BN(Linear(hc)) + beta with gamma fixed and
  beta learned (BN-VAE, Zhu et al. 2020): every dimension's batch of means then
  has variance gamma^2, which keeps its batch-averaged KL at least gamma^2 / 2.
  """

  latent_dim: int
  bn_gamma: float = 0.0  # 0: the mean's BatchNorm learns its scale and shift

  @nn.compact
  def __call__(self, hc: jax.Array, train: bool) -> DiagonalGaussian:
    """hc: [batch, 2 * hidden] final encoder state -> q(z|x)."""
    def head(name, learned_scale=True):
      x = nn.Dense(self.latent_dim, use_bias=False, name=f"{name}_dense")(hc)
      return nn.BatchNorm(use_running_average=not train, momentum=0.9,
                          use_scale=learned_scale, use_bias=learned_scale,
                          name=f"{name}_bn")(x)
    if not self.bn_gamma:
      return DiagonalGaussian(mean=head("mean"), log_var=head("log_var"))
    shift = self.param("mean_shift", nn.initializers.zeros, (self.latent_dim,))
    mean = self.bn_gamma * head("mean", learned_scale=False) + shift
    return DiagonalGaussian(mean=mean, log_var=head("log_var"))
