"""Parameter groups, and an Adam per group so that one group can move alone.

The lagging encoder (cvae_jax/aggressive.py) updates the inference network
alone, then the generative model alone; the autoencoder pretraining
(cvae_jax/pretrain.py) gives the decoder fresh parameters and a fresh Adam
state. Groups, by the model's top-level modules (`TextVAE.PARAM_GROUPS`):

  'encoder'    the encoder LSTM and the posterior's head (q(z|x));
  'embedding'  the word embedding, read by encoder and decoder alike;
  'decoder'    the decoder LSTM, z -> its initial state, the softmax layer.

The partitioned optimiser clips the global gradient norm and then applies one
Adam per group. Adam works element-wise, so while every group moves at every
step it is the same optimiser as one Adam over all parameters, only its state
tree differs (the default runs keep the plain one, `make_optimizer`).
"""

from __future__ import annotations

import functools
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import optax

from cvae_jax.models import TextVAE

GROUPS = ("encoder", "embedding", "decoder")
ENCODER = ("encoder",)  # the inference network
GENERATIVE = ("embedding", "decoder")  # p(x|z): what the encoder-only steps keep fixed


def labels(params: dict) -> dict:
  """The group of each parameter: a tree like `params` with group names."""
  return {name: jax.tree.map(lambda _, g=TextVAE.PARAM_GROUPS[name]: g, subtree)
          for name, subtree in params.items()}


@functools.cache
def make_optimizer(learning_rate: float, grad_clip: float,
                   partitioned: bool) -> optax.GradientTransformation:
  """Global-norm clipping, then Adam: one for all, or one per group.

  One object per setting in a process. The jitted `create_train_state` takes
  the model and the optimizer as static arguments (a flax module compares by
  its fields), so the runs of one recipe in a process share its trace and
  get train states with equal static fields (its first output's `apply_fn`,
  this `tx`); their jitted steps then share one trace too (a test's runs).
  """
  if not partitioned:
    return optax.chain(optax.clip_by_global_norm(grad_clip), optax.adam(learning_rate))
  return optax.chain(optax.clip_by_global_norm(grad_clip), optax.multi_transform(
      {group: optax.adam(learning_rate) for group in GROUPS}, labels))


def only(groups: Sequence[str], params: dict, new: Any, old: Any) -> Any:
  """A tree like `params` with the leaves of `groups` from `new`, the others from `old`."""
  return jax.tree.map(lambda group, n, o: n if group in groups else o,
                      labels(params), new, old)


def zero_others(groups: Sequence[str], grads: dict) -> dict:
  """`grads` with zeros outside `groups` (so the clipped norm is theirs alone)."""
  return only(groups, grads, grads, jax.tree.map(jnp.zeros_like, grads))


def group_states(opt_state: Any) -> dict:
  """{group: its Adam state} of the partitioned optimiser's state."""
  _, partitioned = opt_state
  return partitioned.inner_states


def with_group_states(opt_state: Any, states: dict) -> Any:
  """The partitioned optimiser's state with these groups' states replaced."""
  clip, partitioned = opt_state
  return clip, partitioned._replace(inner_states={**partitioned.inner_states, **states})


def keep_others(groups: Optional[Sequence[str]], params: dict, new_params: dict,
                new_opt_state: Any, old_opt_state: Any) -> tuple[dict, Any]:
  """After an update of `groups` alone: the parameters and Adam states of the
  other groups exactly as they were (`params` before the update)."""
  kept = {g: s for g, s in group_states(old_opt_state).items() if g not in groups}
  return only(groups, params, new_params, params), with_group_states(new_opt_state, kept)


def reset(groups: Sequence[str], params: dict, opt_state: Any, fresh_params: dict,
          fresh_opt_state: Any) -> tuple[dict, Any]:
  """`groups` re-initialised: their parameters and Adam states from a fresh start."""
  fresh = {g: s for g, s in group_states(fresh_opt_state).items() if g in groups}
  return only(groups, params, fresh_params, params), with_group_states(opt_state, fresh)
