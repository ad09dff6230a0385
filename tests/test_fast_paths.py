"""The hand-written backward passes and the shared-input decoding equal the plain ones.

`projection.dense` and `lstm.recurrence` have their own VJPs; they are checked,
values and gradients, against autodiff of straightforward implementations, and
decoding K samples of z at once against decoding each sample on its own.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cvae_jax.models import TextVAE
from cvae_jax.models.lstm import LSTM
from cvae_jax.models.projection import dense
from tests.helpers import init_variables, random_batch, tiny_model

TOL = {"float32": dict(rtol=1e-5, atol=1e-5), "bfloat16": dict(rtol=5e-2, atol=5e-2)}


def _grads(fn, args, key):
  """fn(*args) and the gradient of a random linear function of its outputs, jitted."""
  shapes = jax.tree.leaves(jax.eval_shape(fn, *args))
  weights = [jax.random.normal(k, s.shape) for k, s in
             zip(jax.random.split(key, len(shapes)), shapes)]
  loss = lambda *a: sum(jnp.sum(w * o) for w, o in zip(weights, jax.tree.leaves(fn(*a))))
  grad = jax.grad(loss, argnums=tuple(range(len(args))))
  return jax.jit(lambda *a: (fn(*a), grad(*a)))(*args)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_dense_equals_autodiff_of_the_plain_product(dtype):
  keys = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(keys[0], (2, 3, 5))
  kernel, bias = jax.random.normal(keys[1], (5, 7)), jax.random.normal(keys[2], (7,))
  plain = lambda x, k, b: jnp.einsum("...i,io->...o", x.astype(dtype),
                                     k.astype(dtype)).astype(jnp.float32) + b
  fast = lambda x, k, b: dense(x, k, b, jnp.dtype(dtype))
  chex.assert_trees_all_close(_grads(fast, (x, kernel, bias), keys[0]),
                              _grads(plain, (x, kernel, bias), keys[0]), **TOL[dtype])


def _reference_lstm(params, inputs, lengths, carry, static, dtype):
  """A Python loop over time on the concatenated inputs, differentiated by autodiff."""
  p = params["params"]
  mm = lambda a, w: jnp.dot(a.astype(dtype), w.astype(dtype)).astype(jnp.float32)
  c, h = carry
  outputs = []
  for t in range(inputs.shape[1]):
    x_t = jnp.broadcast_to(inputs[:, t], (*c.shape[:-1], inputs.shape[-1]))
    if static is not None:
      x_t = jnp.concatenate([x_t, static], axis=-1)
    gates = mm(x_t, p["w_i"]) + p["bias"] + mm(h, p["w_h"])
    i, f, g, o = jnp.split(gates, 4, axis=-1)
    new_c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    new_h = jax.nn.sigmoid(o) * jnp.tanh(new_c)
    valid = (t < lengths)[:, None]
    c, h = jnp.where(valid, new_c, c), jnp.where(valid, new_h, h)
    outputs.append(h)
  return (c, h), jnp.stack(outputs, axis=-2)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("samples,static", [((), False), ((3,), True)])
def test_lstm_equals_autodiff_of_a_reference_loop(dtype, samples, static):
  """Padding, an initial carry, inputs static over time and carries with sample
  dimensions that share the inputs: outputs, final carry and every gradient."""
  batch, length, features, extra, hid = 4, 6, 5, 2, 3
  keys = jax.random.split(jax.random.key(1), 5)
  inputs = jax.random.normal(keys[0], (batch, length, features))
  lengths = jnp.array([6, 2, 4, 1])
  carry = tuple(jax.random.normal(k, (*samples, batch, hid)) for k in keys[1:3])
  static_inputs = jax.random.normal(keys[3], (*samples, batch, extra)) if static else None
  lstm = LSTM(hid, dtype=jnp.dtype(dtype))
  params = lstm.init(keys[4], inputs, lengths, carry, static_inputs)
  params = jax.tree.map(lambda w: w + 0.3 * jax.random.normal(keys[4], w.shape), params)
  fast = lambda p, x, c, s: lstm.apply(p, x, lengths, c, s)
  plain = lambda p, x, c, s: _reference_lstm(p, x, lengths, c, s, dtype)
  args = (params, inputs, carry, static_inputs)
  chex.assert_trees_all_close(_grads(fast, args, keys[0]), _grads(plain, args, keys[0]),
                              **TOL[dtype])


@pytest.mark.parametrize("posterior,feed_latent", [("gaussian", True), ("copula", False)])
def test_decoding_samples_together_equals_decoding_each(posterior, feed_latent):
  """log p(x|z) for z [K, batch, latent] at once (inputs embedded and projected
  once) equals K separate calls with z [batch, latent]."""
  model = tiny_model(posterior, feed_latent=feed_latent)
  batch = random_batch(5)
  variables = init_variables(model, batch)
  z = jax.random.normal(jax.random.key(6), (4, 8, 3))
  log_px = jax.jit(lambda z: model.apply(variables, batch["tokens"], batch["lengths"], z,
                                         method=TextVAE.log_likelihood))
  chex.assert_shape(log_px(z), (4, 8))
  chex.assert_trees_all_close(log_px(z), jnp.stack([log_px(z_k) for z_k in z]),
                              rtol=1e-5, atol=1e-5)
  np.testing.assert_array_less(log_px(z), 0.0)
