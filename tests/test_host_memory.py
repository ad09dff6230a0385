"""keep_freed_memory: a large block freed and allocated again reuses its pages."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROGRAM = """
import resource, sys
if sys.argv[1] == "keep":
  from cvae_jax.host_memory import keep_freed_memory
  assert keep_freed_memory()
import numpy as np
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
counts = []
for _ in range(3):
  before = faults()
  block = np.ones(50_000_000, np.float32)  # 200 MB, written
  del block
  counts.append(faults() - before)
print(counts[-1])
"""


def _faults_of_a_reused_block(mode: str) -> int:
  result = subprocess.run([sys.executable, "-c", PROGRAM, mode], cwd=ROOT, check=True,
                          capture_output=True, text=True, timeout=120)
  return int(result.stdout.split()[-1])


def test_a_freed_block_is_reused_without_page_faults():
  assert _faults_of_a_reused_block("default") >= 50  # glibc unmaps it: fresh pages
  assert _faults_of_a_reused_block("keep") <= 5
