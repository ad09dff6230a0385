"""The training objective and its KL-annealing schedule."""

import jax
import jax.numpy as jnp


def kl_weight(step: jax.Array, start: int, num_steps: int) -> jax.Array:
  """beta_t: 0 before `start`, then linear to 1 over `num_steps` steps.

  num_steps = 0 means no annealing after `start` (a step to 1).
  """
  step = jnp.asarray(step, jnp.float32)
  if num_steps <= 0:
    return (step >= start).astype(jnp.float32)
  return jnp.clip((step - start) / num_steps, 0.0, 1.0)


def sentence_loss(terms: dict[str, jax.Array], beta: jax.Array,
                  copula_weight: float) -> jax.Array:
  """rec + beta KL - lambda (log c(q) + sum_i log q(z_i|x)), per sentence.

  Args:
    terms: the model's per-sentence terms `rec`, `kl` and `copula_term`
      (log c(q) + sum_i log q(z_i|x); 0 without a copula), each [batch].
    beta: scalar KL weight.
    copula_weight: lambda.

  Returns:
    [batch] float32.
  """
  return (terms["rec"] + beta * terms["kl"]
          - copula_weight * terms["copula_term"])
