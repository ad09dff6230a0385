"""The posteriors' densities, samples and KL against independent computations."""

import os
import subprocess
import sys
import textwrap

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from cvae_jax.models.posteriors import EXTRA_LOSS, DiagonalGaussian, GaussianCopula
from cvae_jax.models.posteriors.copula import log_copula_density, uninformative_kl
from cvae_jax.models.posteriors.dependence import (
    _cholesky_columns, _forward_substitution, cholesky, covariance, solve_lower)
from cvae_jax.objectives import Objective
from tests.helpers import launcher_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _random_copula(seed, batch=5, latent=6, a_scale=1.0):
  rng = np.random.default_rng(seed)
  w = rng.uniform(0.5, 2.0, (batch, latent)).astype(np.float32)
  a = (a_scale * rng.uniform(-1, 1, (batch, latent))).astype(np.float32)
  marg = DiagonalGaussian(loc=jnp.zeros((batch, latent)), log_var=jnp.zeros((batch, latent)))
  return GaussianCopula(marginals=marg, w=jnp.asarray(w), a=jnp.asarray(a),
                        copula_weight=0.5), w, a


def _scipy_log_copula(w, a, q):
  """log N(q; 0, Sigma) - sum_i log N(q_i; 0, Sigma_ii) in float64, row by row."""
  out = []
  for wb, ab, qb in zip(w.astype(np.float64), a.astype(np.float64),
                        np.asarray(q, np.float64)):
    s64 = np.diag(wb) + np.outer(ab, ab)
    out.append(stats.multivariate_normal(np.zeros(len(qb)), s64).logpdf(qb)
               - stats.norm(0, np.sqrt(np.diag(s64))).logpdf(qb).sum())
  return np.array(out)


@pytest.mark.parametrize("q_scale", [None, 3.0])  # copula samples; wide points
def test_log_copula_density_matches_scipy(q_scale):
  cop, w, a = _random_copula(0)
  q, sigma, chol = cop.sample_copula(jax.random.key(1))
  if q_scale is not None:
    q = jnp.asarray(np.random.default_rng(3).normal(0, q_scale, w.shape), jnp.float32)
  np.testing.assert_allclose(log_copula_density(sigma, chol, q),
                             _scipy_log_copula(w, a, q), rtol=1e-4, atol=1e-4)


def test_log_copula_density_is_zero_at_identity_correlation():
  cop, _, _ = _random_copula(4, a_scale=0.0)
  terms = cop.objective_terms(jnp.zeros_like(cop.w), jax.random.key(0))
  chex.assert_trees_all_close(terms["log_copula"], jnp.zeros(5), atol=1e-6)


def test_copula_objective_terms_weigh_the_copula_term_by_lambda():
  cop, _, _ = _random_copula(9)
  z = cop.sample(jax.random.key(1))
  terms = cop.objective_terms(z, jax.random.key(2))
  q, sigma, chol = cop.sample_copula(jax.random.key(2))
  copula_term = log_copula_density(sigma, chol, q) + cop.marginals.log_prob(z)
  chex.assert_trees_all_close(terms, {"log_copula": log_copula_density(sigma, chol, q),
                                      "copula_term": copula_term,
                                      EXTRA_LOSS: -0.5 * copula_term})


def test_the_papers_copula_is_its_marginals_for_z():
  cop, _, _ = _random_copula(10)
  key, z = jax.random.key(3), jnp.ones((2, 5, 6))
  chex.assert_trees_all_equal(
      (cop.sample(key), cop.log_prob(z), cop.kl(key), cop.entropy(key), cop.mean()),
      (cop.marginals.sample(key), cop.marginals.log_prob(z), cop.marginals.kl(key),
       cop.marginals.entropy(key), cop.marginals.loc))


def test_gaussian_posterior_has_no_extra_objective_terms():
  q = DiagonalGaussian(loc=jnp.ones((3, 4)), log_var=jnp.zeros((3, 4)))
  assert q.objective_terms(q.loc, jax.random.key(0)) == {}


def test_copula_samples_have_covariance_sigma():
  cop, w, a = _random_copula(5, batch=2, latent=4)
  n = 200_000
  keys = jax.random.split(jax.random.key(0), n)
  q = jax.vmap(lambda k: cop.sample_copula(k)[0])(keys)  # [n, batch, latent]
  for b in range(2):
    empirical = np.cov(np.asarray(q[:, b]), rowvar=False)
    want = np.diag(w[b]) + np.outer(a[b], a[b])
    np.testing.assert_allclose(empirical, want, atol=0.03)


def test_gaussian_kl_and_entropy_match_monte_carlo():
  rng = np.random.default_rng(6)
  q = DiagonalGaussian(loc=jnp.asarray(rng.normal(size=(3, 4)), jnp.float32),
                       log_var=jnp.asarray(rng.normal(scale=0.5, size=(3, 4)), jnp.float32))
  z = q.sample(jax.random.key(7), num_samples=400_000)
  log_p = stats.norm.logpdf(np.asarray(z, np.float64)).sum(-1)
  log_q = np.asarray(q.log_prob(z), np.float64)
  key = jax.random.key(0)
  np.testing.assert_allclose(q.kl(key), np.mean(log_q - log_p, axis=0), rtol=0.02, atol=0.01)
  np.testing.assert_allclose(q.entropy(key), -np.mean(log_q, axis=0), rtol=0.01)


def test_gaussian_log_prob_matches_scipy():
  q = DiagonalGaussian(loc=jnp.array([[0.5, -1.0]]), log_var=jnp.array([[0.2, -0.3]]))
  z = jnp.array([[0.1, 0.4]])
  want = stats.norm(np.array([0.5, -1.0]), np.exp(0.5 * np.array([0.2, -0.3]))).logpdf(
      np.array([0.1, 0.4])).sum()
  np.testing.assert_allclose(q.log_prob(z), [want], rtol=1e-5)


def test_forward_substitution_equals_solve_triangular_with_gradients():
  cop, _, _ = _random_copula(9, batch=4, latent=7)
  chol = jnp.linalg.cholesky(covariance(cop.w, cop.a))
  rhs = jax.random.normal(jax.random.key(0), (4, 7, 3))
  want = jax.scipy.linalg.solve_triangular(chol, rhs, lower=True)
  chex.assert_trees_all_close(_forward_substitution(chol, rhs), want, atol=1e-5)
  chex.assert_trees_all_close(solve_lower(chol, rhs), want, atol=1e-5)
  def loss(solve):
    return lambda chol, rhs: jnp.sum(jnp.sin(solve(chol, rhs)))
  lapack = lambda chol, rhs: jax.scipy.linalg.solve_triangular(chol, rhs, lower=True)
  chex.assert_trees_all_close(
      jax.grad(loss(_forward_substitution), argnums=(0, 1))(chol, rhs),
      jax.grad(loss(lapack), argnums=(0, 1))(chol, rhs), atol=1e-4)


def test_two_solves_in_a_loop_body_finish_on_cpu():
  """With LAPACK's batched solve, this program hung XLA's CPU runtime on its
  first or second call (jaxlib 0.10.2); it runs in a subprocess with a time
  limit so that a hang fails the test instead of stopping the run."""
  program = textwrap.dedent("""
      import jax, jax.numpy as jnp
      from cvae_jax.models.posteriors.dependence import solve_lower
      chol = jnp.tril(0.1 * jax.random.normal(jax.random.key(0), (64, 32, 32))) + 3 * jnp.eye(32)
      @jax.jit
      def f(key):
        def body(total, key):
          u = jax.random.normal(key, (64, 32, 20))
          return total + jnp.sum(solve_lower(chol, u)) + jnp.sum(solve_lower(chol, 2 * u)), None
        return jax.lax.scan(body, 0.0, jax.random.split(key, 5))[0]
      for i in range(100):
        f(jax.random.key(i)).block_until_ready()
      print("finished")""")
  done = subprocess.run([sys.executable, "-c", program], cwd=ROOT, capture_output=True,
                        text=True, timeout=120, env=launcher_env())
  assert done.returncode == 0 and done.stdout == "finished\n", done.stderr[-2000:]


def test_cholesky_columns_equal_jnp_linalg_cholesky_with_gradients():
  cop, _, _ = _random_copula(8, batch=4, latent=7)
  sigma = covariance(cop.w, cop.a)
  chex.assert_trees_all_close(_cholesky_columns(sigma), jnp.linalg.cholesky(sigma), atol=1e-5)
  chex.assert_trees_all_close(cholesky(sigma), jnp.linalg.cholesky(sigma), atol=1e-5)
  def loss(factor):  # through Sigma(w, a), which is symmetric by construction
    return lambda w, a: jnp.sum(jnp.sin(factor(covariance(w, a))))
  chex.assert_trees_all_close(jax.grad(loss(_cholesky_columns), argnums=(0, 1))(cop.w, cop.a),
                              jax.grad(loss(jnp.linalg.cholesky), argnums=(0, 1))(cop.w, cop.a),
                              atol=1e-4)


def _expected_log_copula_bound(latent):
  """sup over the head's range (w >= 0.5, |a| <= 1) of E_q[log c(q)] =
  -1/2 log|R|: R = diag(1 - b^2) + b b^T with b_i^2 = a_i^2 / (w_i + a_i^2)
  <= 2/3, whose determinant prod(1 - b^2) (1 + sum b^2 / (1 - b^2)) never rises as
  a b_i^2 rises: its least is 3^-latent (1 + 2 latent)."""
  return 0.5 * (latent * np.log(3.0) - np.log1p(2.0 * latent))


def test_the_heads_expected_log_copula_is_bounded_and_reached_at_its_corner():
  """The dependency head can raise E[log c] by at most 15.49 nats at Z = 32,
  a constant that the paper's convention subtracts from -ELBO."""
  latent = 32
  bound = _expected_log_copula_bound(latent)
  assert bound == pytest.approx(15.4906, abs=1e-4)
  rng = np.random.default_rng(5)
  w = np.concatenate([rng.uniform(0.5, 3.0, (200, latent)), np.full((1, latent), 0.5)])
  a = np.concatenate([rng.uniform(-1, 1, (200, latent)), np.ones((1, latent))])
  sigma = np.asarray(covariance(jnp.asarray(w), jnp.asarray(a)), np.float64)
  d = np.sqrt(np.diagonal(sigma, axis1=-2, axis2=-1))
  r = sigma / d[:, :, None] / d[:, None, :]
  neg_half_log_det = -0.5 * np.linalg.slogdet(r)[1]
  assert np.all(neg_half_log_det[:-1] < bound)
  np.testing.assert_allclose(neg_half_log_det[-1], bound, rtol=1e-6)
  # The model's own log c at its own samples averages to the same corner value.
  corner = GaussianCopula(
      marginals=DiagonalGaussian(loc=jnp.zeros((1, latent)), log_var=jnp.zeros((1, latent))),
      w=jnp.full((1, latent), 0.5), a=jnp.ones((1, latent)), copula_weight=1.0)
  keys = jax.random.split(jax.random.key(6), 20_000)
  log_c = jax.vmap(lambda k: corner.objective_terms(jnp.zeros((1, latent)), k)["log_copula"])(keys)
  assert abs(float(jnp.mean(log_c)) - bound) < 4 * float(jnp.std(log_c)) / np.sqrt(len(keys))


@pytest.mark.parametrize("copula_weight,beta", [(0.4, 1.0), (0.6, 0.3), (1.0, 1.0)])
def test_the_copula_objective_shrinks_sigma_whenever_lambda_exceeds_beta(copula_weight, beta):
  """Apart from the reconstruction, the copula's loss beta KL - lambda (log c +
  sum_i log q(z_i|x)) has d/d log sigma_i^2 = (beta sigma_i^2 - beta + lambda) / 2
  exactly: log c(q) does not depend on the marginals and log q(z|x) at a
  reparameterised z is -log sigma + const. So sigma^2 settles at 1 - lambda / beta
  when lambda < beta and falls to 0 when lambda >= beta (the lambda 1.0 run)."""
  objective = Objective()
  rng = np.random.default_rng(11)
  loc = jnp.asarray(rng.normal(size=(5, 6)), jnp.float32)
  log_var = jnp.asarray(rng.uniform(-3.0, 1.0, (5, 6)), jnp.float32)
  head, _, _ = _random_copula(12)

  def loss(log_var):
    cop = GaussianCopula(marginals=DiagonalGaussian(loc=loc, log_var=log_var), w=head.w,
                         a=head.a, copula_weight=copula_weight)
    z = cop.sample(jax.random.key(13))
    terms = {"rec": jnp.zeros(5), **cop.objective_terms(z, jax.random.key(14))}
    return jnp.sum(objective.sentence_loss(terms, cop.kl_groups(None), jnp.ones(5), beta))

  expected = 0.5 * (beta * jnp.exp(log_var) - beta + copula_weight)
  chex.assert_trees_all_close(jax.grad(loss)(log_var), expected, atol=1e-5)
  if copula_weight < beta:
    rest = jnp.full_like(log_var, np.log1p(-copula_weight / beta))
    chex.assert_trees_all_close(jax.grad(loss)(rest), jnp.zeros_like(rest), atol=1e-6)
    # Where it rests with mu = 0, the KL is the one `uninformative_kl` gives.
    kl = DiagonalGaussian(loc=jnp.zeros_like(rest), log_var=rest).kl(None)
    np.testing.assert_allclose(kl, uninformative_kl(copula_weight, 6, beta), rtol=1e-5)
  else:
    assert uninformative_kl(copula_weight, 6, beta) == np.inf
