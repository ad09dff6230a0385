"""Train a model: python launch/train.py --config configs/ptb.py --workdir runs/ptb

Resumes from the newest checkpoint in --workdir; override any config field
with --config.<group>.<field>=value.
"""

from absl import app, flags

from cvae_jax import cli, train


def main(argv):
  del argv
  cli.run(lambda: train.train_and_evaluate(cli.CONFIG.value, cli.WORKDIR.value))


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main, flags_parser=cli.parse_flags)
