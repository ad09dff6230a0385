"""The launchers' console: --help, --show_config, and every config field documented."""

import os
import subprocess
import sys

import pytest

from cvae_jax import config_fields
from cvae_jax.config import base_config, flat_fields
from configs import ptb
from tests.helpers import launcher_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _launch(script, *args):
  return subprocess.run([sys.executable, f"launch/{script}", *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=300,
                        env=launcher_env())


def test_every_config_field_has_a_comment():
  comments = config_fields.field_comments()
  fields = list(flat_fields(base_config().to_dict()))
  assert len(fields) > 30
  assert [f for f in fields if not comments.get(f)] == []
  assert comments["data.bucket_lengths"].startswith("Padded token lengths")  # from above
  assert comments["train.max_lr_decays"].startswith("Plateaus of the validation")  # block
  assert comments["train.plateau_start"].startswith("passes before this step")


def test_describe_lists_each_field_with_its_value_and_comment():
  config = ptb.get_config("tiny")
  config.model.latent_dim = 8
  lines = config_fields.describe(config).splitlines()
  assert len(lines) == len(flat_fields(config.to_dict()))
  latent = next(line for line in lines if line.startswith("config.model.latent_dim "))
  assert latent.split() == ["config.model.latent_dim", "=", "8", "#", "z"]


@pytest.mark.parametrize("script, flags", [
    ("train.py", ["--config", "--workdir", "--[no]show_config", "--[no]multihost"]),
    ("plot.py", ["--out"]),
])
def test_help_exits_0_with_the_launcher_s_flags(script, flags):
  result = _launch(script, "--help")
  assert result.returncode == 0, result.stderr
  listed = [line.split(":")[0].strip() for line in result.stdout.splitlines()
            if line.startswith("  --")]
  assert set(flags) <= set(listed)
  assert ("--show_config" in result.stdout) == ("--config" in flags)
  assert len(result.stdout.splitlines()) < 40


@pytest.mark.parametrize("args", [["--help"], ["--config", "configs/ptb.py:tiny",
                                               "--show_config"]])
def test_a_reader_that_goes_away_ends_the_launcher_quietly(args):
  read, write = os.pipe()
  os.close(read)  # as `| head` does once it has its lines
  try:
    result = subprocess.run([sys.executable, "launch/train.py", *args], cwd=ROOT,
                            stdout=write, stderr=subprocess.PIPE, text=True, timeout=300,
                            env=launcher_env())
  finally:
    os.close(write)
  assert (result.returncode, result.stderr) == (1, "")


def test_show_config_prints_the_fields_after_overrides_and_exits_0():
  result = _launch("train.py", "--config", "configs/ptb.py:tiny", "--show_config",
                   "--config.model.latent_dim=8")
  assert result.returncode == 0, result.stderr
  assert "config.model.latent_dim = 8" in result.stdout
  assert "config.model.copula_weight = 0.4" in result.stdout
  assert "# lambda, weight of log c(q)" in result.stdout
