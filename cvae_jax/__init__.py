"""cvae_jax: Gaussian Copula VAE language models in JAX/Flax."""
