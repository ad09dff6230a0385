"""The PyTorch peer computes the JAX model's function: same terms, same gradients.

Runs where torch is installed (`pip install -e '.[peer]'`) and is skipped elsewhere.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cvae_jax import objectives
from tests.helpers import init_variables, random_batch, tiny_model

torch = pytest.importorskip("torch")
from cvae_jax.peer.torch_model import TorchTextVAE, load_flax_variables  # noqa: E402
from cvae_jax.peer.torch_train import kl_weight  # noqa: E402

BETA = 0.7


def _jax_terms_and_grads(model, variables, batch, key):
  """Train-mode terms and d loss / d params; the noise the model drew from `key`."""
  def loss_fn(params):
    terms, _ = model.apply({**variables, "params": params}, batch["tokens"],
                           batch["lengths"], train=True, rngs={"latent": key},
                           mutable=["batch_stats"])
    loss = (terms["rec"] + BETA * terms["kl"]
            - model.config.copula_weight * terms.get("copula_term", 0.0))
    return jnp.mean(loss), terms
  (_, terms), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(
      variables["params"])
  shape = (batch["tokens"].shape[0], model.config.latent_dim)
  # The model's first draw from its 'latent' stream, split as TextVAE.__call__ does.
  latent = model.apply(variables, method=lambda m: m.make_rng("latent"), rngs={"latent": key})
  noise = [jax.random.normal(k, shape) for k in jax.random.split(latent)]
  return terms, grads, [torch.tensor(np.asarray(n)) for n in noise]


@pytest.mark.parametrize("posterior,feed_latent", [("none", False), ("gaussian", True),
                                                   ("copula", False)])
def test_torch_peer_equals_the_jax_model(posterior, feed_latent):
  model = tiny_model(posterior, dropout=0.0, feed_latent=feed_latent, copula_weight=0.4)
  batch = random_batch(3)
  variables = init_variables(model, batch)
  terms, grads, noise = _jax_terms_and_grads(model, variables, batch, jax.random.key(4))

  peer = TorchTextVAE(model.config)
  load_flax_variables(peer, variables)
  assert (sum(p.numel() for p in peer.parameters() if p.requires_grad)
          == sum(x.size for x in jax.tree.leaves(variables["params"])))
  tokens = torch.from_numpy(batch["tokens"]).long()
  lengths = torch.from_numpy(batch["lengths"]).long()
  got = peer(tokens, lengths, noise)
  for name in got:
    np.testing.assert_allclose(got[name].detach().numpy(), terms.get(name, 0.0),
                               rtol=1e-5, atol=1e-5, err_msg=name)
  peer.loss(got, torch.ones(8), BETA).backward()

  want = TorchTextVAE(model.config)  # holds the JAX gradients
  load_flax_variables(want, {**variables, "params": grads})
  for (name, p), w in zip(peer.named_parameters(), want.parameters()):
    if p.requires_grad:
      np.testing.assert_allclose(p.grad.numpy(), w.detach().numpy(), rtol=1e-4,
                                 atol=1e-6, err_msg=name)


def test_posteriors_and_options_the_peer_lacks_are_a_clear_error():
  from cvae_jax.errors import CvaeError
  with pytest.raises(CvaeError, match="peer implements.*not 'coupled_copula'"):
    TorchTextVAE(tiny_model("coupled_copula").config)
  with pytest.raises(CvaeError, match="config.model.word_dropout and config.model.bn_gamma"):
    TorchTextVAE(tiny_model("gaussian", bn_gamma=0.5).config)


def test_kl_schedule_equals_the_jax_one():
  for start, steps in [(0, 4), (3, 10), (5, 0)]:
    want = [float(objectives.kl_weight(s, start, steps)) for s in range(20)]
    chex.assert_trees_all_close([kl_weight(s, start, steps) for s in range(20)], want)
