"""Benchmark the train and evaluation steps for each posterior.

  python launch/benchmark.py --config configs/ptb.py \
      --config.data.source_dir=path/to/ptb [--config.model.emb_dim=200 ...]

With `--peer torch` (needs `pip install -e '.[peer]'`) the PyTorch model of
`cvae_jax.peer` is timed beside train_fixed and matmul in the same interleaved
rounds, on its GPU if it sees one.

Prints one JSON object per case, then a table with the ratios; --out also
writes the JSON lines.
"""

import copy
import itertools
import json
import os

# Before anything loads torch (tensorboardX does when it is installed): the
# peer's OpenMP threads wait passively. On a shared, loaded 2-core machine
# their default spin-waiting made its train step 5-10x slower (180 against
# 1,050 tokens/s at hidden size 512); JAX does not use OpenMP.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from absl import flags  # noqa: E402
import jax  # noqa: E402

from cvae_jax import benchmark, cli, data, parallel  # noqa: E402

CASES = flags.DEFINE_list("cases", ["train_fixed", "train_pipeline", "eval_iw", "matmul"],
                          "Cases to measure (also train_matmuls, the train step's matmuls "
                          "alone, on one device); matmul is measured once, not per posterior.")
POSTERIORS = flags.DEFINE_list("posteriors", ["none", "gaussian", "copula"],
                               "Posteriors to measure.")
DTYPES = flags.DEFINE_list("dtypes", [], "Matmul dtypes to measure (float32, bfloat16); "
                           "default: config.model.dtype alone.")
LENGTH = flags.DEFINE_integer("length", 26, "Tokens per row of the fixed-shape batches "
                              "(<s>, words, </s>): 26 is batch x 25 predicted tokens.")
VOCAB = flags.DEFINE_integer("vocab_size", 10_002, "Vocabulary of the fixed-shape cases "
                             "when train_pipeline (which loads the data) is not run.")
PEER = flags.DEFINE_enum("peer", None, ["torch"], "Also time this library's "
                        "implementation of train_fixed and matmul, for the ratios.")
WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed calls per case after compilation.")
ROUNDS = flags.DEFINE_integer("rounds", 10, "Timed interleaved rounds.")
OUT = flags.DEFINE_string("out", "", "Also write the JSON lines to this file.")


def main(argv):
  del argv
  base = cli.CONFIG.value
  corpus = data.load_corpus(base.data) if "train_pipeline" in CASES.value else None
  vocab_size = len(corpus.vocab) if corpus else VOCAB.value
  mesh = parallel.make_mesh()
  cases = []
  for dtype, posterior in itertools.product(DTYPES.value or [base.model.dtype],
                                            POSTERIORS.value):
    config = copy.deepcopy(base)
    with config.unlocked():
      config.model.posterior, config.model.dtype = posterior, dtype
    builders = {
        "train_fixed": lambda: benchmark.train_fixed_case(config, mesh, vocab_size, LENGTH.value),
        "train_pipeline": lambda: benchmark.train_pipeline_case(config, mesh, corpus),
        "eval_iw": lambda: benchmark.eval_iw_case(config, mesh, vocab_size, LENGTH.value),
        "train_matmuls": lambda: benchmark.train_matmuls_case(config, vocab_size, LENGTH.value),
    }
    cases += [(config, builders[name]()) for name in CASES.value if name in builders]
    if PEER.value and "train_fixed" in CASES.value:
      cases.append((config, benchmark.peer_train_case(config, mesh, vocab_size,
                                                      LENGTH.value, PEER.value)))
  if "matmul" in CASES.value:
    cases.append((base, benchmark.matmul_case()))
    if PEER.value:
      cases.append((base, benchmark.peer_matmul_case(PEER.value)))
  benchmark.measure([case for _, case in cases], WARMUP.value, ROUNDS.value)
  records = [benchmark.record(case, config) for config, case in cases]
  benchmark.compare(records)
  lines = [json.dumps(r) for r in records]
  print("\n".join(lines))
  print(benchmark.table(records))
  if OUT.value and jax.process_index() == 0:
    with open(OUT.value, "w") as f:
      f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
  cli.launch(main, required=["config"])
