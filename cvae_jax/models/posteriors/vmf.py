"""von Mises-Fisher posterior on the unit sphere, fixed concentration (Xu & Durrett 2018).

q(z|x) = vMF(mu(x), kappa) on S^{d-1} (d = latent_dim), mu = Linear(hc) / |Linear(hc)|,
kappa a fixed config value; the prior is uniform on S^{d-1}. Densities are with
respect to the sphere's surface measure:

  log q(z|x) = log C_d(kappa) + kappa mu^T z,
  log C_d(kappa) = (d/2 - 1) log kappa - (d/2) log 2 pi - log I_{d/2-1}(kappa),
  KL(q || U) = kappa A_d(kappa) + log C_d(kappa) + log |S^{d-1}|,
  A_d(kappa) = I_{d/2}(kappa) / I_{d/2-1}(kappa),  |S^{d-1}| = 2 pi^{d/2} / Gamma(d/2),

so the KL depends on kappa and d alone (it is a constant of the run). These
constants are computed once in float64 with scipy's Bessel functions.

Sampling (Wood 1994): w = mu^T z by rejection (a bounded `lax.while_loop`),
v uniform on S^{d-2}, and z = H (w, sqrt(1 - w^2) v), where the Householder
reflection H takes e_1 to mu. Neither w nor v depends on mu, so the gradient
reaches mu through H.
"""

import dataclasses
import functools
import math
from typing import Optional

import flax.linen as nn
from flax import struct
import jax
import jax.numpy as jnp
from scipy import special

from cvae_jax.errors import CvaeError
from cvae_jax.models.posteriors.base import WholeKL, row_dot

# Rounds of proposals before Wood's sampler gives up. Its acceptance rate,
# measured for d = 2..128 and kappa = 0.1..2000, is at least 0.65 (the least
# at d = 2 and large kappa), so a draw is still unaccepted after 64 rounds
# with probability below 0.35^64 = 1e-29; the last proposal is then kept.
MAX_ROUNDS = 64


def log_sphere_area(dim: int) -> float:
  """log |S^{dim-1}| = log(2 pi^{dim/2} / Gamma(dim/2))."""
  return math.log(2.0) + 0.5 * dim * math.log(math.pi) - math.lgamma(0.5 * dim)


@dataclasses.dataclass(frozen=True)
class Constants:
  """The float64 constants of vMF(., kappa) on S^{dim-1}."""

  log_normaliser: float  # log C_d(kappa)
  mean_length: float  # A_d(kappa) = E_q[mu^T z]
  kl: float  # KL(q || uniform)


@functools.lru_cache(maxsize=None)
def constants(kappa: float, dim: int) -> Constants:
  """log C_d, A_d and the KL of vMF(., kappa) on S^{dim-1}, in float64."""
  nu = 0.5 * dim - 1.0
  log_bessel = math.log(special.ive(nu, kappa)) + kappa  # log I_nu (ive = I_nu e^-kappa)
  log_c = nu * math.log(kappa) - 0.5 * dim * math.log(2.0 * math.pi) - log_bessel
  mean_length = float(special.ive(nu + 1.0, kappa) / special.ive(nu, kappa))
  return Constants(log_c, mean_length, kappa * mean_length + log_c + log_sphere_area(dim))


class UniformSphere:
  """The prior of the vMF posterior: uniform on the unit sphere S^{d-1}."""

  @staticmethod
  def log_prob(z: jax.Array) -> jax.Array:
    """-log |S^{d-1}| for every z: [..., d] -> [...]."""
    return jnp.full(z.shape[:-1], -log_sphere_area(z.shape[-1]), jnp.float32)

  @staticmethod
  def sample(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    return _normalise(jax.random.normal(key, shape, jnp.float32))


def _normalise(x: jax.Array) -> jax.Array:
  return x * jax.lax.rsqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True))


def sample_cosine(key: jax.Array, shape: tuple[int, ...], kappa, dim: int
                  ) -> tuple[jax.Array, jax.Array]:
  """w = mu^T z for z ~ vMF(mu, kappa) on S^{dim-1}, by Wood's (1994) rejection sampler.

  Every round proposes w for all draws (w = (1 - (1 + b) e) / (1 - (1 - b) e),
  e ~ Beta((d-1)/2, (d-1)/2)) and keeps it where no earlier one was accepted and
  kappa (w - x0) + (d - 1) log((1 - x0 w) / (1 - x0^2)) >= log u, u ~ U(0, 1);
  the loop stops when every draw is accepted or after MAX_ROUNDS rounds. The
  Beta variate is |g|^2 / (|g|^2 + |h|^2) for g, h ~ N(0, I_{d-1}) (a ratio of
  chi-squares): exact, and without `jax.random.beta`'s own rejection loops.

  Args:
    key: the randomness.
    shape: of the draws.
    kappa: the concentration, a float or an array that broadcasts to `shape`.
    dim: d, the sphere being S^{d-1}.

  Returns:
    w: `shape` float32 in [-1, 1]; and the rounds run (int32 scalar).
  """
  m = dim - 1.0
  kappa = jnp.asarray(kappa, jnp.float32)
  b = m / (2.0 * kappa + jnp.sqrt(4.0 * jnp.square(kappa) + m**2))
  x0 = (1.0 - b) / (1.0 + b)
  log_1m_x0sq = jnp.log(4.0 * b) - 2.0 * jnp.log1p(b)  # log(1 - x0^2)

  def body(state):
    rounds, w, done = state
    e_key, u_key = jax.random.split(jax.random.fold_in(key, rounds))
    g = jnp.sum(jnp.square(jax.random.normal(e_key, (2, *shape, dim - 1))), axis=-1)
    e = g[0] / (g[0] + g[1])
    proposal = (1.0 - (1.0 + b) * e) / (1.0 - (1.0 - b) * e)
    log_u = jnp.log(jax.random.uniform(u_key, shape, jnp.float32))
    accept = (kappa * (proposal - x0) + m * (jnp.log1p(-x0 * proposal) - log_1m_x0sq)
              >= log_u)
    return rounds + 1, jnp.where(done, w, proposal), done | accept

  def cond(state):
    rounds, _, done = state
    return (rounds < MAX_ROUNDS) & ~jnp.all(done)

  init = (jnp.int32(0), jnp.zeros(shape, jnp.float32), jnp.zeros(shape, bool))
  rounds, w, _ = jax.lax.while_loop(cond, body, init)
  return jnp.clip(w, -1.0, 1.0), rounds


def householder(x: jax.Array, mu: jax.Array) -> jax.Array:
  """H x with H = I - 2 u u^T / u^T u, u = e_1 - mu (so H e_1 = mu): [..., d]."""
  u = jnp.zeros_like(mu).at[..., 0].set(1.0) - mu
  uu = jnp.sum(jnp.square(u), axis=-1, keepdims=True)
  at_e1 = uu < 1e-12  # mu = e_1: H = I (the where keeps the gradient finite)
  scale = 2.0 * row_dot(u, x)[..., None] / jnp.where(at_e1, 1.0, uu)
  return jnp.where(at_e1, x, x - scale * u)


@struct.dataclass
class VonMisesFisher(WholeKL):
  """vMF(loc, kappa) for a batch; `loc`: [batch, d] float32 unit vectors."""

  loc: jax.Array
  kappa: float = struct.field(pytree_node=False)
  prior = UniformSphere

  @property
  def constants(self) -> Constants:
    return constants(self.kappa, self.loc.shape[-1])

  def sample(self, key: jax.Array, num_samples: Optional[int] = None) -> jax.Array:
    """z on the unit sphere: [batch, d], or [num_samples, batch, d]."""
    shape = self.loc.shape if num_samples is None else (num_samples, *self.loc.shape)
    w_key, v_key = jax.random.split(key)
    w, _ = sample_cosine(w_key, shape[:-1], self.kappa, shape[-1])
    v = UniformSphere.sample(v_key, (*shape[:-1], shape[-1] - 1))
    radius = jnp.sqrt(jnp.maximum((1.0 - w) * (1.0 + w), 0.0))
    x = jnp.concatenate([w[..., None], radius[..., None] * v], axis=-1)
    return householder(x, self.loc)

  def log_prob(self, z: jax.Array) -> jax.Array:
    """log C_d(kappa) + kappa mu^T z: z [..., batch, d] on the sphere -> [..., batch]."""
    return self.constants.log_normaliser + self.kappa * row_dot(self.loc, z)

  def kl(self, key: jax.Array) -> jax.Array:
    """The closed-form KL(q || uniform), the same for every row: [batch]."""
    del key
    return jnp.full(self.loc.shape[:1], self.constants.kl, jnp.float32)

  def entropy(self, key: jax.Array) -> jax.Array:
    """-log C_d(kappa) - kappa A_d(kappa): [batch]."""
    del key
    c = self.constants
    return jnp.full(self.loc.shape[:1], -c.log_normaliser - self.kappa * c.mean_length,
                    jnp.float32)

  def mean(self) -> jax.Array:
    """E_q[z] = A_d(kappa) mu: [batch, d]."""
    return self.constants.mean_length * self.loc

  def objective_terms(self, z: jax.Array, key: jax.Array) -> dict[str, jax.Array]:
    """None: the plain ELBO."""
    del z, key
    return {}


class VMFPosterior(nn.Module):
  """mu = Linear(hc) / |Linear(hc)| with the fixed concentration kappa."""

  latent_dim: int
  kappa: float
  prior = UniformSphere

  @classmethod
  def from_config(cls, config) -> "VMFPosterior":
    """From the model's static config (a `ModelConfig`); refuses what does not apply."""
    if config.latent_dim < 2:
      raise CvaeError(f"the vmf posterior needs config.model.latent_dim >= 2, "
                      f"got {config.latent_dim}")
    if not config.vmf_kappa > 0:
      raise CvaeError(f"config.model.vmf_kappa={config.vmf_kappa} must be positive")
    if config.bn_gamma:
      raise CvaeError("config.model.bn_gamma does not apply to the vmf posterior: "
                      "its mean direction is normalised and its KL is fixed by "
                      "config.model.vmf_kappa; set bn_gamma to 0")
    return cls(config.latent_dim, float(config.vmf_kappa))

  @nn.compact
  def __call__(self, hc: jax.Array, train: bool) -> VonMisesFisher:
    """hc: [batch, 2 * hidden] final encoder state -> q(z|x)."""
    del train
    return VonMisesFisher(loc=_normalise(nn.Dense(self.latent_dim, name="mu_dense")(hc)),
                          kappa=self.kappa)
