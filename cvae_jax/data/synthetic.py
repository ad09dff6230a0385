"""Synthetic sentences from a fixed random LSTM language model driven by z.

He et al. (2019, "Lagging inference networks") test text VAEs on data whose
true latent is known: a random 1-layer LSTM decoder, whose initial state is a
linear function of a low-dimensional z ~ N(0, I), samples each sentence. Here
the same recipe runs in numpy, deterministically from a seed (float32
arithmetic: the same seed gives the same data with the same numpy build).

As in He et al., the LSTM's weights are uniform in [-1, 1] and the output layer
has a larger scale, so that each word distribution is peaked and the state,
hence z, decides much of the sentence. The output weights are uniform in
+-32 / sqrt(hidden_dim), which keeps the logits' spread independent of the
hidden size, and `</s>` gets a logit bias of 11. With the other defaults
sentences have 1 to 20 words, 8 to 12 on average depending on the seed, 10-25%
of them run to the length cap, and sentences whose z are nearest neighbours
share about 30-45% of their first three words against 3-5% for random pairs.
"""

import dataclasses

import numpy as np

from cvae_jax.errors import DataError

_OUT_SCALE = 32.0
_EOS_BIAS = 11.0


@dataclasses.dataclass(frozen=True)
class SyntheticSpec:
  """The generating model and the split sizes."""

  seed: int = 0
  latent_dim: int = 2
  vocab_size: int = 500  # word types `w0 .. w{vocab_size - 1}`
  hidden_dim: int = 64
  max_length: int = 20  # words; a sentence without `</s>` is cut here
  num_train: int = 10_000
  num_valid: int = 1_000
  num_test: int = 1_000

  def __post_init__(self):
    for field in dataclasses.fields(self):
      value = getattr(self, field.name)
      smallest = 0 if field.name == "seed" else 1
      if not isinstance(value, int) or value < smallest:
        raise DataError(f"config.data.synthetic.{field.name} must be an "
                        f"integer >= {smallest}; got {value!r}.")

  def split_sizes(self) -> dict[str, int]:
    return {"train": self.num_train, "valid": self.num_valid,
            "test": self.num_test}


@dataclasses.dataclass(frozen=True)
class _Decoder:
  """The generating LSTM; the extra vocabulary entry `vocab_size` is `<s>` as
  an input and `</s>` as an output. float32 throughout."""

  embed: np.ndarray  # [vocab_size + 1, hidden]
  gates: np.ndarray  # [2 * hidden, 4 * hidden]: input rows, then hidden rows
  bias: np.ndarray  # [4 * hidden]
  init: np.ndarray  # [latent_dim, 2 * hidden]: z -> (h0, c0)
  out: np.ndarray  # [hidden, vocab_size + 1]
  out_bias: np.ndarray  # [vocab_size + 1]


def _decoder(spec: SyntheticSpec, rng: np.random.Generator) -> _Decoder:
  v, hid, dz = spec.vocab_size, spec.hidden_dim, spec.latent_dim
  out_bias = np.zeros(v + 1, np.float32)
  out_bias[v] = _EOS_BIAS
  return _Decoder(
      embed=rng.uniform(-1, 1, (v + 1, hid)).astype(np.float32),
      gates=rng.uniform(-1, 1, (2 * hid, 4 * hid)).astype(np.float32),
      bias=rng.uniform(-1, 1, 4 * hid).astype(np.float32),
      init=rng.uniform(-1, 1, (dz, 2 * hid)).astype(np.float32),
      out=(rng.uniform(-1, 1, (hid, v + 1)) * _OUT_SCALE /
           np.sqrt(hid)).astype(np.float32),
      out_bias=out_bias)


def _sigmoid(x: np.ndarray) -> np.ndarray:
  return 0.5 * (1 + np.tanh(0.5 * x))


def _sample(decoder: _Decoder, spec: SyntheticSpec, num: int,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """Samples `num` sentences, all at once, one time step after another.

  Returns:
    words: [num, max_length] int64 word ids, `vocab_size` (`</s>`) from each
      sentence's end on; every sentence has at least one word.
    z: [num, latent_dim] float32.
  """
  eos = spec.vocab_size
  z = rng.standard_normal((num, spec.latent_dim), dtype=np.float32)
  h, c = np.split(z @ decoder.init, 2, axis=1)
  words = np.full((num, spec.max_length), eos)
  rows = np.arange(num)  # The sentences that have not ended yet.
  inputs = np.full(num, eos)  # `<s>`
  for t in range(spec.max_length):
    x = np.concatenate([decoder.embed[inputs], h], axis=1)
    i, f, g, o = np.split(x @ decoder.gates + decoder.bias, 4, axis=1)
    c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
    h = _sigmoid(o) * np.tanh(c)
    logits = h @ decoder.out + decoder.out_bias
    if t == 0:
      logits[:, eos] = -np.inf
    cdf = np.cumsum(np.exp(logits - logits.max(axis=1, keepdims=True)), axis=1)
    u = rng.random(len(rows), dtype=np.float32)[:, None] * cdf[:, -1:]
    inputs = np.minimum((cdf < u).sum(axis=1), eos)
    words[rows, t] = inputs
    going = inputs != eos
    rows, inputs, h, c = rows[going], inputs[going], h[going], c[going]
  return words, z


def generate(spec: SyntheticSpec) -> dict[str, tuple[list[str], np.ndarray]]:
  """Samples every split from one decoder.

  Returns:
    {split: (sentences, latents)}: sentences as space-joined words `w<id>`;
    latents [num, latent_dim] float32, row i the z of sentence i.
  """
  sizes = spec.split_sizes()
  decoder_seed, *split_seeds = np.random.SeedSequence(spec.seed).spawn(
      1 + len(sizes))
  decoder = _decoder(spec, np.random.default_rng(decoder_seed))
  splits = {}
  for (split, num), seed in zip(sizes.items(), split_seeds):
    words, z = _sample(decoder, spec, num, np.random.default_rng(seed))
    sentences = [" ".join(f"w{i}" for i in row[row != spec.vocab_size])
                 for row in words]
    splits[split] = (sentences, z)
  return splits
