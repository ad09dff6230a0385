"""A trained run, loaded for evaluation or generation."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import ml_collections
import numpy as np

from cvae_jax import data, parallel
from cvae_jax.checkpointing import Checkpoints
from cvae_jax.config import model_config
from cvae_jax.errors import CvaeError
from cvae_jax.models import TextVAE
from cvae_jax.train import create_train_state, make_optimizer
from cvae_jax.workdir import check_run


@dataclasses.dataclass(frozen=True)
class Trained:
  model: TextVAE
  state: Any  # TrainState, replicated over the mesh
  vocab: data.Vocab
  step: int  # the checkpoint's train step
  which: str  # 'best' or 'latest'


def load_trained(config: ml_collections.ConfigDict, workdir: str, mesh=None) -> Trained:
  """The best checkpoint of the run in `workdir` (the latest if none is best yet)."""
  vocab = check_run(workdir, config)
  mesh = mesh or parallel.make_mesh()
  model = TextVAE(model_config(config, len(vocab)))
  example = {"tokens": np.array([[data.BOS, data.EOS]], np.int32),
             "lengths": np.array([2], np.int32)}
  shapes = jax.eval_shape(functools.partial(create_train_state, model,
                                            make_optimizer(config.train)),
                          jax.random.key(0), example)
  replicated = parallel.replicated(mesh)
  target = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), shapes)
  ckpts = Checkpoints(workdir)
  try:
    for which, manager in (("best", ckpts.best), ("latest", ckpts.latest)):
      restored = ckpts.restore(manager, target)
      if restored is not None:
        return Trained(model, restored[0], vocab, int(restored[1]["step"]), which)
  finally:
    ckpts.close()
  raise CvaeError(f"{workdir} holds no checkpoint yet; train first")
