"""Word vocabulary: special tokens first, then words by train frequency."""

import collections
import dataclasses
import os
from typing import Iterable, Sequence

import numpy as np

from cvae_jax.errors import DataError

PAD, UNK, BOS, EOS = 0, 1, 2, 3
SPECIALS = ("<pad>", "<unk>", "<s>", "</s>")
UNK_ALIASES = ("<unk>", "_UNK")


@dataclasses.dataclass(frozen=True, repr=False)
class Vocab:
  """Maps tokens to ids and back; `tokens[:4]` are `SPECIALS`.

  Words listed in `unk_aliases` (the corpora's own out-of-vocabulary markers)
  encode to UNK. A text word equal to a special token string encodes to that
  special's id.
  """

  tokens: tuple[str, ...]
  unk_aliases: tuple[str, ...] = UNK_ALIASES
  _index: dict[str, int] = dataclasses.field(init=False, compare=False)

  def __post_init__(self):
    if tuple(self.tokens[:len(SPECIALS)]) != SPECIALS:
      raise DataError(f"A vocabulary must start with {SPECIALS}.")
    object.__setattr__(self, "tokens", tuple(self.tokens))
    object.__setattr__(self, "unk_aliases", tuple(self.unk_aliases))
    index = dict.fromkeys(self.unk_aliases, UNK)
    index.update((token, i) for i, token in enumerate(self.tokens))
    object.__setattr__(self, "_index", index)

  @classmethod
  def build(cls, sentences: Iterable[Sequence[str]], max_size: int,
            unk_aliases: Sequence[str] = UNK_ALIASES) -> "Vocab":
    """Counts words and keeps the `max_size - 4` most frequent.

    Args:
      sentences: word sequences (the train split only).
      max_size: the largest vocabulary, the 4 special tokens included.
      unk_aliases: words that stand for an unknown word; they map to `<unk>`
        and get no entry of their own.

    Returns:
      The vocabulary; ties in frequency go to the word seen first, so the
      result is a deterministic function of `sentences`.
    """
    if max_size <= len(SPECIALS):
      raise DataError(f"The vocabulary size must exceed {len(SPECIALS)} (the "
                      f"special tokens); got {max_size}. Raise "
                      "config.data.max_vocab_size.")
    counts = collections.Counter()
    for words in sentences:
      counts.update(words)
    for token in (*SPECIALS, *unk_aliases):
      counts.pop(token, None)
    # most_common sorts stably, so equal counts keep first-occurrence order.
    words = [w for w, _ in counts.most_common(max_size - len(SPECIALS))]
    return cls((*SPECIALS, *words), tuple(unk_aliases))

  def __len__(self) -> int:
    return len(self.tokens)

  def __repr__(self) -> str:
    return f"Vocab({len(self)} tokens)"

  def encode(self, words: Sequence[str]) -> np.ndarray:
    """Maps words to ids, unknown words to UNK; `[len(words)]` int32."""
    return np.fromiter((self._index.get(w, UNK) for w in words),
                       dtype=np.int32, count=len(words))

  def decode(self, ids: Iterable[int]) -> str:
    """Joins the words of `ids` up to the first EOS, skipping PAD and BOS."""
    words = []
    for i in ids:
      i = int(i)
      if i == EOS:
        break
      if i not in (PAD, BOS):
        words.append(self.tokens[i])
    return " ".join(words)

  def save(self, path: str | os.PathLike) -> None:
    """Writes one token per line, UTF-8."""
    with open(path, "w", encoding="utf-8") as f:
      f.writelines(f"{token}\n" for token in self.tokens)

  @classmethod
  def load(cls, path: str | os.PathLike,
           unk_aliases: Sequence[str] = UNK_ALIASES) -> "Vocab":
    """Reads a file written by `save`."""
    try:
      with open(path, encoding="utf-8") as f:
        tokens = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
      raise DataError(f"Cannot read the vocabulary file {path}: {e}.") from e
    if tuple(tokens[:len(SPECIALS)]) != SPECIALS:
      raise DataError(f"{path}: a vocabulary file must start with the lines "
                      f"{SPECIALS}; it is not one written by Vocab.save.")
    seen = {}
    for line, token in enumerate(tokens, start=1):
      if not token or token.split() != [token]:
        raise DataError(f"{path}, line {line}: expected one token without "
                        f"spaces, got {token!r}.")
      if token in seen:
        raise DataError(f"{path}, line {line}: token {token!r} repeats line "
                        f"{seen[token]}.")
      seen[token] = line
    return cls(tuple(tokens), tuple(unk_aliases))
