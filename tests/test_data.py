"""Tests for cvae_jax.data: vocabulary, TFDS loading, checks and batching."""

import collections
import pathlib
import time

import ml_collections
import numpy as np
import pytest

from cvae_jax.data import (BOS, EOS, PAD, UNK, Split, Vocab, eval_batches,
                           load_corpus, steps_per_epoch, train_batches)
from cvae_jax.data import synthetic
from cvae_jax.data import text_builders
from cvae_jax.errors import DataError

SHARED_DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
BUCKETS = (8, 16, 24, 32)
PTB_BUCKETS = (16, 24, 32, 48, 64, 96, 128, 202)
SMALL_SYNTHETIC = dict(seed=0, latent_dim=2, vocab_size=50, hidden_dim=16,
                       max_length=12, num_train=400, num_valid=50,
                       num_test=50)


def _config(tfds_dir, name="ptb", source_dir="", max_length=200,
            **synthetic) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({
      "name": name,
      "source_dir": str(source_dir),
      "tfds_dir": str(tfds_dir),
      "max_vocab_size": 20_000,
      "max_length": max_length,
      "synthetic": {**SMALL_SYNTHETIC, **synthetic},
  })


def _shared(corpus: str) -> pathlib.Path:
  folder = SHARED_DATA / corpus
  if not folder.is_dir():
    pytest.skip(f"{folder} is not available")
  return folder


def _write_source(folder: pathlib.Path, **splits: bytes) -> pathlib.Path:
  """Writes `{split}.txt` for each given split; returns the folder."""
  folder.mkdir(parents=True, exist_ok=True)
  for split, content in splits.items():
    (folder / f"{split}.txt").write_bytes(content)
  return folder


GOOD = dict(train=b"a b c\nb c\nc d e f\n", valid=b"a c\nz\n", test=b"b\n")


# Vocab.


def test_vocab_orders_by_frequency_then_first_occurrence():
  sentences = [["b", "a", "b"], ["c", "a", "<unk>", "_UNK", "d"]]
  vocab = Vocab.build(sentences, max_size=100)
  assert vocab.tokens == ("<pad>", "<unk>", "<s>", "</s>", "b", "a", "c", "d")
  assert len(vocab) == 8
  assert vocab == Vocab.build(sentences, max_size=100)
  assert (PAD, UNK, BOS, EOS) == (0, 1, 2, 3)


def test_vocab_max_size_counts_specials():
  vocab = Vocab.build([["b", "a", "b", "c", "a", "b"]], max_size=6)
  assert vocab.tokens[4:] == ("b", "a")
  assert vocab.encode(["c"]).tolist() == [UNK]
  with pytest.raises(DataError, match="max_vocab_size"):
    Vocab.build([["a"]], max_size=4)


def test_vocab_encode_decode():
  vocab = Vocab.build([["a", "b"]], max_size=10)
  ids = vocab.encode(["b", "zzz", "_UNK", "<unk>", "a"])
  assert ids.dtype == np.int32
  assert ids.tolist() == [5, UNK, UNK, UNK, 4]
  assert vocab.decode([BOS, 4, 5, UNK, EOS, 4, PAD]) == "a b <unk>"
  assert vocab.decode(np.array([BOS, 5, PAD, PAD])) == "b"
  assert vocab.encode([]).shape == (0,)


def test_vocab_save_load(tmp_path):
  vocab = Vocab.build([["x", "é", "x"]], max_size=10)
  path = tmp_path / "vocab.txt"
  vocab.save(path)
  assert path.read_text(encoding="utf-8") == "<pad>\n<unk>\n<s>\n</s>\nx\né\n"
  assert Vocab.load(path) == vocab
  path.write_text("<pad>\n<unk>\n<s>\n</s>\nx\nx\n", encoding="utf-8")
  with pytest.raises(DataError, match="line 6"):
    Vocab.load(path)
  path.write_text("x\n", encoding="utf-8")
  with pytest.raises(DataError, match="vocab.txt"):
    Vocab.load(path)


# Real corpora.


@pytest.fixture(scope="module")
def ptb(tmp_path_factory):
  source = _shared("ptb")
  return load_corpus(_config(tmp_path_factory.mktemp("tfds"), "ptb", source))


def test_ptb_sizes(ptb):
  assert {k: len(s) for k, s in ptb.splits.items()} == {
      "train": 42_068, "valid": 3_370, "test": 3_761}
  assert len(ptb.vocab) == 10_002
  assert "<unk>" not in ptb.vocab.tokens[4:]
  test = ptb.splits["test"]
  assert test.lengths.dtype == np.int32
  assert int((test.lengths - 1).sum()) == 78_669 + 3_761
  first = (SHARED_DATA / "ptb" / "test.txt").read_text().split("\n")[0]
  assert ptb.vocab.decode(test.sentence(0)) == " ".join(first.split())
  assert test.sentence(0)[0] == BOS and test.sentence(0)[-1] == EOS
  assert test.labels is None and test.latents is None


def test_ptb_epoch_is_fast(ptb):
  train = ptb.splits["train"]
  start = time.perf_counter()
  batches = list(train_batches(train, batch_size=32,
                               bucket_lengths=PTB_BUCKETS, seed=0, epoch=0))
  assert time.perf_counter() - start < 1.0
  assert len(batches) == steps_per_epoch(train, 32, PTB_BUCKETS)


def test_yelp13_labels(tmp_path):
  yelp = _shared("yelp13")
  source = tmp_path / "yelp13"
  source.mkdir()
  for split, real in (("train", "valid"), ("valid", "valid"),
                      ("test", "test")):
    (source / f"{split}.txt").symlink_to(yelp / f"{real}.txt")
  corpus = load_corpus(_config(tmp_path / "tfds", "yelp13", source))
  sizes = {k: len(s) for k, s in corpus.splits.items()}
  assert sizes == {"train": 7_773, "valid": 7_773, "test": 8_671}
  valid = corpus.splits["valid"]
  assert valid.labels.dtype == np.int32
  assert collections.Counter(valid.labels.tolist()) == {
      0: 246, 1: 669, 2: 1491, 3: 3207, 4: 2160}
  first = (yelp / "valid.txt").read_text(encoding="utf-8").split("\n")[0]
  assert corpus.vocab.decode(valid.sentence(0)) == first.split(" ", 1)[1]


# Local files and their checks.


def test_small_source_round_trip(tmp_path):
  source = _write_source(tmp_path / "src", **GOOD)
  corpus = load_corpus(_config(tmp_path / "tfds", "ptb", source))
  vocab = corpus.vocab
  assert vocab.tokens[4:] == ("c", "b", "a", "d", "e", "f")
  train = corpus.splits["train"]
  assert [vocab.decode(train.sentence(i)) for i in range(len(train))] == [
      "a b c", "b c", "c d e f"]
  assert train.lengths.tolist() == [5, 4, 6]
  assert corpus.splits["valid"].sentence(1).tolist() == [BOS, UNK, EOS]


def test_changed_source_is_prepared_again(tmp_path):
  source = _write_source(tmp_path / "src", **GOOD)
  config = _config(tmp_path / "tfds", "ptb", source)
  first = load_corpus(config)
  _write_source(source, train=b"x y\n")
  second = load_corpus(config)
  assert first.vocab.tokens[4:] != second.vocab.tokens[4:]
  assert second.vocab.decode(second.splits["train"].sentence(0)) == "x y"
  assert len(list((tmp_path / "tfds" / "cvae_ptb").iterdir())) == 2


@pytest.mark.parametrize("split, content, message", [
    ("test", None, r"Missing data file .*test\.txt"),
    ("valid", b"", r"valid\.txt is empty"),
    ("train", b"a b\n\nc\n", r"train\.txt, line 2 is empty"),
    ("train", b"a b\nc\n \t \n", r"train\.txt, line 3 is empty"),
    ("valid", b"a b\n\xff\xfe c\n", r"valid\.txt, line 2: bytes that are"),
])
def test_bad_file_then_fixed(tmp_path, split, content, message):
  splits = {**GOOD, split: content}
  if content is None:
    del splits[split]
  source = _write_source(tmp_path / "src", **splits)
  config = _config(tmp_path / "tfds", "ptb", source)
  with pytest.raises(DataError, match=message):
    load_corpus(config)
  assert not (tmp_path / "tfds").exists()  # no empty folders left behind either
  _write_source(source, **{split: GOOD[split]})
  corpus = load_corpus(config)
  assert corpus.vocab.decode(corpus.splits[split].sentence(0)) == (
      GOOD[split].decode().split("\n")[0])


def test_too_long_line(tmp_path):
  source = _write_source(tmp_path / "src",
                         **{**GOOD, "valid": b"a\nb c d e a\n"})
  config = _config(tmp_path / "tfds", "ptb", source, max_length=4)
  with pytest.raises(DataError, match=r"valid\.txt, line 2: 5 words.*max_"):
    load_corpus(config)
  config.max_length = 5
  assert load_corpus(config).splits["valid"].lengths.tolist() == [3, 7]


def test_failure_in_last_split_leaves_nothing(tmp_path):
  source = _write_source(tmp_path / "src", **{**GOOD, "test": b"b\n\xc3\n"})
  config = _config(tmp_path / "tfds", "ptb", source)
  with pytest.raises(DataError, match=r"test\.txt, line 2"):
    load_corpus(config)
  assert not (tmp_path / "tfds").exists()
  _write_source(source, test=b"b\nc a\n")
  corpus = load_corpus(config)
  assert len(corpus.splits["test"]) == 2


def test_a_failed_preparation_removes_only_what_it_created(tmp_path):
  load_corpus(_config(tmp_path / "tfds", "ptb", _write_source(tmp_path / "good", **GOOD)))
  before = sorted((tmp_path / "tfds").rglob("*"))
  bad = _write_source(tmp_path / "bad", **{**GOOD, "valid": b"a\n\n"})
  with pytest.raises(DataError, match=r"valid\.txt, line 2 is empty"):
    load_corpus(_config(tmp_path / "tfds", "ptb", bad))
  assert sorted((tmp_path / "tfds").rglob("*")) == before


def test_a_failed_download_is_one_error_and_leaves_nothing(tmp_path, monkeypatch):
  # A closed local port: refused at once, with or without a network.
  monkeypatch.setattr(text_builders.CvaePtb, "URLS",
                      {split: f"http://127.0.0.1:9/ptb.{split}.txt"
                       for split in ("train", "valid", "test")})
  with pytest.raises(DataError, match=r"cannot download the public cvae_ptb files .*"
                     r"set config.data.source_dir"):
    load_corpus(_config(tmp_path / "tfds", "ptb"))
  assert not (tmp_path / "tfds").exists()  # no partial downloads, no empty folders


def test_a_byte_order_mark_and_crlf_are_not_part_of_words(tmp_path):
  source = _write_source(tmp_path / "src", **{
      **GOOD, "train": b"\xef\xbb\xbfa b c\r\nb c\r\nc d e f\r\n"})
  corpus = load_corpus(_config(tmp_path / "tfds", "ptb", source))
  assert corpus.vocab.tokens[4:] == ("c", "b", "a", "d", "e", "f")
  assert corpus.vocab.decode(corpus.splits["train"].sentence(0)) == "a b c"


@pytest.mark.parametrize("train, message", [
    (b"3 good food\nx bad\n", r"train\.txt, line 2: expected a non-negative"),
    (b"3 good food\n4\n", r"train\.txt, line 2: label 4 has no text"),
    (b"-1 good\n", r"train\.txt, line 1: expected a non-negative"),
])
def test_bad_yelp_label(tmp_path, train, message):
  source = _write_source(tmp_path / "src", train=train,
                         valid=b"1 nice\n", test=b"0 meh\n")
  with pytest.raises(DataError, match=message):
    load_corpus(_config(tmp_path / "tfds", "yelp13", source))


def test_unknown_dataset(tmp_path):
  with pytest.raises(DataError, match="ptb, yahoo, yelp13, synthetic"):
    load_corpus(_config(tmp_path, "imdb"))


# Synthetic.


def test_synthetic_is_deterministic(tmp_path):
  first = load_corpus(_config(tmp_path / "a", "synthetic"))
  second = load_corpus(_config(tmp_path / "b", "synthetic"))
  assert first.vocab == second.vocab
  for name, split in first.splits.items():
    other = second.splits[name]
    np.testing.assert_array_equal(split.flat_tokens, other.flat_tokens)
    np.testing.assert_array_equal(split.lengths, other.lengths)
    np.testing.assert_array_equal(split.latents, other.latents)
  train = first.splits["train"]
  assert train.latents.shape == (400, 2) and train.latents.dtype == np.float32
  assert train.labels is None
  assert train.lengths.min() >= 3 and train.lengths.max() <= 12 + 2
  assert len(np.unique(train.lengths)) >= 8


def test_synthetic_sentences_depend_on_z():
  spec = synthetic.SyntheticSpec(**SMALL_SYNTHETIC)
  sentences, z = synthetic.generate(spec)["train"]
  first = np.array([s.split()[0] for s in sentences])
  distances = ((z[:, None] - z[None]) ** 2).sum(-1)
  np.fill_diagonal(distances, np.inf)
  nearest = distances.argmin(axis=1)
  # Sentences whose z are nearest neighbours start alike far more often.
  assert (first == first[nearest]).mean() > 3 * (first == first[::-1]).mean()


def test_synthetic_configs_prepare_apart(tmp_path):
  corpus = load_corpus(_config(tmp_path, "synthetic", latent_dim=3, seed=1))
  assert corpus.splits["valid"].latents.shape == (50, 3)
  load_corpus(_config(tmp_path, "synthetic"))
  assert len(list((tmp_path / "cvae_synthetic").iterdir())) == 2
  with pytest.raises(DataError, match="num_test"):
    load_corpus(_config(tmp_path, "synthetic", num_test=0))


# Batching.


@pytest.fixture(scope="module")
def toy():
  """103 sentences of 1 to 29 words; latent row i identifies sentence i."""
  rng = np.random.default_rng(0)
  words = [rng.integers(4, 50, rng.integers(1, 30)).astype(np.int32)
           for _ in range(103)]
  return Split.from_words(
      "toy", words, labels=rng.integers(0, 5, 103).astype(np.int32),
      latents=rng.standard_normal((103, 2)).astype(np.float32))


def _index_of(split, latent_row):
  return int(np.flatnonzero((split.latents == latent_row).all(axis=1))[0])


def _check_rows(split, batch):
  """Checks every row against the split; returns the real rows' indices."""
  indices = []
  for row in range(len(batch["weights"])):
    tokens, length = batch["tokens"][row], batch["lengths"][row]
    assert (tokens[length:] == PAD).all()
    if batch["weights"][row] == 0:
      assert length == 2 and tokens[:2].tolist() == [BOS, EOS]
      assert batch["label"][row] == 0 and not batch["latent"][row].any()
      continue
    i = _index_of(split, batch["latent"][row])
    np.testing.assert_array_equal(tokens[:length], split.sentence(i))
    assert batch["label"][row] == split.labels[i]
    indices.append(i)
  return indices


@pytest.mark.parametrize("batch_size, process_count",
                         [(1, 1), (4, 1), (8, 2), (12, 4), (4, 4), (64, 2)])
def test_eval_covers_every_sentence_once(toy, batch_size, process_count):
  seen = []
  counts = set()
  for p in range(process_count):
    batches = list(eval_batches(toy, batch_size=batch_size,
                                bucket_lengths=BUCKETS, process_index=p,
                                process_count=process_count))
    counts.add(len(batches))
    for batch in batches:
      assert batch["tokens"].shape[0] == batch_size // process_count
      assert batch["tokens"].shape[1] in BUCKETS
      assert batch["tokens"].dtype == np.int32
      assert batch["weights"].dtype == np.float32
      assert batch["latent"].dtype == np.float32
      seen += _check_rows(toy, batch)
  assert len(counts) == 1
  assert sorted(seen) == list(range(len(toy)))


def test_shapes_come_from_buckets(toy):
  shapes = {b["tokens"].shape for b in eval_batches(
      toy, batch_size=8, bucket_lengths=BUCKETS)}
  shapes |= {b["tokens"].shape for b in train_batches(
      toy, batch_size=8, bucket_lengths=BUCKETS, seed=0, epoch=0)}
  assert shapes <= {(8, length) for length in BUCKETS}
  assert len(shapes) == len(BUCKETS)


def _epoch(split, **kwargs):
  return list(train_batches(split, batch_size=8, bucket_lengths=BUCKETS,
                            **kwargs))


def test_train_batches_full_and_deterministic(toy):
  batches = _epoch(toy, seed=3, epoch=0)
  assert len(batches) == steps_per_epoch(toy, 8, BUCKETS)
  bucket = np.searchsorted(BUCKETS, toy.lengths)
  assert len(batches) == sum(np.bincount(bucket) // 8)
  seen = []
  for batch in batches:
    assert (batch["weights"] == 1).all()
    seen += _check_rows(toy, batch)
  assert len(seen) == len(set(seen)) == 8 * len(batches)
  again = _epoch(toy, seed=3, epoch=0)
  for a, b in zip(batches, again, strict=True):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  other_epoch = _epoch(toy, seed=3, epoch=1)
  other_seed = _epoch(toy, seed=4, epoch=0)
  for other in (other_epoch, other_seed):
    assert any(a["tokens"].shape != b["tokens"].shape or
               (a["tokens"] != b["tokens"]).any()
               for a, b in zip(batches, other))


def test_start_step_resumes(toy):
  full = _epoch(toy, seed=1, epoch=2)
  for k in (0, 1, 5, len(full)):
    resumed = _epoch(toy, seed=1, epoch=2, start_step=k)
    assert len(resumed) == len(full) - k
    for a, b in zip(full[k:], resumed):
      np.testing.assert_array_equal(a["tokens"], b["tokens"])
  with pytest.raises(DataError, match="start_step"):
    _epoch(toy, seed=1, epoch=2, start_step=len(full) + 1)


@pytest.mark.parametrize("process_count", [2, 4])
def test_process_slices_concatenate(toy, process_count):
  whole = _epoch(toy, seed=0, epoch=0)
  parts = [_epoch(toy, seed=0, epoch=0, process_index=p,
                  process_count=process_count) for p in range(process_count)]
  for i, batch in enumerate(whole):
    for key, value in batch.items():
      np.testing.assert_array_equal(
          np.concatenate([part[i][key] for part in parts]), value)


def test_bad_batching_arguments(toy):
  with pytest.raises(DataError, match="multiple of the process count"):
    _epoch(toy, seed=0, epoch=0, process_count=3)
  with pytest.raises(DataError, match="process_index"):
    eval_batches(toy, batch_size=8, bucket_lengths=BUCKETS, process_index=2,
                 process_count=2)
  with pytest.raises(DataError, match="increasing"):
    steps_per_epoch(toy, 8, (16, 8, 32))
  with pytest.raises(DataError, match=r"max_length \+ 2"):
    eval_batches(toy, batch_size=8, bucket_lengths=(8, 16))
