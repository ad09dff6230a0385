"""The copula posteriors' dependency structure Sigma = diag(w) + a a^T.

The encoder head of the paper's copula module (Wang & Wang 2019), the
covariance it defines, and a Cholesky factor that is fast on every platform.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp


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
