"""The sentence VAE: LSTM encoder, posterior, LSTM decoder initialised from z.

Token layout (see `cvae_jax.data`): `tokens: [batch, length] int32` is
`<s> w1 .. wn </s>` then padding, and `lengths: [batch] int32` counts the
non-pad tokens including `<s>` and `</s>`. The decoder reads tokens[:, :-1] and
predicts tokens[:, 1:], so a sentence has `lengths - 1` predicted tokens.
"""

import dataclasses
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from cvae_jax.data.vocab import UNK
from cvae_jax.models import posteriors
from cvae_jax.models.lstm import LSTM, Carry
from cvae_jax.models.projection import Projection


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Static model hyper-parameters (built from `config.model` in one place)."""

  vocab_size: int
  emb_dim: int = 512
  hidden_dim: int = 512
  latent_dim: int = 32
  posterior: str = "copula"  # a name in `posteriors.NAMES`
  copula_weight: float = 0.5  # lambda of the 'copula' posterior's objective term
  dropout: float = 0.5  # on the embeddings of encoder and decoder inputs
  word_dropout: float = 0.0  # decoder input words replaced by <unk> (train only)
  output_dropout: float = 0.0  # on decoder outputs before the softmax layer
  feed_latent: bool = False  # also feed z at every decoder step (He et al.)
  dtype: str = "float32"  # matmul dtype: 'float32' or 'bfloat16'
  bn_gamma: float = 0.0  # BN-VAE: fixed scale of the posterior means' BatchNorm
  vmf_kappa: float = 25.0  # the 'vmf' posterior's fixed concentration
  flow_steps: int = 4  # the 'flow' posterior's planar steps K

  @property
  def has_latent(self) -> bool:
    return self.posterior != "none"


def word_dropout(key: jax.Array, inputs: jax.Array, lengths: jax.Array,
                 rate: float) -> jax.Array:
  """Decoder inputs with each word replaced by <unk> with probability `rate`.

  Bowman et al. (2016). Only words are dropped: `<s>` (position 0), and the
  `</s>` and padding that follow a sentence, are kept.

  Args:
    key: the randomness.
    inputs: [batch, steps] int32, `tokens[:, :-1]`.
    lengths: [batch] int32 tokens of each sentence, `<s>` and `</s>` included.
    rate: probability of dropping a word.

  Returns:
    [batch, steps] int32.
  """
  position = jnp.arange(inputs.shape[1])[None, :]
  is_word = (position >= 1) & (position < lengths[:, None] - 1)
  drop = is_word & jax.random.bernoulli(key, rate, inputs.shape)
  return jnp.where(drop, UNK, inputs)


class TextVAE(nn.Module):
  """Encoder, posterior and decoder; every method is a pure function of params.

  RNG streams: 'dropout' (train only: dropout and word dropout) and 'latent'
  (z and the posterior's other samples).
  """

  config: ModelConfig

  # The parameter group of each top-level module (see cvae_jax/partition.py):
  # the inference network, the word embedding that both halves read, p(x|z).
  PARAM_GROUPS = {"encoder_lstm": "encoder", "posterior": "encoder", "embed": "embedding",
                  "decoder_lstm": "decoder", "latent_to_carry": "decoder", "out": "decoder"}

  def setup(self):
    cfg = self.config
    posteriors.check_name(cfg.posterior)
    dtype = jnp.dtype(cfg.dtype)
    self.embed = nn.Embed(cfg.vocab_size, cfg.emb_dim)
    self.decoder_lstm = LSTM(cfg.hidden_dim, dtype=dtype)
    self.out = Projection(cfg.vocab_size, dtype=dtype)
    self.input_dropout = nn.Dropout(cfg.dropout)
    self.output_dropout = nn.Dropout(cfg.output_dropout)
    if cfg.has_latent:
      self.encoder_lstm = LSTM(cfg.hidden_dim, dtype=dtype)
      self.posterior = posteriors.build(cfg)
      self.latent_to_carry = nn.Dense(2 * cfg.hidden_dim)

  def _embed(self, tokens, train):
    return self.input_dropout(self.embed(tokens), deterministic=not train)

  def encode(self, tokens: jax.Array, lengths: jax.Array, train: bool = False):
    """q(z|x) from the final (h, c) of the encoder LSTM over the whole sentence."""
    (c, h), _ = self.encoder_lstm(self._embed(tokens, train), lengths)
    return self.posterior(jnp.concatenate([h, c], axis=-1), train)

  def initial_carry(self, z: Optional[jax.Array], batch: int) -> Carry:
    """(c0, h0) = split(tanh(Linear(z))), each [..., batch, hidden] for z
    [..., batch, latent]; zeros [batch, hidden] without a latent."""
    if z is None:
      zeros = jnp.zeros((batch, self.config.hidden_dim), jnp.float32)
      return zeros, zeros
    h0, c0 = jnp.split(jnp.tanh(self.latent_to_carry(z)), 2, axis=-1)
    return c0, h0

  def decode(self, inputs: jax.Array, z: Optional[jax.Array], train: bool = False,
             carry: Optional[Carry] = None) -> tuple[Carry, jax.Array]:
    """Teacher-forced decoder.

    Args:
      inputs: [batch, steps] int32 input tokens.
      z: [..., batch, latent] or None; leading dimensions are samples that
        share the inputs, which are embedded and projected once for all.
      train: enables dropout.
      carry: the decoder state to continue from; from z when None.

    Returns:
      the final carry and the logits, [..., batch, steps, vocab] float32.
    """
    x = self._embed(inputs, train)
    static = z if z is not None and self.config.feed_latent else None
    if carry is None:
      carry = self.initial_carry(z, inputs.shape[0])
    carry, h = self.decoder_lstm(x, initial_carry=carry, static_inputs=static)
    h = self.output_dropout(h, deterministic=not train)
    return carry, self.out(h)

  def log_likelihood(self, tokens: jax.Array, lengths: jax.Array,
                     z: Optional[jax.Array], train: bool = False) -> jax.Array:
    """log p(x|z) summed over the predicted tokens: [..., batch] float32 for z
    [..., batch, latent] (leading sample dimensions share the tokens).

    In training the decoder reads its inputs after word dropout.
    """
    inputs = tokens[:, :-1]
    if train and self.config.word_dropout > 0:
      inputs = word_dropout(self.make_rng("dropout"), inputs, lengths,
                            self.config.word_dropout)
    _, logits = self.decode(inputs, z, train)
    targets = jnp.broadcast_to(tokens[:, 1:], logits.shape[:-1])
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    mask = jnp.arange(targets.shape[-1])[None, :] < (lengths[:, None] - 1)
    return -jnp.sum(jnp.where(mask, nll, 0.0), axis=-1)

  def __call__(self, tokens: jax.Array, lengths: jax.Array, train: bool = False
               ) -> dict[str, jax.Array]:
    """The per-sentence terms of the objective, each [batch] float32.

    rec: -log p(x|z) at one z ~ q(z|x); kl: KL(q(z|x) || p(z)); and the
    posterior's `objective_terms` at that z (e.g. the copula's log c).
    """
    return self.loss_terms(tokens, lengths, train)[0]

  def loss_terms(self, tokens: jax.Array, lengths: jax.Array, train: bool = False
                 ) -> tuple[dict[str, jax.Array], jax.Array]:
    """The terms of `__call__` and the KL split into groups, [batch, groups]
    float32 (`kl_groups` of the posterior; no groups without a latent)."""
    if not self.config.has_latent:
      zeros = jnp.zeros(tokens.shape[:1], jnp.float32)
      rec = -self.log_likelihood(tokens, lengths, None, train)
      return dict(rec=rec, kl=zeros), jnp.zeros((tokens.shape[0], 0), jnp.float32)
    q = self.encode(tokens, lengths, train)
    z_key, terms_key = jax.random.split(self.make_rng("latent"))
    z = q.sample(z_key)
    kl_groups = q.kl_groups(jax.random.fold_in(terms_key, 1))
    terms = dict(rec=-self.log_likelihood(tokens, lengths, z, train),
                 kl=jnp.sum(kl_groups, axis=-1), **q.objective_terms(z, terms_key))
    return terms, kl_groups
