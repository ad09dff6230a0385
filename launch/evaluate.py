"""Evaluate a trained run's best checkpoint on a split.

  python launch/evaluate.py --config configs/ptb.py --workdir runs/ptb --split test

Prints a table, then writes <workdir>/eval_<split>.json. K for the
importance-weighted NLL is --config.eval.iw_samples (500 by default). Without
--config.data.source_dir (and tfds_dir), the run's own data is read; model
fields not set on the command line (posterior, sizes, ...) are the run's.
"""

import sys

from absl import flags
import jax

from cvae_jax import cli, report
from cvae_jax.workdir import with_run_model

SPLIT = flags.DEFINE_enum("split", "test", ["train", "valid", "test"], "Split to evaluate.")


def main(argv):
  del argv
  config = with_run_model(cli.WORKDIR.value, cli.CONFIG.value, cli.given_fields(sys.argv))
  metrics = report.evaluate_run(config, cli.WORKDIR.value, SPLIT.value)
  if jax.process_index() == 0:
    print(report.table(metrics))
    report.write_evaluation(cli.WORKDIR.value, metrics)


if __name__ == "__main__":
  cli.launch(main, required=["config", "workdir"])
