"""Markdown tables of runs' test metrics (mean ± sd over seeds).

  python launch/report.py runs/ptb runs/ptb_small --out docs/results.md --name ptb

Each argument is a run folder or a folder of runs (a grid's root). The tables
go between `<!-- report:NAME -->` markers in --out (replacing the previous
tables, keeping the prose around them), or to stdout without --out.
"""

import shlex
import sys

from absl import flags

from cvae_jax import cli, results
from cvae_jax.errors import CvaeError

OUT = flags.DEFINE_string("out", None, "Markdown file to write the tables into.")
NAME = flags.DEFINE_string("name", "results", "Name of the block in --out.")
SPLIT = flags.DEFINE_string("split", "test", "Which eval_<split>.json to read.")


def main(argv):
  if len(argv) < 2:
    raise CvaeError("give run folders: python launch/report.py RUN_OR_GRID ... "
                    "[--out FILE]")
  command = shlex.join(["python", "launch/report.py", *sys.argv[1:]])
  text = results.report(argv[1:], SPLIT.value, command)
  if OUT.value:
    results.write_block(OUT.value, NAME.value, text)
    print(OUT.value)
  else:
    print(text)


if __name__ == "__main__":
  cli.launch(main)
