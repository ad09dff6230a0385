"""A single-layer LSTM whose input projection is hoisted out of the time scan.

The gates' input half, `x @ W_i + b` for every time step, is one large matmul
over `[length * batch, features]`; only `h @ W_h` stays inside `lax.scan`.
Past each row's length the carry is frozen, so the final carry of a padded row
equals that of the unpadded sequence.

Inputs that are the same at every step (`static_inputs`, e.g. z fed to every
decoder step) are projected once per row, and a carry with leading sample
dimensions (e.g. K importance samples of z) shares the projected inputs of its
rows: the inputs are embedded and projected once for all samples.

The recurrence has its own backward pass (`recurrence`): a reverse scan that
only propagates (dc, dh) and emits the gates' gradients, then one
[length * batch, hidden] x [length * batch, 4 hidden] matmul for dW_h, instead
of autodiff's rank-`batch` update of dW_h at every step; its matmuls are in the
plain [m, k] x [k, n] form (see `projection.dense`).
"""

import functools
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from cvae_jax.models.projection import dense, materialized_transpose

Carry = tuple[jax.Array, jax.Array]  # (c, h), each [..., batch, hidden] float32


class LSTM(nn.Module):
  """LSTM over a padded batch; gate order i, f, g, o; forget bias 1."""

  hidden_dim: int
  # Matmul dtype. Products come out in it (so that their gradients are in it
  # too) and are added to the gates in float32; the carry stays float32.
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, inputs: jax.Array, lengths: Optional[jax.Array] = None,
               initial_carry: Optional[Carry] = None,
               static_inputs: Optional[jax.Array] = None) -> tuple[Carry, jax.Array]:
    """Runs the LSTM.

    Args:
      inputs: [batch, length, features].
      lengths: [batch] int32 number of valid steps; None means all.
      initial_carry: (c, h), each [..., batch, hidden]; leading dimensions are
        samples that share `inputs`. Zeros [batch, hidden] when None.
      static_inputs: [..., batch, static_features], appended to the inputs of
        every step (so W_i has features + static_features rows); or None.

    Returns:
      (c, h) after each row's last valid step, each [..., batch, hidden]
      float32; outputs h_t, [..., batch, length, hidden] float32 (past a row's
      length they repeat its final h).
    """
    batch, length, features = inputs.shape
    hid, dtype = self.hidden_dim, jnp.dtype(self.dtype)
    extra = 0 if static_inputs is None else static_inputs.shape[-1]
    w_i = self.param("w_i", nn.initializers.lecun_normal(), (features + extra, 4 * hid))
    w_h = self.param("w_h", nn.initializers.orthogonal(), (hid, 4 * hid))
    bias = self.param("bias", _forget_bias_init, (4 * hid,))
    # Time-major before the matmul: XLA:CPU cannot run a bf16 -> f32 dot that
    # also transposes its output.
    x_proj = dense(jnp.swapaxes(inputs, 0, 1), w_i[:features], bias, dtype)
    s_proj = None if static_inputs is None else dense(
        static_inputs, w_i[features:], jnp.zeros_like(bias), dtype)
    if initial_carry is None:
      zeros = jnp.zeros((batch, hid), jnp.float32)
      initial_carry = (zeros, zeros)
    if lengths is None:
      valid = jnp.ones((length, batch, 1), bool)
    else:
      valid = (jnp.arange(length)[:, None] < lengths[None, :])[..., None]
    carry, outputs = recurrence(dtype, x_proj, s_proj, valid, w_h, initial_carry)
    return carry, jnp.moveaxis(outputs, 0, -2)


def _forget_bias_init(key, shape, dtype=jnp.float32):
  del key
  hid = shape[0] // 4
  return jnp.zeros(shape, dtype).at[hid:2 * hid].set(1.0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def recurrence(dtype: jnp.dtype, x_proj: jax.Array, s_proj: Optional[jax.Array],
               valid: jax.Array, w_h: jax.Array, carry: Carry) -> tuple[Carry, jax.Array]:
  """The LSTM's time loop.

  Args:
    dtype: matmul dtype of h @ W_h.
    x_proj: [length, batch, 4 hidden] float32 projected inputs (bias included).
    s_proj: [..., batch, 4 hidden] float32 added at every step, or None.
    valid: [length, batch, 1] bool; the carry is frozen where False.
    w_h: [hidden, 4 hidden] float32.
    carry: (c, h), each [..., batch, hidden] float32.

  Returns:
    the final carry and h at every step, [length, ..., batch, hidden] float32.
  """
  carry, (hs, _, _) = _scan(dtype, x_proj, s_proj, valid, w_h, carry, keep=False)
  return carry, hs


def _scan(dtype, x_proj, s_proj, valid, w_h, carry, keep):
  """The forward scan; with `keep`, also every step's c and gate activations."""
  w = w_h.astype(dtype)

  def step(carry, xs):
    c, h = carry
    x_t, valid_t = xs
    gates = x_t + jnp.dot(h.astype(dtype), w).astype(jnp.float32)
    if s_proj is not None:
      gates = gates + s_proj
    i, f, g, o = jnp.split(gates, 4, axis=-1)
    i, f, g, o = jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(g), jax.nn.sigmoid(o)
    new_c = f * c + i * g
    new_h = o * jnp.tanh(new_c)
    c = jnp.where(valid_t, new_c, c)
    h = jnp.where(valid_t, new_h, h)
    acts = jnp.concatenate([i, f, g, o], axis=-1) if keep else None
    return (c, h), (h, c if keep else None, acts)

  return jax.lax.scan(step, carry, (x_proj, valid))


def _recurrence_fwd(dtype, x_proj, s_proj, valid, w_h, carry):
  final, (hs, cs, acts) = _scan(dtype, x_proj, s_proj, valid, w_h, carry, keep=True)
  return (final, hs), (s_proj is not None, valid, w_h, carry, hs, cs, acts)


def _recurrence_bwd(dtype, residuals, cotangents):
  has_static, valid, w_h, (c0, h0), hs, cs, acts = residuals
  (dc, dh), d_hs = cotangents
  c_prev = jnp.concatenate([c0[None], cs[:-1]])
  h_prev = jnp.concatenate([h0[None], hs[:-1]])
  w_t = materialized_transpose(w_h.astype(dtype))  # [4 hidden, hidden]

  def step(carry, xs):
    dc, dh = carry
    d_out, valid_t, c_t, c_p, act = xs
    dh = dh + d_out
    i, f, g, o = jnp.split(act, 4, axis=-1)
    tanh_c = jnp.tanh(c_t)
    dh_new, dc_new = jnp.where(valid_t, dh, 0.0), jnp.where(valid_t, dc, 0.0)
    dc_new = dc_new + dh_new * o * (1.0 - tanh_c * tanh_c)
    d_gates = jnp.concatenate([dc_new * g * i * (1.0 - i), dc_new * c_p * f * (1.0 - f),
                               dc_new * i * (1.0 - g * g), dh_new * tanh_c * o * (1.0 - o)],
                              axis=-1)
    dh_prev = jnp.dot(d_gates.astype(dtype), w_t).astype(jnp.float32)
    return (jnp.where(valid_t, dc_new * f, dc), jnp.where(valid_t, dh_prev, dh)), d_gates

  (dc0, dh0), d_gates = jax.lax.scan(step, (dc, dh), (d_hs, valid, cs, c_prev, acts),
                                     reverse=True)
  sample_axes = tuple(range(1, d_gates.ndim - 2))  # leading carry dims share x_proj
  d_x_proj = jnp.sum(d_gates, axis=sample_axes)
  d_s_proj = jnp.sum(d_gates, axis=0) if has_static else None
  rows = d_gates.reshape(-1, d_gates.shape[-1]).astype(dtype)
  d_w_h = jnp.dot(materialized_transpose(h_prev.reshape(-1, h_prev.shape[-1]).astype(dtype)),
                  rows, preferred_element_type=jnp.float32)
  return d_x_proj, d_s_proj, None, d_w_h, (dc0, dh0)


recurrence.defvjp(_recurrence_fwd, _recurrence_bwd)
