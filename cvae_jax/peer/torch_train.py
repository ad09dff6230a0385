"""The PyTorch peer's train step: the same loss, clipping and Adam as `cvae_jax.train`."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

from cvae_jax.peer.torch_model import TorchTextVAE


def kl_weight(step: int, start: int, num_steps: int) -> float:
  """beta_t, as `cvae_jax.objectives.kl_weight` (0 before start, then linear to 1)."""
  if num_steps <= 0:
    return float(step >= start)
  return min(max((step - start) / num_steps, 0.0), 1.0)


class TorchTrainer:
  """Adam after global-norm gradient clipping, on `device`, matmuls in `dtype`.

  `dtype` 'bfloat16' runs the model under `torch.autocast`, as the JAX model
  runs its matmuls in bfloat16 and its losses in float32.
  """

  def __init__(self, model: TorchTextVAE, *, learning_rate: float, grad_clip: float,
               kl_anneal_start: int, kl_anneal_steps: int, device: str = "cpu",
               dtype: str = "float32"):
    self.model = model.to(device).train()
    self.device, self.grad_clip = torch.device(device), grad_clip
    self.anneal = (kl_anneal_start, kl_anneal_steps)
    self.params = [p for p in model.parameters() if p.requires_grad]
    self.optimizer = torch.optim.Adam(self.params, lr=learning_rate)
    self.autocast = torch.autocast(self.device.type, dtype=torch.bfloat16,
                                   enabled=dtype == "bfloat16")
    self.step = 0

  def to_device(self, batch: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """A numpy batch -> tokens on the device, lengths on the host, weights."""
    return {"tokens": torch.as_tensor(np.asarray(batch["tokens"]), dtype=torch.long,
                                      device=self.device),
            "lengths": torch.as_tensor(np.asarray(batch["lengths"]), dtype=torch.long),
            "weights": torch.as_tensor(np.asarray(batch["weights"]), device=self.device)}

  def train_step(self, batch: Mapping[str, torch.Tensor]) -> float:
    """One step on a `to_device` batch; returns the mean loss (synchronising)."""
    self.optimizer.zero_grad(set_to_none=True)
    with self.autocast:
      terms = self.model(batch["tokens"], batch["lengths"])
    loss = self.model.loss(terms, batch["weights"], kl_weight(self.step, *self.anneal))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
    self.optimizer.step()
    self.step += 1
    return loss.item()
