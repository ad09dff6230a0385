"""The train step: jit vs eager, 1 vs 8 devices, no retracing."""

import functools

import chex
import jax
from jax.sharding import Mesh
import numpy as np
import optax
import pytest

from cvae_jax import parallel
from cvae_jax.train import Objective, create_train_state, jit_train_step, train_step
from tests.helpers import random_batch, tiny_model

OBJECTIVE = Objective(kl_anneal_start=0, kl_anneal_steps=4)
# Every training procedure at once: cyclical annealing, free bits, word
# dropout and BN-VAE.
PROCEDURES = (Objective(kl_cycles=2, total_steps=4, free_bits=0.3, latent_dim=3),
              dict(word_dropout=0.3, bn_gamma=0.5))


def _state(posterior="copula", batch=None, **model_options):
  model = tiny_model(posterior, **model_options)
  return create_train_state(model, optax.adam(1e-2), jax.random.key(0),
                            batch or random_batch(batch=16))


def _run(step_fn, state, batches, key):
  history = []
  for batch in batches:
    state, sums = step_fn(state, batch, key)
    history.append(sums)
  return state, history


# The posteriors with their own sampling and density code (the Gaussian heads
# are inside the copulas).
@pytest.mark.parametrize("posterior", ["copula", "flexible_copula", "vmf", "flow"])
def test_jitted_step_equals_eager_step(posterior):
  batches = [random_batch(i, batch=16, length=6) for i in range(2)]
  key = jax.random.key(1)
  eager = functools.partial(train_step, objective=OBJECTIVE)
  state = _state(posterior)  # one start for both (made eagerly, it took longer than the steps)
  with jax.disable_jit():
    want = _run(eager, state, batches, key)
  got = _run(jax.jit(eager), state, batches, key)
  chex.assert_trees_all_close(got[1], want[1], rtol=1e-4, atol=1e-4)
  chex.assert_trees_all_close(got[0].params, want[0].params, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("posterior, objective, model_options", [
    ("copula", OBJECTIVE, {}), ("coupled_copula", OBJECTIVE, {}),
    ("flexible_copula", OBJECTIVE, {}), ("vmf", OBJECTIVE, {}), ("full_gaussian", OBJECTIVE, {}),
    ("flow", *PROCEDURES)])
def test_one_device_equals_eight_devices(posterior, objective, model_options):
  assert jax.device_count() == 8
  batches = [random_batch(i, batch=16) for i in range(4)]
  key = jax.random.key(2)
  results = []
  for devices in (jax.devices()[:1], jax.devices()):
    mesh = Mesh(np.asarray(devices), ("data",))
    step = jit_train_step(objective, mesh)
    state = jax.device_put(_state(posterior, **model_options), parallel.replicated(mesh))
    results.append(_run(step, state, [parallel.to_global(b, mesh) for b in batches], key))
  (s1, h1), (s8, h8) = results
  chex.assert_trees_all_close(h8, h1, rtol=1e-4, atol=1e-4)
  chex.assert_trees_all_close(s8.params, s1.params, rtol=1e-4, atol=1e-4)
  chex.assert_trees_all_close(s8.batch_stats, s1.batch_stats, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("posterior", ["flexible_copula"])
def test_step_is_traced_once_per_bucket_shape(posterior):
  @chex.assert_max_traces(n=2)
  def step_fn(state, batch, key):
    return train_step(state, batch, key, objective=OBJECTIVE)

  step = jax.jit(step_fn, donate_argnums=0)
  state = _state(posterior)
  key = jax.random.key(3)
  for i in range(12):
    state, _ = step(state, random_batch(i, batch=16, length=12 if i % 2 else 20), key)
  chex.clear_trace_counter()


def test_nonfinite_loss_records_its_step():
  state = _state()
  step = jax.jit(functools.partial(train_step, objective=OBJECTIVE))
  key = jax.random.key(4)
  state, _ = step(state, random_batch(0, batch=16), key)
  assert int(state.nonfinite_step) == -1
  bad = jax.tree.map(lambda p: p * np.nan, state.params)
  state, _ = step(state.replace(params=bad), random_batch(1, batch=16), key)
  state, _ = step(state, random_batch(2, batch=16), key)
  assert int(state.nonfinite_step) == 1


def test_the_copula_at_lambda_zero_trains_as_the_gaussian_vae():
  """lambda 0 leaves the paper's copula a Gaussian VAE: from the same
  parameters (its marginals are the Gaussian's heads) the steps are the
  Gaussian VAE's, and its dependency head never moves."""
  optimizer = optax.chain(optax.clip_by_global_norm(0.5), optax.adam(1e-2))
  batches = [random_batch(i, batch=16) for i in range(3)]
  copula = create_train_state(tiny_model("copula", copula_weight=0.0), optimizer,
                              jax.random.key(0), batches[0])
  gaussian = create_train_state(tiny_model("gaussian"), optimizer, jax.random.key(1),
                                batches[0])

  def as_gaussian(tree):
    return dict(tree, posterior=tree["posterior"]["marginals"])

  gaussian = gaussian.replace(params=as_gaussian(copula.params),
                              batch_stats=as_gaussian(copula.batch_stats),
                              opt_state=optimizer.init(as_gaussian(copula.params)))
  step = jax.jit(functools.partial(train_step, objective=OBJECTIVE))
  key = jax.random.key(5)
  (copula_end, copula_sums), (gaussian_end, gaussian_sums) = (
      _run(step, state, batches, key) for state in (copula, gaussian))
  for got, want in zip(copula_sums, gaussian_sums):
    assert float(want["kl"]) > 0
    chex.assert_trees_all_close({k: got[k] for k in want}, want, rtol=1e-5, atol=1e-5)
  chex.assert_trees_all_close(as_gaussian(copula_end.params), gaussian_end.params,
                              rtol=1e-5, atol=1e-6)
  head = {k: v for k, v in copula.params["posterior"].items() if k != "marginals"}
  assert head, "the copula has a dependency head"
  chex.assert_trees_all_equal(
      {k: copula_end.params["posterior"][k] for k in head}, head)
