"""Train (and evaluate) every combination of swept config fields into one folder.

  python launch/grid.py --config configs/ptb_small.py --root runs/ptb_small \\
      --sweep model.posterior=none,gaussian --sweep seed=0,1,2 \\
      --config.data.source_dir=path/to/ptb [--split test] [--parallel 3] [--status]

Each combination is a workdir <root>/<field>=<value>,...; finished runs are
skipped and unfinished ones resume, so the same command can be repeated (for
instance across sessions) until the grid is complete. Every --config.* flag is
passed on to launch/train.py and launch/evaluate.py. Exits 1 if a run failed;
SIGTERM stops the runs in flight and exits 143; Ctrl-C lets them end as
after a Ctrl-C of their own and exits 130.
"""

import os
import sys

from absl import flags

from cvae_jax import cli, grid

ROOT = flags.DEFINE_string("root", None, "Folder of the grid's workdirs.")
SWEEP = flags.DEFINE_multi_string(
    "sweep", [], "<group>.<field>=v1,v2,...: values of one config field (repeatable; "
    "the grid is every combination).")
SPLIT = flags.DEFINE_string("split", "test", "Evaluate each trained run on this split "
                            "with launch/evaluate.py; '' to skip evaluation.")
STATUS = flags.DEFINE_bool("status", False, "Print where each run stands (finished, its "
                            "newest checkpoint, training now, not started) and exit; "
                            "nothing runs.")
PARALLEL = flags.DEFINE_integer("parallel", 1, "Runs at a time (several fit one GPU); "
                                "with more than 1 each logs to <workdir>/log.txt.")


def main(argv):
  del argv
  sweeps = grid.parse_sweeps(cli.CONFIG.value, SWEEP.value)
  config_flags = grid.config_flags(sys.argv[1:])
  runs = grid.grid_runs(sweeps)
  if STATUS.value:
    _print_table({run.name: grid.state(os.path.join(ROOT.value, run.name), SPLIT.value or None)
                  for run in runs})
    return
  grid.record(ROOT.value, sys.argv[1:], runs)
  status = grid.run_grid(ROOT.value, runs, config_flags,
                         SPLIT.value or None, PARALLEL.value)
  _print_table(status)
  if any(s.startswith("failed") for s in status.values()):
    sys.exit(1)


def _print_table(status: dict[str, str]) -> None:
  width = max(map(len, status))
  print("\n".join(f"{name:<{width}}  {s}" for name, s in status.items()))


if __name__ == "__main__":
  cli.launch(main, required=["config", "root"])
