r"""Effect sizes and their sampling variances from raw study data, as R's metafor ``escalc`` computes them.

Measures (metafor's names, its default options):

2x2 counts (ai, bi events and non-events in group 1; ci, di in group 2; n1 = ai + bi, n2 = ci + di). A study
with a zero cell gets 1/2 added to all four of its cells first (metafor's ``add = 1/2, to = "only0"``), for every
measure below; ``zero_cell_corrected`` says which studies were.

* ``RR``, log risk ratio: y = log((ai / n1) / (ci / n2)), v = 1/ai - 1/n1 + 1/ci - 1/n2.
* ``OR``, log odds ratio: y = log(ai di / (bi ci)), v = 1/ai + 1/bi + 1/ci + 1/di.
* ``RD``, risk difference: y = p1 - p2, v = p1 (1 - p1) / n1 + p2 (1 - p2) / n2, p1 = ai / n1, p2 = ci / n2.

Two-group summaries (means m1i, m2i; sds sd1i, sd2i; sizes n1i, n2i):

* ``MD``, mean difference: y = m1 - m2, v = sd1^2 / n1 + sd2^2 / n2 (unequal variances).
* ``SMD``, Hedges' g: y = c(m) (m1 - m2) / s_p, s_p^2 = ((n1 - 1) sd1^2 + (n2 - 1) sd2^2) / m, m = n1 + n2 - 2,
  with the exact small-sample correction c(m) = Gamma(m/2) / (sqrt(m/2) Gamma((m-1)/2)) (Hedges 1981), and
  v = 1/n1 + 1/n2 + y^2 / (2 (n1 + n2)) (metafor's default ``vtype = "LS"``).

``compute`` takes the columns by metafor's names. The formulas are written once for any array namespace: by
default ``jax.numpy`` (traceable and vmappable, for simulation studies that draw raw data), or NumPy
(``xp=numpy``), which is how :mod:`jaxschools.core.data_layouts` computes a data file's effect sizes before JAX
is imported, so bad values are refused at once. This module imports JAX only when it is asked for.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

__all__ = ["MEASURES", "COUNT_MEASURES", "MEAN_MEASURES", "COLUMNS", "EffectSizes", "compute"]

COUNT_MEASURES = ("RR", "OR", "RD")
MEAN_MEASURES = ("SMD", "MD")
MEASURES = COUNT_MEASURES + MEAN_MEASURES
# Which columns each kind of measure needs, by metafor's names.
COLUMNS = {
    **dict.fromkeys(COUNT_MEASURES, ("ai", "bi", "ci", "di")),
    **dict.fromkeys(MEAN_MEASURES, ("m1i", "sd1i", "n1i", "m2i", "sd2i", "n2i")),
}


class EffectSizes(NamedTuple):
    y: Any  # the effect sizes yi (arrays of the namespace computed in)
    v: Any  # their sampling variances vi
    zero_cell_corrected: Any  # bool: 1/2 added to the study's cells (counts only; False otherwise)


def _from_counts(xp, measure, ai, bi, ci, di):
    cells = xp.stack([ai, bi, ci, di])
    corrected = xp.any(cells == 0, axis=0)
    ai, bi, ci, di = cells + 0.5 * corrected
    n1, n2 = ai + bi, ci + di
    if measure == "RR":
        y = xp.log(ai / n1) - xp.log(ci / n2)
        v = 1 / ai - 1 / n1 + 1 / ci - 1 / n2
    elif measure == "OR":
        y = xp.log(ai) + xp.log(di) - xp.log(bi) - xp.log(ci)
        v = 1 / ai + 1 / bi + 1 / ci + 1 / di
    else:  # RD
        p1, p2 = ai / n1, ci / n2
        y = p1 - p2
        v = p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2
    return EffectSizes(y, v, corrected)


def _log_gamma(xp):
    if xp is np:
        return np.vectorize(math.lgamma, otypes=[float])
    from jax.scipy.special import gammaln

    return gammaln


def _hedges_correction(xp, m):
    """c(m) = Gamma(m/2) / (sqrt(m/2) Gamma((m-1)/2)), on the log scale for large m."""
    gammaln = _log_gamma(xp)
    return xp.exp(gammaln(m / 2) - gammaln((m - 1) / 2) - 0.5 * xp.log(m / 2))


def _from_means(xp, measure, m1i, sd1i, n1i, m2i, sd2i, n2i):
    if measure == "MD":
        y = m1i - m2i
        v = sd1i**2 / n1i + sd2i**2 / n2i
    else:  # SMD
        m = n1i + n2i - 2
        pooled_sd = xp.sqrt(((n1i - 1) * sd1i**2 + (n2i - 1) * sd2i**2) / m)
        y = _hedges_correction(xp, m) * (m1i - m2i) / pooled_sd
        v = 1 / n1i + 1 / n2i + y**2 / (2 * (n1i + n2i))
    return EffectSizes(y, v, xp.zeros(xp.shape(y), dtype=bool))


def compute(measure: str, *, xp=None, **columns) -> EffectSizes:
    """Effect sizes by ``measure`` (``MEASURES``) from the columns it needs (``COLUMNS[measure]``), computed
    with the array namespace ``xp`` (default ``jax.numpy``; ``numpy`` for float64 NumPy arrays)."""
    if measure not in MEASURES:
        raise ValueError(f"unknown effect-size measure {measure!r}: one of {', '.join(MEASURES)}")
    needed = COLUMNS[measure]
    missing = [name for name in needed if name not in columns]
    if missing:
        raise ValueError(f"measure {measure} needs the columns {', '.join(needed)}; missing: {', '.join(missing)}")
    if xp is None:
        import jax.numpy as xp
    dtype = np.float64 if xp is np else xp.result_type(float)
    values = [xp.asarray(columns[name], dtype=dtype) for name in needed]
    if measure in COUNT_MEASURES:
        return _from_counts(xp, measure, *values)
    return _from_means(xp, measure, *values)


def __dir__():
    # The public names only, not the imports (``dir(js.diagnostics)`` lists no ``jax`` or ``jnp``).
    return list(__all__)
