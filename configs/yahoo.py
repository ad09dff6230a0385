"""Copula-VAE on yahoo (lambda 0.5, the paper's best; vocabulary at most 20K).

  python launch/train.py --config configs/yahoo.py \
      --config.data.source_dir=path/to/yahoo --workdir runs/yahoo
"""

from cvae_jax import config as cfg


def get_config(variant: str = ""):
  c = cfg.base_config()
  c.data.name = "yahoo"
  c.model.copula_weight = 0.5
  c.train.kl_anneal_start = 1_000
  c.train.kl_anneal_steps = 20_000
  return cfg.tiny(c) if variant == "tiny" else c
