"""Copula-VAE on the embedded synthetic corpus (no download needed).

Sentences come from a fixed random LSTM decoder driven by a 2-d latent
(He et al. 2019's synthetic setting), so the true latents are known.

  python launch/train.py --config configs/synthetic.py --workdir runs/synthetic
"""

from cvae_jax import config as cfg


def get_config(variant: str = ""):
  c = cfg.base_config()
  c.model.emb_dim = c.model.hidden_dim = 64
  c.model.latent_dim = 8
  c.model.dropout = 0.0
  c.train.num_epochs = 10
  c.train.kl_anneal_steps = 1_000
  return cfg.tiny(c) if variant == "tiny" else c
