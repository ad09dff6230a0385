"""What every posterior q(z|x) provides, so that shared code never asks which one it is.

A posterior is a Flax module `__call__(hc, train) -> distribution`, built by
`from_config(config)` from the static model config, where `hc: [batch, 2 *
hidden]` is the encoder's final state. The distribution is a pytree (a
`flax.struct.dataclass`) whose every array leaf has the batch rows as its
leading axis, so rows can be sharded, gathered and concatenated like arrays,
and it implements `Distribution` below. Shapes: `z: [..., batch, latent]
float32`, where the leading `...` (e.g. importance samples) and a batch axis of
size 1 broadcast against the rows.
"""

import math
from typing import ClassVar, Optional, Protocol

import jax
import jax.numpy as jnp

# The key of `objective_terms` whose value, already weighted, is added to each
# sentence's loss; every other term is only reported.
EXTRA_LOSS = "extra_loss"


def log_standard_normal(z: jax.Array) -> jax.Array:
  """log N(z; 0, I): [..., latent] -> [...]."""
  return jnp.sum(-0.5 * (math.log(2.0 * math.pi) + jnp.square(z)), axis=-1)


def row_dot(rows: jax.Array, z: jax.Array) -> jax.Array:
  """Each row's dot product with z: rows [batch, d], z [..., batch, d] -> [..., batch].

  A contraction, not `jnp.sum(rows * z, -1)`: XLA on CPU (JAX 0.10.2)
  miscomputes that broadcast product's reduction when a consumer is fused with
  it and the output exceeds 32,768 elements (e.g. z [16384, 5, 2]).
  """
  return jnp.einsum("bd,...bd->...b", rows, z)


class Prior(Protocol):
  """p(z): a density for importance weights and Monte Carlo KLs, and a sampler
  for generation."""

  def log_prob(self, z: jax.Array) -> jax.Array:
    """log p(z): [..., latent] -> [...]."""

  def sample(self, key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """z ~ p(z) of `shape` (..., latent) float32."""


class StandardNormal:
  """The prior N(0, I) of every posterior but the von Mises-Fisher."""

  log_prob = staticmethod(log_standard_normal)

  @staticmethod
  def sample(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    return jax.random.normal(key, shape, jnp.float32)


class Distribution(Protocol):
  """q(z|x) for a batch of rows, with the prior p(z) it is paired with.

  The posterior module that returns it has the same `prior` (for generation).
  """

  prior: ClassVar[Prior]

  def sample(self, key: jax.Array, num_samples: Optional[int] = None) -> jax.Array:
    """z ~ q(z|x), reparameterised: [batch, latent] or [num_samples, batch, latent]."""

  def log_prob(self, z: jax.Array) -> jax.Array:
    """Exact log q(z|x) of the z that `sample` draws: [..., batch, latent] -> [..., batch]."""

  def kl(self, key: jax.Array) -> jax.Array:
    """KL(q(z|x) || p(z)) per row, analytic or a Monte Carlo estimate: [batch]."""

  def kl_groups(self, key: jax.Array) -> jax.Array:
    """The KL split into groups that free bits targets, [batch, groups], summing
    to `kl`: one per dimension for factorised posteriors, else one group
    (`WholeKL`)."""

  def entropy(self, key: jax.Array) -> jax.Array:
    """H(q(z|x)) = -E_q[log q(z|x)] per row, analytic or Monte Carlo: [batch]."""

  def mean(self) -> jax.Array:
    """E_q[z|x] (for active units and reconstruction): [batch, latent]."""

  def objective_terms(self, z: jax.Array, key: jax.Array) -> dict[str, jax.Array]:
    """Extra per-row terms of the objective at the decoder's z, each [batch]; empty
    for most posteriors. `EXTRA_LOSS`, when present, is added to the loss."""


class WholeKL:
  """`kl_groups` for a posterior whose KL does not split by dimension: one group."""

  def kl_groups(self, key: jax.Array) -> jax.Array:
    return self.kl(key)[:, None]


class MonteCarloKL(WholeKL):
  """`kl` and `entropy` of a posterior without closed forms, from one z ~ q(z|x)
  and its exact log q (its `sample_and_log_prob(key)`: z [batch, latent], log q
  [batch]): unbiased one-sample estimates, [batch]."""

  def kl(self, key: jax.Array) -> jax.Array:
    """log q(z|x) - log p(z) at one z ~ q(z|x)."""
    z, log_q = self.sample_and_log_prob(key)
    return log_q - self.prior.log_prob(z)

  def entropy(self, key: jax.Array) -> jax.Array:
    """-log q(z|x) at one z ~ q(z|x)."""
    return -self.sample_and_log_prob(key)[1]
