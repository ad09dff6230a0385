"""Estimators against exact values: quadrature log p(x), analytic MI, AU, counts;
resuming a stopped evaluation."""

import os

import chex
import jax
import jax.numpy as jnp
from jax.sharding import Mesh
import numpy as np
import pytest
from scipy import integrate, special, stats

from cvae_jax import data, estimators
from cvae_jax.config import base_config
from cvae_jax.eval_progress import Progress
from cvae_jax.evaluate import Evaluator, batch_metrics, samples_per_chunk
from cvae_jax.models import ModelConfig, TextVAE
from cvae_jax.models.posteriors import CoupledCopula, DiagonalGaussian
from tests.helpers import init_variables, perturb, random_batch, tiny_model


def _log_px_given(model, variables, batch, points):
  """log p(x|z) at every point z: points [n, latent] -> [n, b]."""
  b, latent = batch["tokens"].shape[0], model.config.latent_dim
  return np.asarray(jax.jit(lambda zs: jax.lax.map(lambda z: model.apply(
      variables, batch["tokens"], batch["lengths"], jnp.broadcast_to(z, (b, latent)),
      method=TextVAE.log_likelihood), zs, batch_size=4096))(jnp.asarray(points)), np.float64)


def _exact_log_px(model, variables, batch, grid):
  """log p(x) = log int p(x|z) N(z; 0, I) dz by the trapezoid rule on the product
  grid of the 1-d `grid` over every latent dimension (1 or 2): [b]."""
  b, latent = batch["tokens"].shape[0], model.config.latent_dim
  points = np.stack(np.meshgrid(*[grid] * latent, indexing="ij"), -1).reshape(-1, latent)
  log_integrand = (_log_px_given(model, variables, batch, points)
                   + stats.norm.logpdf(points).sum(-1)[:, None]).reshape(*[len(grid)] * latent, b)
  peak = log_integrand.max(axis=tuple(range(latent)))
  integral = np.exp(log_integrand - peak)
  for _ in range(latent):
    integral = integrate.trapezoid(integral, grid, axis=0)
  return peak + np.log(integral)


def _exact_log_px_on_the_circle(model, variables, batch):
  """log p(x) = log mean_theta p(x|(cos theta, sin theta)) for the uniform prior on
  the unit circle (the vMF's with a 2-d latent), on 2,000 equal steps: [b]."""
  theta = np.linspace(0.0, 2 * np.pi, 2000, endpoint=False)
  log_px_z = _log_px_given(model, variables, batch, np.stack([np.cos(theta), np.sin(theta)], -1))
  return special.logsumexp(log_px_z, axis=0) - np.log(len(theta))


@pytest.fixture(scope="module", params=[("gaussian", 1), ("coupled_copula", 2),
                                        ("flexible_copula", 2), ("vmf", 2), ("flow", 2),
                                        ("full_gaussian", 2)])
def toy_model(request):
  """A tiny model with a 1-d or 2-d latent, a decoder that depends strongly on z,
  and for the copulas strong correlations (|R_01| = 2/3) and random skews and
  heavier than Gaussian tails (a q with lighter tails than the true posterior
  gives importance weights of infinite variance); the flow away from the
  identity, a correlated full Gaussian and a broad vMF (kappa 1)."""
  posterior, latent = request.param
  model = TextVAE(ModelConfig(vocab_size=8, emb_dim=8, hidden_dim=8, latent_dim=latent,
                              posterior=posterior, dropout=0.0, vmf_kappa=1.0))
  batch = random_batch(5, batch=6, length=5, vocab_size=8)
  variables = dict(init_variables(model, batch, seed=3))
  params = jax.tree.map(np.asarray, variables["params"])
  params["latent_to_carry"]["kernel"] = params["latent_to_carry"]["kernel"] * 6.0 / latent
  if posterior in ("coupled_copula", "flexible_copula"):
    head = params["posterior"]
    head["a_dense"]["kernel"] = head["a_dense"]["kernel"] * 30.0  # |a| = 1
    head["w_dense"]["bias"] = np.full(latent, -30.0, np.float32)  # w = 0.5
    shapes = {k: v for k, v in head.items() if k in ("skew_dense", "tail_dense")}
    if shapes:
      shapes["tail_dense"]["bias"] = np.full(latent, -0.5, np.float32)  # delta < 1
    params["posterior"] = dict(head, **perturb(shapes, 4, noise=0.2))
  if posterior == "flow":
    u = params["posterior"]["u_dense"]
    u["bias"] = np.random.default_rng(0).normal(size=u["bias"].shape).astype(np.float32)
  if posterior == "full_gaussian":  # correlated, and broad enough to be a good proposal
    tril = params["posterior"]["tril_dense"]
    tril["kernel"] = 0.3 * tril["kernel"]
    params["posterior"]["diagonal"]["log_var_bn"]["bias"] = np.ones(latent, np.float32)
  variables["params"] = params
  if posterior == "vmf":
    return model, variables, batch, _exact_log_px_on_the_circle(model, variables, batch)
  grid = np.linspace(-9.0, 9.0, 3001 if latent == 1 else 361)
  return model, variables, batch, _exact_log_px(model, variables, batch, grid)


def test_iw_converges_to_the_exact_log_likelihood_and_elbo_is_below(toy_model):
  model, variables, batch, exact = toy_model
  exact = exact.sum()
  iw = {}
  for k in (1, 5000):
    sums, _ = jax.jit(lambda v, b, key, k=k: batch_metrics(
        model, v, b, key, iw_samples=k, chunk=samples_per_chunk(k, 6, 5, 10_000)))(
            variables, batch, jax.random.key(0))
    iw[k] = -float(sums["iw_nll"])
  elbo_fn = jax.jit(lambda key: batch_metrics(model, variables, batch, key,
                                             iw_samples=0, chunk=1)[0])
  elbo_sums = [elbo_fn(jax.random.key(s)) for s in range(50)]
  elbo = -np.mean([float(e["rec"] + e["kl"]) for e in elbo_sums])
  assert elbo < exact
  assert abs(iw[5000] - exact) < 0.05 * batch["tokens"].shape[0]
  assert abs(iw[5000] - exact) < abs(iw[1] - exact)
  assert iw[5000] <= exact + 0.02


@pytest.mark.parametrize("rho", [0.0, 0.6])
def test_mutual_information_of_a_gaussian_toy(rho):
  """x ~ N(0, I), z | x ~ N(a x, s^2 R): I = 1/2 log |a^2 I + s^2 R| / |s^2 R|;
  R = I is the factorised Gaussian, rho != 0 the coupled copula."""
  rng = np.random.default_rng(0)
  n, a, s = 4000, 2.0, 0.5
  x = rng.normal(size=(n, 2))
  q = DiagonalGaussian(loc=jnp.asarray(a * x, jnp.float32),
                       log_var=jnp.full((n, 2), 2 * np.log(s), jnp.float32))
  r = np.array([[1.0, rho], [rho, 1.0]])
  if rho:
    q = CoupledCopula(q, jnp.broadcast_to(jnp.asarray(np.linalg.cholesky(r), jnp.float32),
                                          (n, 2, 2)))
  z = q.sample(jax.random.key(0))
  neg_entropy = -q.entropy(None)
  mi = estimators.mutual_information(q, z, neg_entropy, jnp.ones(n))
  analytic = 0.5 * (np.linalg.slogdet(a**2 * np.eye(2) + s**2 * r)[1]
                    - np.linalg.slogdet(s**2 * r)[1])
  np.testing.assert_allclose(mi, analytic, atol=0.1)
  padded_q = jax.tree.map(lambda x: jnp.concatenate([x, 100 + x[:50]]), q)
  padded = estimators.mutual_information(
      padded_q, jnp.concatenate([z, z[:50]]), jnp.concatenate([neg_entropy, neg_entropy[:50]]),
      jnp.concatenate([jnp.ones(n), jnp.zeros(50)]))
  np.testing.assert_allclose(padded, mi, rtol=1e-5)  # weight-0 rows are ignored


def test_mutual_information_of_n_rows_is_at_most_log_n():
  """log q(z_m) >= log q(z_m|x_m) - log n, so the estimate is at most log n plus
  the rows' mean of E[log q] - log q(z_m|x_m) (zero in expectation), with
  equality when the posteriors do not overlap: the ceiling that the lagging
  encoder's stopping rule meets with batches of 64 (log 64 = 4.16 nats)."""
  rng = np.random.default_rng(2)
  n, latent = 64, 32
  for spread in (0.1, 0.3, 100.0):  # overlapping to disjoint posteriors
    q = DiagonalGaussian(loc=jnp.asarray(spread * rng.normal(size=(n, latent)), jnp.float32),
                         log_var=jnp.zeros((n, latent), jnp.float32))
    z = q.sample(jax.random.key(3))
    neg_entropy = -q.entropy(None)
    mi = float(estimators.mutual_information(q, z, neg_entropy, jnp.ones(n)))
    ceiling = np.log(n) + float(jnp.mean(neg_entropy - q.log_prob(z)))
    assert mi <= ceiling + 1e-4
    if spread == 100.0:
      np.testing.assert_allclose(mi, ceiling, atol=1e-4)
    else:
      assert mi < ceiling - 0.1


def test_active_units_count_dimensions_by_variance_of_the_means():
  rng = np.random.default_rng(1)
  scales = np.array([1.0, 0.2, 0.05, 0.0])  # variances 1, 0.04, 0.0025, 0
  means = jnp.asarray(rng.normal(size=(5000, 4)) * scales, jnp.float32)
  count, variances = estimators.active_units(means, 0.01)
  assert int(count) == 2
  np.testing.assert_allclose(variances, scales**2, rtol=0.1, atol=1e-4)


def _corpus_split(n=37):
  words = [np.arange(4, 4 + 1 + (i % 9), dtype=np.int32) for i in range(n)]
  return data.Split.from_words("valid", words, None, None)


def _eval_config(batch_size):
  c = base_config()
  c.data.eval_batch_size = batch_size
  c.data.bucket_lengths = (8, 16)
  c.eval.iw_samples = 4
  return c


@pytest.mark.parametrize("posterior", ["none", "copula", "flexible_copula", "vmf"])
def test_every_sentence_counts_once_and_one_device_equals_eight(posterior):
  split = _corpus_split()
  model = tiny_model(posterior, vocab_size=20)
  variables = {"batch_stats": {}, **init_variables(model, random_batch(vocab_size=20))}
  want_tokens = int(np.sum(split.lengths - 1))
  results = {}
  # Another batch size pads the split differently; the counting does not
  # depend on the posterior (each configuration compiles the step anew).
  for devices, batch_size in ((1, 8), (8, 8)) + (((1, 16),) if posterior == "none" else ()):
    mesh = Mesh(np.asarray(jax.devices()[:devices]), ("data",))
    evaluator = Evaluator(model, mesh, _eval_config(batch_size), jax.random.key(0))
    results[devices, batch_size] = out = evaluator(variables, split, iw_samples=4)
    assert (out["sentences"], out["tokens"]) == (37, want_tokens)
  one, eight = results[1, 8], results[8, 8]
  chex.assert_trees_all_close({k: one[k] for k in one}, {k: eight[k] for k in one},
                              rtol=1e-4, atol=1e-4)


def test_a_stopped_evaluation_resumes_after_its_last_saved_batch(tmp_path, monkeypatch,
                                                                 capsys):
  split = _corpus_split()
  model = tiny_model("copula", vocab_size=20)
  variables = {"batch_stats": {}, **init_variables(model, random_batch(vocab_size=20))}
  mesh = Mesh(np.asarray(jax.devices()[:1]), ("data",))
  evaluator = Evaluator(model, mesh, _eval_config(8), jax.random.key(0))
  straight = evaluator(variables, split, iw_samples=4)

  path = str(tmp_path / "eval_valid.progress.npz")
  real, calls = evaluator.jitted_step, [0]

  def stops_in_batch_4(*args):
    step = real(*args)

    def counted(*a):
      calls[0] += 1
      if calls[0] == 4:
        raise KeyboardInterrupt
      return step(*a)
    return counted
  monkeypatch.setattr(evaluator, "jitted_step", stops_in_batch_4)
  with pytest.raises(KeyboardInterrupt):
    evaluator(variables, split, 4, Progress(path, "run", every_s=0))
  assert Progress(path, "run").load()[0] == 3
  assert Progress(path, "another run").load() == (0, None, [])  # not its batches

  monkeypatch.undo()
  resumed = evaluator(variables, split, 4, Progress(path, "run", every_s=0))
  assert "resuming the evaluation of valid after batch 3 of 6" in capsys.readouterr().err
  assert resumed == straight  # bit for bit: the same keys, sums and rows
  assert not os.path.exists(path)
