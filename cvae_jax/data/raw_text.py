"""Reads and checks raw corpus files: UTF-8, one example per line."""

import hashlib
import re
from typing import Iterator, Sequence

from etils import epath

from cvae_jax.errors import DataError

_LABEL = re.compile(r"[0-9]{1,9}")


def read_bytes(path: epath.PathLike) -> bytes:
  """Returns the file's content; a missing file is a DataError."""
  path = epath.Path(path)
  if not path.is_file():
    raise DataError(f"Missing data file {path}. Put the split's raw text there "
                    "(one example per line), or set config.data.source_dir "
                    "to '' to download the public files.")
  return path.read_bytes()


def fingerprint(paths: Sequence[epath.PathLike]) -> str:
  """A short hex digest of the files' contents, to key prepared data by."""
  digest = hashlib.sha256()
  for path in paths:
    content = read_bytes(path)
    digest.update(len(content).to_bytes(8, "little"))
    digest.update(content)
  return digest.hexdigest()[:16]


def read_lines(path: epath.PathLike) -> Iterator[tuple[int, str]]:
  """Yields `(line_number, words)`, 1-based, words joined by single spaces.

  A leading UTF-8 byte-order mark and CRLF line ends are dropped.

  Raises:
    DataError: naming the file (and line) when it is missing or empty, is not
      UTF-8, or has a line with no words.
  """
  content = read_bytes(path)
  try:
    text = content.decode("utf-8")
  except UnicodeDecodeError as e:
    line = content.count(b"\n", 0, e.start) + 1
    raise DataError(f"{path}, line {line}: bytes that are not UTF-8 "
                    f"({content[e.start:e.end]!r}). Re-encode the file as "
                    "UTF-8.") from e
  lines = text.removeprefix("\ufeff").split("\n")  # a UTF-8 byte-order mark is no word
  if lines[-1] == "":
    lines.pop()  # The final newline ends the last line; it opens no new one.
  if not lines:
    raise DataError(f"{path} is empty; it must hold one example per line.")
  for number, line in enumerate(lines, start=1):
    words = line.split()
    if not words:
      raise DataError(f"{path}, line {number} is empty; every line must hold "
                      "one example. Remove the blank line.")
    yield number, " ".join(words)


def split_label(path: epath.PathLike, number: int,
                line: str) -> tuple[int, str]:
  """Splits `label text` (yelp13) into a non-negative int label and the text."""
  label, _, text = line.partition(" ")
  if not _LABEL.fullmatch(label):
    raise DataError(f"{path}, line {number}: expected a non-negative integer "
                    f"label before the text, got {label!r}. Each line must "
                    "read `label text`.")
  if not text:
    raise DataError(f"{path}, line {number}: label {label} has no text after "
                    "it.")
  return int(label), text
