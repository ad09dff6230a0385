"""The copula posteriors' dependency structure Sigma = diag(w) + a a^T.

The encoder head of the paper's copula module (Wang & Wang 2019), the
covariance it defines and its correlation matrix, a Cholesky factor and a
triangular solve that are fast and safe on every platform, and the Gaussian
copula with that correlation: its samples and log density (triangular solves,
no inverse).
"""

import functools
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular


def dependence_head(hc: jax.Array, latent_dim: int, train: bool) -> tuple[jax.Array, jax.Array]:
  """w = ReLU(W1 hc) + 0.5 and a = tanh(BN(W2 hc)), each [batch, latent].

  Call it inside a compact module: its layers `w_dense`, `a_dense` and `a_bn`
  belong to that module.
  """
  w = nn.relu(nn.Dense(latent_dim, name="w_dense")(hc)) + 0.5
  a = nn.Dense(latent_dim, use_bias=False, name="a_dense")(hc)  # BN has the bias
  a = jnp.tanh(nn.BatchNorm(use_running_average=not train, momentum=0.9, name="a_bn")(a))
  return w, a


def covariance(w: jax.Array, a: jax.Array) -> jax.Array:
  """Sigma = diag(w) + a a^T: w > 0, a: [batch, latent] -> [batch, latent, latent]."""
  return jax.vmap(jnp.diag)(w) + a[:, :, None] * a[:, None, :]


def correlation(w: jax.Array, a: jax.Array) -> jax.Array:
  """R = D^-1/2 Sigma D^-1/2, D = diag(Sigma): [batch, latent] -> [batch, latent, latent].

  With b = a / sqrt(w + a^2), R = b b^T with a unit diagonal set exactly; it
  equals diag(1 - b^2) + b b^T, and 1 - b^2 = w / (w + a^2) >= 1/3 for the
  head's w >= 0.5 and |a| <= 1, so every eigenvalue of R is at least 1/3
  whatever the encoder outputs (w may be huge or inf: then b = 0 and R = I).
  """
  b = a * jax.lax.rsqrt(w + jnp.square(a))
  eye = jnp.eye(w.shape[-1], dtype=bool)
  return jnp.where(eye, jnp.ones((), w.dtype), b[:, :, None] * b[:, None, :])


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


def solve_lower(chol: jax.Array, rhs: jax.Array) -> jax.Array:
  """L^-1 rhs for a lower-triangular L: [..., n, n], [..., n, m] -> [..., n, m].

  `jax.scipy.linalg.solve_triangular` on GPU and TPU. On CPU its LAPACK
  custom call can hang XLA's CPU runtime for good (jaxlib 0.10: two batched
  solves in one loop body, as in the importance-weighted evaluation; see
  tests/test_copula.py), so there x comes from forward substitution, n steps
  of plain jnp ops, like the Cholesky factor above.
  """
  return jax.lax.platform_dependent(
      chol, rhs, cpu=_forward_substitution,
      default=functools.partial(solve_triangular, lower=True))


def _forward_substitution(chol: jax.Array, rhs: jax.Array) -> jax.Array:
  def row(i, x):  # rows < i of x are final, the rest are zero
    x_i = (rhs[..., i, :] - jnp.einsum("...k,...km->...m", chol[..., i, :], x)
           ) / chol[..., i, i, None]
    return x.at[..., i, :].set(x_i)

  return jax.lax.fori_loop(0, chol.shape[-1], row, jnp.zeros_like(rhs))


def correlated_normal(chol: jax.Array, key: jax.Array,
                      num_samples: Optional[int] = None) -> jax.Array:
  """u = L eps, eps ~ N(0, I): chol [batch, l, l] -> [batch, l] or [num_samples, batch, l]."""
  batch_shape = chol.shape[:-1]
  shape = batch_shape if num_samples is None else (num_samples, *batch_shape)
  eps = jax.random.normal(key, shape, chol.dtype)
  return jnp.einsum("bij,...bj->...bi", chol, eps)


def half_log_det(chol: jax.Array) -> jax.Array:
  """1/2 log|R| = sum_i log L_ii: chol [batch, l, l] -> [batch]."""
  return jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)


def log_copula(chol: jax.Array, u: jax.Array) -> jax.Array:
  """log c_R(u) = -1/2 log|R| - 1/2 u^T (R^-1 - I) u, the Gaussian copula density
  with correlation R = L L^T at standard-normal scores u.

  Args:
    chol: [batch, l, l] lower Cholesky factor of R (unit diagonal).
    u: [..., batch, l]; a batch axis of 1 broadcasts over the rows.

  Returns:
    [..., batch].
  """
  shape = jnp.broadcast_shapes(u.shape, chol.shape[:-1])
  u = jnp.broadcast_to(u, shape)
  columns = jnp.moveaxis(u.reshape(-1, *shape[-2:]), 0, -1)  # [batch, l, samples]
  white = jnp.moveaxis(solve_lower(chol, columns), -1, 0).reshape(shape)
  return -half_log_det(chol) - 0.5 * jnp.sum(jnp.square(white) - jnp.square(u), axis=-1)
