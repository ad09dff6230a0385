"""Flax Linen models: LSTM, posteriors and the sentence VAE."""

from cvae_jax.models.text_vae import ModelConfig, TextVAE
