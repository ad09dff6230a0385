"""Metrics as sums and counts on device, normalised on the host.

Every per-sentence quantity is summed with the batch's row weights (0 for
padding rows), so token-weighted perplexities are exact on ragged batches.
"""

import math
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np


def weighted_sums(terms: Mapping[str, jax.Array], batch: Mapping[str, jax.Array]
                  ) -> dict[str, jax.Array]:
  """Sums of per-sentence terms ([batch] each) plus sentence and token counts.

  Tokens are the predicted ones, `lengths - 1` per sentence (`</s>` counted,
  `<s>` not).
  """
  weights = batch["weights"]
  sums = {name: jnp.sum(value * weights) for name, value in terms.items()}
  sums["sentences"] = jnp.sum(weights)
  sums["tokens"] = jnp.sum((batch["lengths"] - 1) * weights)
  return sums


def add(a: Mapping[str, jax.Array], b: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
  """Element-wise sum of two metric dicts with the same keys, as one program
  (not one per key: a step's programs in flight stay few, cvae_jax/pacing.py)."""
  return _add(dict(a), dict(b))


@jax.jit
def _add(a: dict, b: dict) -> dict:
  return jax.tree.map(jnp.add, a, b)


def summarize(sums: Mapping[str, float]) -> dict[str, float]:
  """Per-sentence means and perplexities from summed metrics.

  nll_elbo = rec + KL is the negative ELBO (an upper bound on -log p(x)).
  nll_paper = rec + KL - log c is the paper's reported "NLL"; it is NOT a
  bound on -log p(x) and is reported only for comparison with the paper. Only
  the paper's copula posterior reports `log_copula`; it is 0 for the others.
  """
  sums = {k: float(np.asarray(v)) for k, v in sums.items()}
  n, tokens = sums["sentences"], sums["tokens"]
  out = {name: value / n for name, value in sums.items()
         if name not in ("sentences", "tokens")}
  log_copula = sums.get("log_copula", 0.0)
  out["log_copula"] = log_copula / n
  out["nll_elbo"] = (sums["rec"] + sums["kl"]) / n
  out["ppl_elbo"] = _ppl(sums["rec"] + sums["kl"], tokens)
  out["nll_paper"] = (sums["rec"] + sums["kl"] - log_copula) / n
  out["ppl_paper"] = _ppl(sums["rec"] + sums["kl"] - log_copula, tokens)
  out["sentences"], out["tokens"] = int(n), int(tokens)
  return out


def _ppl(total_nll: float, tokens: float) -> float:
  exponent = total_nll / tokens
  return math.exp(exponent) if exponent < 700 else math.inf
