r"""The two non-hierarchical analyses of BDA3 section 5.5: separate and complete pooling.

* Separate: each school alone, flat prior, theta_j | y_j ~ N(y_j, sigma_j^2); 95% intervals
  y_j -/+ z_{0.975} sigma_j (the seed's first table).
* Pooled: one common effect, flat prior; the precision-weighted mean
  :math:`\bar y = \sum_j y_j/\sigma_j^2 / \sum_j 1/\sigma_j^2` with variance
  :math:`1 / \sum_j 1/\sigma_j^2` (BDA3 eq. 5.13), and the chi-squared test of homogeneity
  :math:`\chi^2 = \sum_j (y_j - \bar y)^2 / \sigma_j^2` on J - 1 degrees of freedom
  (BDA3 section 5.5).

Masked schools are left out. Pure ``jnp``, vmappable over datasets.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax.scipy.special import gammaincc, ndtri

from jaxschools.core.data import Schools

__all__ = ["separate", "pooled"]


def separate(data: Schools, level: float = 0.95):
    """Per-school central intervals ``y_j -/+ z sigma_j`` at ``level``: dict of ``lower``, ``upper``."""
    z = ndtri(0.5 + 0.5 * level)
    return {"lower": data.y - z * data.sigma, "upper": data.y + z * data.sigma}


def pooled(data: Schools):
    """Complete pooling: dict of ``mean``, ``var``, ``chi2``, ``df`` and ``p_value`` (upper tail)."""
    precision = jnp.where(data.mask, data.sigma**-2, 0.0)
    total = jnp.sum(precision, axis=-1)
    mean = jnp.sum(precision * data.y, axis=-1) / total
    chi2 = jnp.sum(precision * (data.y - mean[..., None]) ** 2, axis=-1)
    df = jnp.sum(data.mask, axis=-1) - 1
    # P(X > chi2) for X ~ chi^2_df is the regularised upper incomplete gamma Q(df/2, chi2/2).
    p_value = gammaincc(0.5 * df, 0.5 * chi2)
    return {"mean": mean, "var": 1.0 / total, "chi2": chi2, "df": df, "p_value": p_value}


def __dir__():
    # The public names only, not the imports (``dir(js.diagnostics)`` lists no ``jax`` or ``jnp``).
    return list(__all__)
