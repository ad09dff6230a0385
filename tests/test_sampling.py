"""Decoding against stubbed step functions; the model's sampler and the CLI on a trained run."""

import dataclasses
import functools
import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cvae_jax import sampling, train
from cvae_jax.checkpointing import Checkpoints
from cvae_jax.config import model_config
from cvae_jax.data.vocab import BOS, EOS, PAD, SPECIALS, UNK, Vocab
from cvae_jax.errors import CvaeError
from cvae_jax.models import TextVAE, posteriors
from cvae_jax.workdir import prepare_workdir
from configs import synthetic
from tests.helpers import init_variables, launcher_env, random_batch, tiny_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
V = 12  # the stubs' vocabulary: the 4 specials and tokens 4..11
IMPOSSIBLE = -1e9
BATCH = random_batch()  # 8 sentences for the random tiny models
GREEDY_12 = sampling.Decoding("greedy", max_length=12)


def _chain_step(stop, token):
  """Row b emits 4, 5, .., stop[b], then </s>; the state is stop: [batch] int32."""
  following = jnp.where(token == BOS, 4, jnp.where(token >= stop, EOS, token + 1))
  return stop, 5.0 * jax.nn.one_hot(following, V)


def _markov_step(table):
  """A first-order Markov chain: the next token's logits are table[previous token]."""
  return lambda state, token: (state, table[token])


def _table(transitions: dict) -> jax.Array:
  """[V, V] logits from {previous: {next: probability}}; unlisted moves are impossible."""
  table = np.full((V, V), IMPOSSIBLE, np.float32)
  for previous, probs in transitions.items():
    for following, p in probs.items():
      table[previous, following] = math.log(p)
  return jnp.asarray(table)


def _random_table(seed=0):
  return 3.0 * jax.random.normal(jax.random.key(seed), (V, V))


@functools.cache
def _tiny(posterior, feed_latent=False):
  """A random tiny model and its variables (initialised once, jitted)."""
  model = tiny_model(posterior, feed_latent=feed_latent)
  return model, jax.jit(init_variables, static_argnums=0)(model, BATCH)


def _padded(*rows, length):
  return np.array([list(r) + [PAD] * (length - len(r)) for r in rows], np.int32)


def test_greedy_follows_the_stub_and_pads_after_eos():
  decoded = jax.jit(lambda stop: sampling.greedy(_chain_step, stop, 4, 8))(
      jnp.array([4, 6, 9, 11]))
  expected = _padded([4, EOS], [4, 5, 6, EOS], [4, 5, 6, 7, 8, 9, EOS],
                     [4, 5, 6, 7, 8, 9, 10, 11], length=8)  # the last has no room for </s>
  np.testing.assert_array_equal(decoded.tokens, expected)
  step_log_prob = 5.0 - math.log(math.exp(5.0) + V - 3)  # <pad>, <s> are never emitted
  np.testing.assert_allclose(decoded.log_prob, step_log_prob * np.array([2, 4, 7, 8]),
                             rtol=1e-5)


def test_near_zero_temperature_sampling_is_greedy():
  table, batch = _random_table(), 16
  greedy = sampling.greedy(_markov_step(table), (), batch, 10)
  sampled = sampling.sample(_markov_step(table), (), batch, 10, jax.random.key(0),
                            temperature=1e-4)
  np.testing.assert_array_equal(sampled.tokens, greedy.tokens)


FIRST_WORD = np.array([0.5, 0.3, 0.2])  # p(4), p(5), p(6) after <s>; then </s>


@jax.jit
def _sample_first_word(key, temperature):
  table = _table({BOS: dict(zip((4, 5, 6), FIRST_WORD)), 4: {EOS: 1}, 5: {EOS: 1},
                  6: {EOS: 1}})
  return sampling.sample(_markov_step(table), (), 20_000, 3, key, temperature)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_sampled_frequencies_follow_the_tempered_distribution(temperature):
  decoded = _sample_first_word(jax.random.key(1), temperature)
  first = np.asarray(decoded.tokens[:, 0])
  tempered = FIRST_WORD ** (1 / temperature) / np.sum(FIRST_WORD ** (1 / temperature))
  np.testing.assert_allclose([np.mean(first == t) for t in (4, 5, 6)], tempered, atol=0.015)
  np.testing.assert_array_equal(decoded.tokens[:, 1:],
                                _padded([EOS], length=2).repeat(len(first), 0))
  np.testing.assert_allclose(decoded.log_prob, np.log(FIRST_WORD)[first - 4], rtol=1e-5)


def test_beam_size_one_is_greedy_on_a_stub():
  step = _markov_step(_random_table(2))
  greedy = sampling.greedy(step, (), 3, 15)
  beam = sampling.beam_search(step, (), 3, 15, beam_size=1)
  np.testing.assert_array_equal(beam.tokens, greedy.tokens)
  np.testing.assert_allclose(beam.log_prob, greedy.log_prob, rtol=1e-6)


@pytest.mark.parametrize("posterior, feed_latent", [("copula", True), ("none", False)])
def test_beam_size_one_is_greedy_on_the_model(posterior, feed_latent):
  model, variables = _tiny(posterior, feed_latent)
  decode = functools.partial(sampling.sample_prior, model, variables, jax.random.key(3),
                             num=6)
  greedy = decode(decoding=GREEDY_12)
  beam = decode(decoding=sampling.Decoding("beam", max_length=12, beam_size=1))
  np.testing.assert_array_equal(beam.tokens, greedy.tokens)
  np.testing.assert_allclose(beam.log_prob, greedy.log_prob, rtol=1e-5)


def test_beam_search_beats_myopic_greedy():
  # 4 is likelier than 5 at first, but every continuation of 4 is unlikely.
  uniform = {t: 1 / 6 for t in range(6, 12)}
  table = _table({BOS: {4: 0.6, 5: 0.4}, 4: uniform, 5: {EOS: 1},
                  **{t: {EOS: 1} for t in range(6, 12)}})
  greedy = sampling.greedy(_markov_step(table), (), 1, 5)
  beam = sampling.beam_search(_markov_step(table), (), 1, 5, beam_size=2)
  np.testing.assert_array_equal(greedy.tokens, _padded([4, 6, EOS], length=5))
  np.testing.assert_array_equal(beam.tokens, _padded([5, EOS], length=5))
  np.testing.assert_allclose(greedy.log_prob, [math.log(0.6 / 6)], rtol=1e-5)
  np.testing.assert_allclose(beam.log_prob, [math.log(0.4)], rtol=1e-5)


def test_length_penalty_prefers_a_longer_sentence_of_likelier_tokens():
  # [4 </s>]: log p = log .25, 2 tokens; [5 6 7 8 </s>]: log .5 + 4 log .8, 5 tokens.
  table = _table({BOS: {4: 0.5, 5: 0.5}, 4: {EOS: 0.5, 11: 0.5}, 11: {EOS: 1},
                  5: {6: 0.8, 11: 0.2}, 6: {7: 0.8, 11: 0.2}, 7: {8: 0.8, 11: 0.2},
                  8: {EOS: 0.8, 11: 0.2}})
  search = functools.partial(sampling.beam_search, _markov_step(table), (), 1, 6,
                             beam_size=2)
  np.testing.assert_array_equal(search().tokens, _padded([4, EOS], length=6))
  np.testing.assert_array_equal(search(length_penalty=1.0).tokens,
                                _padded([5, 6, 7, 8, EOS], length=6))
  np.testing.assert_allclose(search(length_penalty=1.0).log_prob,
                             [math.log(0.5 * 0.8**4)], rtol=1e-5)


@pytest.mark.parametrize("posterior, feed_latent", [("copula", True), ("none", False)])
def test_the_decoder_step_equals_teacher_forced_decoding(posterior, feed_latent):
  model, variables = _tiny(posterior, feed_latent)
  z = jax.random.normal(jax.random.key(0), (8, 3)) if posterior != "none" else None
  _, expected = model.apply(variables, BATCH["tokens"], z, method=TextVAE.decode)
  carry = model.apply(variables, z, 8, method=TextVAE.initial_carry)
  _, logits = jax.lax.scan(sampling.decoder_step(model, variables), (carry, z),
                           BATCH["tokens"].T)
  np.testing.assert_allclose(jnp.swapaxes(logits, 0, 1), expected, atol=1e-5)


def test_decoding_is_deterministic_for_a_seed():
  model, variables = _tiny("copula", feed_latent=True)
  decoding = sampling.Decoding("sample", max_length=10)
  prior = functools.partial(sampling.sample_prior, model, variables, num=8,
                            decoding=decoding)
  given = functools.partial(sampling.decode_latent, model, variables, jnp.ones((8, 3)),
                            decoding=decoding)
  posterior = functools.partial(sampling.reconstruct, model, variables, BATCH["tokens"],
                                BATCH["lengths"], decoding=decoding, use_mean=False)
  for fn in (prior, given, posterior):
    first, again, other = fn(jax.random.key(0)), fn(jax.random.key(0)), fn(jax.random.key(1))
    np.testing.assert_array_equal(first.tokens, again.tokens)
    assert not np.array_equal(first.tokens, other.tokens)


@pytest.mark.parametrize("posterior", ["vmf", "flow"])
def test_prior_samples_decode_z_from_the_posteriors_own_prior(posterior):
  """z ~ uniform on the sphere for the vMF, N(0, I) otherwise; reconstruction works."""
  model, variables = _tiny(posterior)
  key, decoding = jax.random.key(0), sampling.Decoding("sample", max_length=7)
  z_key, decode_key = jax.random.split(key)
  z = posteriors.prior(posterior).sample(z_key, (3, 3))
  np.testing.assert_array_equal(
      sampling.sample_prior(model, variables, key, num=3, decoding=decoding).tokens,
      sampling.decode_latent(model, variables, z, decode_key, decoding=decoding).tokens)
  decoded = sampling.reconstruct(model, variables, BATCH["tokens"], BATCH["lengths"], key,
                                 decoding=decoding, use_mean=False)
  assert decoded.tokens.shape == (8, 7)


def test_the_lstm_language_model_samples_but_cannot_reconstruct():
  model, variables = _tiny("none")
  decoded = sampling.sample_prior(model, variables, jax.random.key(0), num=3,
                                  decoding=sampling.Decoding("sample", max_length=7))
  assert decoded.tokens.shape == (3, 7)
  with pytest.raises(CvaeError, match="LSTM language model"):
    sampling.reconstruct(model, variables, BATCH["tokens"], BATCH["lengths"],
                         jax.random.key(0), decoding=sampling.Decoding())


@pytest.mark.parametrize("kwargs, message", [
    (dict(method="top_k"), "unknown decoding method"),
    (dict(temperature=0.0), "temperature must be positive"),
    (dict(beam_size=0), "beam_size must be at least 1"),
])
def test_bad_decoding_settings_are_clear_errors(kwargs, message):
  with pytest.raises(CvaeError, match=message):
    sampling.Decoding(**kwargs)


def test_encode_sentences():
  vocab = Vocab((*SPECIALS, "a", "b"))
  tokens, lengths = sampling.encode_sentences(vocab, ["a b", " b  zzz a "])
  np.testing.assert_array_equal(tokens, [[BOS, 4, 5, EOS, PAD], [BOS, 5, UNK, 4, EOS]])
  np.testing.assert_array_equal(lengths, [4, 5])
  for sentences, message in (([], "no input sentences"), (["a", "  "], "is empty")):
    with pytest.raises(CvaeError, match=message):
      sampling.encode_sentences(vocab, sentences)


@dataclasses.dataclass
class Memorised:
  model: TextVAE
  variables: dict
  vocab: Vocab
  sentences: list
  workdir: str


@pytest.fixture(scope="module")
def memorised(tmp_path_factory):
  """The tiny synthetic copula VAE trained to auto-encode 8 sentences, saved as a run."""
  config = synthetic.get_config("tiny")
  config.train.learning_rate = 1e-2
  config.model.copula_weight = 0.0  # with KL weight 0 below: an auto-encoder
  vocab = Vocab((*SPECIALS, *(f"w{i}" for i in range(16))))
  rng = np.random.default_rng(0)
  sentences = [" ".join(rng.choice(vocab.tokens[4:], n)) for n in rng.integers(3, 8, 8)]
  tokens, lengths = sampling.encode_sentences(vocab, sentences)
  batch = {"tokens": tokens, "lengths": lengths, "weights": np.ones(8, np.float32)}
  model = TextVAE(model_config(config, len(vocab)))
  state = jax.jit(train.create_train_state, static_argnums=(0, 1))(
      model, train.make_optimizer(config.train), jax.random.key(0), batch)
  objective = train.Objective(kl_anneal_start=10**9, kl_anneal_steps=1)
  step = jax.jit(functools.partial(train.train_step, objective=objective))
  num_steps = 150
  for _ in range(num_steps):
    state, _ = step(state, batch, jax.random.key(1))
  workdir = str(tmp_path_factory.mktemp("memorised") / "run")
  prepare_workdir(workdir, config, vocab)
  ckpts = Checkpoints(workdir)
  ckpts.save(ckpts.best, num_steps, state, {"step": num_steps, "valid_nll_elbo": 0.0})
  ckpts.wait()
  ckpts.close()
  return Memorised(model, state.variables, vocab, sentences, workdir)


def _overlap(decoded, tokens):
  """Per-row fraction of the words and </s> of `tokens` ([n, T], from <s>) matched in place."""
  target = tokens[:, 1:]
  width = min(target.shape[1], decoded.shape[1])
  real = target[:, :width] != PAD
  same = (np.asarray(decoded)[:, :width] == target[:, :width]) & real
  return same.sum(1) / real.sum(1)


def _reconstructions(m: Memorised) -> tuple[np.ndarray, np.ndarray, sampling.Decoded]:
  """The memorised sentences' tokens and lengths; greedy reconstructions from the mean."""
  tokens, lengths = sampling.encode_sentences(m.vocab, m.sentences)
  return tokens, lengths, sampling.reconstruct(m.model, m.variables, tokens, lengths,
                                               jax.random.key(0), decoding=GREEDY_12)


def test_reconstructions_repeat_the_input_more_often_than_chance(memorised):
  tokens, _, decoded = _reconstructions(memorised)
  overlap = _overlap(decoded.tokens, tokens).mean()
  baseline = np.mean([_overlap(decoded.tokens, np.roll(tokens, shift, axis=0)).mean()
                      for shift in range(1, len(tokens))])  # another sentence's words
  assert overlap > 0.8
  assert overlap > baseline + 0.5


def test_interpolation_starts_and_ends_at_the_reconstructions(memorised):
  m = memorised
  tokens, lengths, decoded = _reconstructions(m)
  path = sampling.interpolate(m.model, m.variables, tokens[:2], lengths[:2],
                              jax.random.key(0), steps=5, decoding=GREEDY_12)
  assert path.tokens.shape == (5, 12)
  np.testing.assert_array_equal(path.tokens[np.array([0, -1])], decoded.tokens[:2])


def _start(workdir, *flags):
  return subprocess.Popen(
      [sys.executable, "launch/sample.py", "--config=configs/synthetic.py:tiny",
       f"--workdir={workdir}",
       f"--config.data.tfds_dir={os.path.join(os.path.dirname(workdir), 'tfds')}", *flags],
      cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True, env=launcher_env())


def _finish(process, stdin):
  stdout, stderr = process.communicate(stdin, timeout=300)
  return process.returncode, stdout, stderr


@pytest.fixture(scope="module")
def cli(memorised, tmp_path_factory):
  """(exit status, stdout, stderr) of launch/sample.py per case, all run side by side."""
  tmp = tmp_path_factory.mktemp("cli")
  (tmp / "input.txt").write_text("\n".join([*memorised.sentences, "", "w1 unseen"]))
  first, second = memorised.sentences[:2]
  run, nothing = memorised.workdir, str(tmp / "nothing")
  cases = {
      "prior": (run, ["prior", "--num=3", "--method=beam", "--max_length=10"], ""),
      "reconstruct": (run, ["reconstruct", f"--input={tmp / 'input.txt'}", "--json",
                            "--max_length=12"], ""),
      "interpolate": (run, ["interpolate", f"--first={first}", f"--second={second}",
                            "--steps=4", "--json", "--max_length=12"], ""),
      "no run": (nothing, ["prior"], ""),
      "empty input": (nothing, ["reconstruct"], "\n \n"),
      "no latent": (nothing, ["interpolate", "--first=a", "--second=b",
                              "--config.model.posterior=none"], ""),
      "unknown mode": (nothing, ["decode"], ""),
  }
  processes = {name: (_start(workdir, *flags), stdin)
               for name, (workdir, flags, stdin) in cases.items()}
  return {name: _finish(p, stdin) for name, (p, stdin) in processes.items()}


def test_cli_prior_prints_one_sentence_per_line(cli, memorised):
  status, stdout, stderr = cli["prior"]
  assert status == 0, stderr
  lines = stdout.splitlines()
  assert len(lines) == 3
  assert all(set(line.split()) <= set(memorised.vocab.tokens) for line in lines)


def test_cli_reconstruct_json_repeats_the_input(cli, memorised):
  status, stdout, stderr = cli["reconstruct"]
  assert status == 0, stderr
  out = json.loads(stdout)
  assert (out["mode"], out["checkpoint"], out["step"]) == ("reconstruct", "best", 150)
  inputs = [row["input"] for row in out["samples"]]
  assert inputs == [*memorised.sentences, "w1 <unk>"]  # blank lines are skipped
  assert sum(row["text"] == row["input"] for row in out["samples"]) >= 6
  assert all(row["log_prob"] <= 0 for row in out["samples"])


def test_cli_interpolate_json(cli, memorised):
  status, stdout, stderr = cli["interpolate"]
  assert status == 0, stderr
  samples = json.loads(stdout)["samples"]
  assert [row["t"] for row in samples] == pytest.approx([0, 1 / 3, 2 / 3, 1])
  assert (samples[0]["text"], samples[-1]["text"]) == tuple(memorised.sentences[:2])


@pytest.mark.parametrize("case, message", [
    ("no run", "holds no run"),
    ("empty input", "stdin holds no sentences"),
    ("no latent", "interpolate needs a latent variable"),
    ("unknown mode", "expected one mode"),
])
def test_cli_errors_exit_2_with_one_clear_message(cli, case, message):
  status, _, stderr = cli[case]
  assert status == 2
  assert message in stderr
  assert "Traceback" not in stderr
