"""The training objective and its KL-annealing schedule."""

import jax
import jax.numpy as jnp

from cvae_jax.models.posteriors import EXTRA_LOSS


def kl_weight(step: jax.Array, start: int, num_steps: int) -> jax.Array:
  """beta_t: 0 before `start`, then linear to 1 over `num_steps` steps.

  num_steps = 0 means no annealing after `start` (a step to 1).
  """
  step = jnp.asarray(step, jnp.float32)
  if num_steps <= 0:
    return (step >= start).astype(jnp.float32)
  return jnp.clip((step - start) / num_steps, 0.0, 1.0)


def sentence_loss(terms: dict[str, jax.Array], beta: jax.Array) -> jax.Array:
  """rec + beta KL + the posterior's extra loss term (if any), per sentence.

  Args:
    terms: the model's per-sentence terms `rec`, `kl` and, from posteriors
      that have one, `EXTRA_LOSS` (already weighted), each [batch].
    beta: scalar KL weight.

  Returns:
    [batch] float32.
  """
  return terms["rec"] + beta * terms["kl"] + terms.get(EXTRA_LOSS, 0.0)
