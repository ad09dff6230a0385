"""Copula-VAE on yelp13 (lambda 0.5, the paper's best; vocabulary at most 20K).

  python launch/train.py --config configs/yelp13.py \
      --config.data.source_dir=path/to/yelp13 --workdir runs/yelp13
"""

from cvae_jax import config as cfg


def get_config(variant: str = ""):
  return cfg.corpus_config("yelp13", copula_weight=0.5, variant=variant)
