"""The host loops stay at most `depth` steps ahead of the devices."""

import time

import jax
import jax.numpy as jnp

from cvae_jax import train
from cvae_jax.pacing import Paced
from tests.test_train_loop import tiny_config


@jax.jit
def _slow_increment(x):
  """x + 1, after tens of milliseconds of matrix products: a program that the
  host loop outruns."""
  m = jnp.eye(256) * 0.5
  y = jax.lax.fori_loop(0, 40, lambda _, y: jnp.tanh(y @ m), jnp.ones((256, 256)))
  return x + 1 + 0 * y[0, 0]


def _ready_on_dispatch(steps: int, paced=None) -> list[bool]:
  """Chains `steps` slow programs; whether the output of step i - 3 was ready
  when step i was dispatched, for i >= 3."""
  x, outputs, ready = jnp.zeros(()), [], []
  for i in range(steps):
    if i >= 3:
      ready.append(outputs[i - 3].is_ready())
    x = _slow_increment(x)
    outputs.append(x)
    if paced is not None:
      paced(x)
  assert float(x) == steps
  return ready


def test_the_host_waits_for_the_step_two_back_and_not_longer():
  _slow_increment(jnp.zeros(())).block_until_ready()  # compiled
  assert not any(_ready_on_dispatch(8))  # unpaced, the host runs ahead
  assert all(_ready_on_dispatch(8, Paced(depth=2)))
  start = time.perf_counter()
  paced = Paced(depth=2)
  for x in [jnp.float32(i) for i in range(4)]:
    paced(x)  # outputs that are ready already: no wait, nothing held back
  assert time.perf_counter() - start < 1.0


def test_the_training_loop_paces_every_step(tmp_path, monkeypatch):
  """Each step's accumulated metrics go through the loop's Paced."""
  seen = []

  class Recording(Paced):
    def __call__(self, outputs):
      seen.append(sorted(outputs))
      super().__call__(outputs)

  monkeypatch.setattr(train, "Paced", Recording)
  c = tiny_config(tmp_path, num_steps=6, log_every=3, eval_every=6, checkpoint_every=6)
  c.data.bucket_lengths, c.data.max_length = (24,), 22  # one shape: fewer compilations
  train.train_and_evaluate(c, str(tmp_path / "run"))
  assert len(seen) == 6
  assert all("loss" in keys and "tokens" in keys for keys in seen)
