"""The base of this package's TFDS builders."""

import tensorflow_datasets as tfds


class Builder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A builder whose examples keep their generation order (keys 0, 1, ...)."""

  VERSION = tfds.core.Version("1.0.0")
  # TFDS looks for a checksums file next to a builder's module through
  # `importlib_resources`, which it only declares for Python < 3.9
  # (tensorflow/datasets#11212). These builders ship no checksums file.
  code_path = None

  def _features_info(self, features: dict[str, tfds.features.FeatureConnector]
                     ) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self, description=self.__doc__,
        features=tfds.features.FeaturesDict(features), disable_shuffling=True)
