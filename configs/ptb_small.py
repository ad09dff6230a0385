"""Copula-VAE on Penn Treebank at the paper's Fig. 4 size (emb/hidden 200).

  python launch/train.py --config configs/ptb_small.py \
      --config.data.source_dir=path/to/ptb --workdir runs/ptb_small
"""

from cvae_jax import config as cfg


def get_config(variant: str = ""):
  c = cfg.corpus_config("ptb", copula_weight=0.4, variant=variant)
  if variant != "tiny":
    c.model.emb_dim = c.model.hidden_dim = 200
  return c
