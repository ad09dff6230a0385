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

from typing import Optional, Protocol

import jax

# The key of `objective_terms` whose value, already weighted, is added to each
# sentence's loss; every other term is only reported.
EXTRA_LOSS = "extra_loss"


class Distribution(Protocol):
  """q(z|x) for a batch of rows."""

  def sample(self, key: jax.Array, num_samples: Optional[int] = None) -> jax.Array:
    """z ~ q(z|x), reparameterised: [batch, latent] or [num_samples, batch, latent]."""

  def log_prob(self, z: jax.Array) -> jax.Array:
    """Exact log q(z|x) of the z that `sample` draws: [..., batch, latent] -> [..., batch]."""

  def kl(self, key: jax.Array) -> jax.Array:
    """KL(q(z|x) || N(0, I)) per row, analytic or a Monte Carlo estimate: [batch]."""

  def entropy(self, key: jax.Array) -> jax.Array:
    """H(q(z|x)) = -E_q[log q(z|x)] per row, analytic or Monte Carlo: [batch]."""

  def mean(self) -> jax.Array:
    """E_q[z|x] (for active units and reconstruction): [batch, latent]."""

  def objective_terms(self, z: jax.Array, key: jax.Array) -> dict[str, jax.Array]:
    """Extra per-row terms of the objective at the decoder's z, each [batch]; empty
    for most posteriors. `EXTRA_LOSS`, when present, is added to the loss."""
