"""Estimators against exact values: quadrature log p(x), analytic MI, AU, counts."""

import chex
import jax
import jax.numpy as jnp
from jax.sharding import Mesh
import numpy as np
import pytest
from scipy import integrate, stats

from cvae_jax import data, estimators
from cvae_jax.config import base_config
from cvae_jax.evaluate import Evaluator, batch_metrics, samples_per_chunk
from cvae_jax.models import ModelConfig, TextVAE
from cvae_jax.models.posteriors import DiagonalGaussian, log_standard_normal
from tests.helpers import init_variables, random_batch, tiny_model


def _exact_log_px(model, variables, batch):
  """log p(x) = log int p(x|z) N(z; 0, 1) dz for a 1-d latent, by quadrature: [b]."""
  grid = np.linspace(-9.0, 9.0, 3001, dtype=np.float32)
  b = batch["tokens"].shape[0]
  log_px_z = jax.jit(jax.vmap(lambda z: model.apply(
      variables, batch["tokens"], batch["lengths"], jnp.full((b, 1), z),
      method=TextVAE.log_likelihood)))(jnp.asarray(grid))  # [grid, b]
  log_integrand = np.asarray(log_px_z, np.float64) + stats.norm.logpdf(grid)[:, None]
  peak = log_integrand.max(axis=0)
  return peak + np.log(integrate.trapezoid(np.exp(log_integrand - peak), grid, axis=0))


@pytest.fixture(scope="module")
def one_d_model():
  model = TextVAE(ModelConfig(vocab_size=8, emb_dim=8, hidden_dim=8, latent_dim=1,
                              posterior="gaussian", dropout=0.0))
  batch = random_batch(5, batch=6, length=5, vocab_size=8)
  variables = dict(init_variables(model, batch, seed=3))
  # A decoder that depends strongly on z: scale the latent-to-state map.
  params = jax.tree.map(np.asarray, variables["params"])
  params["latent_to_carry"]["kernel"] = params["latent_to_carry"]["kernel"] * 6.0
  variables["params"] = params
  return model, variables, batch


def test_iw_converges_to_the_exact_log_likelihood_and_elbo_is_below(one_d_model):
  model, variables, batch = one_d_model
  exact = _exact_log_px(model, variables, batch).sum()
  iw = {}
  for k in (1, 500):
    sums, _ = jax.jit(lambda v, b, key, k=k: batch_metrics(
        model, v, b, key, iw_samples=k, chunk=samples_per_chunk(k, 6, 5, 10_000)))(
            variables, batch, jax.random.key(0))
    iw[k] = -float(sums["iw_nll"])
  elbo_fn = jax.jit(lambda key: batch_metrics(model, variables, batch, key,
                                             iw_samples=0, chunk=1)[0])
  elbo_sums = [elbo_fn(jax.random.key(s)) for s in range(50)]
  elbo = -np.mean([float(e["rec"] + e["kl"]) for e in elbo_sums])
  assert elbo < exact
  assert abs(iw[500] - exact) < 0.05 * batch["tokens"].shape[0]
  assert abs(iw[500] - exact) < abs(iw[1] - exact)
  assert iw[500] <= exact + 0.02


def test_mutual_information_of_a_gaussian_toy():
  rng = np.random.default_rng(0)
  n, a, s = 4000, 2.0, 0.5
  x = rng.normal(size=(n, 2))
  q = DiagonalGaussian(loc=jnp.asarray(a * x, jnp.float32),
                       log_var=jnp.full((n, 2), 2 * np.log(s), jnp.float32))
  z = q.sample(jax.random.key(0))
  neg_entropy = -q.entropy(None)
  mi = estimators.mutual_information(q, z, neg_entropy, jnp.ones(n))
  analytic = 2 * 0.5 * np.log(1 + a**2 / s**2)
  np.testing.assert_allclose(mi, analytic, atol=0.1)
  padded_q = jax.tree.map(lambda x: jnp.concatenate([x, 100 + x[:50]]), q)
  padded = estimators.mutual_information(
      padded_q, jnp.concatenate([z, z[:50]]), jnp.concatenate([neg_entropy, neg_entropy[:50]]),
      jnp.concatenate([jnp.ones(n), jnp.zeros(50)]))
  np.testing.assert_allclose(padded, mi, rtol=1e-5)  # weight-0 rows are ignored


def test_active_units_count_dimensions_by_variance_of_the_means():
  rng = np.random.default_rng(1)
  scales = np.array([1.0, 0.2, 0.05, 0.0])  # variances 1, 0.04, 0.0025, 0
  means = jnp.asarray(rng.normal(size=(5000, 4)) * scales, jnp.float32)
  count, variances = estimators.active_units(means, 0.01)
  assert int(count) == 2
  np.testing.assert_allclose(variances, scales**2, rtol=0.1, atol=1e-4)


def test_monte_carlo_kl_matches_analytic_kl():
  dist = DiagonalGaussian(loc=jnp.array([[0.3, -1.2, 2.0]]), log_var=jnp.array([[0.1, -1.0, 0.5]]))
  z = dist.sample(jax.random.key(0), 300_000)
  mc = jnp.mean(dist.log_prob(z) - log_standard_normal(z), axis=0)
  np.testing.assert_allclose(mc, dist.kl(None), rtol=0.01)


def _corpus_split(n=37):
  words = [np.arange(4, 4 + 1 + (i % 9), dtype=np.int32) for i in range(n)]
  return data.Split.from_words("valid", words, None, None)


def _eval_config(batch_size):
  c = base_config()
  c.data.eval_batch_size = batch_size
  c.data.bucket_lengths = (8, 16)
  c.eval.iw_samples = 4
  return c


@pytest.mark.parametrize("posterior", ["none", "copula"])
def test_every_sentence_counts_once_and_one_device_equals_eight(posterior):
  split = _corpus_split()
  model = tiny_model(posterior, vocab_size=20)
  variables = {"batch_stats": {}, **init_variables(model, random_batch(vocab_size=20))}
  want_tokens = int(np.sum(split.lengths - 1))
  results = {}
  for devices, batch_size in ((1, 8), (8, 8), (1, 16)):
    mesh = Mesh(np.asarray(jax.devices()[:devices]), ("data",))
    evaluator = Evaluator(model, mesh, _eval_config(batch_size), jax.random.key(0))
    results[devices, batch_size] = out = evaluator(variables, split, iw_samples=4)
    assert (out["sentences"], out["tokens"]) == (37, want_tokens)
  one, eight = results[1, 8], results[8, 8]
  chex.assert_trees_all_close({k: one[k] for k in one}, {k: eight[k] for k in one},
                              rtol=1e-4, atol=1e-4)


