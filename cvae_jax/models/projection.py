"""A dense layer whose matmul may run in bfloat16 but always returns float32.

The product is made in the matmul dtype and only then cast, so that the
gradient's matmuls run in that dtype too (a float32 product would make the
cotangents, and with them the backward matmuls, float32).
"""

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
    y = jnp.einsum("...i,io->...o", x.astype(self.dtype), kernel.astype(self.dtype))
    return y.astype(jnp.float32) + bias
