"""launch/benchmark.py at a tiny size: it runs, and its JSON has the fields."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIELDS = {"case", "posterior", "unit", "median", "min", "max", "rounds", "compile_s",
          "dtype", "peak_host_mb", "peak_device_mb", "device_kind", "device_count"}


def test_benchmark_prints_one_record_per_case(tmp_path):
  out = tmp_path / "bench.jsonl"
  result = subprocess.run(
      [sys.executable, "launch/benchmark.py", "--config", "configs/synthetic.py:tiny",
       f"--config.data.tfds_dir={tmp_path / 'tfds'}", "--posteriors", "copula",
       "--dtypes", "float32,bfloat16", "--rounds", "2", "--warmup", "1",
       "--config.eval.iw_samples=4", "--out", str(out)],
      cwd=ROOT, capture_output=True, text=True, timeout=600,
      env=dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2"))
  assert result.returncode == 0, result.stderr[-3000:]
  records = [json.loads(line) for line in out.read_text().splitlines()]
  assert [(r["case"], r["posterior"], r["dtype"]) for r in records] == [
      (case, posterior, dtype) for dtype in ("float32", "bfloat16")
      for posterior in ("copula",)
      for case in ("train_fixed", "train_pipeline", "eval_iw")] + [("matmul", "-", "float32")]
  for r in records:
    assert FIELDS <= set(r)
    assert 0 < r["min"] <= r["median"] <= r["max"]
    assert r["device_count"] == 2
  assert all(r["epoch_s"] > 0 for r in records if r["case"] == "train_pipeline")
  assert "train_pipeline" in result.stdout  # the table
