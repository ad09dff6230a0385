"""A run's workdir: its config and vocabulary, checked on every restart.

<workdir>/config.json  the config of the run's latest start
<workdir>/vocab.txt    the vocabulary, one token per line
A workdir that holds another model's run (another posterior, size or
vocabulary) is refused rather than silently mixed; so is a restart that
changes the training objective. Other changed fields (more steps, another
learning rate, ...) are accepted and recorded in config.json.
"""

import contextlib
import copy
import fcntl
import json
import os
import sys
from typing import Collection, Iterator, Optional

import jax
import ml_collections

from cvae_jax.config import base_config, flat_fields
from cvae_jax.data.vocab import Vocab
from cvae_jax.errors import CvaeError

# Config fields that a checkpoint's contents depend on (the last two: whether
# the optimiser keeps one Adam state per parameter group).
_MODEL_FIELDS = ("data.name", "model.posterior", "model.emb_dim", "model.hidden_dim",
                 "model.latent_dim", "model.feed_latent", "model.bn_gamma",
                 "model.vmf_kappa", "model.flow_steps", "train.aggressive",
                 "train.ae_pretrain_steps")
# Config fields that define the loss a run minimises: a restart may not change them.
_OBJECTIVE_FIELDS = ("model.copula_weight", "train.kl_anneal_start",
                     "train.kl_anneal_steps", "train.kl_cycles", "train.kl_cycle_rise",
                     "train.free_bits")
# Data fields that an evaluation or a restart takes from the run when left empty.
_RUN_DATA_FIELDS = ("source_dir", "tfds_dir")


def with_run_data(workdir: str, config: ml_collections.ConfigDict
                  ) -> ml_collections.ConfigDict:
  """`config` with the run's `data.source_dir` and `data.tfds_dir` where those are ''.

  So an evaluation or a restart without --config.data.source_dir reads the
  files the run was trained on instead of downloading the public ones.
  """
  saved = _saved_config(workdir)
  if saved is None:
    return config
  config = copy.deepcopy(config)
  for field in _RUN_DATA_FIELDS:
    if not config.data[field]:
      config.data[field] = _get(saved, f"data.{field}") or ""
  return config


def with_run_model(workdir: str, config: ml_collections.ConfigDict,
                   given: Collection[str]) -> ml_collections.ConfigDict:
  """`config` with the run's value of every model field the command line leaves alone.

  So evaluating or sampling a run needs none of the flags it was trained with
  (`--config.model.posterior=gaussian`, `--config.train.aggressive=True`, ...):
  each field of `_MODEL_FIELDS` but the dataset that is not in `given` (dotted
  names set on the command line, `cli.given_fields()`) takes the run's value,
  and a note on stderr names those that differ from `config`. A field in
  `given` is kept, so `check_run` refuses it if it is not the run's.
  """
  saved = _saved_config(workdir)
  if saved is None:
    return config
  config = copy.deepcopy(config)
  saved = _run_fields(saved)
  taken = []
  for field in _MODEL_FIELDS:
    group, name = field.split(".")
    value = saved[field]
    if group != "data" and field not in given and config[group][name] != value:
      config[group][name] = value
      taken.append(f"config.{field}={value!r}")
  if taken and jax.process_index() == 0:
    print(f"note: {workdir}: the run's {', '.join(taken)}", file=sys.stderr)
  return config


def check_restart(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Before training starts: refuses a workdir that is not a folder, or that holds
  a run of another model or objective."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise CvaeError(f"--workdir {workdir} is a file, not a folder; give a folder")
  saved = _saved_config(workdir)
  if saved is not None:
    _check_fields(workdir, saved, config, _MODEL_FIELDS + _OBJECTIVE_FIELDS)


def check_run(workdir: str, config: ml_collections.ConfigDict,
              vocab: Optional[Vocab] = None) -> Vocab:
  """The run's vocabulary, after checking that `config` (and `vocab`) match the run."""
  saved = _saved_config(workdir)
  vocab_path = os.path.join(workdir, "vocab.txt")
  if saved is None or not os.path.exists(vocab_path):
    raise CvaeError(f"{workdir} holds no run (config.json, vocab.txt); train one first")
  _check_fields(workdir, saved, config, _MODEL_FIELDS)
  return _check_vocab(workdir, vocab)


def prepare_workdir(workdir: str, config: ml_collections.ConfigDict, vocab: Vocab) -> None:
  """Writes a new run's config.json and vocab.txt, or checks an existing run.

  Call it after every check of the config and the data: it is the first
  write. An existing run must hold the same model, objective and vocabulary;
  other fields that changed since its last start are printed and recorded in
  its config.json. A write that fails is a CvaeError, and a new run's
  workdir is then left as it was.
  """
  saved = _saved_config(workdir)
  if saved is not None:
    _check_fields(workdir, saved, config, _MODEL_FIELDS + _OBJECTIVE_FIELDS)
    _check_vocab(workdir, vocab)
  if jax.process_index() != 0:
    return
  if saved is None:
    _write_new_run(workdir, config, vocab)
    return
  changed = _changed_fields(saved, config.to_dict())
  if changed:
    print(f"note: {workdir}: changed since the run's last start (recorded in "
          f"config.json): {'; '.join(changed)}", file=sys.stderr)
    try:
      _write_config(workdir, config)
    except OSError as e:
      raise _write_error(workdir, e) from e


@contextlib.contextmanager
def exclusive(workdir: str) -> Iterator[None]:
  """Holds a lock on the workdir while the block runs; CvaeError if another
  process holds it (two processes training into one workdir would mix their
  checkpoints and logs). The lock goes with its process, also one killed with
  -9. A workdir this creates and the block leaves empty is removed. Process 0
  only: the other hosts of a multi-host run share its workdir. On a file
  system without locks the block runs unguarded.
  """
  if jax.process_index() != 0:
    yield
    return
  created = not os.path.isdir(workdir)
  try:
    os.makedirs(workdir, exist_ok=True)
    fd = os.open(workdir, os.O_RDONLY)
  except OSError as e:
    raise _write_error(workdir, e) from e
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      raise CvaeError(f"another process is training in {workdir}: let it finish or stop "
                      "it first (its run resumes from its checkpoint)") from None
    except OSError:
      pass  # a file system without locks (some network mounts): no guard
    yield
  finally:
    os.close(fd)
    if created and os.path.isdir(workdir) and not os.listdir(workdir):
      os.rmdir(workdir)


def holder(workdir: str) -> Optional[int]:
  """The pid of the process that holds `workdir`'s lock (`exclusive`), from
  /proc/locks and the holder's open files (the device numbers there are not
  always `stat`'s); None if no process does, or where the system does not say."""
  try:
    inode = os.stat(workdir).st_ino
    with open("/proc/locks") as f:
      lines = f.read().splitlines()
  except OSError:
    return None
  path = os.path.realpath(workdir)
  for line in lines:  # '1: FLOCK  ADVISORY  WRITE 18538 fe:00:5473429 0 EOF'
    fields = line.split()
    if len(fields) > 5 and fields[1] == "FLOCK" and fields[5].endswith(f":{inode}"):
      if path in _open_paths(int(fields[4])):
        return int(fields[4])
  return None


def _open_paths(pid: int) -> set[str]:
  """What process `pid` has open (empty if it cannot be read)."""
  fds = f"/proc/{pid}/fd"
  try:
    names = os.listdir(fds)
  except OSError:
    return set()
  paths = set()
  for name in names:
    try:
      paths.add(os.readlink(os.path.join(fds, name)))
    except OSError:
      pass
  return paths


def _check_vocab(workdir: str, vocab: Optional[Vocab]) -> Vocab:
  """The run's vocabulary; CvaeError if `vocab` is given and differs."""
  vocab_path = os.path.join(workdir, "vocab.txt")
  saved_vocab = Vocab.load(vocab_path)
  if vocab is not None and saved_vocab != vocab:
    raise CvaeError(f"{workdir} holds a run with another vocabulary ({vocab_path}); "
                    "use another --workdir or the same data")
  return saved_vocab


def _write_new_run(workdir: str, config: ml_collections.ConfigDict, vocab: Vocab) -> None:
  """vocab.txt, then config.json (which marks the folder as a run); all or nothing."""
  created = not os.path.exists(workdir)
  vocab_path = os.path.join(workdir, "vocab.txt")
  try:
    os.makedirs(workdir, exist_ok=True)
    vocab.save(vocab_path)
    _write_config(workdir, config)
  except OSError as e:
    for path in (vocab_path, os.path.join(workdir, "config.json.tmp")):
      if os.path.isfile(path):
        os.remove(path)
    if created and os.path.isdir(workdir) and not os.listdir(workdir):
      os.rmdir(workdir)
    raise _write_error(workdir, e) from e


def _write_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  path = os.path.join(workdir, "config.json")
  with open(path + ".tmp", "w") as f:
    f.write(config.to_json_best_effort(indent=2))
  os.replace(path + ".tmp", path)


def _write_error(workdir: str, e: OSError) -> CvaeError:
  return CvaeError(f"cannot write the run into --workdir {workdir}: "
                   f"{e.strerror or e} ({e.filename})")


def _saved_config(workdir: str) -> Optional[dict]:
  """The run's config.json, or None where there is no run."""
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    return None
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise CvaeError(f"cannot read {path}: {e}; use another --workdir") from e


def _check_fields(workdir: str, saved: dict, config: ml_collections.ConfigDict,
                  fields: tuple[str, ...]) -> None:
  """CvaeError unless `config` has the run's value of each field; a run from
  before a field existed has its default."""
  saved, new_config = _run_fields(saved), flat_fields(config.to_dict())
  for field in fields:
    old, new = saved[field], new_config[field]
    if old != new:
      raise CvaeError(f"{workdir} holds a run with config.{field}={old!r}, not {new!r}; "
                      "use another --workdir or the same config")


def _run_fields(saved: dict) -> dict:
  """A run's config.json as {'group.field': value}; a field newer than the run
  has its default."""
  return {**flat_fields(base_config().to_dict()), **flat_fields(saved)}


def _changed_fields(old: dict, new: dict) -> list[str]:
  """'config.<field>: <old> -> <new>' for each field that differs."""
  old, new = flat_fields(old), flat_fields(new)
  return [f"config.{field}: {old.get(field)!r} -> {new.get(field)!r}"
          for field in sorted(set(old) | set(new))
          if _jsonable(old.get(field)) != _jsonable(new.get(field))]


def _jsonable(value):
  """`value` as config.json stores it (tuples become lists)."""
  return json.loads(json.dumps(value, default=str))


def _get(tree: dict, dotted: str):
  for part in dotted.split("."):
    tree = tree.get(part, {}) if isinstance(tree, dict) else None
  return tree
