"""launch/benchmark.py at a tiny size: it runs, and its JSON has the fields; the
FLOP counts and ratios it reports."""

import collections
import functools
import importlib.util
import json
import os
import re
import subprocess
import sys

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from configs import synthetic
from cvae_jax import benchmark
from cvae_jax.config import model_config
from tests.helpers import init_variables, launcher_env, tiny_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIELDS = {"impl", "case", "posterior", "unit", "median", "min", "max", "rounds", "compile_s",
          "dtype", "peak_host_mb", "peak_device_mb", "device_kind", "device_count"}


def test_benchmark_prints_one_record_per_case(tmp_path):
  """With torch installed, also `--peer torch`: the peer's cases and the ratios."""
  peer = importlib.util.find_spec("torch") is not None
  out = tmp_path / "bench.jsonl"
  result = subprocess.run(
      [sys.executable, "launch/benchmark.py", "--config", "configs/synthetic.py:tiny",
       f"--config.data.tfds_dir={tmp_path / 'tfds'}", "--posteriors", "copula",
       "--dtypes", "bfloat16", "--rounds", "2", "--warmup", "1",
       "--cases", "train_fixed,train_pipeline,eval_iw,train_matmuls,matmul",
       "--config.eval.iw_samples=4", "--out", str(out)] + (["--peer", "torch"] if peer else []),
      cwd=ROOT, capture_output=True, text=True, timeout=600,
      env=launcher_env(devices=2))
  assert result.returncode == 0, result.stderr[-3000:]
  records = [json.loads(line) for line in out.read_text().splitlines()]
  peer_cases = [("torch", "train_fixed")] if peer else []
  assert [(r["impl"], r["case"], r["posterior"], r["dtype"]) for r in records] == [
      (impl, case, posterior, dtype) for dtype in ("bfloat16",)
      for posterior in ("copula",)
      for impl, case in [("jax", "train_fixed"), ("jax", "train_pipeline"),
                         ("jax", "eval_iw"), ("jax", "train_matmuls")] + peer_cases] + [
          (impl, "matmul", "-", "float32") for impl in ["jax"] + ["torch"] * peer]
  for r in records:
    assert FIELDS <= set(r)
    assert 0 < r["min"] <= r["median"] <= r["max"]
    assert r["device_count"] == (2 if r["impl"] == "jax" else 1)
    assert ("of_matmul" in r) == (r["case"] in ("train_fixed", "eval_iw", "train_matmuls"))
  assert all(r["epoch_s"] > 0 for r in records if r["case"] == "train_pipeline")
  assert all((r["impl"] == "jax" and r["case"] in ("train_fixed", "matmul")) == ("vs_peer" in r)
             for r in records if peer)
  assert "train_pipeline" in result.stdout  # the table


def _tiny_step(posterior: str):
  """A tiny model (V 400, z fed to the decoder), a 4 x 7 batch, its variables and
  the jaxpr of its train loss's gradient."""
  model = tiny_model(posterior, vocab_size=400, feed_latent=True)
  batch = benchmark.fixed_batch(4, 7, model.config.vocab_size)
  variables = init_variables(model, batch)

  def loss(params):
    terms, _ = model.apply({**variables, "params": params}, batch["tokens"], batch["lengths"],
                           train=True, rngs={"latent": jax.random.key(0),
                                             "dropout": jax.random.key(1)},
                           mutable=["batch_stats"])
    return jnp.sum(terms["rec"] + terms.get("kl", 0.0) - terms.get("copula_term", 0.0))
  return model, batch, variables, jax.make_jaxpr(jax.grad(loss))(variables["params"]).jaxpr


def _dot_flops(jaxpr) -> float:
  """FLOPs of every dot_general in a jaxpr, scans counted `length` times."""
  return sum(2.0 * m * k * n * count for (m, k, n), count in _dot_shapes(jaxpr).items())


def test_flop_formulas_count_the_matmuls_autodiff_runs():
  """train_flops against the dot_generals of the loss's gradient, decoder_flops
  against the extra dots of one more importance sample; the posterior heads,
  latent_to_carry and the copula add the small rest."""
  model, batch, variables, gradient = _tiny_step("copula")
  m = model.config
  counted = _dot_flops(gradient)
  np.testing.assert_allclose(counted, 4 * 6 * benchmark.train_flops(m, 7), rtol=0.03)

  def log_px(samples):
    z = jnp.zeros((samples, 4, m.latent_dim))
    return model.apply(variables, batch["tokens"], batch["lengths"], z,
                       method=type(model).log_likelihood)
  per_sample = (_dot_flops(jax.make_jaxpr(lambda: log_px(3))().jaxpr)
                - _dot_flops(jax.make_jaxpr(lambda: log_px(2))().jaxpr))
  np.testing.assert_allclose(per_sample, 4 * 6 * benchmark.decoder_flops(m), rtol=0.03)


def test_compare_gives_per_round_ratios_and_the_table_shows_them():
  def rec(impl, case, rates, flops=None):
    r = {"impl": impl, "case": case, "posterior": "copula" if case != "matmul" else "-",
         "dtype": "float32", "unit": "x", "rates": rates, "median": float(np.median(rates)),
         "min": min(rates), "max": max(rates), "compile_s": 1.0}
    if flops:
      r.update(flops_per_unit=flops, gflops=r["median"] * flops / 1e9)
    return r
  records = [rec("jax", "train_fixed", [100.0, 50.0, 90.0], 1e9),
             rec("torch", "train_fixed", [50.0, 50.0, 30.0], 1e9),
             rec("jax", "matmul", [200.0, 100.0, 100.0], 1e9),
             rec("torch", "matmul", [100.0, 100.0, 100.0], 1e9)]
  benchmark.compare(records)
  jax_step, torch_step = records[:2]
  assert jax_step["vs_peer"] == 2.0 and jax_step["peer"] == "torch"  # rounds: 2, 1, 3
  assert jax_step["of_matmul"] == 0.5  # rounds: 0.5, 0.5, 0.9
  assert torch_step["of_matmul"] == 0.5 and "vs_peer" not in torch_step
  assert records[2]["vs_peer"] == 1.0 and "of_matmul" not in records[2]  # 2, 1, 1
  lines = benchmark.table(records).splitlines()
  assert "vs peer" in lines[0] and "of matmul" in lines[0]
  assert lines[1].split()[:2] == ["jax", "train_fixed"] and "2.00" in lines[1] and "50%" in lines[1]


def _dot_shapes(jaxpr, times: int = 1) -> collections.Counter:
  """(m, k, n) of every dot_general in a jaxpr (m and n the sizes of the free
  dimensions, a batch dimension of size b counted as b products), counted once
  per run: scans count `length` times."""
  shapes = collections.Counter()
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "dot_general":
      (lhs_c, _), (lhs_b, _) = eqn.params["dimension_numbers"]
      lhs, rhs = eqn.invars[0].aval.shape, eqn.invars[1].aval.shape
      k, b = (int(np.prod([lhs[i] for i in dims])) for dims in (lhs_c, lhs_b))
      shapes[(int(np.prod(lhs)) // (k * b), k, int(np.prod(rhs)) // (k * b))] += times * b
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      shapes += _dot_shapes(sub, times * (eqn.params["length"]
                                          if eqn.primitive.name == "scan" else 1))
  return shapes


def _listed(plain: list, scanned: list) -> collections.Counter:
  """`benchmark.train_matmuls`'s products as _dot_shapes counts them."""
  listed = collections.Counter(plain)
  for steps, shape in scanned:
    listed[shape] += steps
  return listed


@pytest.mark.parametrize("posterior", ["none", "copula"])
def test_train_matmuls_are_the_products_the_train_step_runs(posterior):
  """train_matmuls lists matmuls of the shapes, forms and counts of the loss's
  gradient, and what it leaves out (the posterior heads, z) is under 3% of the
  FLOPs; the case's jitted call runs exactly those and returns a finite scalar."""
  model, _, _, gradient = _tiny_step(posterior)
  step = _dot_shapes(gradient)
  expected = _listed(*benchmark.train_matmuls(model.config, 4, 7))
  assert not expected - step  # every product of the case is one the step runs
  left_out = sum(2 * a * b * c * count for (a, b, c), count in (step - expected).items())
  assert left_out < 0.03 * sum(2 * a * b * c * n for (a, b, c), n in step.items())

  config = synthetic.get_config("tiny")
  config.model.posterior = posterior
  case = benchmark.train_matmuls_case(config, 50, 7)
  plain, scanned = benchmark.train_matmuls(model_config(config, 50), config.data.batch_size, 7)
  expected = _listed(plain, scanned)
  assert _dot_shapes(jax.make_jaxpr(lambda: case.run()[1])().jaxpr) == expected

  def operands(a, b, c):
    return jax.ShapeDtypeStruct((a, b), jnp.float32), jax.ShapeDtypeStruct((b, c), jnp.float32)
  run = functools.partial(benchmark._run_matmuls, steps=tuple(n for n, _ in scanned))
  compiled = jax.jit(run).lower([operands(*p) for p in plain],
                                [operands(*p) for _, p in scanned]).compile().as_text()
  products = {tuple(map(int, d)) for d in re.findall(r"f32\[(\d+),(\d+)\]\S* dot\(", compiled)}
  assert {(a, c) for a, _, c in plain} <= products  # XLA keeps every product whole
  tokens, out = case.run()
  assert tokens == config.data.batch_size * 6 and np.isfinite(out)
