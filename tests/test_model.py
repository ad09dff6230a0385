"""LSTM masking and the model's invariance to padding."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cvae_jax.data.vocab import UNK
from cvae_jax.models import posteriors
from cvae_jax.models.lstm import LSTM
from cvae_jax.models.text_vae import word_dropout
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
  with pytest.raises(CvaeError, match="unknown posterior 'iaf'.*none, gaussian, copula, "
                                      "coupled_copula, flexible_copula, vmf, flow, full_gaussian"):
    init_variables(tiny_model("iaf"), random_batch())


def test_word_dropout_replaces_only_words_by_unk():
  tokens = np.array([[2, 7, 8, 9, 3, 0, 0], [2, 5, 3, 0, 0, 0, 0], [2, 6, 7, 8, 9, 4, 3]])
  lengths = np.array([5, 3, 7])
  got = word_dropout(jax.random.key(0), tokens[:, :-1], lengths, 1.0)
  np.testing.assert_array_equal(got, [[2, 1, 1, 1, 3, 0], [2, 1, 3, 0, 0, 0],
                                      [2, 1, 1, 1, 1, 1]])
  np.testing.assert_array_equal(
      word_dropout(jax.random.key(0), tokens[:, :-1], lengths, 0.0), tokens[:, :-1])


def test_word_dropout_drops_words_at_its_rate():
  batch = random_batch(0, batch=2000, length=12, vocab_size=30)
  inputs = batch["tokens"][:, :-1]
  got = np.asarray(word_dropout(jax.random.key(1), inputs, batch["lengths"], 0.3))
  words = (np.arange(11)[None] >= 1) & (np.arange(11)[None] < batch["lengths"][:, None] - 1)
  np.testing.assert_array_equal(got[~words], inputs[~words])
  dropped = got[words] != inputs[words]
  assert np.all(got[words][dropped] == UNK)
  n = words.sum()
  assert abs(dropped.mean() - 0.3) < 4 * np.sqrt(0.3 * 0.7 / n)


def test_the_decoder_reads_word_dropped_inputs_in_training_only():
  model = tiny_model("gaussian", word_dropout=1.0, dropout=0.0)
  batch = random_batch(2)
  variables = init_variables(model, batch)
  z = jax.random.normal(jax.random.key(0), (8, 3))
  log_px = lambda tokens, train: model.apply(
      variables, tokens, batch["lengths"], z, train, method=type(model).log_likelihood,
      rngs={"dropout": jax.random.key(1)})
  words = (np.arange(12)[None] >= 1) & (np.arange(12)[None] < batch["lengths"][:, None] - 1)
  unk_inputs = np.where(words, UNK, batch["tokens"])  # targets stay the true words
  _, logits = model.apply(variables, unk_inputs[:, :-1], z, method=type(model).decode)
  logp = np.asarray(jax.nn.log_softmax(logits))
  want = [sum(logp[i, t, batch["tokens"][i, t + 1]] for t in range(n - 1))
          for i, n in enumerate(batch["lengths"])]
  np.testing.assert_allclose(log_px(batch["tokens"], True), want, rtol=1e-5)
  assert np.all(np.abs(log_px(batch["tokens"], False) - np.asarray(want)) > 1e-3)


@pytest.mark.parametrize("posterior", ["gaussian", "copula"])
def test_bn_vae_means_have_the_fixed_scale_and_a_learned_shift(posterior):
  gamma, beta = 0.7, np.array([0.5, -1.0, 0.0], np.float32)
  model = tiny_model(posterior, bn_gamma=gamma, dropout=0.0)
  batch = random_batch(3, batch=64)
  variables = init_variables(model, batch)
  params = variables["params"]["posterior"]
  head = params["marginals"] if posterior == "copula" else params
  assert "mean_bn" not in head  # gamma is not learned, the shift is
  head["mean_shift"] = beta
  hc = model.apply(variables, batch["tokens"], batch["lengths"],
                   method=_final_state)
  q, _ = model.apply(variables, batch["tokens"], batch["lengths"], True,
                     method=type(model).encode, mutable=["batch_stats"])
  x = np.asarray(hc, np.float64) @ np.asarray(head["mean_dense"]["kernel"], np.float64)
  want = gamma * (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5) + beta
  np.testing.assert_allclose(q.mean(), want, rtol=1e-4, atol=1e-4)
  # Zhu et al.: E_batch[mu_i^2] = gamma^2 + beta_i^2 (up to BatchNorm's epsilon).
  np.testing.assert_allclose(np.mean(np.square(q.mean()), 0), gamma**2 + beta**2,
                             rtol=1e-3)


def _final_state(model, tokens, lengths):
  (c, h), _ = model.encoder_lstm(model.embed(tokens), lengths)
  return jnp.concatenate([h, c], axis=-1)


def test_without_bn_gamma_the_means_batchnorm_learns_its_scale():
  variables = init_variables(tiny_model("gaussian"), random_batch())
  assert "scale" in variables["params"]["posterior"]["mean_bn"]
