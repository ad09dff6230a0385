"""Every config field with its comment and value, for `--show_config`.

The comments are the ones beside each field's assignment in
`cvae_jax.config.base_config`, read from its source so that they cannot drift
from the code; a block of comment lines documents the assignments on the
lines right below it that have no comment of their own.
"""

import ast
import inspect
import io
import textwrap
import tokenize

import ml_collections

from cvae_jax import config as config_lib


def field_comments() -> dict[str, str]:
  """'<group>.<field>' -> the comment of its assignment in `base_config`."""
  source = textwrap.dedent(inspect.getsource(config_lib.base_config))
  trailing, whole_line = {}, {}
  for token in tokenize.generate_tokens(io.StringIO(source).readline):
    if token.type == tokenize.COMMENT:
      text = token.string.lstrip("#").strip()
      own_line = token.line.strip().startswith("#")
      (whole_line if own_line else trailing)[token.start[0]] = text
  aliases = {}  # local variable -> the dotted group it holds ('' for the root)
  comments, block, block_end = {}, "", 0
  for node in ast.parse(source).body[0].body:
    if not isinstance(node, ast.Assign):
      continue
    names = [t.id for t in node.targets if isinstance(t, ast.Name)]
    paths = [path for t in node.targets for path in _paths(t, aliases)]
    if names:  # `c = ...` or `c.data = d = ...`: a group and its alias
      for name in names:
        aliases[name] = paths[0] if paths else ""
      continue
    if node.lineno - 1 in whole_line:
      block = _comment_above(whole_line, node.lineno)
    elif node.lineno != block_end + 1:
      block = ""  # a blank line or another statement ends a block's reach
    block_end = node.end_lineno
    for path in paths:
      comments[path] = trailing.get(node.lineno) or block
  return comments


def describe(config: ml_collections.ConfigDict) -> str:
  """One line per field: `config.<group>.<field> = <value>  # <comment>`."""
  comments = field_comments()
  lines = [(f"config.{path} = {value!r}", comments.get(path, ""))
           for path, value in config_lib.flat_fields(config.to_dict()).items()]
  width = min(48, max(len(assignment) for assignment, _ in lines))
  return "\n".join(f"{assignment:<{width}}  # {comment}" if comment else assignment
                   for assignment, comment in lines)


def _paths(target: ast.expr, aliases: dict[str, str]) -> list[str]:
  """The dotted fields an assignment target names (`d.x` -> 'data.x')."""
  if isinstance(target, ast.Tuple):
    return [path for element in target.elts for path in _paths(element, aliases)]
  parts = []
  while isinstance(target, ast.Attribute):
    parts.append(target.attr)
    target = target.value
  if not parts or not isinstance(target, ast.Name) or target.id not in aliases:
    return []
  prefix = aliases[target.id]
  return [".".join(([prefix] if prefix else []) + parts[::-1])]


def _comment_above(whole_line: dict[int, str], line: int) -> str:
  """The block of whole-line comments that ends right above `line`."""
  block = []
  while line - 1 in whole_line:
    line -= 1
    block.insert(0, whole_line[line])
  return " ".join(block)
