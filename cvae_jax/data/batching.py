"""Length-bucketed, padded batches of a `Split`; numpy on the host.

Each sentence goes to the smallest bucket length >= its length (`<s>` and
`</s>` included), so a batch's shape is always `[rows, bucket_length]`. A batch
is a dict:
  tokens: [rows, bucket_length] int32, `<s> w1 .. wn </s>` then PAD.
  lengths: [rows] int32, tokens per row including `<s>` and `</s>`.
  weights: [rows] float32, 1 for a sentence, 0 for a padding row (`<s> </s>`,
    length 2).
  latent: [rows, dz] float32, only for splits with latents (zeros on padding).
  label: [rows] int32, only for splits with labels (0 on padding).
`batch_size` is the global batch; with `process_count` P, process p gets rows
`[p * batch_size / P, (p + 1) * batch_size / P)` of every global batch.
"""

from typing import Iterator, Sequence

import numpy as np

from cvae_jax.data.corpus import Split
from cvae_jax.data.vocab import BOS, EOS, PAD
from cvae_jax.errors import DataError

Batch = dict[str, np.ndarray]
_Plan = list[tuple[int, np.ndarray]]  # (bucket length, [batch_size] indices)


def steps_per_epoch(split: Split, batch_size: int,
                    bucket_lengths: Sequence[int]) -> int:
  """Full training batches per epoch: sum over buckets of n // batch_size."""
  _check_batch(batch_size, 0, 1)
  buckets, bucket_of = _buckets(split, bucket_lengths)
  return int((np.bincount(bucket_of, minlength=len(buckets)) //
              batch_size).sum())


def train_batches(split: Split, *, batch_size: int,
                  bucket_lengths: Sequence[int], seed: int, epoch: int,
                  start_step: int = 0, process_index: int = 0,
                  process_count: int = 1) -> Iterator[Batch]:
  """One epoch of full training batches, from `start_step` on.

  Sentences are shuffled within each bucket and cut into full batches (each
  bucket's remainder is dropped), and the batches are shuffled; the order is
  a function of `(seed, epoch)` alone, so a resumed run continues exactly.

  Args:
    split: the sentences.
    batch_size: the global batch size, a multiple of `process_count`.
    bucket_lengths: increasing padded lengths; the largest must hold the
      longest sentence.
    seed: non-negative int.
    epoch: non-negative int.
    start_step: the first batch to yield, in [0, steps_per_epoch].
    process_index: this process, in [0, process_count).
    process_count: the number of processes sharing each global batch.

  Returns:
    An iterator over batches of `batch_size / process_count` rows, all real.

  Raises:
    DataError: for inconsistent arguments (raised on call, not on iteration).
  """
  rows = _check_batch(batch_size, process_index, process_count)
  buckets, bucket_of = _buckets(split, bucket_lengths)
  rng = np.random.default_rng((seed, epoch))
  plan = []
  for k, length in enumerate(buckets):
    members = rng.permutation(np.flatnonzero(bucket_of == k))
    full = len(members) // batch_size
    plan.extend((length, batch) for batch in
                members[:full * batch_size].reshape(full, batch_size))
  plan = [plan[i] for i in rng.permutation(len(plan))]
  if not 0 <= start_step <= len(plan):
    raise DataError(f"start_step {start_step} is outside the epoch's "
                    f"{len(plan)} steps.")
  return _assemble_all(split, plan[start_step:], rows)


class RandomBatches:
  """Full training batches of random sentences, each a function of a key alone.

  `sampler(*key)` picks a bucket with probability proportional to its full
  batches in an epoch (as drawing one of `train_batches`' batches at random
  would) and `batch_size` distinct sentences of it, from
  `np.random.default_rng((seed, *key))`, so it repeats exactly. Arguments are
  as for `train_batches`; the keys are non-negative ints.
  """

  def __init__(self, split: Split, *, batch_size: int, bucket_lengths: Sequence[int],
               seed: int, process_index: int = 0, process_count: int = 1):
    self.split, self.batch_size, self.seed = split, batch_size, seed
    self.rows = _check_batch(batch_size, process_index, process_count)
    buckets, bucket_of = _buckets(split, bucket_lengths)
    members = [np.flatnonzero(bucket_of == k) for k in range(len(buckets))]
    full = np.array([len(m) // batch_size for m in members])
    if not full.sum():
      raise DataError(f"The {split.name} split has no full batch of {batch_size}.")
    self.lengths, self.members = buckets[full > 0], [m for m, f in zip(members, full) if f]
    self.probabilities = full[full > 0] / full.sum()

  def __call__(self, *key: int) -> Batch:
    rng = np.random.default_rng((self.seed, *key))
    k = rng.choice(len(self.members), p=self.probabilities)
    indices = rng.choice(self.members[k], self.batch_size, replace=False)
    return _assemble(self.split, indices[self.rows], int(self.lengths[k]))


def eval_batches(split: Split, *, batch_size: int,
                 bucket_lengths: Sequence[int], process_index: int = 0,
                 process_count: int = 1) -> Iterator[Batch]:
  """Every sentence once, bucket by bucket, in split order within a bucket.

  Each bucket's last batch is filled up with weight-0 padding rows. Arguments
  are as for `train_batches`.

  Returns:
    An iterator over batches of `batch_size / process_count` rows.
  """
  rows = _check_batch(batch_size, process_index, process_count)
  buckets, bucket_of = _buckets(split, bucket_lengths)
  plan = []
  for k, length in enumerate(buckets):
    members = np.flatnonzero(bucket_of == k)
    padded = np.full(-(-len(members) // batch_size) * batch_size, -1)
    padded[:len(members)] = members
    plan.extend((length, batch) for batch in padded.reshape(-1, batch_size))
  return _assemble_all(split, plan, rows)


def _check_batch(batch_size: int, process_index: int,
                 process_count: int) -> slice:
  """Validates the arguments; returns this process's rows of a batch."""
  if batch_size < 1 or process_count < 1 or batch_size % process_count:
    raise DataError(f"The batch size ({batch_size}) must be a positive "
                    f"multiple of the process count ({process_count}).")
  if not 0 <= process_index < process_count:
    raise DataError(f"process_index {process_index} is outside "
                    f"[0, {process_count}).")
  local = batch_size // process_count
  return slice(process_index * local, (process_index + 1) * local)


def _buckets(split: Split,
             bucket_lengths: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
  """Returns the bucket lengths [K] int and each sentence's bucket [N] int."""
  buckets = np.asarray(bucket_lengths)
  if (buckets.ndim != 1 or not len(buckets) or
      not np.issubdtype(buckets.dtype, np.integer) or buckets[0] < 2 or
      np.any(np.diff(buckets) <= 0)):
    raise DataError(f"bucket_lengths must be increasing integers >= 2; got "
                    f"{bucket_lengths!r}.")
  bucket_of = np.searchsorted(buckets, split.lengths)
  too_long = np.flatnonzero(bucket_of == len(buckets))
  if len(too_long):
    i = too_long[0]
    raise DataError(
        f"Sentence {i} (line {i + 1}) of the {split.name} split has "
        f"{split.lengths[i]} tokens with <s> and </s>, more than the largest "
        f"bucket length {buckets[-1]}: make the largest bucket length at least "
        "config.data.max_length + 2.")
  return buckets, bucket_of


def _assemble_all(split: Split, plan: _Plan, rows: slice) -> Iterator[Batch]:
  for length, indices in plan:
    yield _assemble(split, indices[rows], length)


def _assemble(split: Split, indices: np.ndarray, length: int) -> Batch:
  """Pads sentences `indices` ([rows] int, -1 = padding row) to `length`."""
  real = indices >= 0
  safe = np.where(real, indices, 0)
  lengths = np.where(real, split.lengths[safe], 2).astype(np.int32)
  positions = np.arange(length)
  tokens = np.take(split.flat_tokens,
                   split.offsets[safe][:, None] + positions, mode="clip")
  tokens = np.where(positions < lengths[:, None], tokens, PAD)
  tokens[~real, :2] = (BOS, EOS)
  batch = {"tokens": tokens.astype(np.int32), "lengths": lengths,
           "weights": real.astype(np.float32)}
  if split.latents is not None:
    batch["latent"] = np.where(real[:, None], split.latents[safe],
                               0).astype(np.float32)
  if split.labels is not None:
    batch["label"] = np.where(real, split.labels[safe], 0).astype(np.int32)
  return batch
