"""Estimators of log p(x), mutual information and active units.

All take per-sentence posterior parameters of a factorised Gaussian q(z|x)
(`mean`, `log_var`: [n, latent]) and are pure jnp functions.
"""

import math

import jax
import jax.numpy as jnp

from cvae_jax.models.posteriors import DiagonalGaussian, log_standard_normal


def iw_log_weights(log_px_given_z: jax.Array, z: jax.Array,
                   q: DiagonalGaussian) -> jax.Array:
  """log p(z) + log p(x|z) - log q(z|x): [samples, batch] from z [samples, batch, latent]."""
  return log_px_given_z + log_standard_normal(z) - q.log_prob(z)


def mutual_information(mean: jax.Array, log_var: jax.Array, z: jax.Array,
                       weights: jax.Array) -> jax.Array:
  """I(x; z) under the aggregate posterior of the weighted rows (He et al. 2019).

  I = E_x E_q(z|x)[log q(z|x)] - E_z[log q(z)], q(z) = sum_n w_n q(z|x_n) / sum w,
  one z ~ q(z|x_m) per row m (rows with weight 0 are left out everywhere).

  Args:
    mean, log_var: [n, latent] posterior parameters.
    z: [n, latent], z_m ~ q(z|x_m).
    weights: [n] float, 1 for real rows and 0 for padding.

  Returns:
    scalar float32 in nats.
  """
  total = jnp.sum(weights)
  latent = mean.shape[-1]
  neg_entropy = -0.5 * (latent * math.log(2 * math.pi) + jnp.sum(1.0 + log_var, -1))
  components = DiagonalGaussian(mean=mean, log_var=log_var)

  def log_aggregate(z_m):  # log q(z_m) = log mean_n q(z_m | x_n)
    log_q = jnp.where(weights > 0, components.log_prob(z_m), -jnp.inf)
    return jax.nn.logsumexp(log_q) - jnp.log(total)

  log_qz = jax.lax.map(log_aggregate, z, batch_size=256)
  return jnp.sum(weights * (neg_entropy - log_qz)) / total


def active_units(means: jax.Array, threshold: float) -> tuple[jax.Array, jax.Array]:
  """Dimensions with Var_x(E_q[z_i | x]) >= threshold.

  Args:
    means: [n, latent] posterior means over a split.
    threshold: the activity threshold (0.01 in He et al. 2019).

  Returns:
    (count, per-dimension variances [latent]).
  """
  variances = jnp.var(means, axis=0)
  return jnp.sum(variances >= threshold), variances
