"""The report tool on fake workdirs: grouping, mean ± sd, missing runs, blocks."""

import itertools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys

import numpy as np
import pytest

from cvae_jax import results
from cvae_jax.config import base_config
from cvae_jax.errors import CvaeError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fake_run(path, posterior="gaussian", seed=0, copula_weight=0.4, emb=512,
             metrics=None, in_events=False, dataset="ptb", train=(), **model):
  """A workdir with config.json and, if `metrics`, eval_test.json (or a test event)."""
  c = base_config()
  c.data.name, c.seed = dataset, seed
  c.model.update(posterior=posterior, copula_weight=copula_weight, emb_dim=emb,
                 hidden_dim=emb, **model)
  c.train.update(dict(train))
  os.makedirs(path)
  with open(os.path.join(path, "config.json"), "w") as f:
    f.write(c.to_json())
  events = [{"step": 10, "split": "valid", "nll_elbo": 1.0}]
  if metrics and in_events:
    events.append({"step": 10, "split": "test", **metrics})
  elif metrics:
    with open(os.path.join(path, "eval_test.json"), "w") as f:
      json.dump(metrics, f)
  with open(os.path.join(path, "metrics.jsonl"), "w") as f:
    f.writelines(json.dumps(e) + "\n" for e in events)
  return str(path)


def metrics(nll, kl=1.0, log_copula=0.0, k=500):
  return {"iw_nll": nll - 0.5, "nll_elbo": nll, "kl": kl, "mi": 0.5, "mi_split": 0.7,
          "active_units": 3, "ppl_iw": 100.0, "log_copula": log_copula,
          "nll_paper": nll - log_copula, "ppl_paper": 90.0, "iw_samples": k}


def _rows(text):
  return {line.split(" | ")[0].strip("| "): line.split(" | ")
          for line in text.splitlines() if line.startswith("| ") and "---" not in line}


def test_cells_are_mean_and_sample_sd_and_missing_is_a_dash():
  assert results.cell([1.0, 2.0, 4.0], 2) == f"2.33 ± {np.std([1, 2, 4], ddof=1):.2f}"
  assert results.cell([5.0], 1) == "5.0"
  assert results.cell([], 2) == results.cell([None], 2) == "—"


def test_seeds_are_averaged_and_unfinished_runs_are_not_zeros(tmp_path):
  for seed, nll in ((0, 100.0), (1, 102.0)):
    fake_run(tmp_path / f"g{seed}", seed=seed, metrics=metrics(nll))
  fake_run(tmp_path / "g2", seed=2)  # still training
  fake_run(tmp_path / "lm0", posterior="none")  # nothing finished
  text = results.report([str(tmp_path)], "test", "python launch/report.py x")
  rows = _rows(text)
  head = rows["model"]
  gaussian = dict(zip(head, rows["gaussian"]))
  assert gaussian["runs"] == "2 of 3"
  assert gaussian["-ELBO"] == f"101.00 ± {np.std([100, 102], ddof=1):.2f}"
  assert gaussian["IW-NLL"] == f"100.50 ± {np.std([100, 102], ddof=1):.2f}"
  lm = dict(zip(head, rows["none"]))
  assert lm["runs"] == "0 of 1" and lm["-ELBO"] == "—" and lm["K"] == "—"
  assert "paper's Table 3" in text and "VAE 105.2 / 1.74 / 121" in gaussian[head[-2]]
  assert "paper-conv. NLL" not in text  # no copula term among these runs


def test_published_rows_match_the_model_and_its_training_procedure(tmp_path):
  for name, posterior, train, model in [
      ("plain", "gaussian", {}, {}), ("cyc", "gaussian", {"kl_cycles": 4}, {}),
      ("fb", "gaussian", {"ae_pretrain_steps": 10, "free_bits": 0.25}, {}),
      ("fb_only", "gaussian", {"free_bits": 0.25}, {}),
      ("cyc_wd", "gaussian", {"kl_cycles": 4}, {"word_dropout": 0.25}),
      ("cop", "copula", {}, {}), ("cop_cyc", "copula", {"kl_cycles": 4}, {})]:
    fake_run(tmp_path / "ptb" / name, posterior, train=train, metrics=metrics(100.0), **model)
  fake_run(tmp_path / "yahoo" / "lag", dataset="yahoo", train={"aggressive": True},
           metrics=metrics(330.0))
  fake_run(tmp_path / "yahoo" / "cop", "copula", copula_weight=0.5, dataset="yahoo",
           metrics=metrics(340.0))
  ptb, yahoo = (results.report([str(tmp_path / d)], "test", "r") for d in ("ptb", "yahoo"))
  paper, later = "paper's Table 3 (NLL / KL / PPL, its convention)", \
      "later work (honest bounds, their sizes)"
  rows = {label: [c.strip("| ") for c in row] for label, row in _rows(ptb).items()}
  cells = {label: dict(zip(rows["model"], row)) for label, row in rows.items()}
  want = {
      "gaussian": ("VAE 105.2 / 1.74 / 121", "VAE + annealing -ELBO 101.28"),
      "gaussian, kl_cycles=4": ("", "cyclical -ELBO 102.81"),
      "gaussian, ae_pretrain_steps=10, free_bits=0.25": (
          "", "pretraining + free bits -ELBO 102.41"),
      "gaussian, free_bits=0.25": ("", ""),
      "gaussian, word_dropout=0.25, kl_cycles=4": ("", ""),
      "copula, λ=0.4": ("Copula-VAE λ=0.4 92.2 / 7.3 / 67.2", ""),
      "copula, λ=0.4, kl_cycles=4": ("", "")}
  assert {k: v for k, v in cells.items() if k != "model"}.keys() == want.keys()
  for label, (paper_cell, later_cell) in want.items():
    assert cells[label][paper] == paper_cell, label
    assert cells[label][later].startswith(later_cell), label
    assert bool(cells[label][later]) == bool(later_cell), label
  assert "paper's Table 5" in yahoo and "lagging-VAE 326.6 / 6.7 / 64.9" in yahoo
  assert "lagging IW-NLL 326.6" in yahoo and "Copula-VAE λ=0.5 344.2" in yahoo


def test_lambda_labels_only_the_copula_and_sizes_make_separate_tables(tmp_path):
  fake_run(tmp_path / "c2", posterior="copula", copula_weight=0.2, emb=200,
           metrics=metrics(110.0, log_copula=3.0))
  fake_run(tmp_path / "c4", posterior="copula", copula_weight=0.4, emb=200,
           metrics=metrics(111.0, log_copula=5.0))
  fake_run(tmp_path / "g", posterior="gaussian", copula_weight=0.4, emb=200,
           metrics=metrics(109.0), in_events=True)
  fake_run(tmp_path / "big", posterior="gaussian", metrics=metrics(101.0))
  text = results.report([str(tmp_path)], "test", "cmd")
  assert text.count("**ptb**") == 2
  small = text.split("**ptb**, emb 512")[0]
  rows = _rows(small)
  assert set(rows) == {"model", "copula, λ=0.2", "copula, λ=0.4", "gaussian"}
  head = rows["model"]
  assert dict(zip(head, rows["copula, λ=0.4"]))["paper-conv. NLL"] == "106.00"
  assert dict(zip(head, rows["gaussian"]))["paper-conv. NLL"] == "—"
  assert dict(zip(head, rows["gaussian"]))["K"] == "500"  # from the test event
  assert "paper's Table 3" not in small  # not the paper's size


def test_other_differing_fields_name_the_row(tmp_path):
  fake_run(tmp_path / "a", metrics=metrics(100.0), output_dropout=0.0)
  fake_run(tmp_path / "b", metrics=metrics(99.0), output_dropout=0.5)
  rows = _rows(results.report([str(tmp_path)], "test", "cmd"))
  assert {"gaussian, output_dropout=0.0", "gaussian, output_dropout=0.5"} <= set(rows)


def test_a_field_names_only_the_rows_that_leave_the_usual_value(tmp_path):
  fake_run(tmp_path / "plain", metrics=metrics(100.0))
  fake_run(tmp_path / "wd", metrics=metrics(99.0), word_dropout=0.25)
  fake_run(tmp_path / "bn", metrics=metrics(98.0), bn_gamma=0.6)
  fake_run(tmp_path / "wd_bn", metrics=metrics(97.0), word_dropout=0.25, bn_gamma=0.6)
  fake_run(tmp_path / "plain_again", metrics=metrics(101.0), seed=1)
  rows = _rows(results.report([str(tmp_path)], "test", "cmd"))
  assert set(rows) == {"model", "gaussian", "gaussian, word_dropout=0.25",
                       "gaussian, bn_gamma=0.6", "gaussian, bn_gamma=0.6, word_dropout=0.25"}
  assert dict(zip(rows["model"], rows["gaussian"]))["runs"] == "2 of 2"


def test_a_posterior_s_own_field_names_only_that_posterior_s_rows(tmp_path):
  # The Gaussian runs' vmf_kappa and flow_steps differ, but they do not read them.
  fake_run(tmp_path / "g", metrics=metrics(100.0), vmf_kappa=80.0, flow_steps=2)
  fake_run(tmp_path / "g1", metrics=metrics(101.0), seed=1, vmf_kappa=25.0)
  fake_run(tmp_path / "v80", posterior="vmf", metrics=metrics(99.0), vmf_kappa=80.0)
  fake_run(tmp_path / "v25", posterior="vmf", metrics=metrics(98.0), vmf_kappa=25.0)
  fake_run(tmp_path / "f", posterior="flow", metrics=metrics(97.0), vmf_kappa=80.0)
  rows = _rows(results.report([str(tmp_path)], "test", "cmd"))
  assert set(rows) == {"model", "gaussian", "vmf, vmf_kappa=80.0", "vmf, vmf_kappa=25.0",
                       "flow"}
  assert dict(zip(rows["model"], rows["gaussian"]))["runs"] == "2 of 2"


def test_a_run_from_before_a_field_existed_has_its_default(tmp_path):
  fake_run(tmp_path / "new", metrics=metrics(100.0))
  old = fake_run(tmp_path / "old", metrics=metrics(102.0), seed=1)
  with open(os.path.join(old, "config.json")) as f:
    config = json.load(f)
  del config["model"]["word_dropout"], config["train"]["aggressive"]
  with open(os.path.join(old, "config.json"), "w") as f:
    json.dump(config, f)
  rows = _rows(results.report([str(tmp_path)], "test", "cmd"))
  assert set(rows) == {"model", "gaussian"}
  assert dict(zip(rows["model"], rows["gaussian"]))["runs"] == "2 of 2"


def test_the_block_replaces_itself_and_keeps_the_prose(tmp_path):
  path = str(tmp_path / "docs" / "results.md")
  results.write_block(path, "ptb", "table v1")
  with open(path, "a") as f:
    f.write("\nProse after.\n")
  results.write_block(path, "ptb", "table v2")
  results.write_block(path, "other", "second")
  text = open(path).read()
  assert "table v1" not in text and text.count("table v2") == 1
  assert text.index("table v2") < text.index("Prose after.") < text.index("second")


def test_provenance_names_the_grid_command_and_hardware(tmp_path):
  run = fake_run(tmp_path / "grid" / "posterior=gaussian", metrics=metrics(100.0))
  with open(tmp_path / "grid" / "grid.json", "w") as f:
    json.dump([{"command": "python launch/grid.py --x", "hardware": "1 x H100"}], f)
  text = results.report([run], "test", "python launch/report.py y")
  assert "`python launch/grid.py --x` on 1 x H100" in text
  assert "`python launch/report.py y`" in text


def test_a_grid_is_named_only_beside_its_runs(tmp_path):
  """A grid whose runs have no folder yet (just started) is left out, by
  report and keep alike; an entry from before grids named their runs is not."""
  run = fake_run(tmp_path / "grid" / "posterior=gaussian", metrics=metrics(100.0))
  with open(tmp_path / "grid" / "grid.json", "w") as f:
    json.dump([{"command": "old", "hardware": "CPU"},
               {"command": "mine", "hardware": "CPU", "runs": ["posterior=gaussian"]},
               {"command": "started", "hardware": "CPU", "runs": ["posterior=copula"]}], f)
  text = results.report([str(tmp_path / "grid")], "test", "r")
  assert "`old`" in text and "`mine`" in text and "`started`" not in text
  kept = tmp_path / "kept"
  results.keep_records([run], str(kept))
  assert [e["command"] for e in json.loads((kept / "grid.json").read_text())] == [
      "old", "mine"]


def _grid(root, runs, command):
  """Fake runs {name: metrics or None} under `root` with a grid.json and a checkpoint."""
  for name, m in runs.items():
    fake_run(root / name, posterior=name.split("=")[1], metrics=m)
    os.makedirs(root / name / "checkpoints" / "10")
  with open(root / "grid.json", "w") as f:
    json.dump([{"command": command, "hardware": "1 x CPU"}], f)


def test_kept_records_remake_the_tables_after_the_workdirs_are_gone(tmp_path):
  _grid(tmp_path / "a", {"posterior=gaussian": metrics(100.0), "posterior=none": None},
        "grid a")
  kept = tmp_path / "docs" / "runs"
  before = results.tables([results.load_result(w, "test")
                           for w in results.find_runs([str(tmp_path / "a")])])
  assert sorted(results.keep_records([str(tmp_path / "a")], str(kept))) == [
      str(kept / "posterior=gaussian"), str(kept / "posterior=none")]
  assert sorted(os.listdir(kept / "posterior=gaussian")) == [
      "config.json", "eval_test.json", "metrics.jsonl"]  # no checkpoints
  # Later, from another grid root: a new record, a finished one replacing the
  # unfinished one; the records kept before stay, and so do their commands.
  _grid(tmp_path / "b", {"posterior=none": metrics(103.0),
                         "posterior=copula": metrics(99.0, log_copula=5.0)}, "grid b")
  results.keep_records([str(tmp_path / "b")], str(kept))
  results.keep_records([str(tmp_path / "b")], str(kept))  # again: nothing doubles
  shutil.rmtree(tmp_path / "a")
  shutil.rmtree(tmp_path / "b")
  text = results.report([str(kept)], "test", "python launch/report.py docs/runs")
  rows = _rows(text)
  assert rows["gaussian"][3] == "99.50" and rows["none"][1] == "1 of 1"
  assert rows["copula, λ=0.4"][3] == "98.50"  # lambda on every copula row
  assert text.count("`grid a` on 1 x CPU") == 1 and text.count("`grid b` on 1 x CPU") == 1
  assert _rows(before)["none"][1] == "0 of 1"
  # Keeping the kept folder's own records is a no-op.
  assert results.keep_records([str(kept)], str(kept)) == []


def test_a_record_that_cannot_be_kept_is_an_error_and_leaves_nothing(tmp_path):
  _grid(tmp_path / "a", {"posterior=gaussian": metrics(100.0)}, "grid a")
  (tmp_path / "file").write_text("not a folder")
  with pytest.raises(CvaeError, match="cannot keep the record of .*posterior=gaussian"):
    results.keep_records([str(tmp_path / "a")], str(tmp_path / "file" / "runs"))
  assert (tmp_path / "file").read_text() == "not a folder"


def test_a_folder_without_runs_is_an_error(tmp_path):
  with pytest.raises(CvaeError, match="holds no run"):
    results.find_runs([str(tmp_path)])


def test_each_runs_course_best_validation_and_learning_rate_cuts(tmp_path):
  fake_run(tmp_path / "runs" / "a", metrics=metrics(100.0))
  events = [{"step": 5, "split": "train", "lr_scale": 1.0},
            {"step": 10, "split": "valid", "nll_elbo": 9.0},
            {"step": 15, "split": "train", "lr_scale": 1.0},
            {"step": 20, "split": "valid", "nll_elbo": 7.0},
            {"step": 30, "split": "valid", "nll_elbo": 7.5},  # no improvement: cut
            {"step": 35, "split": "train", "lr_scale": 0.5},
            {"step": 40, "split": "valid", "nll_elbo": 7.0},  # equal is no better
            {"step": 45, "split": "train", "lr_scale": 0.25},
            {"step": 48, "split": "train", "lr_scale": 0.25},
            {"step": 20, "split": "test", "nll_elbo": 7.1}]
  with open(tmp_path / "runs" / "a" / "metrics.jsonl", "w") as f:
    f.write("".join(json.dumps(e) + "\n" for e in events))
  assert results.training(str(tmp_path / "runs" / "a")) == {
      "last_step": 48, "best": 7.0, "best_step": 20, "cuts": [30, 40]}
  fake_run(tmp_path / "runs" / "b")  # not validated yet
  with open(tmp_path / "runs" / "b" / "metrics.jsonl", "w") as f:
    f.write(json.dumps(events[0]) + "\n")
  assert results.training(str(tmp_path / "runs" / "b")) is None
  text = results.report([str(tmp_path / "runs")], "test", "cmd", with_training=True)
  assert "| a | 48 | 7.00 | 20 | 30, 40 |" in text
  assert "| b | — | — | — | — |" in text
  assert "Training of each run" not in results.report([str(tmp_path / "runs")], "test", "cmd")


def test_the_launcher_writes_the_block(tmp_path):
  fake_run(tmp_path / "runs" / "g", metrics=metrics(100.0))
  out = tmp_path / "results.md"
  done = subprocess.run([sys.executable, "launch/report.py", str(tmp_path / "runs"),
                         "--out", str(out), "--name", "ptb"],
                        cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert done.returncode == 0, done.stderr
  assert "<!-- report:ptb -->" in out.read_text() and "100.00" in out.read_text()
  kept = tmp_path / "kept"
  done = subprocess.run([sys.executable, "launch/report.py", str(tmp_path / "runs"),
                         "--keep", str(kept), "--out", str(out), "--name", "ptb"],
                        cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert done.returncode == 0, done.stderr
  assert done.stderr == f"kept {kept / 'g'}\n"
  assert (f"Tables made by `python launch/report.py {kept} --out {out} --name ptb`"
          in out.read_text())
  done = subprocess.run([sys.executable, "launch/report.py", str(kept), "--out", str(out),
                         "--name", "ptb", "--training"],
                        cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert done.returncode == 0, done.stderr
  assert "Training of each run" in out.read_text()
  assert "--name ptb --training`" in out.read_text()
  bad = subprocess.run([sys.executable, "launch/report.py", str(tmp_path / "nothing")],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert bad.returncode == 2 and bad.stderr.startswith("error:")


def test_the_tables_in_the_docs_are_what_their_commands_write(monkeypatch):
  """Every report block of the README and docs/results.md whose command reads
  records kept in this repository (under docs/) equals what that command
  writes now."""
  monkeypatch.chdir(ROOT)
  block = re.compile(r"<!-- report:(\S+) -->\n(.*?)\n<!-- /report:\1 -->", re.S)
  checked = []
  for doc in ("README.md", os.path.join("docs", "results.md")):
    with open(doc) as f:
      for name, text in block.findall(f.read()):
        made = re.search(r"Tables made by `(python launch/report.py [^`]*)`\.$", text)
        if not made:
          continue
        args = shlex.split(made.group(1))[2:]
        paths = list(itertools.takewhile(lambda a: not a.startswith("--"), args))
        if not all(p.startswith("docs" + os.sep) for p in paths):  # not kept here
          continue
        split = args[args.index("--split") + 1] if "--split" in args else "test"
        written = results.report(paths, split, made.group(1), "--training" in args)
        assert written == text, (doc, name)
        checked.append((doc, name))
  assert ("README.md", "ptb_small") in checked
  assert (os.path.join("docs", "results.md"), "ptb_small") in checked
