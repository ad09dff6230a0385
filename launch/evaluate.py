"""Evaluate a trained run's best checkpoint on a split.

  python launch/evaluate.py --config configs/ptb.py --workdir runs/ptb --split test

Writes <workdir>/eval_<split>.json and prints a table. K for the
importance-weighted NLL is --config.eval.iw_samples (500 by default).
"""

from absl import app, flags

from cvae_jax import cli, report

SPLIT = flags.DEFINE_enum("split", "test", ["train", "valid", "test"], "Split to evaluate.")


def main(argv):
  del argv

  def run():
    metrics = report.evaluate_run(cli.CONFIG.value, cli.WORKDIR.value, SPLIT.value)
    print(report.table(metrics))

  cli.run(run)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main, flags_parser=cli.parse_flags)
