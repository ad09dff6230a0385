"""Throughput of the jitted train and evaluation steps, one record per case.

Cases, each for every requested posterior:
  train_fixed     the train step on fixed-shape batches (all rows full length)
  train_pipeline  the train step fed by the real input pipeline (bucketed data)
  eval_iw         the importance-weighted evaluation step (K = config.eval.iw_samples)
  matmul          a float32 2048^3 jnp.dot, the machine's practical compute ceiling
Cases are timed in interleaved rounds (A B C A B C ...) so that load on a
shared machine hits them alike; compile time is the first call, warm-up calls
are excluded, and the median, min and max rate over the timed calls are
reported. Tokens are predicted tokens (`lengths - 1`: words and `</s>`).
"""

from __future__ import annotations

import dataclasses
import resource
import statistics
import time
from typing import Callable, Optional

import jax
import ml_collections
import numpy as np

from cvae_jax import data, parallel
from cvae_jax.config import model_config
from cvae_jax.evaluate import Evaluator, samples_per_chunk
from cvae_jax.models import TextVAE
from cvae_jax.prefetch import prefetch
from cvae_jax.train import (Objective, create_train_state, jit_train_step, make_optimizer,
                            train_batches)


@dataclasses.dataclass
class Case:
  """One measured thing: `run()` does one step and returns (units done, a result)."""

  name: str
  posterior: str
  unit: str
  run: Callable[[], tuple[float, object]]
  extra: dict = dataclasses.field(default_factory=dict)
  close: Callable[[], None] = lambda: None
  compile_s: float = 0.0
  times: list = dataclasses.field(default_factory=list)
  units: list = dataclasses.field(default_factory=list)


def fixed_batch(batch: int, length: int, vocab_size: int, seed: int = 0) -> dict:
  """Full-length rows `<s> w.. </s>`: tokens [batch, length] int32, lengths, weights."""
  rng = np.random.default_rng(seed)
  tokens = rng.integers(4, vocab_size, (batch, length)).astype(np.int32)
  tokens[:, 0], tokens[:, -1] = data.BOS, data.EOS
  return {"tokens": tokens, "lengths": np.full(batch, length, np.int32),
          "weights": np.ones(batch, np.float32)}


def _train_state(config, mesh, vocab_size, example):
  model = TextVAE(model_config(config, vocab_size))
  return model, jax.jit(create_train_state, static_argnums=(0, 1),
                        out_shardings=parallel.replicated(mesh))(
                            model, make_optimizer(config.train), jax.random.key(0), example)


def _objective(config) -> Objective:
  """The run's objective; throughput does not depend on the length of its KL schedule."""
  return Objective.from_config(config, total_steps=0)


def train_fixed_case(config, mesh, vocab_size: int, length: int) -> Case:
  batch = parallel.to_global(fixed_batch(config.data.batch_size, length, vocab_size), mesh)
  _, state = _train_state(config, mesh, vocab_size, batch)
  step, key, holder = jit_train_step(_objective(config), mesh), jax.random.key(1), [state]
  tokens = config.data.batch_size * (length - 1)

  def run():
    holder[0], sums = step(holder[0], batch, key)
    return tokens, sums
  return Case("train_fixed", config.model.posterior, "tokens/s", run,
              {"batch_shape": [config.data.batch_size, length]})


def train_pipeline_case(config, mesh, corpus: data.Corpus) -> Case:
  """Steps fed from the real bucketed pipeline; a step's time includes its input."""
  split = corpus.splits["train"]
  batches = prefetch(train_batches(split, config, 0, mesh))
  _, state = _train_state(config, mesh, len(corpus.vocab), next(batches))
  step, key, holder = jit_train_step(_objective(config), mesh), jax.random.key(1), [state]
  for length in np.unique(np.asarray(config.data.bucket_lengths)[_buckets_used(split, config)]):
    batch = fixed_batch(config.data.batch_size, int(length), len(corpus.vocab))
    holder[0], _ = step(holder[0], parallel.to_global(batch, mesh), key)  # compiles

  def run():
    batch = next(batches)
    holder[0], sums = step(holder[0], batch, key)
    return float(sums["tokens"]), sums
  epoch_tokens = float(np.sum(split.lengths - 1))
  return Case("train_pipeline", config.model.posterior, "tokens/s", run,
              {"dataset": corpus.name, "epoch_tokens": epoch_tokens}, close=batches.close)


def _buckets_used(split: data.Split, config) -> np.ndarray:
  return np.searchsorted(np.asarray(config.data.bucket_lengths), split.lengths)


def eval_iw_case(config, mesh, vocab_size: int, length: int) -> Case:
  b, k = config.data.eval_batch_size, config.eval.iw_samples
  batch = fixed_batch(b, length, vocab_size)
  model, state = _train_state(config, mesh, vocab_size, batch)
  evaluator = Evaluator(model, mesh, config, jax.random.key(2))
  chunk = samples_per_chunk(k, b, length, config.eval.iw_chunk_tokens)
  step = evaluator.jitted_step(k, chunk)
  variables = state.variables
  inputs = parallel.to_global(batch, mesh)

  def run():
    return b, step(variables, inputs, jax.random.key(3))
  return Case("eval_iw", config.model.posterior, "sentences/s", run,
              {"batch_shape": [b, length], "iw_samples": k, "chunk": chunk})


def matmul_case(size: int = 2048) -> Case:
  """float32 [size, size] @ [size, size], in GFLOP/s."""
  a = jax.random.normal(jax.random.key(0), (size, size), jax.numpy.float32)
  dot = jax.jit(jax.numpy.dot)
  return Case("matmul", "-", "GFLOP/s", lambda: (2 * size**3 / 1e9, dot(a, a)),
              {"shape": [size, size, size], "dtype": "float32"})


def measure(cases: list[Case], warmup: int, rounds: int) -> None:
  """Compiles each case, warms it up, then times `rounds` interleaved calls."""
  for case in cases:
    start = time.perf_counter()
    jax.block_until_ready(case.run()[1])
    case.compile_s = time.perf_counter() - start
    for _ in range(warmup):
      jax.block_until_ready(case.run()[1])
  for _ in range(rounds):
    for case in cases:
      start = time.perf_counter()
      units, out = case.run()
      jax.block_until_ready(out)
      case.times.append(time.perf_counter() - start)
      case.units.append(units)
  for case in cases:
    case.close()


def record(case: Case, config: ml_collections.ConfigDict) -> dict:
  """The JSON record of a measured case."""
  rates = [u / t for u, t in zip(case.units, case.times)]
  out = {"case": case.name, "posterior": case.posterior, "unit": case.unit,
         "median": statistics.median(rates), "min": min(rates), "max": max(rates),
         "rounds": len(rates), "compile_s": round(case.compile_s, 2),
         "emb_dim": config.model.emb_dim, "hidden_dim": config.model.hidden_dim,
         "latent_dim": config.model.latent_dim, "dtype": config.model.dtype,
         "batch_size": config.data.batch_size,
         "peak_host_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
         "peak_device_mb": _peak_device_mb(),
         "device_kind": jax.devices()[0].device_kind, "device_count": jax.device_count(),
         **case.extra}
  if "epoch_tokens" in case.extra:
    out["epoch_s"] = case.extra["epoch_tokens"] / out["median"]
  return out


def _peak_device_mb() -> Optional[float]:
  stats = jax.devices()[0].memory_stats()
  return round(stats["peak_bytes_in_use"] / 2**20) if stats and "peak_bytes_in_use" in stats else None


def table(records: list[dict]) -> str:
  """A short fixed-width table of the records."""
  lines = [f"{'case':<15}{'posterior':<10}{'dtype':<9}{'median':>10}{'min':>10}{'max':>10}"
           f"  {'unit':<12}{'compile s':>9}"]
  for r in records:
    lines.append(f"{r['case']:<15}{r['posterior']:<10}{r['dtype']:<9}{r['median']:>10.1f}"
                 f"{r['min']:>10.1f}{r['max']:>10.1f}  {r['unit']:<12}{r['compile_s']:>9.1f}")
  return "\n".join(lines)
