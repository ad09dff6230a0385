"""metrics.jsonl and tb/ hold the same events through resumes, torn lines and failures."""

import json
import os

import numpy as np
import pytest

from cvae_jax.errors import CvaeError
from cvae_jax.writer import MetricWriter, read_events
from tests.helpers import tb_scalars


def _tb_of(events):
  """The scalars TensorBoard should hold for `events` (it stores float32)."""
  return sorted((f"{e['split']}/{k}", e["step"], float(np.float32(v))) for e in events
                for k, v in e.items() if k not in ("step", "split"))


def _write_run(workdir, steps=(10, 20, 30), test_step=None):
  writer = MetricWriter(str(workdir))
  for step in steps:
    writer.write(step, "train", {"loss": step / 10})
  if test_step is not None:
    writer.write(test_step, "test", {"nll_elbo": 1.5})
  writer.close()


def test_truncating_after_a_resume_rewrites_tensorboard_too(tmp_path):
  _write_run(tmp_path)
  writer = MetricWriter(str(tmp_path))
  writer.truncate_after(20)  # the run resumes from the checkpoint of step 20
  writer.write(30, "train", {"loss": 3.5})
  writer.close()
  events = read_events(str(tmp_path))
  assert [(e["step"], e["loss"]) for e in events] == [(10, 1.0), (20, 2.0), (30, 3.5)]
  assert tb_scalars(tmp_path / "tb") == _tb_of(events)  # no duplicate step 30


def test_events_a_killed_run_left_out_of_tensorboard_come_back_on_resume(tmp_path):
  _write_run(tmp_path)
  for name in os.listdir(tmp_path / "tb"):  # killed before tensorboardX's queue was written
    with open(tmp_path / "tb" / name, "r+b") as f:
      f.truncate(0)
  writer = MetricWriter(str(tmp_path))
  writer.truncate_after(30)  # nothing after the checkpoint to drop
  writer.close()
  assert tb_scalars(tmp_path / "tb") == _tb_of(read_events(str(tmp_path)))


def test_test_rows_are_replaced_only_by_a_new_test_row(tmp_path):
  _write_run(tmp_path, steps=(10, 20), test_step=20)
  writer = MetricWriter(str(tmp_path))
  writer.truncate_after(20)
  writer.write(30, "train", {"loss": 3.0})
  writer.close()  # e.g. the restarted run fails with NaN here: the test row stays
  assert [(e["step"], e["split"]) for e in read_events(str(tmp_path))] == [
      (10, "train"), (20, "train"), (20, "test"), (30, "train")]
  writer = MetricWriter(str(tmp_path))
  writer.write(30, "test", {"nll_elbo": 1.2})
  writer.close()
  events = read_events(str(tmp_path))
  assert [(e["step"], e["split"]) for e in events] == [
      (10, "train"), (20, "train"), (30, "train"), (30, "test")]
  assert tb_scalars(tmp_path / "tb") == _tb_of(events)


def test_a_torn_last_line_is_dropped_with_a_warning_and_resume_goes_on(tmp_path, capsys):
  _write_run(tmp_path)
  with open(tmp_path / "metrics.jsonl", "a") as f:
    f.write('{"step": 40, "split": "tra')  # killed while writing
  assert [e["step"] for e in read_events(str(tmp_path))] == [10, 20, 30]
  assert "dropped the unfinished last line" in capsys.readouterr().err
  writer = MetricWriter(str(tmp_path))
  writer.truncate_after(30)
  writer.write(40, "train", {"loss": 4.0})
  writer.close()
  with open(tmp_path / "metrics.jsonl") as f:
    assert [json.loads(line)["step"] for line in f] == [10, 20, 30, 40]


def test_a_complete_last_line_without_newline_is_kept(tmp_path):
  _write_run(tmp_path)
  with open(tmp_path / "metrics.jsonl", "a") as f:
    f.write('{"step": 40, "split": "train", "loss": 4.0}')
  assert [e["step"] for e in read_events(str(tmp_path))] == [10, 20, 30, 40]


def test_a_broken_line_inside_the_file_is_an_error_naming_it(tmp_path):
  _write_run(tmp_path)
  with open(tmp_path / "metrics.jsonl", "a") as f:
    f.write("garbage\n")
  with pytest.raises(CvaeError, match=r"metrics.jsonl, line 4 is not a JSON event"):
    read_events(str(tmp_path))


def test_an_unwritable_tensorboard_folder_is_one_clear_error(tmp_path):
  with open(tmp_path / "tb", "w"):
    pass  # a file where the folder goes: writes fail even for root
  with pytest.raises(CvaeError, match="cannot write TensorBoard logs to .*tb"):
    MetricWriter(str(tmp_path))
  assert os.listdir(tmp_path) == ["tb"]
