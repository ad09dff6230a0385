"""Copula-VAE on Penn Treebank at the paper's Fig. 4 size (emb/hidden 200).

  python launch/train.py --config configs/ptb_small.py \
      --config.data.source_dir=path/to/ptb --workdir runs/ptb_small
"""

from cvae_jax import config as cfg


def get_config(variant: str = ""):
  c = cfg.base_config()
  c.data.name = "ptb"
  c.model.emb_dim = c.model.hidden_dim = 200
  c.model.copula_weight = 0.4
  c.train.kl_anneal_start = 1_000
  c.train.kl_anneal_steps = 20_000
  return cfg.tiny(c) if variant == "tiny" else c
