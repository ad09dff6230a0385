"""Estimators of log p(x), mutual information and active units.

They take the posterior as a distribution (see `models.posteriors.base`) and
use only its methods, so they hold for every posterior; pure jnp functions.
"""

import jax
import jax.numpy as jnp

from cvae_jax.models.posteriors import Distribution


def iw_log_weights(log_px_given_z: jax.Array, z: jax.Array, q: Distribution) -> jax.Array:
  """log p(z) + log p(x|z) - log q(z|x): [samples, batch] from z [samples, batch, latent]."""
  return log_px_given_z + q.prior.log_prob(z) - q.log_prob(z)


def mutual_information(q: Distribution, z: jax.Array, neg_entropy: jax.Array,
                       weights: jax.Array) -> jax.Array:
  """I(x; z) under the aggregate posterior of the weighted rows (He et al. 2019).

  I = E_x E_q(z|x)[log q(z|x)] - E_z[log q(z)], q(z) = sum_n w_n q(z|x_n) / sum w,
  one z ~ q(z|x_m) per row m (rows with weight 0 are left out everywhere);
  log q(z_m|x_n) for all pairs comes from `q.log_prob`, 256 z_m at a time.
  Since log q(z_m) >= log q(z_m|x_m) - log n, the estimate is at most log n in
  expectation, reached when the rows' posteriors do not overlap.

  Args:
    q: the rows' posteriors, a distribution over n rows.
    z: [n, latent], z_m ~ q(z|x_m).
    neg_entropy: [n], E_q(z|x_m)[log q(z|x_m)] = -q.entropy(key).
    weights: [n] float, 1 for real rows and 0 for padding.

  Returns:
    scalar float32 in nats.
  """
  total = jnp.sum(weights)

  def log_aggregate(z_m):  # log q(z_m) = log mean_n q(z_m | x_n)
    log_q = jnp.where(weights > 0, q.log_prob(z_m[None, :]), -jnp.inf)
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
