"""A run's workdir: its config and vocabulary, checked on every restart.

<workdir>/config.json  the full config of the run (written once)
<workdir>/vocab.txt    the vocabulary, one token per line
A workdir that holds another model's run (another posterior, size or
vocabulary) is refused rather than silently mixed.
"""

import json
import os
from typing import Optional

import jax
import ml_collections

from cvae_jax.data.vocab import Vocab
from cvae_jax.errors import CvaeError

# Config fields that a checkpoint's contents depend on.
_MODEL_FIELDS = ("data.name", "model.posterior", "model.emb_dim", "model.hidden_dim",
                 "model.latent_dim", "model.feed_latent")


def check_run(workdir: str, config: ml_collections.ConfigDict,
              vocab: Optional[Vocab] = None) -> Vocab:
  """The run's vocabulary, after checking that `config` (and `vocab`) match the run."""
  config_path = os.path.join(workdir, "config.json")
  vocab_path = os.path.join(workdir, "vocab.txt")
  if not (os.path.exists(config_path) and os.path.exists(vocab_path)):
    raise CvaeError(f"{workdir} holds no run (config.json, vocab.txt); train one first")
  with open(config_path) as f:
    saved = json.load(f)
  for field in _MODEL_FIELDS:
    old, new = _get(saved, field), _get(config.to_dict(), field)
    if old != new:
      raise CvaeError(f"{workdir} holds a run with config.{field}={old!r}, not {new!r}; "
                      "use another --workdir or the same config")
  saved_vocab = Vocab.load(vocab_path)
  if vocab is not None and saved_vocab != vocab:
    raise CvaeError(f"{workdir} holds a run with another vocabulary ({vocab_path}); "
                    "use another --workdir or the same data")
  return saved_vocab


def prepare_workdir(workdir: str, config: ml_collections.ConfigDict, vocab: Vocab) -> None:
  """Creates the workdir, or checks that it holds a run of the same model."""
  config_path = os.path.join(workdir, "config.json")
  if os.path.exists(config_path):
    check_run(workdir, config, vocab)
    return
  if jax.process_index() != 0:
    return
  os.makedirs(workdir, exist_ok=True)
  vocab.save(os.path.join(workdir, "vocab.txt"))
  with open(config_path + ".tmp", "w") as f:
    f.write(config.to_json_best_effort(indent=2))
  os.replace(config_path + ".tmp", config_path)


def _get(tree: dict, dotted: str):
  for part in dotted.split("."):
    tree = tree.get(part, {}) if isinstance(tree, dict) else None
  return tree
