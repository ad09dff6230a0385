"""Copula-VAE on Penn Treebank at the paper's size (emb 512, hidden 512, Z 32).

  python launch/train.py --config configs/ptb.py \
      --config.data.source_dir=path/to/ptb --workdir runs/ptb

`--config configs/ptb.py:tiny` is a seconds-long smoke run.
"""

from cvae_jax import config as cfg


def get_config(variant: str = ""):
  return cfg.corpus_config("ptb", copula_weight=0.4, variant=variant)
