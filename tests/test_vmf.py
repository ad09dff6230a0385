"""The von Mises-Fisher posterior: sampler, constants by quadrature, gradient, errors."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate

from cvae_jax.errors import CvaeError
from cvae_jax.models import ModelConfig
from cvae_jax.models.posteriors import vmf

sample_cosine = jax.jit(vmf.sample_cosine, static_argnums=(1, 3))


def _unit(dim, seed=0, rows=3):
  return vmf._normalise(jax.random.normal(jax.random.key(seed), (rows, dim)))


# Draws per kappa: a round at dim 128 costs 254 normal variates a draw.
@pytest.mark.parametrize("dim, draws", [(2, 256), (3, 256), (32, 256), (128, 64)])
def test_the_sampler_terminates_for_kappa_1_to_500(dim, draws):
  kappa = jnp.arange(1.0, 501.0)[:, None]  # 1, 2, ..., 500
  w, rounds = sample_cosine(jax.random.key(dim), (500, draws), kappa, dim)
  assert int(rounds) < vmf.MAX_ROUNDS  # every draw accepted before the bound
  assert np.all(np.abs(np.asarray(w)) <= 1.0)


@pytest.mark.parametrize("dim, kappa", [(2, 1.0), (3, 10.0), (8, 50.0), (32, 100.0),
                                        (32, 500.0)])
def test_samples_are_unit_vectors_with_mean_resultant_length_a_d(dim, kappa):
  q = vmf.VonMisesFisher(loc=_unit(dim), kappa=kappa)
  n = 20_000
  z = q.sample(jax.random.key(1), n)
  chex.assert_shape(z, (n, 3, dim))
  np.testing.assert_allclose(jnp.linalg.norm(z, axis=-1), 1.0, atol=1e-5)
  w = jnp.sum(z * q.loc, axis=-1)  # [n, rows]
  a_d = vmf.constants(kappa, dim).mean_length
  se = jnp.std(w, axis=0) / math.sqrt(n)
  assert np.all(np.abs(jnp.mean(w, axis=0) - a_d) < 4 * se), (jnp.mean(w, 0), a_d)
  np.testing.assert_allclose(jnp.mean(z, axis=0), q.mean(), atol=4 / math.sqrt(n) + 4e-3)


def _quad_w(f, kappa, dim):
  """E[f(w)], w = mu^T z = cos(theta), by quadrature over the angle theta in [0, pi]:
  q(theta) = C_d e^{kappa cos theta} sin^{d-2}(theta) |S^{d-2}| (|S^0| = 2)."""
  c = vmf.constants(kappa, dim)
  log_area = vmf.log_sphere_area(dim - 1) if dim > 2 else math.log(2.0)

  def integrand(theta):
    log_q = c.log_normaliser + kappa * math.cos(theta) + log_area
    return f(math.cos(theta)) * math.exp(log_q) * math.sin(theta) ** (dim - 2)
  bulk = min(math.pi, 20.0 / math.sqrt(kappa))  # where the mass lies
  value, _ = integrate.quad(integrand, 0, math.pi, points=[bulk / 4, bulk], limit=400,
                            epsabs=0, epsrel=1e-11)
  return value


@pytest.mark.parametrize("dim", [2, 3, 5, 32])
@pytest.mark.parametrize("kappa", [1.0, 50.0, 500.0])
def test_normaliser_mean_length_and_kl_against_quadrature(dim, kappa):
  c = vmf.constants(kappa, dim)
  np.testing.assert_allclose(_quad_w(lambda w: 1.0, kappa, dim), 1.0, rtol=1e-7)
  np.testing.assert_allclose(_quad_w(lambda w: w, kappa, dim), c.mean_length, rtol=1e-7)
  log_ratio = lambda w: c.log_normaliser + kappa * w + vmf.log_sphere_area(dim)
  np.testing.assert_allclose(_quad_w(log_ratio, kappa, dim), c.kl, rtol=1e-6)


def test_log_prob_of_many_points_in_one_jitted_call():
  """Against numpy: a fused broadcast product and reduction over more than 32,768
  outputs is miscomputed by XLA on CPU (JAX 0.10.2) unless written as a contraction."""
  q = vmf.VonMisesFisher(loc=_unit(2, rows=5), kappa=10.0)
  z = vmf.UniformSphere.sample(jax.random.key(8), (16_384, 5, 2))
  want = q.constants.log_normaliser + 10.0 * np.einsum(
      "bd,nbd->nb", np.asarray(q.loc, np.float64), np.asarray(z, np.float64))
  np.testing.assert_allclose(jax.jit(lambda q, z: q.log_prob(z))(q, z), want, rtol=1e-5,
                             atol=1e-5)


def test_sphere_areas():
  np.testing.assert_allclose([vmf.log_sphere_area(d) for d in (2, 3, 4)],
                             np.log([2 * np.pi, 4 * np.pi, 2 * np.pi**2]))
  z = vmf.UniformSphere.sample(jax.random.key(0), (1000, 5))
  np.testing.assert_allclose(jnp.linalg.norm(z, axis=-1), 1.0, atol=1e-5)
  np.testing.assert_allclose(vmf.UniformSphere.log_prob(z), -vmf.log_sphere_area(5),
                             rtol=1e-6)


def test_kl_and_entropy_against_monte_carlo_with_own_samples():
  q = vmf.VonMisesFisher(loc=_unit(16), kappa=40.0)
  z = q.sample(jax.random.key(2), 20_000)
  log_q = q.log_prob(z)
  key = jax.random.key(3)
  np.testing.assert_allclose(q.kl(key), jnp.mean(log_q - q.prior.log_prob(z), 0), rtol=5e-3)
  np.testing.assert_allclose(q.entropy(key), -jnp.mean(log_q, 0), rtol=5e-3)


def test_householder_is_a_reflection_taking_e1_to_mu():
  mu = _unit(6, seed=4, rows=1)
  h = jax.jacfwd(lambda x: vmf.householder(x[None], mu)[0])(jnp.zeros(6))
  np.testing.assert_allclose(h @ h.T, np.eye(6), atol=1e-6)
  np.testing.assert_allclose(h[:, 0], mu[0], atol=1e-6)
  e1 = jnp.eye(6)[0]
  np.testing.assert_allclose(vmf.householder(e1[None], e1[None]), e1[None])  # mu = e_1


def test_reparameterised_gradient_of_the_direction():
  """d/dmu E[a^T z] = A_d(kappa) a, on the sphere's tangent space at mu."""
  dim, kappa, n = 5, 10.0, 50_000
  mu = _unit(dim, seed=5, rows=1)
  a = jnp.array([0.3, -1.0, 0.5, 2.0, 0.1])
  objective = lambda loc: jnp.mean(vmf.VonMisesFisher(loc=loc, kappa=kappa).sample(
      jax.random.key(6), n) @ a)
  grad = jax.grad(objective)(mu)[0]
  tangent = jnp.eye(dim) - jnp.outer(mu[0], mu[0])
  want = vmf.constants(kappa, dim).mean_length * tangent @ a
  np.testing.assert_allclose(tangent @ grad, want, atol=0.02)


@pytest.mark.parametrize("changes, message", [
    (dict(bn_gamma=0.5), "config.model.bn_gamma does not apply to the vmf posterior"),
    (dict(latent_dim=1), "needs config.model.latent_dim >= 2"),
    (dict(vmf_kappa=0.0), "config.model.vmf_kappa=0.0 must be positive"),
])
def test_settings_that_do_not_apply_are_refused(changes, message):
  config = ModelConfig(vocab_size=2, posterior="vmf", **{"latent_dim": 4, **changes})
  with pytest.raises(CvaeError, match=message):
    vmf.VMFPosterior.from_config(config)
