"""Tiny models, batches and readers shared by the tests."""

import os
import re
import struct

import jax
import numpy as np

from cvae_jax.models import ModelConfig, TextVAE


def launcher_env(devices: int = 1) -> dict[str, str]:
  """The environment for a launcher subprocess: the session's XLA flags with
  `devices` simulated CPU devices instead of conftest's 8."""
  flags = re.sub(r"\s*--xla_force_host_platform_device_count=\d+", "",
                 os.environ.get("XLA_FLAGS", ""))
  if devices > 1:
    flags += f" --xla_force_host_platform_device_count={devices}"
  return dict(os.environ, XLA_FLAGS=flags.strip())


def tiny_model(posterior="copula", vocab_size=30, **kw) -> TextVAE:
  return TextVAE(ModelConfig(vocab_size=vocab_size, emb_dim=8, hidden_dim=16,
                             latent_dim=3, posterior=posterior, **kw))


def random_batch(seed=0, batch=8, length=12, vocab_size=30) -> dict:
  """<s> w.. </s> PAD rows of random lengths: tokens, lengths, weights."""
  rng = np.random.default_rng(seed)
  lengths = rng.integers(3, length + 1, batch).astype(np.int32)
  tokens = np.zeros((batch, length), np.int32)
  for i, n in enumerate(lengths):
    tokens[i, 0], tokens[i, n - 1] = 2, 3
    tokens[i, 1:n - 1] = rng.integers(4, vocab_size, n - 2)
  return {"tokens": tokens, "lengths": lengths, "weights": np.ones(batch, np.float32)}


def init_variables(model: TextVAE, batch: dict, seed=0) -> dict:
  key = jax.random.key(seed)
  return jax.jit(model.init)({"params": key, "latent": key, "dropout": key},
                             batch["tokens"], batch["lengths"])


def perturb(params: dict, seed: int, noise=0.5, scale=1.0) -> dict:
  """Each parameter plus noise * N(0, 1), and then, outside a `marginals`
  submodule, times `scale` (e.g. to make a copula's heads extreme)."""
  leaves, tree = jax.tree.flatten_with_path(params)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return jax.tree.unflatten(tree, [
      (p + noise * jax.random.normal(k, p.shape)) * (1.0 if path[0].key == "marginals" else scale)
      for (path, p), k in zip(leaves, keys)])


def tb_scalars(tb_dir) -> list[tuple[str, int, float]]:
  """Every (tag, step, value) scalar in the TensorBoard event files of `tb_dir`, sorted.

  Event files are TFRecords: [length u64][crc u32][Event proto][crc u32].
  """
  from tensorboardX.proto import event_pb2
  scalars = []
  for name in os.listdir(tb_dir):
    with open(os.path.join(tb_dir, name), "rb") as f:
      content = f.read()
    offset = 0
    while offset < len(content):
      (length,) = struct.unpack("<Q", content[offset:offset + 8])
      event = event_pb2.Event.FromString(content[offset + 12:offset + 12 + length])
      scalars += [(v.tag, event.step, v.simple_value) for v in event.summary.value]
      offset += 12 + length + 4
  return sorted(scalars)
