"""Train a model: python launch/train.py --config configs/ptb.py --workdir runs/ptb

Resumes from the newest checkpoint in --workdir; override any config field
with --config.<group>.<field>=value. Ends with a table of the test metrics
of the best checkpoint (lowest validation -ELBO).
"""

import jax

from cvae_jax import cli, report, train


def main(argv):
  del argv
  test = train.train_and_evaluate(cli.CONFIG.value, cli.WORKDIR.value)
  if jax.process_index() == 0:
    print(report.table(test))


if __name__ == "__main__":
  cli.launch(main, required=["config", "workdir"])
