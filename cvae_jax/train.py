"""Training: the train state, the jitted step and the train-and-evaluate loop."""

from __future__ import annotations

import contextlib
import itertools
import sys
from typing import Any, Callable, Iterator, Optional, Sequence

from flax.training import train_state
import jax
import jax.numpy as jnp
from jax.experimental import multihost_utils
import ml_collections
import optax
from tqdm import tqdm

from cvae_jax import aggressive, ctrl_c, data, parallel, partition, preemption
from cvae_jax import metrics as metrics_lib
from cvae_jax.checkpointing import Checkpoints
from cvae_jax.config import model_config, validate
from cvae_jax.errors import CvaeError, Interrupted, Terminated
from cvae_jax.evaluate import Evaluator
from cvae_jax.models import TextVAE
from cvae_jax.objectives import Objective
from cvae_jax.pacing import Paced
from cvae_jax.plateau import Plateau, PlateauRule
from cvae_jax.prefetch import prefetch
from cvae_jax.workdir import check_restart, exclusive, prepare_workdir, with_run_data
from cvae_jax.writer import MetricWriter


class TrainState(train_state.TrainState):
  batch_stats: Any
  nonfinite_step: jax.Array  # int32 scalar: first step with a NaN/inf loss, or -1
  lr_scale: jax.Array  # float32 scalar: the learning rate's factor after plateau decays

  @property
  def variables(self) -> dict:
    """What `model.apply` takes: params and BatchNorm statistics."""
    return {"params": self.params, "batch_stats": self.batch_stats}


def root_keys(seed: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The run's keys by purpose: (init, train, eval)."""
  return tuple(jax.random.split(jax.random.key(seed), 3))


def make_optimizer(t: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Clipping and Adam; one Adam per parameter group for the procedures that
  update or reset a group alone (see cvae_jax/partition.py)."""
  return partition.make_optimizer(t.learning_rate, t.grad_clip,
                                  partitioned=t.aggressive or t.ae_pretrain_steps > 0)


def create_train_state(model: TextVAE, optimizer: optax.GradientTransformation,
                       key: jax.Array, example: dict) -> TrainState:
  """Initial state from one example batch's shapes (`tokens`, `lengths`).

  Its step is a strongly typed int32, as a restored checkpoint's is (flax's
  0 is weakly typed), so a resumed run's step has the types of a fresh one's.
  """
  variables = model.init({"params": key, "latent": key, "dropout": key},
                         example["tokens"], example["lengths"])
  state = TrainState.create(apply_fn=model.apply, params=variables["params"],
                            tx=optimizer, batch_stats=variables.get("batch_stats", {}),
                            nonfinite_step=jnp.array(-1, jnp.int32),
                            lr_scale=jnp.array(1.0, jnp.float32))
  return state.replace(step=jnp.array(0, jnp.int32))


def train_step(state: TrainState, batch: dict, key: jax.Array, objective: Objective,
               groups: Optional[Sequence[str]] = None) -> tuple[TrainState, dict]:
  """One Adam step on a batch; returns the new state and summed metrics.

  batch: `tokens` [batch, length] int32, `lengths` [batch] int32, `weights`
  [batch] float32. The step's randomness is `fold_in(key, state.step)`. Adam's
  update is linear in the learning rate, so scaling it by `state.lr_scale`
  is Adam with the decayed rate. `groups` (partitioned optimiser only): the
  parameter groups that move, their gradients alone clipped; the others'
  parameters and Adam states stay as they are. None: all of them.
  """
  dropout_key, latent_key = jax.random.split(jax.random.fold_in(key, state.step))
  beta = objective.kl_weight(state.step)

  def loss_fn(params):
    (terms, kl_groups), updates = state.apply_fn(
        {"params": params, "batch_stats": state.batch_stats},
        batch["tokens"], batch["lengths"], train=True, method=TextVAE.loss_terms,
        rngs={"dropout": dropout_key, "latent": latent_key}, mutable=["batch_stats"])
    loss = objective.sentence_loss(terms, kl_groups, batch["weights"], beta)
    mean = jnp.sum(loss * batch["weights"]) / jnp.sum(batch["weights"])
    return mean, (dict(terms, loss=loss), updates)

  (loss, (terms, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params)
  bad = ~jnp.isfinite(loss) & (state.nonfinite_step < 0)
  if groups is not None:
    grads = partition.zero_others(groups, grads)
  steps, opt_state = state.tx.update(grads, state.opt_state, state.params)
  steps = jax.tree.map(lambda u: state.lr_scale * u, steps)
  params = optax.apply_updates(state.params, steps)
  if groups is not None:
    params, opt_state = partition.keep_others(groups, state.params, params, opt_state,
                                              state.opt_state)
  state = state.replace(
      step=state.step + 1, params=params,
      opt_state=opt_state, batch_stats=updates.get("batch_stats", state.batch_stats),
      nonfinite_step=jnp.where(bad, state.step, state.nonfinite_step))
  sums = metrics_lib.weighted_sums(terms, batch)
  sums["beta"] = beta * sums["sentences"]
  sums["lr_scale"] = state.lr_scale * sums["sentences"]
  return state, sums


def encoder_step(state: TrainState, batch: dict, key: jax.Array,
                 objective: Objective) -> tuple[TrainState, dict]:
  """The lagging encoder's inner step: `train_step` of the encoder group
  alone, which leaves `state.step` as it is."""
  new, sums = train_step(state, batch, key, objective=objective, groups=partition.ENCODER)
  return new.replace(step=state.step), sums


def jit_train_step(objective: Objective, mesh,
                   groups: Optional[tuple[str, ...]] = None) -> Callable:
  """train_step (of `groups` alone, if given) jitted over the mesh."""
  return _jit_step(train_step, mesh, objective, groups)


def jit_encoder_step(objective: Objective, mesh) -> Callable:
  """encoder_step jitted over the mesh."""
  return _jit_step(encoder_step, mesh, objective)


def _jit_step(step_fn: Callable, mesh, *static) -> Callable:
  """`step_fn(state, batch, key, *static)` jitted over the mesh, the state
  donated and replicated, as a function of (state, batch, key)."""
  rep, data_sharding = parallel.replicated(mesh), parallel.batch_sharding(mesh)
  jitted = jax.jit(step_fn, in_shardings=(rep, data_sharding, rep), out_shardings=(rep, rep),
                   donate_argnums=0, static_argnums=tuple(range(3, 3 + len(static))))
  return lambda state, batch, key: jitted(state, batch, key, *static)


def train_batches(split: data.Split, config: ml_collections.ConfigDict,
                  start_step: int, mesh) -> Iterator[dict]:
  """Global training batches from `start_step` on, epoch after epoch."""
  d = config.data
  per_epoch = data.steps_per_epoch(split, d.batch_size, d.bucket_lengths)
  epoch, offset = divmod(start_step, per_epoch)
  while True:
    for batch in data.train_batches(
        split, batch_size=d.batch_size, bucket_lengths=d.bucket_lengths,
        seed=config.seed, epoch=epoch, start_step=offset,
        process_index=jax.process_index(), process_count=jax.process_count()):
      yield parallel.to_global(_model_inputs(batch), mesh)
    epoch, offset = epoch + 1, 0


def _model_inputs(batch: dict) -> dict:
  return {k: batch[k] for k in ("tokens", "lengths", "weights")}


def total_steps(config: ml_collections.ConfigDict, per_epoch: int) -> int:
  t = config.train
  return t.num_steps if t.num_steps > 0 else t.num_epochs * per_epoch


def _check_finite(state: TrainState) -> None:
  bad = int(state.nonfinite_step)
  if bad >= 0:
    raise CvaeError(f"the training loss became NaN or inf at step {bad + 1}; "
                    "stopped without saving (the last good checkpoint is kept)")


def load_corpus(d: ml_collections.ConfigDict) -> data.Corpus:
  """data.load_corpus, with the TFDS preparation done by process 0 alone."""
  if jax.process_count() > 1 and jax.process_index() != 0:
    multihost_utils.sync_global_devices("cvae_jax: waiting for process 0's data")
    return data.load_corpus(d)
  corpus = data.load_corpus(d)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("cvae_jax: waiting for process 0's data")
  return corpus


def reset_decoder(state: TrainState, model: TextVAE, key: jax.Array, example: dict,
                  mesh) -> TrainState:
  """`state` with the decoder's parameters and Adam state those of a fresh
  start from `key` (Li et al. 2019); the encoder and the embedding keep theirs."""
  fresh = jax.jit(create_train_state, static_argnums=(0, 1),
                  out_shardings=parallel.replicated(mesh))(model, state.tx, key, example)
  params, opt_state = partition.reset(("decoder",), state.params, state.opt_state,
                                      fresh.params, fresh.opt_state)
  return state.replace(params=params, opt_state=opt_state)


def make_step(config: ml_collections.ConfigDict, model: TextVAE, split: data.Split,
              mesh, keys: tuple[jax.Array, jax.Array], num_steps: int,
              phase: Optional[aggressive.Phase]) -> Callable:
  """The run's training step `(state, batch, step) -> (state, sums)`.

  Joint, or the lagging encoder's while `phase` lasts (`config.train.aggressive`);
  with `ae_pretrain_steps` N > 0, step N first resets the decoder (its fresh
  start from `fold_in(init key, N)`). keys: (init, train).
  """
  t = config.train
  init_key, train_key = keys
  objective = Objective.from_config(config, num_steps)
  joint = jit_train_step(objective, mesh)
  step_fn = lambda state, batch, step: joint(state, batch, train_key)
  if t.aggressive:
    sampler = data.RandomBatches(
        split, batch_size=config.data.batch_size, bucket_lengths=config.data.bucket_lengths,
        seed=config.seed, process_index=jax.process_index(),
        process_count=jax.process_count())
    lagging = aggressive.LaggingEncoder(
        phase, joint, jit_train_step(objective, mesh, partition.GENERATIVE),
        jit_encoder_step(objective, mesh),
        lambda step, i: parallel.to_global(_model_inputs(sampler(step, i)), mesh),
        jax.random.split(train_key)[1], t.aggressive_max_inner, t.aggressive_check_every)
    step_fn = lambda state, batch, step: lagging(state, batch, train_key, step)
  if not t.ae_pretrain_steps:
    return step_fn

  def after_pretraining(state, batch, step):
    if step == t.ae_pretrain_steps:
      state = reset_decoder(state, model, jax.random.fold_in(init_key, step), batch, mesh)
    return step_fn(state, batch, step)
  return after_pretraining


def restore_or_init(ckpts: Checkpoints, model: TextVAE, config: ml_collections.ConfigDict,
                    mesh, key: jax.Array, example: dict) -> tuple[TrainState, dict]:
  """The newest checkpoint's (state, meta), or a new state and {}; replicated."""
  state = jax.jit(create_train_state, static_argnums=(0, 1),
                  out_shardings=parallel.replicated(mesh))(
                      model, make_optimizer(config.train), key, example)
  restored = ckpts.restore(ckpts.latest, state)
  if restored is None:
    return state, {}
  return restored


def _say(message: str) -> None:
  """One line on the console from process 0, above any progress bar."""
  if jax.process_index() == 0:
    tqdm.write(message, file=sys.stderr)


def _announce_start(workdir: str, ckpts: Checkpoints, step: int, plateau: Plateau) -> None:
  if not step:
    _say(f"new run in {workdir}")
    return
  _say(f"resuming from step {step}, checkpoint {ckpts.latest.directory / str(step)} "
       f"(best validation -ELBO {plateau.best:.2f}, {plateau.decays} learning-rate "
       f"decays, {plateau.waited} validations without improvement)")


def _after_validation(state: TrainState, valid_nll: float, step: int, plateau: Plateau,
                      ckpts: Checkpoints, decay_factor: float, mesh) -> TrainState:
  """Saves a new best; on a plateau decays the learning rate from the best state."""
  action = plateau.update(valid_nll, step)
  if action == "improved" and step not in ckpts.best.all_steps():
    ckpts.save(ckpts.best, step, state, {"step": step, "valid_nll_elbo": valid_nll})
  elif action == "decay":
    ckpts.wait()
    restored = ckpts.restore(ckpts.best, state)
    best = restored[0] if restored else state
    scale = jax.device_put(jnp.float32(decay_factor ** plateau.decays),
                           parallel.replicated(mesh))
    state = best.replace(step=state.step, lr_scale=scale)
    _say(f"step {step}: {plateau.rule.lr_decay_patience} validations without "
         f"improvement; learning rate x{float(scale):g} from the best checkpoint "
         f"(-ELBO {plateau.best:.2f})")
  elif action == "stop":
    _say(f"step {step}: validation -ELBO has not improved on {plateau.best:.2f}; "
         "stopping early")
  return state


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains, validates every epoch, checkpoints, resumes; returns test metrics.

  Training ends after `num_steps` (or `num_epochs`) or earlier when the
  validation NLL stops improving (see cvae_jax/plateau.py). The test metrics
  are those of the best checkpoint, with its `checkpoint_step`. Every check
  comes before the first write; a second process training in `workdir` is
  refused. Ctrl-C raises `Interrupted` once the checkpoint being written is
  complete; SIGTERM raises `Terminated` once the step it came in has been
  checkpointed (cvae_jax/preemption.py).
  """
  config = with_run_data(workdir, config)
  d, t = config.data, config.train
  validate(config)
  check_restart(workdir, config)
  corpus = load_corpus(d)
  model = TextVAE(model_config(config, len(corpus.vocab)))
  train_split = corpus.splits["train"]
  per_epoch = data.steps_per_epoch(train_split, d.batch_size, d.bucket_lengths)
  if per_epoch == 0:
    raise CvaeError(f"the train split has too few sentences ({len(train_split)}) "
                    f"for one batch of config.data.batch_size={d.batch_size}")
  with exclusive(workdir):  # one training process per workdir
    prepare_workdir(workdir, config, corpus.vocab)
    mesh = parallel.make_mesh()
    init_key, train_key, eval_key = root_keys(config.seed)

    ckpts = Checkpoints(workdir, keep=t.keep_checkpoints)
    try:  # closing waits for the saves in flight, even on an exception
      state, meta = restore_or_init(ckpts, model, config, mesh, init_key,
                                    next(train_batches(train_split, config, 0, mesh)))
      plateau = Plateau.from_json(PlateauRule.from_config(t), meta.get("plateau"))
      phase = aggressive.Phase.from_json(meta.get("aggressive")) if t.aggressive else None
      _announce_start(workdir, ckpts, int(state.step), plateau)
      evaluator = Evaluator(model, mesh, config, eval_key)
      num_steps = total_steps(config, per_epoch)
      step_fn = make_step(config, model, train_split, mesh, (init_key, train_key), num_steps,
                          phase)
      with contextlib.closing(MetricWriter(workdir)) as writer:  # its queue is written out
        writer.truncate_after(int(state.step))
        with preemption.watched():
          state = _train_loop(config, state, plateau, phase, ckpts, writer, evaluator, corpus,
                              step_fn, num_steps, per_epoch, mesh, meta.get("train_sums"))
        ckpts.wait()
        test, checkpoint_step = evaluate_best(ckpts, state, evaluator, corpus.splits["test"],
                                             config.eval.train_iw_samples)
        writer.write(int(state.step), "test", test)
    finally:
      ckpts.close()
  return dict(test, split="test", checkpoint="best", checkpoint_step=checkpoint_step)


def _train_loop(config: ml_collections.ConfigDict, state: TrainState, plateau: Plateau,
                phase: Optional[aggressive.Phase], ckpts: Checkpoints, writer: MetricWriter,
                evaluator: Evaluator, corpus: data.Corpus, step_fn: Callable,
                num_steps: int, per_epoch: int, mesh,
                train_sums: Optional[dict] = None) -> TrainState:
  """Steps (`make_step`) from `state.step` to `num_steps` or an early stop;
  the final state. `train_sums`: the train metrics summed since the last log,
  as a checkpoint taken between logs keeps them."""
  t = config.train
  eval_every = t.eval_every or per_epoch
  step = int(state.step)
  acc = None if train_sums is None else {k: jnp.float32(v) for k, v in train_sums.items()}
  remaining = 0 if plateau.stopped else max(0, num_steps - step)
  bar = tqdm(total=num_steps, initial=step, desc="train", unit="step",
             disable=jax.process_index() != 0, dynamic_ncols=True)
  batches = prefetch(train_batches(corpus.splits["train"], config, step, mesh))
  paced = Paced()
  try:
    for batch in itertools.islice(batches, remaining):
      ctrl_c.check()
      state, sums = step_fn(state, batch, step)
      acc = sums if acc is None else metrics_lib.add(acc, sums)
      paced(acc)
      step += 1
      bar.update(1)
      stop = preemption.requested(step)
      evaluate_now = step % eval_every == 0 or step == num_steps
      save_now = evaluate_now or step % t.checkpoint_every == 0
      if step % t.log_every == 0 or save_now:
        _check_finite(state)
        summary = metrics_lib.summarize(acc)
        writer.write(step, "train", summary)
        bar.set_postfix(loss=f"{summary['loss']:.2f}", kl=f"{summary['kl']:.2f}")
        acc = None
      if evaluate_now:
        valid = evaluator(state.variables, corpus.splits["valid"], config.eval.train_iw_samples)
        writer.write(step, "valid", valid)
        state = _after_validation(state, valid["nll_elbo"], step, plateau, ckpts,
                                  t.lr_decay_factor, mesh)
        if phase is not None and phase.update(valid["mi"]):
          _say(f"step {step}: the validation MI {valid['mi']:.3f} did not rise; "
               "the aggressive phase ends")
      if save_now or stop:
        meta = {"step": step, "plateau": plateau.to_json()}
        if phase is not None:
          meta["aggressive"] = phase.to_json()
        if acc is not None:
          meta["train_sums"] = {k: float(v) for k, v in acc.items()}
        ckpts.save(ckpts.latest, step, state, meta)
      if stop:
        ckpts.wait()
        raise Terminated(step)
      if plateau.stopped:
        break
  except KeyboardInterrupt as e:
    ckpts.wait()  # the checkpoint being written completes
    raise Interrupted(step, ckpts.latest.latest_step()) from e
  finally:
    batches.close()
    bar.close()
  return state


def evaluate_best(ckpts: Checkpoints, state: TrainState, evaluator: Evaluator,
                  split: data.Split, iw_samples: int) -> tuple[dict, int]:
  """Metrics on `split` of the best checkpoint (by validation NLL), and its step.

  Before the first best checkpoint: those of `state`.
  """
  restored = ckpts.restore(ckpts.best, state)
  best_state, meta = restored if restored else (state, {"step": int(state.step)})
  return evaluator(best_state.variables, split, iw_samples), int(meta["step"])
