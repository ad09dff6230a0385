"""`load_corpus`: prepare a TFDS dataset, read it with grain, encode it."""

import dataclasses
import os
import shutil
from typing import Any, Callable, Optional, Sequence

import grain
import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from cvae_jax.data import synthetic
from cvae_jax.data import synthetic_builder
from cvae_jax.data import text_builders
from cvae_jax.data.corpus import SPLITS, Corpus, Split
from cvae_jax.data.vocab import Vocab
from cvae_jax.errors import DataError

_TEXT_BUILDERS = {
    "ptb": text_builders.CvaePtb,
    "yahoo": text_builders.CvaeYahoo,
    "yelp13": text_builders.CvaeYelp13,
}
_NAMES = (*_TEXT_BUILDERS, "synthetic")
# Records per grain element. TFDS data sources read and decode a list of
# records much faster than one record at a time.
_CHUNK = 4096


@dataclasses.dataclass(frozen=True)
class _RawSplit:
  texts: list[str]  # words joined by single spaces
  labels: Optional[np.ndarray]  # [N] int32
  latents: Optional[np.ndarray]  # [N, dz] float32


def load_corpus(data_config: ml_collections.ConfigDict) -> Corpus:
  """Prepares the dataset (once), builds the vocabulary, encodes the splits.

  Args:
    data_config: reads `name` ('ptb', 'yahoo', 'yelp13' or 'synthetic'),
      `source_dir` (a folder holding train.txt, valid.txt and test.txt; ''
      downloads the public files), `tfds_dir` (where TFDS keeps prepared
      data; '' is TFDS's default), `max_vocab_size` (special tokens
      included), `max_length` (words per example) and, for 'synthetic',
      `synthetic` (the `SyntheticSpec` fields).

  Returns:
    The corpus; its vocabulary comes from the train split alone.

  Raises:
    DataError: for an unknown name, or a missing, empty or malformed file or
      line, or an example of more than `max_length` words; the message names
      the file and line.
  """
  tfds.disable_progress_bar()
  builder, download_config = _builder(data_config)
  _prepare(builder, download_config)
  raw = {split: _read(builder, split) for split in SPLITS}
  vocab = Vocab.build((text.split() for text in raw["train"].texts),
                      data_config.max_vocab_size)
  splits = {
      split: _encode(split, raw[split], vocab, data_config.max_length,
                     _origin(data_config, split))
      for split in SPLITS
  }
  return Corpus(data_config.name, vocab, splits)


def _builder(data_config) -> tuple[tfds.core.DatasetBuilder,
                                   tfds.download.DownloadConfig]:
  data_dir = data_config.tfds_dir or None
  if data_config.name == "synthetic":
    spec = synthetic.SyntheticSpec(**data_config.synthetic.to_dict())
    config = synthetic_builder.spec_config(spec)
    builder = synthetic_builder.CvaeSynthetic(data_dir=data_dir, config=config)
  elif data_config.name in _TEXT_BUILDERS:
    config = text_builders.source_config(data_config.source_dir)
    builder = _TEXT_BUILDERS[data_config.name](data_dir=data_dir, config=config)
  else:
    raise DataError(f"Unknown dataset {data_config.name!r}; set "
                    f"config.data.name to one of {', '.join(_NAMES)}.")
  return builder, tfds.download.DownloadConfig(
      manual_dir=data_config.source_dir or None, try_download_gcs=False)


def _prepare(builder: tfds.core.DatasetBuilder,
             download_config: tfds.download.DownloadConfig) -> None:
  """`builder.download_and_prepare`; when it fails, removes what it created.

  TFDS leaves the dataset's folders and the downloads folder behind, empty,
  and partial downloads (`*.tmp.*`) and, when interrupted, `incomplete.*`
  folders; a failed preparation removes those it started and the folders it
  created that are then empty.
  """
  version_dir = os.fspath(builder.data_dir)  # <root>/<name>/<config>/<version>
  root = os.path.dirname(os.path.dirname(os.path.dirname(version_dir)))
  downloads = os.path.join(root, "downloads")  # TFDS's default download_dir
  folders = [version_dir, os.path.dirname(version_dir),
             os.path.dirname(os.path.dirname(version_dir)),
             os.path.join(downloads, builder.name), os.path.join(downloads, "extracted"),
             downloads, root]  # deepest first
  existed = {folder: set(os.listdir(folder)) if os.path.isdir(folder) else None
             for folder in folders}
  try:
    builder.download_and_prepare(file_format="array_record",
                                 download_config=download_config)
  except BaseException:
    _remove_leftovers(existed)
    raise


def _remove_leftovers(existed: dict[str, Optional[set[str]]]) -> None:
  """In each folder (deepest first), removes the new temporary entries, then the
  folder itself if it is new and empty. `existed`: folder -> its entries
  before, or None if it did not exist."""
  for folder, before in existed.items():
    if not os.path.isdir(folder):
      continue
    for entry in set(os.listdir(folder)) - (before or set()):
      path = os.path.join(folder, entry)
      if os.path.isdir(path) and (".tmp." in entry or entry.startswith("incomplete.")):
        shutil.rmtree(path)
      elif ".tmp." in entry:
        os.remove(path)
    if before is None and not os.listdir(folder):
      os.rmdir(folder)


def _origin(data_config, split: str) -> str:
  """Where a split's lines come from, for error messages."""
  if data_config.name == "synthetic":
    return f"the synthetic {split} split"
  if data_config.source_dir:
    return os.path.join(data_config.source_dir, f"{split}.txt")
  return f"the downloaded {data_config.name} {split} file"


def _in_chunks(num: int, read: Callable[[int, int], Sequence[Any]]) -> list:
  """Concatenates `read(start, stop)` over consecutive chunks of range(num)."""
  chunks = grain.MapDataset.range(0, num, _CHUNK).map(
      lambda start: read(start, min(start + _CHUNK, num)))
  return [item for i in range(len(chunks)) for item in chunks[i]]


def _read(builder: tfds.core.DatasetBuilder, split: str) -> _RawSplit:
  source = builder.as_data_source(split)
  records = _in_chunks(
      len(source), lambda start, stop: source.__getitems__(range(start, stop)))
  features = builder.info.features
  return _RawSplit(
      texts=[r["text"].decode("utf-8") for r in records],
      labels=(np.array([r["label"] for r in records], np.int32)
              if "label" in features else None),
      latents=(np.stack([r["latent"] for r in records])
               if "latent" in features else None))


def _encode(split: str, raw: _RawSplit, vocab: Vocab, max_length: int,
            origin: str) -> Split:
  """Encodes every line; a line of more than `max_length` words is an error."""

  def encode(start: int, stop: int) -> list[np.ndarray]:
    encoded = []
    for i in range(start, stop):
      words = raw.texts[i].split()
      if len(words) > max_length:
        raise DataError(
            f"{origin}, line {i + 1}: {len(words)} words, more than "
            f"config.data.max_length = {max_length}. Raise "
            "config.data.max_length (and the largest bucket length to at "
            "least max_length + 2).")
      encoded.append(vocab.encode(words))
    return encoded

  return Split.from_words(split, _in_chunks(len(raw.texts), encode),
                          raw.labels, raw.latents)
