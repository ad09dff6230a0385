"""A single-layer LSTM whose input projection is hoisted out of the time scan.

The gates' input half, `x @ W_i + b` for every time step, is one large matmul
over `[batch * length, features]`; only `h @ W_h` stays inside `lax.scan`.
Past each row's length the carry is frozen, so the final carry of a padded row
equals that of the unpadded sequence.
"""

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

Carry = tuple[jax.Array, jax.Array]  # (c, h), each [batch, hidden] float32


class LSTM(nn.Module):
  """LSTM over a padded batch; gate order i, f, g, o; forget bias 1."""

  hidden_dim: int
  # Matmul dtype. Products come out in it (so that their gradients are in it
  # too) and are added to the gates in float32; the carry stays float32.
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, inputs: jax.Array, lengths: Optional[jax.Array] = None,
               initial_carry: Optional[Carry] = None) -> tuple[Carry, jax.Array]:
    """Runs the LSTM.

    Args:
      inputs: [batch, length, features].
      lengths: [batch] int32 number of valid steps; None means all.
      initial_carry: (c, h), each [batch, hidden]; zeros when None.

    Returns:
      (c, h) after each row's last valid step, each [batch, hidden] float32;
      outputs h_t, [batch, length, hidden] float32 (past a row's length they
      repeat its final h).
    """
    batch, length, features = inputs.shape
    hid = self.hidden_dim
    w_i = self.param("w_i", nn.initializers.lecun_normal(), (features, 4 * hid))
    w_h = self.param("w_h", nn.initializers.orthogonal(), (hid, 4 * hid))
    bias = self.param("bias", _forget_bias_init, (4 * hid,))
    # Time-major before the matmul: XLA:CPU cannot run a bf16 -> f32 dot that
    # also transposes its output.
    x_proj = jnp.einsum("tbf,fg->tbg", jnp.swapaxes(inputs, 0, 1).astype(self.dtype),
                        w_i.astype(self.dtype)).astype(jnp.float32) + bias
    if initial_carry is None:
      zeros = jnp.zeros((batch, hid), jnp.float32)
      initial_carry = (zeros, zeros)
    if lengths is None:
      valid = jnp.ones((length, batch, 1), bool)
    else:
      valid = (jnp.arange(length)[:, None] < lengths[None, :])[..., None]
    w_h = w_h.astype(self.dtype)

    def step(carry, xs):
      c, h = carry
      x_t, valid_t = xs
      gates = x_t + jnp.dot(h.astype(self.dtype), w_h).astype(jnp.float32)
      i, f, g, o = jnp.split(gates, 4, axis=-1)
      new_c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
      new_h = jax.nn.sigmoid(o) * jnp.tanh(new_c)
      c = jnp.where(valid_t, new_c, c)
      h = jnp.where(valid_t, new_h, h)
      return (c, h), h

    carry, outputs = jax.lax.scan(step, initial_carry, (x_proj, valid))
    return carry, jnp.swapaxes(outputs, 0, 1)


def _forget_bias_init(key, shape, dtype=jnp.float32):
  del key
  hid = shape[0] // 4
  return jnp.zeros(shape, dtype).at[hid:2 * hid].set(1.0)
