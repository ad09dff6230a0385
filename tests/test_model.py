"""LSTM masking and the model's invariance to padding."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cvae_jax.models import posteriors
from cvae_jax.models.lstm import LSTM
from tests.helpers import init_variables, random_batch, tiny_model


def test_final_carry_of_a_padded_row_equals_the_unpadded_sequence():
  lstm = LSTM(hidden_dim=6)
  x = jax.random.normal(jax.random.key(0), (1, 5, 4))
  params = lstm.init(jax.random.key(1), x)
  padded = jnp.concatenate([x, jax.random.normal(jax.random.key(2), (1, 7, 4))], axis=1)
  want, outputs = lstm.apply(params, x)
  got, _ = lstm.apply(params, padded, jnp.array([5]))
  chex.assert_trees_all_close(got, want, atol=1e-6)
  chex.assert_trees_all_close(want[1], outputs[:, -1])


def test_lstm_matches_a_slow_reference_loop():
  lstm = LSTM(hidden_dim=3)
  x = jax.random.normal(jax.random.key(0), (2, 4, 5))
  params = lstm.init(jax.random.key(1), x)
  p = jax.tree.map(np.asarray, params["params"])
  sig = lambda v: 1 / (1 + np.exp(-v))
  c, h = np.zeros((2, 3)), np.zeros((2, 3))
  for t in range(4):
    gates = np.asarray(x[:, t]) @ p["w_i"] + h @ p["w_h"] + p["bias"]
    i, f, g, o = np.split(gates, 4, axis=-1)
    c = sig(f) * c + sig(i) * np.tanh(g)
    h = sig(o) * np.tanh(c)
  (got_c, got_h), _ = lstm.apply(params, x)
  np.testing.assert_allclose(got_c, c, atol=1e-5)
  np.testing.assert_allclose(got_h, h, atol=1e-5)


@pytest.mark.parametrize("posterior", posteriors.NAMES)
@pytest.mark.parametrize("feed_latent", [False, True])
def test_padding_never_changes_the_terms(posterior, feed_latent):
  model = tiny_model(posterior, feed_latent=feed_latent)
  batch = random_batch()
  variables = init_variables(model, batch)
  wide = dict(batch, tokens=np.pad(batch["tokens"], ((0, 0), (0, 9))))
  rngs = {"latent": jax.random.key(3)}
  chex.assert_trees_all_close(model.apply(variables, wide["tokens"], wide["lengths"], rngs=rngs),
                              model.apply(variables, batch["tokens"], batch["lengths"], rngs=rngs),
                              atol=1e-5)


def test_reconstruction_is_the_masked_token_cross_entropy():
  model = tiny_model("gaussian")
  batch = random_batch(1)
  variables = init_variables(model, batch)
  z = jnp.zeros((8, 3))
  got = model.apply(variables, batch["tokens"], batch["lengths"], z,
                    method=type(model).log_likelihood)
  _, logits = model.apply(variables, batch["tokens"][:, :-1], z, method=type(model).decode)
  logp = np.asarray(jax.nn.log_softmax(logits))
  for i, n in enumerate(batch["lengths"]):
    want = sum(logp[i, t, batch["tokens"][i, t + 1]] for t in range(n - 1))
    np.testing.assert_allclose(got[i], want, rtol=1e-5)


def test_unknown_posterior_is_a_clear_error():
  from cvae_jax.errors import CvaeError
  with pytest.raises(CvaeError, match="unknown posterior 'vmf'.*none, gaussian, copula, "
                                      "coupled_copula, flexible_copula"):
    init_variables(tiny_model("vmf"), random_batch())
