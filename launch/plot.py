"""Figures of one or more runs: python launch/plot.py runs/a runs/b --out figures

Each argument is a run folder or a folder of runs (a grid's root, or records
kept by `launch/report.py --keep`).

Writes, and prints the path of, each figure the runs support (see
cvae_jax/figures.py); says on stderr which runs a figure leaves out and why.
"""

import sys

from absl import flags

from cvae_jax import cli, figures

OUT = flags.DEFINE_string("out", None, "Folder for the PNG files (created if needed).")


def main(argv):
  written, notes = figures.write_figures(argv[1:], OUT.value)
  print("\n".join(written))
  for note in notes:
    print(f"note: {note}", file=sys.stderr)


if __name__ == "__main__":
  cli.launch(main, required=["out"])
