"""Encoded corpora: splits of sentences `<s> w1 .. wn </s>` as token ids."""

import dataclasses
from typing import Optional, Sequence

import numpy as np

from cvae_jax.data.vocab import BOS, EOS, Vocab

SPLITS = ("train", "valid", "test")


@dataclasses.dataclass(frozen=True, eq=False)
class Split:
  """N sentences, stored back to back (ragged).

  Attributes:
    name: 'train', 'valid' or 'test'.
    flat_tokens: [sum(lengths)] int32, sentence i is
      `flat_tokens[offsets[i]:offsets[i] + lengths[i]]` = `<s> w1 .. wn </s>`.
    lengths: [N] int32 tokens per sentence, `<s>` and `</s>` included.
    labels: [N] int32 class labels (yelp13), else None.
    latents: [N, dz] float32 true latents (synthetic), else None.
    offsets: [N] int64 start of each sentence in `flat_tokens` (derived).
  """

  name: str
  flat_tokens: np.ndarray
  lengths: np.ndarray
  labels: Optional[np.ndarray] = None
  latents: Optional[np.ndarray] = None
  offsets: np.ndarray = dataclasses.field(init=False, repr=False)

  def __post_init__(self):
    offsets = np.zeros(len(self.lengths), np.int64)
    np.cumsum(self.lengths[:-1], out=offsets[1:])
    object.__setattr__(self, "offsets", offsets)

  @classmethod
  def from_words(cls, name: str, words: Sequence[np.ndarray],
                 labels: Optional[np.ndarray] = None,
                 latents: Optional[np.ndarray] = None) -> "Split":
    """Wraps each id sequence `words[i]` ([n_i] int32) in `<s>` .. `</s>`.

    Args:
      name: the split's name.
      words: at least one sentence's word ids, each [n_i] int32.
      labels: [N] int32 or None.
      latents: [N, dz] float32 or None.
    """
    lengths = np.fromiter((len(w) + 2 for w in words), np.int32,
                          count=len(words))
    ends = np.cumsum(lengths, dtype=np.int64)
    starts = ends - lengths
    flat = np.empty(ends[-1], np.int32)
    inner = np.ones(len(flat), bool)
    inner[starts] = inner[ends - 1] = False
    flat[starts], flat[ends - 1] = BOS, EOS
    flat[inner] = np.concatenate(words)
    return cls(name, flat, lengths, labels, latents)

  def __len__(self) -> int:
    return len(self.lengths)

  def sentence(self, i: int) -> np.ndarray:
    """The ids of sentence i, `<s> w1 .. wn </s>`; [lengths[i]] int32."""
    start = self.offsets[i]
    return self.flat_tokens[start:start + self.lengths[i]]


@dataclasses.dataclass(frozen=True, eq=False)
class Corpus:
  """A vocabulary (built from train) and the encoded splits."""

  name: str
  vocab: Vocab
  splits: dict[str, Split]
