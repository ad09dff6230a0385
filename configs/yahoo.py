"""Copula-VAE on yahoo (lambda 0.5, the paper's best; vocabulary at most 20K).

  python launch/train.py --config configs/yahoo.py \
      --config.data.source_dir=path/to/yahoo --workdir runs/yahoo
"""

from cvae_jax import config as cfg


def get_config(variant: str = ""):
  return cfg.corpus_config("yahoo", copula_weight=0.5, variant=variant)
