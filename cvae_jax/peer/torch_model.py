"""The sentence VAE of `cvae_jax.models` in PyTorch, layer for layer.

Embedding, LSTM encoder, the Gaussian or copula posterior head with BatchNorm,
the decoder LSTM initialised from z and the softmax layer, with the same
parameter count: `torch.nn.LSTM`'s second bias `bias_hh` is frozen at zero,
since the JAX LSTM has one bias. `load_flax_variables` copies a JAX model's
variables in, so both compute the same function (tests/test_peer.py). It
implements the posteriors of the paper: none, gaussian and copula.
Tokens follow `cvae_jax.data`: `tokens: [batch, length] int64`, `lengths:
[batch] int64` on the host.
"""

from __future__ import annotations

import math
from typing import Mapping, Optional

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from cvae_jax.errors import CvaeError
from cvae_jax.models import ModelConfig

_LOG_2PI = math.log(2.0 * math.pi)
POSTERIORS = ("none", "gaussian", "copula")


def _lstm(input_dim: int, hidden_dim: int) -> nn.LSTM:
  lstm = nn.LSTM(input_dim, hidden_dim, batch_first=True)
  lstm.bias_hh_l0.requires_grad_(False)
  with torch.no_grad():
    lstm.bias_hh_l0.zero_()
  return lstm


def _batch_norm(latent_dim: int) -> nn.BatchNorm1d:
  return nn.BatchNorm1d(latent_dim, eps=1e-5, momentum=0.1)  # flax momentum 0.9


class TorchTextVAE(nn.Module):
  """Encoder, posterior head and decoder of `cvae_jax.models.TextVAE`."""

  def __init__(self, config: ModelConfig):
    super().__init__()
    if config.posterior not in POSTERIORS:
      raise CvaeError(f"the PyTorch peer implements config.model.posterior "
                      f"{', '.join(POSTERIORS)}, not {config.posterior!r}")
    if config.word_dropout or config.bn_gamma:
      raise CvaeError("the PyTorch peer has neither word dropout nor BN-VAE: set "
                      "config.model.word_dropout and config.model.bn_gamma to 0")
    self.config = c = config
    self.embed = nn.Embedding(c.vocab_size, c.emb_dim)
    self.input_dropout = nn.Dropout(c.dropout)
    self.output_dropout = nn.Dropout(c.output_dropout)
    feed = c.latent_dim if c.has_latent and c.feed_latent else 0
    self.decoder_lstm = _lstm(c.emb_dim + feed, c.hidden_dim)
    self.out = nn.Linear(c.hidden_dim, c.vocab_size)
    if c.has_latent:
      self.encoder_lstm = _lstm(c.emb_dim, c.hidden_dim)
      self.latent_to_carry = nn.Linear(c.latent_dim, 2 * c.hidden_dim)
      heads = ["mean", "log_var"] + (["a"] if c.posterior == "copula" else [])
      self.dense = nn.ModuleDict({h: nn.Linear(2 * c.hidden_dim, c.latent_dim, bias=False)
                                  for h in heads})
      self.bn = nn.ModuleDict({h: _batch_norm(c.latent_dim) for h in heads})
      if c.posterior == "copula":
        self.w_dense = nn.Linear(2 * c.hidden_dim, c.latent_dim)

  def encode(self, tokens: torch.Tensor, lengths: torch.Tensor) -> dict[str, torch.Tensor]:
    """Posterior parameters `mean`, `log_var` (and `w`, `a`), each [batch, latent]."""
    x = self.input_dropout(self.embed(tokens))
    if bool((lengths < tokens.shape[1]).any()):
      x = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    _, (h, c) = self.encoder_lstm(x)
    hc = torch.cat([h[0], c[0]], dim=-1)
    q = {name: self.bn[name](self.dense[name](hc)) for name in self.dense}
    if "a" in q:
      q["a"] = torch.tanh(q["a"])
      q["w"] = torch.relu(self.w_dense(hc)) + 0.5
    return q

  def log_likelihood(self, tokens: torch.Tensor, lengths: torch.Tensor,
                     z: Optional[torch.Tensor]) -> torch.Tensor:
    """log p(x|z) summed over the predicted tokens: [batch]."""
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    x = self.input_dropout(self.embed(inputs))
    if z is None:
      carry = None
    else:
      h0, c0 = torch.chunk(torch.tanh(self.latent_to_carry(z)), 2, dim=-1)
      carry = (h0[None].contiguous(), c0[None].contiguous())
      if self.config.feed_latent:
        x = torch.cat([x, z[:, None, :].expand(-1, x.shape[1], -1).to(x.dtype)], dim=-1)
    h, _ = self.decoder_lstm(x, carry)
    logits = self.out(self.output_dropout(h)).float()
    nll = nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(),
                                      reduction="none").view(targets.shape)
    mask = torch.arange(targets.shape[1], device=tokens.device)[None, :] < (
        lengths.to(tokens.device)[:, None] - 1)
    return -(nll * mask).sum(-1)

  def forward(self, tokens: torch.Tensor, lengths: torch.Tensor,
              noise: Optional[tuple[torch.Tensor, torch.Tensor]] = None
              ) -> dict[str, torch.Tensor]:
    """Per-sentence `rec`, `kl` and `copula_term` (0 unless copula), each [batch].

    noise: (eps_z, eps_copula), each [batch, latent] standard normal; drawn
    when None.
    """
    if not self.config.has_latent:
      rec = -self.log_likelihood(tokens, lengths, None)
      return {"rec": rec, "kl": torch.zeros_like(rec), "copula_term": torch.zeros_like(rec)}
    q = self.encode(tokens, lengths)
    mean, log_var = q["mean"].float(), q["log_var"].float()
    eps_z, eps_c = noise if noise is not None else torch.randn(2, *mean.shape,
                                                               device=mean.device)
    z = mean + torch.exp(0.5 * log_var) * eps_z
    kl = 0.5 * (mean.square() + log_var.exp() - 1.0 - log_var).sum(-1)
    terms = {"rec": -self.log_likelihood(tokens, lengths, z), "kl": kl,
             "copula_term": torch.zeros_like(kl)}
    if "w" in q:
      log_q = (-0.5 * (_LOG_2PI + log_var + (z - mean).square() * torch.exp(-log_var))).sum(-1)
      terms["copula_term"] = _log_copula(q["w"].float(), q["a"].float(), eps_c) + log_q
    return terms

  def loss(self, terms: Mapping[str, torch.Tensor], weights: torch.Tensor,
           beta: float) -> torch.Tensor:
    """The weighted mean of rec + beta KL - lambda copula_term: a scalar."""
    loss = terms["rec"] + beta * terms["kl"] - self.config.copula_weight * terms["copula_term"]
    return (loss * weights).sum() / weights.sum()


def _log_copula(w: torch.Tensor, a: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
  """log c(q) at q = L eps, Sigma = diag(w) + a a^T = L L^T: [batch]."""
  sigma = torch.diag_embed(w) + a[:, :, None] * a[:, None, :]
  chol = torch.linalg.cholesky(sigma)
  q = (chol @ eps[:, :, None])[..., 0]
  white = torch.linalg.solve_triangular(chol, q[:, :, None], upper=False)[..., 0]
  diag = torch.diagonal(sigma, dim1=-2, dim2=-1)
  half_log_det = torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
  return (0.5 * torch.log(diag).sum(-1) - half_log_det
          + 0.5 * (q.square() / diag - white.square()).sum(-1))


def load_flax_variables(model: TorchTextVAE, variables: Mapping) -> None:
  """Copies a JAX TextVAE's `params` and `batch_stats` into `model`, in place."""
  params, stats = variables["params"], variables.get("batch_stats", {})
  t = lambda x: torch.from_numpy(np.array(x, np.float32))
  with torch.no_grad():
    model.embed.weight.copy_(t(params["embed"]["embedding"]))
    model.out.weight.copy_(t(params["out"]["kernel"]).T)
    model.out.bias.copy_(t(params["out"]["bias"]))
    lstms = [("decoder_lstm", model.decoder_lstm)]
    if model.config.has_latent:
      lstms.append(("encoder_lstm", model.encoder_lstm))
      model.latent_to_carry.weight.copy_(t(params["latent_to_carry"]["kernel"]).T)
      model.latent_to_carry.bias.copy_(t(params["latent_to_carry"]["bias"]))
      head = params["posterior"]
      marginals = head.get("marginals", head)
      head_stats = stats["posterior"]
      for name in model.dense:
        p, s = (head, head_stats) if name == "a" else (
            marginals, head_stats.get("marginals", head_stats))
        model.dense[name].weight.copy_(t(p[f"{name}_dense"]["kernel"]).T)
        bn = model.bn[name]
        bn.weight.copy_(t(p[f"{name}_bn"]["scale"]))
        bn.bias.copy_(t(p[f"{name}_bn"]["bias"]))
        bn.running_mean.copy_(t(s[f"{name}_bn"]["mean"]))
        bn.running_var.copy_(t(s[f"{name}_bn"]["var"]))
      if "w_dense" in head:
        model.w_dense.weight.copy_(t(head["w_dense"]["kernel"]).T)
        model.w_dense.bias.copy_(t(head["w_dense"]["bias"]))
    for name, lstm in lstms:
      lstm.weight_ih_l0.copy_(t(params[name]["w_i"]).T)
      lstm.weight_hh_l0.copy_(t(params[name]["w_h"]).T)
      lstm.bias_ih_l0.copy_(t(params[name]["bias"]))
