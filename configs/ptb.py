"""Copula-VAE on Penn Treebank at the paper's size (emb 512, hidden 512, Z 32).

  python launch/train.py --config configs/ptb.py \
      --config.data.source_dir=path/to/ptb --workdir runs/ptb

`--config configs/ptb.py:tiny` is a seconds-long smoke run.
"""

from cvae_jax import config as cfg


def get_config(variant: str = ""):
  c = cfg.base_config()
  c.data.name = "ptb"
  c.model.copula_weight = 0.4  # the paper's best lambda on PTB
  c.train.num_epochs = 30
  c.train.kl_anneal_start = 1_000
  c.train.kl_anneal_steps = 20_000  # beta reaches 1 about halfway through
  return cfg.tiny(c) if variant == "tiny" else c
