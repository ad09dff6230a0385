"""Figures of one or more runs: python launch/plot.py runs/a runs/b --out figures

Writes, and prints the path of, each figure the runs support (see
cvae_jax/figures.py).
"""

from absl import app, flags

from cvae_jax import cli, figures

OUT = flags.DEFINE_string("out", None, "Folder for the PNG files (created if needed).")


def main(argv):
  cli.run(lambda: print("\n".join(figures.write_figures(argv[1:], OUT.value))))


if __name__ == "__main__":
  flags.mark_flags_as_required(["out"])
  app.run(main, flags_parser=cli.parse_flags)
