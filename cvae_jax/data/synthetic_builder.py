"""TFDS builder for the synthetic corpus; the config name hashes its spec."""

import dataclasses
import hashlib
import json

import numpy as np
import tensorflow_datasets as tfds

from cvae_jax.data import synthetic
from cvae_jax.data import tfds_base


@dataclasses.dataclass(eq=False)
class SyntheticConfig(tfds.core.BuilderConfig):
  spec: synthetic.SyntheticSpec = synthetic.SyntheticSpec()


def spec_config(spec: synthetic.SyntheticSpec) -> SyntheticConfig:
  """A config named after a digest of `spec`: other specs, other folders."""
  fields = json.dumps(dataclasses.asdict(spec), sort_keys=True)
  digest = hashlib.sha256(fields.encode()).hexdigest()[:16]
  return SyntheticConfig(name=f"spec-{digest}", description=fields, spec=spec)


class CvaeSynthetic(tfds_base.Builder):
  """Sentences sampled from a random LSTM whose initial state is linear in z.

  Examples `{'text': words joined by single spaces, 'latent': [dz] float32}`.
  """

  def _info(self) -> tfds.core.DatasetInfo:
    latent_dim = self.builder_config.spec.latent_dim
    return self._features_info({
        "text": tfds.features.Text(),
        "latent": tfds.features.Tensor(shape=(latent_dim,), dtype=np.float32),
    })

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # Nothing to download.
    splits = synthetic.generate(self.builder_config.spec)
    return {split: self._generate_examples(*data)
            for split, data in splits.items()}

  def _generate_examples(self, sentences, latents):
    for i, (text, latent) in enumerate(zip(sentences, latents)):
      yield i, {"text": text, "latent": latent}
