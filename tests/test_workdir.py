"""A run's workdir: restarts of another model or objective are refused, other changes
are recorded, failed checks and failed writes leave nothing behind."""

import fcntl
import json
import os

from absl import flags
import pytest

from cvae_jax import cli, data, train
from cvae_jax.errors import CvaeError
from cvae_jax.workdir import (check_run, exclusive, holder, prepare_workdir,
                              with_run_data, with_run_model)
from configs import ptb, synthetic

VOCAB = data.Vocab((*data.vocab.SPECIALS, "a", "b"))


@pytest.fixture
def run(tmp_path):
  """A workdir holding a run of configs/ptb.py:tiny (its config and vocabulary)."""
  config = ptb.get_config("tiny")
  config.data.source_dir, config.data.tfds_dir = "/data/ptb", "/data/tfds"
  workdir = str(tmp_path / "run")
  prepare_workdir(workdir, config, VOCAB)
  return workdir


def _saved(workdir):
  with open(os.path.join(workdir, "config.json")) as f:
    return json.load(f)


@pytest.fixture
def parsed_flags():
  """cli.run reads --multihost: flags as a launcher without arguments has them."""
  flags.FLAGS.mark_as_parsed()


@pytest.mark.parametrize("field, value", [
    ("model.posterior", "gaussian"), ("model.copula_weight", 0.9), ("train.kl_anneal_steps", 5), ("model.latent_dim", 8),
    ("train.free_bits", 0.5), ("model.bn_gamma", 0.5), ("train.aggressive", True),
    ("train.ae_pretrain_steps", 100)])
def test_a_restart_with_another_objective_or_model_is_refused_before_any_work(
    run, field, value):
  config = ptb.get_config("tiny")
  group, name = field.split(".")
  config[group][name] = value
  old = ptb.get_config("tiny")[group][name]
  # Refused before the data is read (source_dir points nowhere).
  with pytest.raises(CvaeError, match=f"config.{field}={old!r}, not {value!r}"):
    train.train_and_evaluate(config, run)
  assert _saved(run)[group][name] == old


def test_a_run_from_before_a_field_existed_has_its_default(run):
  saved = _saved(run)
  del saved["train"]["free_bits"], saved["model"]["vmf_kappa"]
  with open(os.path.join(run, "config.json"), "w") as f:
    json.dump(saved, f)
  config = with_run_data(run, ptb.get_config("tiny"))
  prepare_workdir(run, config, VOCAB)  # the defaults: the same run
  config.train.free_bits = 0.5
  with pytest.raises(CvaeError, match="config.train.free_bits=0.0, not 0.5"):
    prepare_workdir(run, config, VOCAB)


def test_other_changes_are_recorded_in_config_json(run, capsys):
  config = with_run_data(run, ptb.get_config("tiny"))
  config.train.num_steps = 80
  prepare_workdir(run, config, VOCAB)
  assert _saved(run)["train"]["num_steps"] == 80
  assert "config.train.num_steps: 40 -> 80" in capsys.readouterr().err
  prepare_workdir(run, config, VOCAB)  # nothing changed: nothing said
  assert capsys.readouterr().err == ""


def test_without_a_source_dir_the_run_s_own_data_is_used(run):
  config = with_run_data(run, ptb.get_config("tiny"))
  assert (config.data.source_dir, config.data.tfds_dir) == ("/data/ptb", "/data/tfds")
  other = ptb.get_config("tiny")
  other.data.source_dir = "/elsewhere"
  assert with_run_data(run, other).data.source_dir == "/elsewhere"
  assert with_run_data(os.path.dirname(run) + "/new", other) is other


def test_evaluation_takes_the_model_fields_the_command_line_leaves_alone(tmp_path, capsys):
  trained = ptb.get_config("tiny")
  trained.model.posterior, trained.train.aggressive, trained.model.dropout = (
      "gaussian", True, 0.1)
  workdir = str(tmp_path / "run")
  prepare_workdir(workdir, trained, VOCAB)
  argv = ["evaluate.py", "--config", "configs/ptb.py:tiny", "--config.eval.iw_samples=5"]
  config = with_run_model(workdir, ptb.get_config("tiny"), cli.given_fields(argv))
  assert (config.model.posterior, config.train.aggressive) == ("gaussian", True)
  assert config.model.dropout == ptb.get_config("tiny").model.dropout  # not a model field
  assert capsys.readouterr().err == (
      f"note: {workdir}: the run's config.model.posterior='gaussian', "
      "config.train.aggressive=True\n")
  check_run(workdir, config)  # accepted
  # A field set on the command line stays, and is refused if it is not the run's.
  given = cli.given_fields([*argv, "--config.model.posterior", "copula", "--noconfig.x.y"])
  assert given == ("eval.iw_samples", "model.posterior", "x.y")
  config = with_run_model(workdir, ptb.get_config("tiny"), given)
  assert config.model.posterior == "copula"
  with pytest.raises(CvaeError, match="config.model.posterior='gaussian', not 'copula'"):
    check_run(workdir, config)
  other = ptb.get_config("tiny")
  assert with_run_model(str(tmp_path / "none"), other, ()) is other  # no run there


def test_a_workdir_that_is_a_file_is_one_error_line(tmp_path, capsys, parsed_flags):
  workdir = tmp_path / "file"
  workdir.write_text("not a folder")
  with pytest.raises(SystemExit) as exit_:
    cli.run(lambda: train.train_and_evaluate(ptb.get_config("tiny"), str(workdir)))
  assert exit_.value.code == 2
  assert capsys.readouterr().err == (
      f"error: --workdir {workdir} is a file, not a folder; give a folder\n")


def test_a_failed_write_leaves_no_half_written_run(tmp_path):
  workdir = tmp_path / "run"
  (workdir / "vocab.txt").mkdir(parents=True)  # writing vocab.txt fails, even for root
  with pytest.raises(CvaeError, match="cannot write the run into --workdir"):
    prepare_workdir(str(workdir), ptb.get_config("tiny"), VOCAB)
  assert os.listdir(workdir) == ["vocab.txt"]  # no config.json: no run


def test_a_new_workdir_that_cannot_be_written_is_removed_again(tmp_path, monkeypatch):
  def read_only(*args):
    raise PermissionError(13, "Permission denied", str(tmp_path / "run" / "vocab.txt"))
  monkeypatch.setattr(data.Vocab, "save", read_only)
  with pytest.raises(CvaeError, match=r"Permission denied \(.*vocab.txt\)"):
    prepare_workdir(str(tmp_path / "run"), ptb.get_config("tiny"), VOCAB)
  assert not (tmp_path / "run").exists()


def test_a_second_process_on_a_workdir_is_refused_until_the_first_ends(run, tmp_path):
  # flock locks belong to an open file: a second open in this process stands
  # for a second process.
  with exclusive(run):
    with pytest.raises(CvaeError, match=f"another process is training in {run}"):
      with exclusive(run):
        pass
  with exclusive(run):  # released
    pass
  assert sorted(os.listdir(run)) == ["config.json", "vocab.txt"]
  with exclusive(str(tmp_path / "new")):  # a new workdir the block leaves empty
    assert (tmp_path / "new").is_dir()
  assert not (tmp_path / "new").exists()


@pytest.mark.skipif(not os.path.exists("/proc/locks"), reason="no /proc/locks here")
def test_the_process_holding_a_workdir_is_named(run, tmp_path):
  assert holder(run) is None
  with exclusive(run):
    assert holder(run) == os.getpid()
    assert holder(str(tmp_path)) is None  # another folder
  assert holder(run) is None
  assert holder(str(tmp_path / "absent")) is None


def test_training_into_a_workdir_in_use_is_refused_before_any_write(tmp_path):
  config = synthetic.get_config("tiny")
  config.data.tfds_dir = str(tmp_path / "tfds")
  workdir = str(tmp_path / "run")
  with exclusive(workdir):
    with pytest.raises(CvaeError, match="another process is training in"):
      train.train_and_evaluate(config, workdir)
    assert os.listdir(workdir) == []


def test_a_file_system_without_locks_runs_unguarded(tmp_path, monkeypatch):
  def no_locks(fd, operation):
    raise OSError(37, "No locks available")
  monkeypatch.setattr(fcntl, "flock", no_locks)
  with exclusive(str(tmp_path / "run")), exclusive(str(tmp_path / "run")):
    pass
