"""Factorised Gaussian posterior q(z|x) = N(mu, diag(sigma^2)) (the VAE baseline)."""

import math
from typing import Optional

import flax.linen as nn
from flax import struct
import jax
import jax.numpy as jnp

_LOG_2PI = math.log(2.0 * math.pi)


@struct.dataclass
class DiagonalGaussian:
  """q(z|x) for a batch; `loc`, `log_var`: [batch, latent] float32."""

  loc: jax.Array
  log_var: jax.Array

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
    del key
    return 0.5 * jnp.sum(
        jnp.square(self.loc) + jnp.exp(self.log_var) - 1.0 - self.log_var, axis=-1)

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


def log_standard_normal(z: jax.Array) -> jax.Array:
  """log N(z; 0, I): [..., latent] -> [...]."""
  return jnp.sum(-0.5 * (_LOG_2PI + jnp.square(z)), axis=-1)


class GaussianPosterior(nn.Module):
  """mu = BN(Linear(hc)), log sigma^2 = BN(Linear(hc)), as in the paper."""

  latent_dim: int

  @classmethod
  def from_config(cls, config) -> "GaussianPosterior":
    """From the model's static config (a `ModelConfig`)."""
    return cls(config.latent_dim)

  @nn.compact
  def __call__(self, hc: jax.Array, train: bool) -> DiagonalGaussian:
    """hc: [batch, 2 * hidden] final encoder state -> q(z|x)."""
    def head(name):
      x = nn.Dense(self.latent_dim, use_bias=False, name=f"{name}_dense")(hc)
      return nn.BatchNorm(use_running_average=not train, momentum=0.9,
                          name=f"{name}_bn")(x)
    return DiagonalGaussian(loc=head("mean"), log_var=head("log_var"))
