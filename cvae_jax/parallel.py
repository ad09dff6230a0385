"""A 1-D data-parallel mesh over every device of every host.

The batch is split along its first axis (`P("data")`); the train state is
replicated. The same jitted code runs on 1 CPU, 8 GPUs or a TPU pod.
"""

from typing import Mapping

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np

from cvae_jax.errors import CvaeError


def make_mesh() -> Mesh:
  return Mesh(np.asarray(jax.devices()), ("data",))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P("data"))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def check_batch_size(batch_size: int, name: str) -> None:
  """Raises CvaeError unless the global batch is positive and splits evenly over devices."""
  n = jax.device_count()
  if batch_size <= 0 or batch_size % n:
    raise CvaeError(f"{name}={batch_size} must be a positive multiple of the "
                    f"{n} devices (and of the {jax.process_count()} hosts)")


def to_global(batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """This host's rows of a global batch -> global arrays sharded on 'data'."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v)
          for k, v in batch.items()}
