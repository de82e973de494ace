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

Pure ``jnp`` (vmappable); ``compute`` takes the columns by metafor's names.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import gammaln

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
    y: jax.Array  # the effect sizes yi
    v: jax.Array  # their sampling variances vi
    zero_cell_corrected: jax.Array  # bool: 1/2 added to the study's cells (counts only; False otherwise)


def _from_counts(measure, ai, bi, ci, di):
    cells = jnp.stack([ai, bi, ci, di])
    corrected = jnp.any(cells == 0, axis=0)
    ai, bi, ci, di = cells + 0.5 * corrected
    n1, n2 = ai + bi, ci + di
    if measure == "RR":
        y = jnp.log(ai / n1) - jnp.log(ci / n2)
        v = 1 / ai - 1 / n1 + 1 / ci - 1 / n2
    elif measure == "OR":
        y = jnp.log(ai) + jnp.log(di) - jnp.log(bi) - jnp.log(ci)
        v = 1 / ai + 1 / bi + 1 / ci + 1 / di
    else:  # RD
        p1, p2 = ai / n1, ci / n2
        y = p1 - p2
        v = p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2
    return EffectSizes(y, v, corrected)


def _hedges_correction(m):
    """c(m) = Gamma(m/2) / (sqrt(m/2) Gamma((m-1)/2)), on the log scale for large m."""
    return jnp.exp(gammaln(m / 2) - gammaln((m - 1) / 2) - 0.5 * jnp.log(m / 2))


def _from_means(measure, m1i, sd1i, n1i, m2i, sd2i, n2i):
    if measure == "MD":
        y = m1i - m2i
        v = sd1i**2 / n1i + sd2i**2 / n2i
    else:  # SMD
        m = n1i + n2i - 2
        pooled_sd = jnp.sqrt(((n1i - 1) * sd1i**2 + (n2i - 1) * sd2i**2) / m)
        y = _hedges_correction(m) * (m1i - m2i) / pooled_sd
        v = 1 / n1i + 1 / n2i + y**2 / (2 * (n1i + n2i))
    return EffectSizes(y, v, jnp.zeros(jnp.shape(y), dtype=bool))


def compute(measure: str, **columns) -> EffectSizes:
    """Effect sizes by ``measure`` (``MEASURES``) from the columns it needs (``COLUMNS[measure]``)."""
    if measure not in MEASURES:
        raise ValueError(f"unknown effect-size measure {measure!r}: one of {', '.join(MEASURES)}")
    needed = COLUMNS[measure]
    missing = [name for name in needed if name not in columns]
    if missing:
        raise ValueError(f"measure {measure} needs the columns {', '.join(needed)}; missing: {', '.join(missing)}")
    values = [jnp.asarray(columns[name], dtype=jnp.result_type(float)) for name in needed]
    if measure in COUNT_MEASURES:
        return _from_counts(measure, *values)
    return _from_means(measure, *values)


def __dir__():
    # The public names only, not the imports (``dir(js.diagnostics)`` lists no ``jax`` or ``jnp``).
    return list(__all__)
