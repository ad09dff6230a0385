"""Posteriors q(z|x), chosen by name (`config.model.posterior`), one module each.

Each maps the encoder state hc [batch, 2 * hidden] to a distribution with the
methods of `base.Distribution` (sample, exact log_prob, kl, kl_groups, entropy,
mean, objective_terms, and its prior); train, objectives and evaluation use
only those. 'none' (the LSTM language model) has no posterior.
"""

from cvae_jax.errors import CvaeError
from cvae_jax.models.posteriors.base import (EXTRA_LOSS, Distribution, Prior,
                                             log_standard_normal)
from cvae_jax.models.posteriors.copula import CopulaPosterior, GaussianCopula
from cvae_jax.models.posteriors.coupled_copula import CoupledCopula, CoupledCopulaPosterior
from cvae_jax.models.posteriors.flexible_copula import FlexibleCopula, FlexibleCopulaPosterior
from cvae_jax.models.posteriors.flow import FlowPosterior, PlanarFlow
from cvae_jax.models.posteriors.full_gaussian import FullGaussian, FullGaussianPosterior
from cvae_jax.models.posteriors.gaussian import DiagonalGaussian, GaussianPosterior
from cvae_jax.models.posteriors.vmf import VMFPosterior, VonMisesFisher

POSTERIORS = {"gaussian": GaussianPosterior, "copula": CopulaPosterior,
              "coupled_copula": CoupledCopulaPosterior,
              "flexible_copula": FlexibleCopulaPosterior, "vmf": VMFPosterior,
              "flow": FlowPosterior, "full_gaussian": FullGaussianPosterior}
NAMES = ("none", *POSTERIORS)


def check_name(name: str) -> None:
  """Raises CvaeError unless `name` is a known posterior."""
  if name not in NAMES:
    raise CvaeError(f"unknown posterior {name!r}: config.model.posterior must be "
                    f"one of {', '.join(NAMES)}")


def build(config):
  """The posterior module named by `config.posterior` (a `ModelConfig`)."""
  return POSTERIORS[config.posterior].from_config(config)


def prior(name: str) -> Prior:
  """The prior p(z) of the posterior `name` (for generation)."""
  return POSTERIORS[name].prior
