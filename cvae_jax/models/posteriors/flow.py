"""A Gaussian posterior followed by K planar flows (Rezende & Mohamed 2015): the VAE-NF.

z_0 ~ N(loc, diag(sigma^2)) from the Gaussian posterior's heads (BN-VAE
included), then for k = 1..K

  z_k = z_{k-1} + u_k tanh(w_k^T z_{k-1} + b_k),

with each sentence's u_k, w_k [latent] and b_k from linear heads of hc
(amortised, as in Rezende & Mohamed). Invertibility: the head's u is replaced by
u + (m(w^T u) - w^T u) w / |w|^2 with m(x) = 0.99 (softplus(x + log(e - 1)) - 1),
so that w^T u_k = m(.) > -0.99. (Rezende & Mohamed's m is softplus(x) - 1. The
shift makes m(0) = 0, so the u heads, which start at zero, start every step as
the identity and the posterior as the Gaussian; the factor 0.99 keeps every
step's Jacobian determinant above 0.01, away from a float32 singularity.)

  log q(z_K|x) = log N(z_0; loc, sigma^2)
                 - sum_k log(1 + w_k^T u_k (1 - tanh^2(w_k^T z_{k-1} + b_k))).

`log_prob` at any z inverts the steps: a = w^T z_{k-1} solves
a + (w^T u) tanh(a + b) = w^T z_k, a strictly increasing function of a whose root
lies within |w^T u| of w^T z_k, found by bisection to float precision (a last
Newton step gives the implicit-function gradient). KL and entropy are
one-sample Monte Carlo estimates at a fresh sample, whose log q comes from the
forward pass.
"""

import math
from typing import Optional

import flax.linen as nn
from flax import struct
import jax
import jax.numpy as jnp

from cvae_jax.errors import CvaeError
from cvae_jax.models.posteriors.base import MonteCarloKL, StandardNormal, row_dot
from cvae_jax.models.posteriors.gaussian import DiagonalGaussian, GaussianPosterior

_SHIFT = math.log(math.e - 1.0)  # softplus(_SHIFT) = 1
_MARGIN = 0.99  # w^T u > -_MARGIN
BISECTIONS = 60  # halvings of an interval of width 2 |w^T u|: below float64 precision
MEAN_SAMPLES = 512  # base draws shared by every row for `mean`


def constrain(u: jax.Array, w: jax.Array) -> jax.Array:
  """u + (m(w^T u) - w^T u) w / |w|^2, m(x) = 0.99 (softplus(x + c) - softplus(c)):
  [..., d], with c = log(e - 1) (softplus(c) = 1).

  The result u' has w^T u' = m(w^T u) > -0.99 (an invertible step) and u' = 0
  when u = 0 (m(0) is exactly 0 in floating point too).
  """
  wu = jnp.sum(w * u, axis=-1, keepdims=True)
  m = _MARGIN * (jax.nn.softplus(wu + _SHIFT) - jax.nn.softplus(jnp.asarray(_SHIFT, wu.dtype)))
  return u + (m - wu) * w / (jnp.sum(jnp.square(w), axis=-1, keepdims=True) + 1e-12)


@struct.dataclass
class PlanarFlow(MonteCarloKL):
  """K planar steps after a diagonal Gaussian.

  base: the Gaussian of z_0; u, w: [batch, K, latent] (u constrained); b: [batch, K].
  """

  base: DiagonalGaussian
  u: jax.Array
  w: jax.Array
  b: jax.Array
  prior = StandardNormal

  def _step(self, k: int):
    return self.u[:, k], self.w[:, k], self.b[:, k]

  def forward(self, z0: jax.Array) -> tuple[jax.Array, jax.Array]:
    """z_K and sum_k log|det dz_k/dz_{k-1}|.

    z0: [..., batch, latent] -> ([..., batch, latent], [..., batch]).
    """
    z, log_det = z0, 0.0
    for k in range(self.u.shape[1]):
      u, w, b = self._step(k)
      h = jnp.tanh(row_dot(w, z) + b)
      log_det = log_det + jnp.log1p(row_dot(w, u) * (1.0 - jnp.square(h)))
      z = z + u * h[..., None]
    return z, log_det

  def inverse(self, z: jax.Array) -> tuple[jax.Array, jax.Array]:
    """z_0 and sum_k log|det dz_k/dz_{k-1}| at the z_k that lead to z = z_K."""
    log_det = 0.0
    for k in reversed(range(self.u.shape[1])):
      u, w, b = self._step(k)
      wu, target = row_dot(w, u), row_dot(w, z)
      a = _solve(wu, b, target)
      h = jnp.tanh(a + b)
      log_det = log_det + jnp.log1p(wu * (1.0 - jnp.square(h)))
      z = z - u * h[..., None]
    return z, log_det

  def sample(self, key: jax.Array, num_samples: Optional[int] = None) -> jax.Array:
    """[batch, latent], or [num_samples, batch, latent]."""
    return self.forward(self.base.sample(key, num_samples))[0]

  def sample_and_log_prob(self, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One z per row with its log q(z|x) from the forward pass: [batch, latent], [batch]."""
    z0 = self.base.sample(key)
    z, log_det = self.forward(z0)
    return z, self.base.log_prob(z0) - log_det

  def log_prob(self, z: jax.Array) -> jax.Array:
    """Exact log q(z|x) by inverting the flow: z [..., batch, latent] -> [..., batch]."""
    z0, log_det = self.inverse(z)
    return self.base.log_prob(z0) - log_det

  def mean(self) -> jax.Array:
    """E_q[z|x] = loc + E[z_K - z_0], the flow's displacement averaged over
    MEAN_SAMPLES base draws that every row shares (deterministic; equal
    posteriors get equal means, and the identity flow gives loc exactly):
    [batch, latent]."""
    z0 = self.base.sample(jax.random.key(0), MEAN_SAMPLES)
    return self.base.loc + jnp.mean(self.forward(z0)[0] - z0, axis=0)

  def objective_terms(self, z: jax.Array, key: jax.Array) -> dict[str, jax.Array]:
    """None: the plain ELBO."""
    del z, key
    return {}


def _solve(wu: jax.Array, b: jax.Array, target: jax.Array) -> jax.Array:
  """The root a of g(a) = a + wu tanh(a + b) - target (wu > -1), elementwise."""
  g = lambda a: a + wu * jnp.tanh(a + b) - target
  radius = jnp.abs(wu)

  def halve(_, bounds):
    lo, hi = bounds
    mid = 0.5 * (lo + hi)
    above = g(mid) > 0
    return jnp.where(above, lo, mid), jnp.where(above, mid, hi)

  lo, hi = jax.lax.fori_loop(0, BISECTIONS, halve, (target - radius, target + radius))
  a = jax.lax.stop_gradient(0.5 * (lo + hi))
  return a - g(a) / (1.0 + wu * (1.0 - jnp.square(jnp.tanh(a + b))))  # Newton


class FlowPosterior(nn.Module):
  """The Gaussian posterior's heads, then `steps` planar flows from linear heads of hc."""

  latent_dim: int
  steps: int
  bn_gamma: float = 0.0
  prior = StandardNormal

  @classmethod
  def from_config(cls, config) -> "FlowPosterior":
    """From the model's static config (a `ModelConfig`)."""
    if config.flow_steps < 1:
      raise CvaeError(f"config.model.flow_steps={config.flow_steps} must be at least 1")
    return cls(config.latent_dim, config.flow_steps, config.bn_gamma)

  @nn.compact
  def __call__(self, hc: jax.Array, train: bool) -> PlanarFlow:
    """hc: [batch, 2 * hidden] final encoder state -> q(z|x)."""
    base = GaussianPosterior(self.latent_dim, self.bn_gamma, name="base")(hc, train)
    shape = (hc.shape[0], self.steps, self.latent_dim)
    u = nn.Dense(self.steps * self.latent_dim, kernel_init=nn.initializers.zeros,
                 name="u_dense")(hc).reshape(shape)
    w = nn.Dense(self.steps * self.latent_dim, name="w_dense")(hc).reshape(shape)
    b = nn.Dense(self.steps, name="b_dense")(hc)
    return PlanarFlow(base=base, u=constrain(u, w), w=w, b=b)
