"""Evaluation of a split: bounds on -log p(x), KL, MI, active units, posterior terms.

Every sentence of the split is counted exactly once (padding rows weigh 0).
Samples z and their densities come from the posterior's own `sample` and exact
`log_prob` (for the paper's copula, its factorised marginals, which the decoder
was trained on), so the ELBO and the importance-weighted estimate are valid
bounds on -log p(x) for every posterior.
"""

from __future__ import annotations

import math
import sys
from typing import Optional

import jax
import jax.numpy as jnp
from jax.experimental import multihost_utils
import ml_collections
import numpy as np
from tqdm import tqdm

from cvae_jax import ctrl_c, data, estimators, parallel
from cvae_jax import metrics as metrics_lib
from cvae_jax.eval_progress import Progress
from cvae_jax.models import TextVAE
from cvae_jax.pacing import Paced


def samples_per_chunk(num_samples: int, rows: int, length: int, max_tokens: int) -> int:
  """The largest divisor of num_samples with samples * rows * length <= max_tokens (>= 1)."""
  fits = [d for d in range(1, num_samples + 1)
          if num_samples % d == 0 and d * rows * length <= max_tokens]
  return max(fits, default=1)


def batch_metrics(model: TextVAE, variables: dict, batch: dict, key: jax.Array,
                  iw_samples: int, chunk: int) -> tuple[dict, dict]:
  """Per-batch sums and per-row posteriors.

  Args:
    batch: `tokens` [b, T] int32, `lengths` [b] int32, `weights` [b] float32.
    key: this batch's randomness.
    iw_samples: K for the importance-weighted estimate (0: none).
    chunk: samples decoded together (divides K).

  Returns:
    sums of `rec`, `kl`, the posterior's objective terms, `iw_nll` (when
    K > 0), `mi` (batch-aggregate MI times the batch's sentences), `sentences`,
    `tokens`; and rows {`q`: the posterior (a pytree of [b, ...] leaves),
    `z`: [b, latent] one sample, `neg_entropy`: [b]}.
  """
  tokens, lengths = batch["tokens"], batch["lengths"]
  terms_key, iw_key = jax.random.split(key)
  terms = model.apply(variables, tokens, lengths, rngs={"latent": terms_key})
  sums = metrics_lib.weighted_sums(terms, batch)
  if not model.config.has_latent:
    if iw_samples:
      sums["iw_nll"] = sums["rec"]
    return sums, {}
  q = model.apply(variables, tokens, lengths, method=TextVAE.encode)
  z = q.sample(terms_key)
  if iw_samples:
    sums["iw_nll"] = -jnp.sum(batch["weights"] * _iw_log_px(
        model, variables, batch, q, iw_key, iw_samples, chunk))
  neg_entropy = -q.entropy(jax.random.fold_in(key, 1))
  sums["mi"] = sums["sentences"] * estimators.mutual_information(
      q, z, neg_entropy, batch["weights"])
  return sums, {"q": q, "z": z, "neg_entropy": neg_entropy}


def _iw_log_px(model, variables, batch, q, key, num_samples, chunk):
  """log p(x) ~ logsumexp_k log w_k - log K, decoding `chunk` samples at a time: [b]."""
  tokens, lengths = batch["tokens"], batch["lengths"]
  b = tokens.shape[0]

  def body(running, key_c):
    z = q.sample(key_c, chunk)  # [chunk, b, latent]
    log_px = model.apply(variables, tokens, lengths, z, method=TextVAE.log_likelihood)
    log_w = estimators.iw_log_weights(log_px, z, q)
    return jnp.logaddexp(running, jax.nn.logsumexp(log_w, axis=0)), None

  keys = jax.random.split(key, num_samples // chunk)
  total, _ = jax.lax.scan(body, jnp.full((b,), -jnp.inf), keys)
  return total - math.log(num_samples)


class Evaluator:
  """Evaluates a train state on a split; the jitted step is built once."""

  def __init__(self, model: TextVAE, mesh, config: ml_collections.ConfigDict,
               key: jax.Array):
    self.model, self.mesh, self.config, self.key = model, mesh, config, key
    self._steps = {}

  def jitted_step(self, iw_samples: int, chunk: int):
    """The jitted `batch_metrics` for (K, chunk), built once."""
    if (iw_samples, chunk) not in self._steps:
      rep = parallel.replicated(self.mesh)
      rows = parallel.batch_sharding(self.mesh)
      jitted = jax.jit(batch_metrics, static_argnums=(0, 4, 5),  # equal models share traces
                       in_shardings=(rep, rows, rep), out_shardings=(rep, rows))
      self._steps[iw_samples, chunk] = (
          lambda variables, batch, key: jitted(self.model, variables, batch, key, iw_samples,
                                               chunk))
    return self._steps[iw_samples, chunk]

  def __call__(self, variables: dict, split: data.Split, iw_samples: int = 0,
               progress: Optional[Progress] = None) -> dict:
    """Metrics of the model `variables` (params, batch_stats) on every sentence of `split`.

    With `progress` (one process only) the batches done are saved as it goes,
    and an evaluation that stopped resumes after the last batch saved.
    """
    d, e = self.config.data, self.config.eval
    batches = data.eval_batches(split, batch_size=d.eval_batch_size,
                                bucket_lengths=d.bucket_lengths,
                                process_index=jax.process_index(),
                                process_count=jax.process_count())
    num_batches = _num_eval_batches(split, d)
    done, total, saved_rows = progress.load() if progress else (0, None, [])
    if done:
      tqdm.write(f"resuming the evaluation of {split.name} after batch {done} of "
                 f"{num_batches} ({progress.path})", file=sys.stderr)
    rows, paced = [], Paced()
    for i, batch in enumerate(tqdm(batches, total=num_batches, desc=f"eval {split.name}",
                                   leave=False, disable=jax.process_index() != 0)):
      ctrl_c.check()
      chunk = samples_per_chunk(iw_samples, d.eval_batch_size,
                                batch["tokens"].shape[1], e.iw_chunk_tokens)
      inputs = parallel.to_global({k: batch[k] for k in ("tokens", "lengths", "weights")},
                                  self.mesh)
      step = self.jitted_step(iw_samples, chunk)
      if i < done:
        if i == 0 and saved_rows:  # the rows' structure, from the step's output
          structure = jax.tree.structure(jax.eval_shape(step, variables, inputs, self.key)[1])
          rows.append(jax.tree.unflatten(structure, saved_rows))
        continue
      sums, row = step(variables, inputs, jax.random.fold_in(self.key, i))
      total = sums if total is None else metrics_lib.add(total, sums)
      paced(total)
      if row:
        rows.append(jax.tree.map(lambda x: _gather_rows(x, inputs["weights"]), row))
      if progress:
        progress.save(i + 1, total, rows)
    out = metrics_lib.summarize(total)
    out.update(self._split_diagnostics(rows, out))
    if iw_samples:
      out["ppl_iw"] = math.exp(out["iw_nll"] * out["sentences"] / out["tokens"])
      out["iw_samples"] = iw_samples
    if progress:
      progress.remove()
    return out

  def _split_diagnostics(self, rows: list[dict], out: dict) -> dict:
    """Split-aggregate MI (Li et al. 2019) and active units from all rows."""
    if not rows:
      return {"mi": 0.0, "mi_split": 0.0, "active_units": 0}
    rows = jax.tree.map(lambda *parts: jnp.concatenate(parts), *rows)
    ones = jnp.ones(rows["z"].shape[0], jnp.float32)
    mi_split = estimators.mutual_information(rows["q"], rows["z"], rows["neg_entropy"], ones)
    au, _ = estimators.active_units(rows["q"].mean(), self.config.eval.au_threshold)
    return {"mi_split": float(mi_split), "active_units": int(au)}


def _gather_rows(x: jax.Array, weights: jax.Array) -> np.ndarray:
  """The real rows of a sharded per-row array, on the host."""
  x = np.asarray(multihost_utils.process_allgather(x, tiled=True))
  w = np.asarray(multihost_utils.process_allgather(weights, tiled=True))
  return x[w > 0]


def _num_eval_batches(split: data.Split, d: ml_collections.ConfigDict) -> int:
  lengths = np.asarray(split.lengths)
  buckets = np.searchsorted(np.asarray(d.bucket_lengths), lengths)
  counts = np.bincount(buckets)
  return int(np.sum(-(-counts // d.eval_batch_size)))
