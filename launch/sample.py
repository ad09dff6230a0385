"""Generate text from a trained run: sample.py --config C --workdir W MODE [flags]

  python launch/sample.py --config configs/ptb.py --workdir runs/ptb prior --num 5
  python launch/sample.py --config configs/ptb.py --workdir runs/ptb reconstruct < in.txt
  python launch/sample.py --config configs/ptb.py --workdir runs/ptb interpolate
      --first "the cat sat" --second "stocks fell sharply" --steps 5

MODE is one of
  prior        --num sentences decoded from z ~ N(0, I) (from the zero state
               for the LSTM language model, config.model.posterior='none').
  reconstruct  each non-blank line of --input (stdin by default) encoded and
               decoded again, from the posterior mean (--use_mean, the
               default) or a posterior sample (--nouse_mean).
  interpolate  --steps sentences decoded from evenly spaced points between the
               posterior means of --first and --second, both ends included.

Input is whitespace-tokenised; words outside the run's vocabulary become
<unk>. Every mode decodes with --method greedy (default), sample
(--temperature) or beam (--beam_size, --length_penalty), at most --max_length
tokens (default config.data.max_length + 1, </s> included). --seed fixes
every random choice. Prints one sentence per line, or with --json one object
{"mode", "checkpoint", "step", "samples": [{"text", "log_prob", ...}]}, where
reconstruct adds each "input" as the model read it and interpolate the
position "t" in [0, 1]. Uses the run's best checkpoint (the latest if none is
best yet) and the run's model fields where the command line sets none.
"""

import json
import sys

from absl import flags
import jax

from cvae_jax import cli, sampling
from cvae_jax.errors import CvaeError
from cvae_jax.trained import Trained, load_trained
from cvae_jax.workdir import with_run_model

NUM = flags.DEFINE_integer("num", 10, "prior: sentences to sample.")
METHOD = flags.DEFINE_enum("method", "greedy", list(sampling.METHODS), "Decoding method.")
TEMPERATURE = flags.DEFINE_float("temperature", 1.0, "sample: softmax temperature.")
BEAM_SIZE = flags.DEFINE_integer("beam_size", 5, "beam: hypotheses kept.")
LENGTH_PENALTY = flags.DEFINE_float(
    "length_penalty", 0.0, "beam: pick the best by log p / length**length_penalty.")
MAX_LENGTH = flags.DEFINE_integer(
    "max_length", None, "Tokens per sentence at most (default config.data.max_length + 1).")
INPUT = flags.DEFINE_string("input", None, "reconstruct: file of sentences (default stdin).")
USE_MEAN = flags.DEFINE_bool(
    "use_mean", True, "reconstruct: decode the posterior mean, else a posterior sample.")
FIRST = flags.DEFINE_string("first", None, "interpolate: the start sentence.")
SECOND = flags.DEFINE_string("second", None, "interpolate: the end sentence.")
STEPS = flags.DEFINE_integer("steps", 5, "interpolate: sentences, both ends included.")
SEED = flags.DEFINE_integer("seed", 0, "Seed of every random choice.")
JSON = flags.DEFINE_bool("json", False, "Print one JSON object instead of plain text.")


def _prior(trained: Trained, decoding: sampling.Decoding, key: jax.Array,
           sentences: list[str]) -> list[dict]:
  del sentences
  decoded = sampling.sample_prior(trained.model, trained.state.variables, key,
                                  num=NUM.value, decoding=decoding)
  return sampling.to_rows(trained.vocab, decoded)


def _reconstruct(trained: Trained, decoding: sampling.Decoding, key: jax.Array,
                 sentences: list[str]) -> list[dict]:
  tokens, lengths = sampling.encode_sentences(trained.vocab, sentences)
  decoded = sampling.reconstruct(trained.model, trained.state.variables, tokens, lengths,
                                 key, decoding=decoding, use_mean=USE_MEAN.value)
  rows = sampling.to_rows(trained.vocab, decoded)
  return [dict(row, input=trained.vocab.decode(t)) for row, t in zip(rows, tokens)]


def _interpolate(trained: Trained, decoding: sampling.Decoding, key: jax.Array,
                 sentences: list[str]) -> list[dict]:
  tokens, lengths = sampling.encode_sentences(trained.vocab, sentences)
  decoded = sampling.interpolate(trained.model, trained.state.variables, tokens, lengths,
                                 key, steps=STEPS.value, decoding=decoding)
  rows = sampling.to_rows(trained.vocab, decoded)
  return [dict(row, t=i / (STEPS.value - 1)) for i, row in enumerate(rows)]


MODES = {"prior": _prior, "reconstruct": _reconstruct, "interpolate": _interpolate}


def _mode(argv: list[str]) -> str:
  """The one positional argument, a key of MODES."""
  if len(argv) != 2 or argv[1] not in MODES:
    raise CvaeError(f"expected one mode, {', '.join(MODES)}; got {argv[1:]} "
                    "(see --help)")
  return argv[1]


def _sentences(mode: str) -> list[str]:
  """reconstruct: the non-blank input lines; interpolate: --first and --second."""
  if mode == "interpolate":
    if FIRST.value is None or SECOND.value is None:
      raise CvaeError("interpolate needs --first and --second sentences")
    return [FIRST.value, SECOND.value]
  where = INPUT.value or "stdin"
  try:
    if INPUT.value:
      with open(INPUT.value, encoding="utf-8") as f:
        lines = f.read().splitlines()
    else:
      lines = sys.stdin.read().splitlines()
  except (OSError, UnicodeDecodeError) as e:
    raise CvaeError(f"cannot read {where}: {e}") from e
  sentences = [line for line in lines if line.strip()]
  if not sentences:
    raise CvaeError(f"{where} holds no sentences (one per line)")
  return sentences


def generate(argv: list[str]) -> None:
  """Checks the arguments and input, loads the run, prints its sentences."""
  workdir = cli.WORKDIR.value
  config = with_run_model(workdir, cli.CONFIG.value, cli.given_fields(sys.argv))
  mode = _mode(argv)
  max_length = (config.data.max_length + 1 if MAX_LENGTH.value is None
                else MAX_LENGTH.value)
  decoding = sampling.Decoding(METHOD.value, max_length, TEMPERATURE.value,
                               BEAM_SIZE.value, LENGTH_PENALTY.value)
  sentences = []
  if mode != "prior":
    sampling.require_latent(config.model.posterior, mode)
    sentences = _sentences(mode)
  trained = load_trained(config, workdir)
  rows = MODES[mode](trained, decoding, jax.random.key(SEED.value), sentences)
  if JSON.value:
    print(json.dumps({"mode": mode, "checkpoint": trained.which, "step": trained.step,
                      "samples": rows}, indent=2, ensure_ascii=False))
  else:
    print("\n".join(row["text"] for row in rows))


if __name__ == "__main__":
  cli.launch(generate, required=["config", "workdir"])
