"""The training objective: KL weight schedules (monotonic, cyclical) and free bits."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import ml_collections

from cvae_jax.models.posteriors import EXTRA_LOSS


def kl_weight(step: jax.Array, start: int, num_steps: int) -> jax.Array:
  """beta_t: 0 before `start`, then linear to 1 over `num_steps` steps.

  num_steps = 0 means no annealing after `start` (a step to 1).
  """
  step = jnp.asarray(step, jnp.float32)
  if num_steps <= 0:
    return (step >= start).astype(jnp.float32)
  return jnp.clip((step - start) / num_steps, 0.0, 1.0)


def cyclical_kl_weight(step: jax.Array, start: int, total_steps: int, cycles: int,
                       rise: float) -> jax.Array:
  """beta_t of cyclical annealing (Fu et al. 2019): 0 before `start`, then
  `cycles` cycles of P = ceil((total_steps - start) / cycles) steps, in each of
  which beta rises linearly from 0 over the first `rise * P` steps and then
  stays 1 (beta = min(1, ((t - start) mod P) / (rise P))). With
  total_steps <= start no cycle fits and beta stays 0.
  """
  period = max(1, math.ceil((total_steps - start) / cycles))
  step = jnp.asarray(step, jnp.float32)
  phase = jnp.mod(step - start, period) / (rise * period)
  return jnp.where(step >= start, jnp.minimum(phase, 1.0), 0.0)


def free_bits_kl(kl_groups: jax.Array, weights: jax.Array, target: float) -> jax.Array:
  """The KL term with free bits, per sentence: [batch] float32.

  A group g (a latent dimension, or the whole latent for a posterior whose KL
  does not split) whose batch-averaged KL m_g is below its target t_g is not
  penalised: sentence b contributes sum_g (KL_bg if m_g >= t_g else t_g), so
  the batch mean is sum_g max(t_g, m_g) (Kingma et al. 2016) and a group under
  its target has no gradient (Li et al. 2019).

  Args:
    kl_groups: [batch, groups] float32, KL(q || p) split into groups whose sum
      is the sentence's KL.
    weights: [batch] float32 row weights (0 for padding rows).
    target: nats per group (0: no free bits).
  """
  if target <= 0:
    return jnp.sum(kl_groups, axis=-1)
  mean = jnp.sum(kl_groups * weights[:, None], axis=0) / jnp.sum(weights)
  return jnp.sum(jnp.where(mean >= target, kl_groups, target), axis=-1)


@dataclasses.dataclass(frozen=True)
class Objective:
  """The static part of the loss: the KL schedule and free bits (a posterior's
  own terms and weights, such as the copula's lambda, live in its module)."""

  kl_anneal_start: int = 0  # beta is 0 before this step (pretraining steps included)
  kl_anneal_steps: int = 0  # monotonic schedule: steps from beta 0 to 1
  kl_cycles: int = 0  # > 0: cyclical schedule over [kl_anneal_start, total_steps)
  kl_cycle_rise: float = 0.5  # fraction of each cycle in which beta rises
  total_steps: int = 0  # the run's length (for the cyclical schedule)
  free_bits: float = 0.0  # target nats per latent dimension (0: none)
  latent_dim: int = 0  # dimensions of z (free bits' target of a whole-latent group)

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict, total_steps: int) -> Objective:
    """`train.kl_anneal_start` counts from the end of `train.ae_pretrain_steps`."""
    t = config.train
    return cls(kl_anneal_start=t.ae_pretrain_steps + t.kl_anneal_start,
               kl_anneal_steps=t.kl_anneal_steps,
               kl_cycles=t.kl_cycles, kl_cycle_rise=t.kl_cycle_rise, total_steps=total_steps,
               free_bits=t.free_bits, latent_dim=config.model.latent_dim)

  def kl_weight(self, step: jax.Array) -> jax.Array:
    """beta at `step` (scalar float32)."""
    if self.kl_cycles > 0:
      return cyclical_kl_weight(step, self.kl_anneal_start, self.total_steps,
                                self.kl_cycles, self.kl_cycle_rise)
    return kl_weight(step, self.kl_anneal_start, self.kl_anneal_steps)

  def sentence_loss(self, terms: dict[str, jax.Array], kl_groups: jax.Array,
                    weights: jax.Array, beta: jax.Array) -> jax.Array:
    """rec + beta KL' + the posterior's extra loss term (if any), per sentence.

    KL' is the KL with free bits (`free_bits_kl`); a group of d latent
    dimensions has the target d * free_bits.

    Args:
      terms: the model's per-sentence terms `rec` and, from posteriors that
        have one, `EXTRA_LOSS` (already weighted), each [batch].
      kl_groups: [batch, groups] the KL split into groups (`TextVAE.loss_terms`).
      weights: [batch] row weights.
      beta: scalar KL weight.

    Returns:
      [batch] float32.
    """
    target = self.free_bits * self.latent_dim / max(kl_groups.shape[-1], 1)
    kl = free_bits_kl(kl_groups, weights, target)
    return terms["rec"] + beta * kl + terms.get(EXTRA_LOSS, 0.0)
