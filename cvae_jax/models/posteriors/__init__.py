"""Posteriors q(z|x), chosen by name (`config.model.posterior`), one module each.

Each maps the encoder state hc [batch, 2 * hidden] to a distribution with the
methods of `base.Distribution` (sample, exact log_prob, kl, entropy, mean,
objective_terms); train, objectives and evaluation use only those. 'none' (the
LSTM language model) has no posterior.
"""

from cvae_jax.errors import CvaeError
from cvae_jax.models.posteriors.base import EXTRA_LOSS, Distribution
from cvae_jax.models.posteriors.copula import CopulaPosterior, GaussianCopula
from cvae_jax.models.posteriors.coupled_copula import CoupledCopula, CoupledCopulaPosterior
from cvae_jax.models.posteriors.flexible_copula import FlexibleCopula, FlexibleCopulaPosterior
from cvae_jax.models.posteriors.gaussian import (DiagonalGaussian, GaussianPosterior,
                                                 log_standard_normal)

POSTERIORS = {"gaussian": GaussianPosterior, "copula": CopulaPosterior,
              "coupled_copula": CoupledCopulaPosterior,
              "flexible_copula": FlexibleCopulaPosterior}
NAMES = ("none", *POSTERIORS)


def check_name(name: str) -> None:
  """Raises CvaeError unless `name` is a known posterior."""
  if name not in NAMES:
    raise CvaeError(f"unknown posterior {name!r}: config.model.posterior must be "
                    f"one of {', '.join(NAMES)}")


def build(config):
  """The posterior module named by `config.posterior` (a `ModelConfig`)."""
  return POSTERIORS[config.posterior].from_config(config)
