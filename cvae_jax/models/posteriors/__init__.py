"""Posteriors q(z|x), chosen by name (`config.model.posterior`).

Each module maps the encoder state hc [batch, 2 * hidden] to a distribution
with `sample(key, num_samples=None)`, `log_prob(z)`, `kl()` (to N(0, I)),
`kl_groups()` (the KL split into independent groups, [batch, groups]: one per
dimension for these factorised posteriors; free bits targets each group) and
`copula_terms(z, key)`. 'none' (the LSTM language model) has no posterior.
"""

from cvae_jax.errors import CvaeError
from cvae_jax.models.posteriors.copula import CopulaPosterior, GaussianCopula
from cvae_jax.models.posteriors.gaussian import (DiagonalGaussian, GaussianPosterior,
                                                 log_standard_normal)

POSTERIORS = {"gaussian": GaussianPosterior, "copula": CopulaPosterior}
NAMES = ("none", *POSTERIORS)


def check_name(name: str) -> None:
  """Raises CvaeError unless `name` is a known posterior."""
  if name not in NAMES:
    raise CvaeError(f"unknown posterior {name!r}: config.model.posterior must be "
                    f"one of {', '.join(NAMES)}")
