"""Text generation: greedy, sampled and beam decoding from the prior, a posterior or a path.

The decoding core works on any step function `(state, token) -> (state,
logits)`: `state` is a pytree of [batch, ...] arrays, `token` [batch] int32
the previous token and `logits` [batch, vocab] float32 the next token's. Each
decoder is one `lax.while_loop` over at most `max_length` steps that stops
once every row has emitted `</s>`; it never emits `<pad>` or `<s>`.

Decoded tokens are `[batch, max_length]` int32: the words, `</s>`, then
`<pad>` (a row that reaches `max_length` first has no `</s>`). Their
`log_prob` ([batch] float32) sums log p(token | prefix, z) over the emitted
tokens, `</s>` included, with p restricted to the tokens that can be emitted.

The model-level functions are jitted; their randomness comes from an explicit
key, so a seed fixes every output.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from cvae_jax.data.vocab import BOS, EOS, PAD, Vocab
from cvae_jax.errors import CvaeError
from cvae_jax.models import TextVAE

StepFn = Callable[[Any, jax.Array], tuple[Any, jax.Array]]
METHODS = ("greedy", "sample", "beam")


class Decoded(NamedTuple):
  tokens: jax.Array  # [batch, max_length] int32: words, </s>, then <pad>
  log_prob: jax.Array  # [batch] float32: log p of the emitted tokens


@dataclasses.dataclass(frozen=True)
class Decoding:
  """How tokens are chosen; hashable, so each setting compiles once."""

  method: str = "greedy"  # 'greedy' | 'sample' | 'beam'
  max_length: int = 50  # tokens emitted at most, </s> included
  temperature: float = 1.0  # 'sample': softmax(logits / temperature)
  beam_size: int = 5  # 'beam': hypotheses kept per row
  length_penalty: float = 0.0  # 'beam': the best maximises log p / length**penalty

  def __post_init__(self):
    if self.method not in METHODS:
      raise CvaeError(f"unknown decoding method {self.method!r}: use one of "
                      f"{', '.join(METHODS)}")
    for name, value in (("max_length", self.max_length), ("beam_size", self.beam_size)):
      if value < 1:
        raise CvaeError(f"the decoding {name} must be at least 1, got {value}")
    if not self.temperature > 0:
      raise CvaeError(f"the decoding temperature must be positive, got {self.temperature}")


# --- Decoding a step function -----------------------------------------------


def _emittable_log_probs(logits: jax.Array) -> jax.Array:
  """log_softmax over every token but <pad> and <s>: [..., vocab] float32."""
  banned = jnp.isin(jnp.arange(logits.shape[-1]), jnp.array([PAD, BOS]))
  return jax.nn.log_softmax(jnp.where(banned, -jnp.inf, logits), axis=-1)


def _unfinished(max_length: int) -> Callable[[tuple], jax.Array]:
  """The loop condition on (t, ..., done): t < max_length and some row is not done."""
  return lambda loop: (loop[0] < max_length) & ~jnp.all(loop[-1])


def _decode_rows(step_fn: StepFn, state: Any, batch: int, max_length: int,
                 pick: Callable[[jax.Array, jax.Array], jax.Array]) -> Decoded:
  """One token per row and step; `pick(t, log_probs [batch, vocab])` -> [batch] int32."""

  def body(loop):
    t, state, last, tokens, log_prob, done = loop
    state, logits = step_fn(state, last)
    log_probs = _emittable_log_probs(logits)
    token = jnp.where(done, PAD, pick(t, log_probs).astype(jnp.int32))
    token_log_prob = jnp.take_along_axis(log_probs, token[:, None], axis=-1)[:, 0]
    log_prob = log_prob + jnp.where(done, 0.0, token_log_prob)
    return (t + 1, state, token, tokens.at[:, t].set(token), log_prob,
            done | (token == EOS))

  init = (jnp.array(0, jnp.int32), state, jnp.full((batch,), BOS, jnp.int32),
          jnp.full((batch, max_length), PAD, jnp.int32), jnp.zeros((batch,), jnp.float32),
          jnp.zeros((batch,), bool))
  _, _, _, tokens, log_prob, _ = jax.lax.while_loop(_unfinished(max_length), body, init)
  return Decoded(tokens, log_prob)


def greedy(step_fn: StepFn, state: Any, batch: int, max_length: int) -> Decoded:
  """The most likely token at every step."""
  return _decode_rows(step_fn, state, batch, max_length,
                      lambda t, log_probs: jnp.argmax(log_probs, axis=-1))


def sample(step_fn: StepFn, state: Any, batch: int, max_length: int, key: jax.Array,
           temperature: float = 1.0) -> Decoded:
  """Ancestral sampling from softmax(logits / temperature); step t uses fold_in(key, t)."""
  return _decode_rows(step_fn, state, batch, max_length, lambda t, log_probs: (
      jax.random.categorical(jax.random.fold_in(key, t), log_probs / temperature)))


def beam_search(step_fn: StepFn, state: Any, batch: int, max_length: int,
                beam_size: int, length_penalty: float = 0.0) -> Decoded:
  """The best of `beam_size` hypotheses per row, by log p / length**length_penalty.

  The beam keeps the `beam_size` highest total log-probabilities; a finished
  hypothesis stays in it unchanged (it can only continue with <pad> at no
  cost). The step function sees `batch * beam_size` rows, row `b * beam_size + j`
  being hypothesis j of row b. Beam size 1 is greedy decoding.
  """
  k = beam_size

  def body(loop):
    t, state, last, tokens, scores, done = loop
    state, logits = step_fn(state, last.reshape(-1))
    log_probs = _emittable_log_probs(logits).reshape(batch, k, -1)
    vocab = log_probs.shape[-1]
    pad_only = jnp.where(jnp.arange(vocab) == PAD, 0.0, -jnp.inf)
    log_probs = jnp.where(done[..., None], pad_only, log_probs)
    scores, flat = jax.lax.top_k((scores[..., None] + log_probs).reshape(batch, -1), k)
    parent, token = flat // vocab, (flat % vocab).astype(jnp.int32)
    rows = (jnp.arange(batch)[:, None] * k + parent).reshape(-1)
    state = jax.tree.map(lambda x: x[rows], state)
    tokens = jnp.take_along_axis(tokens, parent[..., None], axis=1).at[:, :, t].set(token)
    done = jnp.take_along_axis(done, parent, axis=1) | (token == EOS)
    return t + 1, state, token, tokens, scores, done

  first = jnp.where(jnp.arange(k) == 0, 0.0, -jnp.inf)  # one live hypothesis at first
  init = (jnp.array(0, jnp.int32), jax.tree.map(lambda x: jnp.repeat(x, k, axis=0), state),
          jnp.full((batch, k), BOS, jnp.int32),
          jnp.full((batch, k, max_length), PAD, jnp.int32),
          jnp.broadcast_to(first, (batch, k)), jnp.zeros((batch, k), bool))
  _, _, _, tokens, scores, _ = jax.lax.while_loop(_unfinished(max_length), body, init)
  lengths = jnp.maximum(jnp.sum(tokens != PAD, axis=-1), 1)
  best = jnp.argmax(scores / lengths.astype(jnp.float32) ** length_penalty, axis=-1)
  return Decoded(jnp.take_along_axis(tokens, best[:, None, None], axis=1)[:, 0],
                 jnp.take_along_axis(scores, best[:, None], axis=1)[:, 0])


def decode(step_fn: StepFn, state: Any, batch: int, key: jax.Array,
           decoding: Decoding) -> Decoded:
  """Decodes `batch` rows from `state` as `decoding` says (`key` is used by 'sample')."""
  if decoding.method == "greedy":
    return greedy(step_fn, state, batch, decoding.max_length)
  if decoding.method == "sample":
    return sample(step_fn, state, batch, decoding.max_length, key, decoding.temperature)
  return beam_search(step_fn, state, batch, decoding.max_length, decoding.beam_size,
                     decoding.length_penalty)


# --- The sentence VAE -------------------------------------------------------


def decoder_step(model: TextVAE, variables: dict) -> StepFn:
  """The model's decoder as a step function; its state is (LSTM carry, z or None)."""

  def step(state, token):
    carry, z = state
    carry, logits = model.apply(variables, token[:, None], z, carry=carry,
                                method=TextVAE.decode)
    return (carry, z), logits[:, 0]

  return step


def _decode_z(model: TextVAE, variables: dict, z: Optional[jax.Array], batch: int,
              key: jax.Array, decoding: Decoding) -> Decoded:
  """Decodes from z [batch, latent] float32, or from the zero state when z is None."""
  carry = model.apply(variables, z, batch, method=TextVAE.initial_carry)
  return decode(decoder_step(model, variables), (carry, z), batch, key, decoding)


def require_latent(posterior: str, what: str) -> None:
  """Raises CvaeError for the LSTM language model (posterior 'none'), which has no z."""
  if posterior == "none":
    raise CvaeError(f"{what} needs a latent variable, and this model "
                    "(config.model.posterior='none') is an LSTM language model without one")


@functools.partial(jax.jit, static_argnames=("model", "num", "decoding"))
def sample_prior(model: TextVAE, variables: dict, key: jax.Array, *, num: int,
                 decoding: Decoding) -> Decoded:
  """`num` sentences from z ~ N(0, I) (from the zero state for the LSTM LM)."""
  if num < 1:
    raise CvaeError(f"the number of samples must be at least 1, got {num}")
  z_key, decode_key = jax.random.split(key)
  z = None
  if model.config.has_latent:
    z = jax.random.normal(z_key, (num, model.config.latent_dim), jnp.float32)
  return _decode_z(model, variables, z, num, decode_key, decoding)


@functools.partial(jax.jit, static_argnames=("model", "decoding"))
def decode_latent(model: TextVAE, variables: dict, z: jax.Array, key: jax.Array, *,
                  decoding: Decoding) -> Decoded:
  """One sentence per z: [batch, latent] float32."""
  require_latent(model.config.posterior, "decoding a given z")
  return _decode_z(model, variables, z, z.shape[0], key, decoding)


def _posterior_z(model: TextVAE, variables: dict, tokens: jax.Array, lengths: jax.Array,
                 key: Optional[jax.Array]) -> jax.Array:
  """A sample of q(z|x) per sentence, or its mean when key is None: [batch, latent]."""
  q = model.apply(variables, tokens, lengths, method=TextVAE.encode)
  return q.mean() if key is None else q.sample(key)


@functools.partial(jax.jit, static_argnames=("model", "decoding", "use_mean"))
def reconstruct(model: TextVAE, variables: dict, tokens: jax.Array, lengths: jax.Array,
                key: jax.Array, *, decoding: Decoding, use_mean: bool = True) -> Decoded:
  """Encodes sentences (tokens [batch, length] int32, lengths [batch] int32), decodes them."""
  require_latent(model.config.posterior, "reconstruction")
  z_key, decode_key = jax.random.split(key)
  z = _posterior_z(model, variables, tokens, lengths, None if use_mean else z_key)
  return _decode_z(model, variables, z, tokens.shape[0], decode_key, decoding)


@functools.partial(jax.jit, static_argnames=("model", "steps", "decoding"))
def interpolate(model: TextVAE, variables: dict, tokens: jax.Array, lengths: jax.Array,
                key: jax.Array, *, steps: int, decoding: Decoding) -> Decoded:
  """Decodes `steps` evenly spaced points from the first to the second posterior mean.

  tokens: [2, length] int32 and lengths: [2] int32, the two sentences.
  Returns `steps` rows, the first decoded from sentence 0's mean, the last
  from sentence 1's.
  """
  require_latent(model.config.posterior, "interpolation")
  if tokens.shape[0] != 2:
    raise CvaeError(f"an interpolation is between 2 sentences, got {tokens.shape[0]}")
  if steps < 2:
    raise CvaeError(f"an interpolation needs at least 2 steps, got {steps}")
  mean = _posterior_z(model, variables, tokens, lengths, None)
  t = jnp.linspace(0.0, 1.0, steps)[:, None]
  return _decode_z(model, variables, (1.0 - t) * mean[0] + t * mean[1], steps, key,
                   decoding)


# --- Text in and out --------------------------------------------------------


def encode_sentences(vocab: Vocab, sentences: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
  """Whitespace-tokenised sentences -> `<s> w.. </s>` padded tokens and lengths.

  Unknown words become `<unk>`. Returns tokens [n, max length] int32 and
  lengths [n] int32 (`<s>` and `</s>` included).
  """
  words = [vocab.encode(s.split()) for s in sentences]
  if not words:
    raise CvaeError("no input sentences")
  if any(len(w) == 0 for w in words):
    raise CvaeError("an input sentence is empty")
  lengths = np.array([len(w) + 2 for w in words], np.int32)
  tokens = np.full((len(words), lengths.max()), PAD, np.int32)
  for row, w in zip(tokens, words):
    row[:len(w) + 2] = (BOS, *w, EOS)
  return tokens, lengths


def to_rows(vocab: Vocab, decoded: Decoded) -> list[dict]:
  """One JSON-able {'text', 'log_prob'} per decoded sentence."""
  texts = [vocab.decode(row) for row in np.asarray(decoded.tokens)]
  log_probs = np.asarray(decoded.log_prob, np.float64).tolist()
  return [{"text": text, "log_prob": lp} for text, lp in zip(texts, log_probs)]
