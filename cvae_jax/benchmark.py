"""Throughput of the jitted train and evaluation steps, one JSON line per case.

Cases (for each posterior):
  train_fixed     train step on fixed-shape synthetic batches
  train_pipeline  train step fed by the real input pipeline (needs data)
  eval_iw         importance-weighted evaluation step
Tokens are predicted tokens (`lengths - 1`: words and `</s>`); warm-up steps
are excluded; the median, min and max over timed steps are reported.
"""

from __future__ import annotations

import resource
import statistics
import time
from typing import Callable, Iterator, Optional

import jax
import ml_collections
import numpy as np

from cvae_jax import data, parallel
from cvae_jax.config import model_config
from cvae_jax.evaluate import Evaluator, samples_per_chunk
from cvae_jax.models import TextVAE
from cvae_jax.train import Objective, create_train_state, jit_train_step, make_optimizer


def fixed_batch(batch: int, length: int, vocab_size: int, seed: int = 0) -> dict:
  """Full-length rows `<s> w.. </s>`: tokens [batch, length], lengths, weights."""
  rng = np.random.default_rng(seed)
  tokens = rng.integers(4, vocab_size, (batch, length)).astype(np.int32)
  tokens[:, 0], tokens[:, -1] = data.BOS, data.EOS
  return {"tokens": tokens, "lengths": np.full(batch, length, np.int32),
          "weights": np.ones(batch, np.float32)}


def time_steps(run: Callable[[], object], warmup: int, steps: int) -> tuple[float, list[float]]:
  """Compile-and-first-call seconds, then per-step seconds of `steps` calls."""
  start = time.perf_counter()
  jax.block_until_ready(run())
  first = time.perf_counter() - start
  for _ in range(warmup):
    jax.block_until_ready(run())
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    jax.block_until_ready(run())
    times.append(time.perf_counter() - start)
  return first, times


def _record(case: str, posterior: str, first: float, times: list[float],
            units: float, unit: str, **extra) -> dict:
  rates = [units / t for t in times]
  return {"case": case, "posterior": posterior, "unit": unit,
          "median": statistics.median(rates), "min": min(rates), "max": max(rates),
          "steps": len(times), "compile_s": first, "peak_host_mb": _peak_host_mb(),
          "device_kind": jax.devices()[0].device_kind, "device_count": jax.device_count(),
          **extra}


def _peak_host_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_train_fixed(config, posterior, mesh, vocab_size, length, warmup, steps) -> dict:
  model = TextVAE(model_config(config, vocab_size))
  batch = parallel.to_global(fixed_batch(config.data.batch_size, length, vocab_size), mesh)
  state = jax.jit(create_train_state, static_argnums=(0, 1),
                  out_shardings=parallel.replicated(mesh))(
                      model, make_optimizer(config.train), jax.random.key(0), batch)
  step = jit_train_step(Objective.from_config(config), mesh)
  key, holder = jax.random.key(1), [state]

  def run():
    holder[0], sums = step(holder[0], batch, key)
    return sums

  first, times = time_steps(run, warmup, steps)
  tokens = config.data.batch_size * (length - 1)
  return _record("train_fixed", posterior, first, times, tokens, "tokens/s",
                 batch_shape=[config.data.batch_size, length])


def bench_train_pipeline(config, posterior, mesh, corpus, warmup, steps) -> dict:
  """Train steps fed batch by batch from the real pipeline (input included)."""
  from cvae_jax.prefetch import prefetch
  from cvae_jax.train import train_batches
  model = TextVAE(model_config(config, len(corpus.vocab)))
  split = corpus.splits["train"]
  batches = prefetch(train_batches(split, config, 0, mesh))
  state = jax.jit(create_train_state, static_argnums=(0, 1),
                  out_shardings=parallel.replicated(mesh))(
                      model, make_optimizer(config.train), jax.random.key(0), next(batches))
  step = jit_train_step(Objective.from_config(config), mesh)
  key = jax.random.key(1)
  for _ in range(warmup):  # every bucket shape compiles here
    state, sums = step(state, next(batches), key)
  jax.block_until_ready(sums)
  start, tokens = time.perf_counter(), 0.0
  for _ in range(steps):
    batch = next(batches)
    state, sums = step(state, batch, key)
    tokens += sums["tokens"]
  tokens = float(tokens)
  elapsed = time.perf_counter() - start
  return {"case": "train_pipeline", "posterior": posterior, "unit": "tokens/s",
          "median": tokens / elapsed, "min": tokens / elapsed, "max": tokens / elapsed,
          "steps": steps, "compile_s": None, "peak_host_mb": _peak_host_mb(),
          "device_kind": jax.devices()[0].device_kind, "device_count": jax.device_count(),
          "epoch_s_estimate": elapsed / steps * data.steps_per_epoch(
              split, config.data.batch_size, config.data.bucket_lengths)}
