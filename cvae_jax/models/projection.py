"""A dense layer whose matmul may run in bfloat16 but always returns float32.

The product is made in the matmul dtype and only then cast, so that the
gradient's matmuls run in that dtype too (a float32 product would make the
cotangents, and with them the backward matmuls, float32).

`dense` has its own backward pass: dx = dy W^T and [dW; db] = [x, 1]^T dy,
each with the transposed operand materialised (`materialized_transpose`), so
that every matmul of the backward pass is a plain [m, k] x [k, n] product.
XLA:CPU runs only that form with its fast matmul kernels; autodiff's
transposed forms ran at 0.5-0.8x of its rate at hidden size 512
(launch/benchmark.py). The bias gradient is the extra row of the dW matmul
rather than its own pass over dy (4-5% of the train step at 200 and 512).
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp


class Projection(nn.Module):
  """y = x W + b with float32 parameters and output."""

  features: int
  dtype: jnp.dtype = jnp.float32  # matmul input dtype

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x: [..., in] -> [..., features] float32."""
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (x.shape[-1], self.features))
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    return dense(x, kernel, bias, jnp.dtype(self.dtype))


def materialized_transpose(a: jax.Array, ones_row: bool = False) -> jax.Array:
  """a [m, n] -> a.T [n, m] (with a row of ones below, [n + 1, m], if `ones_row`)
  as its own array, not folded into the matmul that reads it (on CPU).

  On other platforms the matmul libraries read transposed operands at full
  speed, so there it is the plain transpose that XLA may fold.
  """
  def transpose(a):
    return jnp.concatenate([a.T, jnp.ones((1, a.shape[0]), a.dtype)]) if ones_row else a.T
  return jax.lax.platform_dependent(
      a, cpu=lambda a: jax.lax.optimization_barrier(transpose(a)), default=transpose)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def dense(x: jax.Array, kernel: jax.Array, bias: jax.Array, dtype: jnp.dtype) -> jax.Array:
  """x [..., in] @ kernel [in, out] in `dtype`, then float32 + bias [out]: [..., out]."""
  y = jnp.einsum("...i,io->...o", x.astype(dtype), kernel.astype(dtype))
  return y.astype(jnp.float32) + bias


def _dense_fwd(x, kernel, bias, dtype):
  return dense(x, kernel, bias, dtype), (x, kernel)


def _dense_bwd(dtype, residuals, dy):
  x, kernel = residuals
  rows = dy.reshape(-1, dy.shape[-1]).astype(dtype)
  dx = jnp.dot(rows, materialized_transpose(kernel.astype(dtype)))
  x_ones = materialized_transpose(x.reshape(-1, x.shape[-1]).astype(dtype), ones_row=True)
  d_kernel_bias = jnp.dot(x_ones, rows, preferred_element_type=jnp.float32)
  return dx.astype(x.dtype).reshape(x.shape), d_kernel_bias[:-1], d_kernel_bias[-1]


dense.defvjp(_dense_fwd, _dense_bwd)
