"""Throughput of the jitted train and evaluation steps, one record per case.

Cases, each for every requested posterior:
  train_fixed     the train step on fixed-shape batches (all rows full length)
  train_pipeline  the train step fed by the real input pipeline (bucketed data)
  eval_iw         the importance-weighted evaluation step (K = config.eval.iw_samples)
  train_matmuls   the train step's matmuls alone (`train_matmuls`), in the forms and
                  loops the step runs them: the rate the step would reach if nothing
                  else took time, so its `of matmul` is the ceiling of train_fixed's
  matmul          a float32 2048^3 jnp.dot, the machine's practical compute ceiling
With a peer (`peer_train_case`, `peer_matmul_case`: the PyTorch model of
`cvae_jax.peer`), train_fixed and matmul are also timed in that library.
Cases are timed in interleaved rounds (A B C A B C ...) so that load on a
shared machine hits them alike; compile time is the first call, warm-up calls
are excluded, and the median, min and max rate over the timed calls are
reported. Ratios between cases (`compare`) are medians of the per-round
ratios, so a slow round slows both sides of a ratio. Tokens are predicted
tokens (`lengths - 1`: words and `</s>`); GFLOP/s counts the matmuls of the
LSTMs and the softmax layer (`matmul_flops`).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import resource
import statistics
import time
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from cvae_jax import data, parallel
from cvae_jax.config import model_config
from cvae_jax.errors import CvaeError
from cvae_jax.evaluate import Evaluator, samples_per_chunk
from cvae_jax.models import ModelConfig, TextVAE
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
  impl: str = "jax"
  flops_per_unit: Optional[float] = None  # matmul FLOPs per token/sentence
  device: Callable[[], dict] = lambda: _jax_device()
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
              {"batch_shape": [config.data.batch_size, length]},
              flops_per_unit=train_flops(model_config(config, vocab_size), length))


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
              {"batch_shape": [b, length], "iw_samples": k, "chunk": chunk},
              flops_per_unit=k * (length - 1) * decoder_flops(model.config))


def train_matmuls(m: ModelConfig, batch: int, length: int) -> tuple[list, list]:
  """The matmuls of a train step on full-length rows, as `models.projection.dense` and
  `models.lstm.recurrence` run them (plain [m, k] x [k, n] products, transposes
  materialised): the LSTMs' (decoder over `length - 1` tokens, encoder over
  `length`) and the softmax layer's, forward and backward; the small products of
  the posterior heads and of z are left out.

  Returns (plain, scanned): plain, a list of (m, k, n) products run once;
  scanned, a list of (steps, (m, k, n)), a product run at each step of a time
  scan, each step's input depending on the previous step's output.
  """
  h, v = m.hidden_dim, m.vocab_size
  rows = (length - 1) * batch
  plain = [(rows, h, v), (rows, v, h), (h + 1, rows, v)]  # y = x W, dx, [dW; db]
  scanned = []
  for steps in [length - 1] + [length] * m.has_latent:
    n = steps * batch
    plain += [(n, m.emb_dim, 4 * h), (n, 4 * h, m.emb_dim), (m.emb_dim + 1, n, 4 * h),
              (h, n, 4 * h)]  # input projection, its dx and [dW; db]; dW_h
    scanned += [(steps, (batch, h, 4 * h)), (steps, (batch, 4 * h, h))]  # h W_h, its dh
  return plain, scanned


def train_matmuls_case(config, vocab_size: int, length: int) -> Case:
  """`train_matmuls` in config.model.dtype on random operands, one jitted call."""
  m = model_config(config, vocab_size)
  plain, scanned = train_matmuls(m, config.data.batch_size, length)
  keys = iter(jax.random.split(jax.random.key(0), 2 * (len(plain) + len(scanned))))

  def operands(mm, k, n):
    return tuple(jax.random.normal(next(keys), shape, m.dtype) / np.sqrt(k)
                 for shape in [(mm, k), (k, n)])
  args = ([operands(*shape) for shape in plain],
          [operands(*shape) for _, shape in scanned])
  run_all = jax.jit(functools.partial(_run_matmuls, steps=tuple(s for s, _ in scanned)))
  tokens = config.data.batch_size * (length - 1)
  return Case("train_matmuls", config.model.posterior, "tokens/s",
              lambda: (tokens, run_all(*args)),
              {"batch_shape": [config.data.batch_size, length]},
              flops_per_unit=train_flops(m, length))


def _run_matmuls(plain: list, scanned: list, steps: tuple) -> jax.Array:
  """Every product of `plain` once; each (x [m, k], w [k, n]) of `scanned` `steps`
  times in a scan whose next x is the product's first k columns, tiled when
  n < k. Returns a scalar that depends on every product."""
  def chained(carry, w):
    y = jnp.dot(carry, w)
    k = carry.shape[1]
    return jnp.tile(y, (1, -(-k // y.shape[1])))[:, :k], y[0, 0]

  total = sum(jnp.dot(x, w)[0, 0].astype(jnp.float32) for x, w in plain)
  for n, (x, w) in zip(steps, scanned):
    _, firsts = jax.lax.scan(lambda c, _, w=w: chained(c, w), x, None, length=n)
    total += jnp.sum(firsts.astype(jnp.float32))
  return total


def matmul_case(size: int = 2048) -> Case:
  """float32 [size, size] @ [size, size], in GFLOP/s."""
  a = jax.random.normal(jax.random.key(0), (size, size), jax.numpy.float32)
  dot = jax.jit(jax.numpy.dot)
  return Case("matmul", "-", "GFLOP/s", lambda: (2 * size**3 / 1e9, dot(a, a)),
              {"shape": [size, size, size], "dtype": "float32"}, flops_per_unit=1e9)


def lstm_flops(input_dim: int, hidden_dim: int) -> float:
  """Matmul FLOPs of one LSTM step for one row: gates = [x, h] @ W."""
  return 2.0 * (input_dim + hidden_dim) * 4 * hidden_dim


def decoder_flops(m: ModelConfig) -> float:
  """Forward matmul FLOPs per predicted token of the decoder LSTM's recurrence and
  the softmax layer: what every importance sample costs (inputs are projected once)."""
  return lstm_flops(0, m.hidden_dim) + 2.0 * m.hidden_dim * m.vocab_size


def train_flops(m: ModelConfig, length: int) -> float:
  """Matmul FLOPs of a train step per predicted token of full-length rows: forward
  (encoder over `length` tokens, decoder and softmax over `length - 1`) times 3
  for the backward pass's two matmuls per forward one."""
  feed = m.latent_dim if m.has_latent and m.feed_latent else 0
  decoder = lstm_flops(m.emb_dim + feed, m.hidden_dim) + 2.0 * m.hidden_dim * m.vocab_size
  encoder = lstm_flops(m.emb_dim, m.hidden_dim) * length / (length - 1) if m.has_latent else 0
  return 3 * (decoder + encoder)


def peer_train_case(config, mesh, vocab_size: int, length: int, peer: str) -> Case:
  """train_fixed in the peer library, from the same initial weights as the JAX case."""
  device = _peer_device(peer)
  from cvae_jax.peer import torch_model, torch_train
  m = model_config(config, vocab_size)
  batch = fixed_batch(config.data.batch_size, length, vocab_size)
  _, state = _train_state(config, mesh, vocab_size, parallel.to_global(batch, mesh))
  model = torch_model.TorchTextVAE(m)
  torch_model.load_flax_variables(model, jax.device_get(state.variables))
  t = config.train
  trainer = torch_train.TorchTrainer(
      model, learning_rate=t.learning_rate, grad_clip=t.grad_clip,
      kl_anneal_start=t.kl_anneal_start, kl_anneal_steps=t.kl_anneal_steps,
      device=device, dtype=config.model.dtype)
  inputs = trainer.to_device(batch)
  tokens = config.data.batch_size * (length - 1)
  return Case("train_fixed", config.model.posterior, "tokens/s",
              lambda: (tokens, trainer.train_step(inputs)),
              {"batch_shape": [config.data.batch_size, length]}, impl=peer,
              flops_per_unit=train_flops(m, length), device=lambda: _torch_device(device))


def peer_matmul_case(peer: str, size: int = 2048) -> Case:
  """float32 [size, size] @ [size, size] in the peer library, in GFLOP/s."""
  device = _peer_device(peer)
  import torch
  a = torch.randn(size, size, device=device)

  def run():
    out = torch.mm(a, a)
    if device == "cuda":
      torch.cuda.synchronize()
    return 2 * size**3 / 1e9, out
  return Case("matmul", "-", "GFLOP/s", run, {"shape": [size, size, size], "dtype": "float32"},
              impl=peer, flops_per_unit=1e9, device=lambda: _torch_device(device))


def _peer_device(peer: str) -> str:
  """'cuda' when the peer library sees a GPU, else 'cpu'; a clear error without it."""
  if peer != "torch":
    raise CvaeError(f"unknown peer {peer!r}: the only peer is 'torch'")
  try:
    import torch
  except ImportError as e:
    raise CvaeError("--peer torch needs PyTorch: pip install -e '.[peer]'") from e
  return "cuda" if torch.cuda.is_available() else "cpu"


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
  out = {"impl": case.impl, "case": case.name, "posterior": case.posterior,
         "unit": case.unit, "median": statistics.median(rates), "min": min(rates),
         "max": max(rates), "rounds": len(rates), "rates": rates,
         "compile_s": round(case.compile_s, 2),
         "emb_dim": config.model.emb_dim, "hidden_dim": config.model.hidden_dim,
         "latent_dim": config.model.latent_dim, "dtype": config.model.dtype,
         "batch_size": config.data.batch_size,
         "peak_host_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
         **case.device(), **case.extra}
  if case.flops_per_unit:
    out["flops_per_unit"] = case.flops_per_unit
    out["gflops"] = out["median"] * case.flops_per_unit / 1e9
  if "epoch_tokens" in case.extra:
    out["epoch_s"] = case.extra["epoch_tokens"] / out["median"]
  return out


def compare(records: list[dict]) -> None:
  """Adds, in place, per-round median ratios: `of_matmul` (GFLOP/s over the same
  library's matmul case) and, for JAX records with a peer twin, `vs_peer` (rate
  over the peer's) and `peer`."""
  def key(r):
    return r["case"], r["posterior"], r["dtype"]
  matmul = {r["impl"]: r for r in records if r["case"] == "matmul"}
  peers = {key(r): r for r in records if r["impl"] != "jax"}
  for r in records:
    if "gflops" in r and r["case"] != "matmul" and r["impl"] in matmul:
      gflops = [rate * r["flops_per_unit"] / 1e9 for rate in r["rates"]]
      r["of_matmul"] = _paired_ratio(gflops, matmul[r["impl"]]["rates"])
    twin = peers.get(key(r))
    if r["impl"] == "jax" and twin is not None:
      r["peer"], r["vs_peer"] = twin["impl"], _paired_ratio(r["rates"], twin["rates"])


def _paired_ratio(a: list[float], b: list[float]) -> float:
  return statistics.median(x / y for x, y in zip(a, b))


def _jax_device() -> dict:
  stats = jax.devices()[0].memory_stats()
  peak = (round(stats["peak_bytes_in_use"] / 2**20)
          if stats and "peak_bytes_in_use" in stats else None)
  return {"peak_device_mb": peak, "device_kind": jax.devices()[0].device_kind,
          "device_count": jax.device_count()}


def _torch_device(device: str) -> dict:
  import torch
  if device == "cuda":
    return {"peak_device_mb": round(torch.cuda.max_memory_allocated() / 2**20),
            "device_kind": torch.cuda.get_device_name(), "device_count": 1}
  return {"peak_device_mb": None, "device_kind": "cpu", "device_count": 1,
          "threads": torch.get_num_threads(),
          "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "")}


def table(records: list[dict]) -> str:
  """A short fixed-width table of the records, with the ratios of `compare`."""
  def ratio(r, name, fmt):
    return format(r[name], fmt) if name in r else ""
  lines = [f"{'impl':<6}{'case':<15}{'posterior':<16}{'dtype':<9}{'median':>10}{'min':>10}"
           f"{'max':>10}  {'unit':<12}{'GFLOP/s':>8}{'of matmul':>10}{'vs peer':>8}"
           f"{'compile s':>10}"]
  for r in records:
    lines.append(f"{r['impl']:<6}{r['case']:<15}{r['posterior']:<16}{r['dtype']:<9}"
                 f"{r['median']:>10.1f}{r['min']:>10.1f}{r['max']:>10.1f}  {r['unit']:<12}"
                 f"{ratio(r, 'gflops', '.1f'):>8}{ratio(r, 'of_matmul', '.0%'):>10}"
                 f"{ratio(r, 'vs_peer', '.2f'):>8}{r['compile_s']:>10.1f}")
  return "\n".join(lines)
