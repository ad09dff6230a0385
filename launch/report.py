"""Markdown tables of runs' test metrics (mean ± sd over seeds).

  python launch/report.py runs/ptb runs/ptb_small --out docs/results.md --name ptb
  python launch/report.py runs/ptb --keep docs/runs/ptb --out docs/results.md --name ptb
  python launch/report.py docs/runs/ptb_small --out docs/results.md --name ptb_small --training

Each argument is a run folder or a folder of runs (a grid's root). The tables
go between `<!-- report:NAME -->` markers in --out (replacing the previous
tables, keeping the prose around them), or to stdout without --out. With
--training, a second table gives each run's course (last step, best
validation -ELBO and its step, the validations after which the learning
rate was cut).

With --keep DIR, the runs' records (config.json, metrics.jsonl,
eval_<split>.json; no checkpoints) are first copied into DIR/<run>/, and the
tables are made from every record in DIR: the ones kept before, from runs
whose workdirs may be gone, included. The block then names the command that
remakes it from DIR alone.
"""

import shlex
import sys

from absl import flags

from cvae_jax import cli, results
from cvae_jax.errors import CvaeError

OUT = flags.DEFINE_string("out", None, "Markdown file to write the tables into.")
NAME = flags.DEFINE_string("name", "results", "Name of the block in --out.")
SPLIT = flags.DEFINE_string("split", "test", "Which eval_<split>.json to read.")
KEEP = flags.DEFINE_string("keep", None, "Folder to copy the runs' records into; the "
                           "tables are then made from all the records in it.")
TRAINING = flags.DEFINE_bool("training", False, "Also a table of each run's course: its "
                             "last step, best validation -ELBO and that step, and the "
                             "validations after which the learning rate was cut.")


def main(argv):
  if len(argv) < 2:
    raise CvaeError("give run folders: python launch/report.py RUN_OR_GRID ... "
                    "[--out FILE]")
  paths = argv[1:]
  if KEEP.value:
    for record in results.keep_records(paths, KEEP.value):
      print(f"kept {record}", file=sys.stderr)
    paths = [KEEP.value]
  command = ["python", "launch/report.py", *paths]
  if OUT.value:
    command += ["--out", OUT.value, "--name", NAME.value]
  if SPLIT.value != "test":
    command += ["--split", SPLIT.value]
  if TRAINING.value:
    command += ["--training"]
  text = results.report(paths, SPLIT.value, shlex.join(command), TRAINING.value)
  if OUT.value:
    results.write_block(OUT.value, NAME.value, text)
    print(OUT.value)
  else:
    print(text)


if __name__ == "__main__":
  cli.launch(main)
