"""Factorised Gaussian posterior q(z|x) = N(mu, diag(sigma^2)) (the VAE baseline)."""

import math
from typing import Optional

import flax.linen as nn
from flax import struct
import jax
import jax.numpy as jnp

from cvae_jax.models.posteriors.base import StandardNormal

_LOG_2PI = math.log(2.0 * math.pi)


@struct.dataclass
class DiagonalGaussian:
  """q(z|x) for a batch; `loc`, `log_var`: [batch, latent] float32."""

  loc: jax.Array
  log_var: jax.Array
  prior = StandardNormal

  def sample(self, key: jax.Array, num_samples: Optional[int] = None) -> jax.Array:
    """z = loc + sigma * eps: [batch, latent], or [num_samples, batch, latent]."""
    shape = self.loc.shape if num_samples is None else (num_samples, *self.loc.shape)
    eps = jax.random.normal(key, shape, self.loc.dtype)
    return self.loc + self.scale() * eps

  def scale(self) -> jax.Array:
    """sigma = exp(log_var / 2): [batch, latent]."""
    return jnp.exp(0.5 * self.log_var)

  def log_prob(self, z: jax.Array) -> jax.Array:
    """sum_i log N(z_i; mu_i, sigma_i^2): z [..., batch, latent] -> [..., batch]."""
    return jnp.sum(-0.5 * (_LOG_2PI + self.log_var
                           + jnp.square(z - self.loc) * jnp.exp(-self.log_var)), axis=-1)

  def kl(self, key: jax.Array) -> jax.Array:
    """Analytic KL(q(z|x) || N(0, I)): [batch] (the key is unused)."""
    return jnp.sum(self.kl_groups(key), axis=-1)

  def kl_groups(self, key: jax.Array) -> jax.Array:
    """The KL of each dimension, KL(q(z_i|x) || N(0, 1)): [batch, latent]."""
    del key
    return 0.5 * (jnp.square(self.loc) + jnp.exp(self.log_var) - 1.0 - self.log_var)

  def entropy(self, key: jax.Array) -> jax.Array:
    """Analytic entropy 1/2 sum_i (log 2 pi + 1 + log sigma_i^2): [batch]."""
    del key
    return 0.5 * jnp.sum(_LOG_2PI + 1.0 + self.log_var, axis=-1)

  def mean(self) -> jax.Array:
    """loc: [batch, latent]."""
    return self.loc

  def objective_terms(self, z: jax.Array, key: jax.Array) -> dict[str, jax.Array]:
    """None: the plain ELBO."""
    del z, key
    return {}


class OnGaussianHeads(nn.Module):
  """The fields and `from_config` of a posterior built on the Gaussian heads
  below (this one and those that reuse them), with the N(0, I) prior."""

  latent_dim: int
  bn_gamma: float = 0.0  # BN-VAE's fixed scale of the heads' means (0: learned)
  prior = StandardNormal

  @classmethod
  def from_config(cls, config):
    """From the model's static config (a `ModelConfig`)."""
    return cls(config.latent_dim, config.bn_gamma)


class GaussianPosterior(OnGaussianHeads):
  """mu = BN(Linear(hc)), log sigma^2 = BN(Linear(hc)), as in the paper.

  With `bn_gamma` > 0, mu = gamma BN(Linear(hc)) + beta with gamma fixed and
  beta learned (BN-VAE, Zhu et al. 2020): every dimension's batch of means then
  has variance gamma^2, which keeps its batch-averaged KL at least gamma^2 / 2.
  """

  @nn.compact
  def __call__(self, hc: jax.Array, train: bool) -> DiagonalGaussian:
    """hc: [batch, 2 * hidden] final encoder state -> q(z|x)."""
    def head(name, learned_scale=True):
      x = nn.Dense(self.latent_dim, use_bias=False, name=f"{name}_dense")(hc)
      return nn.BatchNorm(use_running_average=not train, momentum=0.9,
                          use_scale=learned_scale, use_bias=learned_scale,
                          name=f"{name}_bn")(x)
    if not self.bn_gamma:
      return DiagonalGaussian(loc=head("mean"), log_var=head("log_var"))
    shift = self.param("mean_shift", nn.initializers.zeros, (self.latent_dim,))
    loc = self.bn_gamma * head("mean", learned_scale=False) + shift
    return DiagonalGaussian(loc=loc, log_var=head("log_var"))
