"""The lagging encoder (He et al. 2019): group-wise steps, the inner loop, the phase, the run."""

import functools
import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cvae_jax import aggressive, data, partition, train
from cvae_jax.evaluate import Evaluator
from cvae_jax.models.posteriors import POSTERIORS
from cvae_jax.train import Objective, create_train_state, train_step
from cvae_jax.writer import read_events
from configs import synthetic
from tests.helpers import random_batch, tiny_model

OBJECTIVE = Objective(kl_anneal_start=0, kl_anneal_steps=4, free_bits=0.1, latent_dim=3)
JOINT = jax.jit(functools.partial(train_step, objective=OBJECTIVE))  # compiled once per tree


def _state(posterior, partitioned=True, shapes_only=False):
  """A new train state (or only its shapes)."""
  create = functools.partial(create_train_state, tiny_model(posterior),
                             partition.make_optimizer(1e-2, 5.0, partitioned))
  args = jax.random.key(0), random_batch(batch=16)
  return jax.eval_shape(create, *args) if shapes_only else jax.jit(create)(*args)


def _group(tree, params, group):
  """The leaves of `group`, in order."""
  return [x for g, x in zip(jax.tree.leaves(partition.labels(params)), jax.tree.leaves(tree))
          if g == group]


@pytest.mark.parametrize("posterior", list(POSTERIORS))
def test_every_parameter_has_a_group_and_the_encoder_is_the_inference_network(posterior):
  groups = partition.labels(_state(posterior, shapes_only=True).params)
  assert {k: set(jax.tree.leaves(v)) for k, v in groups.items()} == {
      "embed": {"embedding"}, "encoder_lstm": {"encoder"}, "posterior": {"encoder"},
      "decoder_lstm": {"decoder"}, "latent_to_carry": {"decoder"}, "out": {"decoder"}}


def test_a_group_step_moves_that_group_alone():
  batches = [random_batch(i, batch=16) for i in range(2)]
  key = jax.random.key(1)
  state, _ = JOINT(_state("gaussian"), batches[0], key)  # non-zero Adam moments everywhere

  def encoder_only(state, batch, key):
    return train.encoder_step(state, batch, key, objective=OBJECTIVE)

  def generative_only(state, batch, key):
    return train_step(state, batch, key, objective=OBJECTIVE, groups=partition.GENERATIVE)

  for groups, moved, step_fn in ((partition.ENCODER, ("encoder",), encoder_only),
                                 (partition.GENERATIVE, ("embedding", "decoder"),
                                  generative_only)):
    jitted = jax.jit(chex.assert_max_traces(step_fn, n=1))
    new, _ = jitted(state, batches[1], key)
    jitted(new, batches[0], key)  # no retracing
    old_adam, new_adam = (partition.group_states(s.opt_state) for s in (state, new))
    for group in partition.GROUPS:
      same = group not in moved
      before, after = _group(state.params, state.params, group), _group(
          new.params, state.params, group)
      assert all(np.array_equal(a, b) == same for a, b in zip(before, after)), (groups, group)
      if same:
        chex.assert_trees_all_equal(new_adam[group], old_adam[group])
      else:
        assert int(new_adam[group][0][0].count) == int(old_adam[group][0][0].count) + 1
    assert int(new.step) == int(state.step) + (groups != partition.ENCODER)
  chex.clear_trace_counter()


def test_partitioned_joint_steps_are_plain_adam():
  batches = [random_batch(i, batch=16) for i in range(3)]
  key = jax.random.key(2)
  states = [_state("gaussian", partitioned) for partitioned in (False, True)]
  for batch in batches:
    states = [JOINT(s, batch, key)[0] for s in states]
  chex.assert_trees_all_close(states[1].params, states[0].params, rtol=1e-6, atol=1e-7)


def test_without_the_procedures_the_optimiser_state_is_the_plain_one():
  """Checkpoints of runs from before the procedures existed still restore."""
  config = synthetic.get_config("tiny").train
  params = _state("copula", shapes_only=True).params
  plain = optax.chain(optax.clip_by_global_norm(5.0), optax.adam(1e-3)).init(params)
  assert (jax.tree.structure(train.make_optimizer(config).init(params))
          == jax.tree.structure(plain))
  for field, value in (("aggressive", True), ("ae_pretrain_steps", 5)):
    on = config.copy_and_resolve_references()
    on[field] = value
    assert (jax.tree.structure(train.make_optimizer(on).init(params))
            != jax.tree.structure(plain))


def _scripted(losses):
  """An inner step whose loss per token is losses[i]."""
  def step_fn(state, i):
    return state + 1, {"loss": jnp.float32(losses[i] * 10), "tokens": jnp.float32(10)}
  return step_fn


@pytest.mark.parametrize("losses, max_inner, steps", [
    ([5, 5, 4, 4, 3, 3, 3, 4, 2, 2], 9, 8),  # the fourth pair (3.5) is not below the third (3)
    ([5, 5, 4, 4, 4, 4, 1, 1, 1, 1], 9, 6),  # a tie stops too
    ([9, 8, 7, 6, 5, 4, 3, 2, 1, 0], 7, 7),  # always falling: the maximum
])
def test_the_inner_loop_stops_when_the_loss_stops_falling_or_at_the_maximum(
    losses, max_inner, steps):
  state, taken = aggressive.encoder_steps(_scripted(losses), 0, max_inner=max_inner,
                                          check_every=2)
  assert state == taken == steps


def test_the_phase_ends_for_good_when_the_mi_does_not_rise():
  phase = aggressive.Phase()
  assert [phase.update(mi) for mi in (0.1, 0.3, 0.3, 0.5, 0.1)] == [
      False, False, True, False, False]
  assert not phase.active
  assert aggressive.Phase.from_json(phase.to_json()) == phase
  assert aggressive.Phase.from_json(aggressive.Phase().to_json()) == aggressive.Phase()


def test_random_batches_repeat_and_are_full_batches_of_one_bucket():
  rng = np.random.default_rng(0)
  split = data.Split.from_words("train", [rng.integers(4, 30, rng.integers(1, 15))
                                          for _ in range(200)])
  sample = data.RandomBatches(split, batch_size=8, bucket_lengths=(8, 12, 20), seed=3)
  a, b, c = sample(5, 1), sample(5, 1), sample(5, 2)
  chex.assert_trees_all_equal(a, b)
  assert not np.array_equal(a["tokens"], c["tokens"]) or a["tokens"].shape != c["tokens"].shape
  assert a["weights"].sum() == 8 and a["tokens"].shape[1] in (8, 12, 20)
  halves = [data.RandomBatches(split, batch_size=8, bucket_lengths=(8, 12, 20), seed=3,
                               process_index=p, process_count=2)(5, 1) for p in range(2)]
  np.testing.assert_array_equal(np.concatenate([h["tokens"] for h in halves]), a["tokens"])


# The run: MI per validation pass (every 5 steps): it rises, then falls at step 15.
MI = (0.1, 0.2, 0.15, 0.3)


def _scripted_evaluator(monkeypatch, start=0):
  values = itertools.chain(MI[start:], itertools.repeat(0.0))

  def call(self, variables, split, iw_samples=0):
    del self, variables, iw_samples
    return {"nll_elbo": 50.0, "mi": next(values) if split.name == "valid" else 0.0,
            "sentences": 100}

  monkeypatch.setattr(Evaluator, "__call__", call)


def _config(tmp_path):
  c = synthetic.get_config("tiny")
  c.data.tfds_dir = str(tmp_path / "tfds")
  c.data.bucket_lengths, c.data.max_length = (24,), 22  # one shape: fewer compilations
  c.train.update(num_steps=20, log_every=5, eval_every=5, checkpoint_every=5,
                 aggressive=True, aggressive_max_inner=6, aggressive_check_every=2)
  return c


def _latest(workdir):
  from cvae_jax.checkpointing import Checkpoints
  import orbax.checkpoint as ocp
  ckpts = Checkpoints(str(workdir))
  step = ckpts.latest.latest_step()
  restored = ckpts.latest.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()))
  ckpts.close()
  return step, restored.state, restored.meta


def _dies_in_inner_step(make, killed_in_step, inner):
  """`make`'s step functions, raising KeyboardInterrupt in inner step number
  `inner` (from 1) of training step `killed_in_step`."""
  calls = []

  def made(*args, **kwargs):
    step_fn = make(*args, **kwargs)

    def step(state, batch, key):
      if int(state.step) + 1 == killed_in_step:
        calls.append(True)
        if len(calls) == inner:
          raise KeyboardInterrupt
      return step_fn(state, batch, key)
    return step
  return made


def test_the_phase_ends_with_the_mi_and_a_killed_run_resumes_exactly(tmp_path, monkeypatch):
  _scripted_evaluator(monkeypatch)
  train.train_and_evaluate(_config(tmp_path), str(tmp_path / "straight"))
  rows = [e for e in read_events(str(tmp_path / "straight")) if e["split"] == "train"]
  assert [(e["step"], e["aggressive"]) for e in rows] == [(5, 1), (10, 1), (15, 1), (20, 0)]
  assert all(1 <= e["inner_steps"] <= 6 for e in rows[:3]) and rows[3]["inner_steps"] == 0
  assert _latest(tmp_path / "straight")[2]["aggressive"] == {"active": False,
                                                            "previous_mi": 0.3}

  # Killed in the third inner step of step 8 (in the phase): it resumes at 5.
  _scripted_evaluator(monkeypatch)
  real = train.jit_encoder_step
  monkeypatch.setattr(train, "jit_encoder_step", _dies_in_inner_step(real, 8, 3))
  with pytest.raises(KeyboardInterrupt):
    train.train_and_evaluate(_config(tmp_path), str(tmp_path / "resumed"))
  monkeypatch.setattr(train, "jit_encoder_step", real)
  assert _latest(tmp_path / "resumed")[0] == 5
  _scripted_evaluator(monkeypatch, start=1)
  train.train_and_evaluate(_config(tmp_path), str(tmp_path / "resumed"))
  assert read_events(str(tmp_path / "resumed")) == read_events(str(tmp_path / "straight"))
  (_, resumed, _), (_, straight, _) = (_latest(tmp_path / w) for w in ("resumed", "straight"))
  jax.tree.map(np.testing.assert_array_equal, resumed, straight)
