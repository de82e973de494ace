"""The classical section of a run (issue 16, item 3): the random-effects meta-analysis as metafor computes it.

:func:`build` fits the data by each tau^2 estimator of ``classical.methods`` (DerSimonian-Laird, REML, ML,
Paule-Mandel, Sidik-Jonkman, Hedges, empirical Bayes: :mod:`jaxschools.core.random_effects`, which owns the
formulas and their references), with intervals at ``classical.level``, and leaves each study out in turn. The
result is the typed :class:`jaxschools.app.results.Classical` record, summary.json's ``classical`` section,
which the report's classical table renders, with Egger's regression test of funnel-plot asymmetry.

One compiled call: every configured estimator and its leave-one-out fits are computed by one jitted function
of the data's arrays (the method names and the level are static), so data of the same number of studies share
its compilation. The names of the studies are not part of it.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxschools.app import results
from jaxschools.core import random_effects
from jaxschools.core.data import Schools

__all__ = ["build"]


@functools.partial(jax.jit, static_argnames=("methods", "level"))
def _fits(y, sigma, mask, methods: tuple[str, ...], level: float):
    data = Schools(y, sigma, names=(), mask=mask)
    fits = {method: (random_effects.fit(data, method, level), random_effects.leave_one_out(data, method, level))
            for method in methods}
    return fits, random_effects.egger(data)


def _interval(pair):
    return {"lower": pair[0], "upper": pair[1]}


def _fit_entry(fit: random_effects.Fit, loo: random_effects.Fit, num_studies: int) -> dict:
    return {
        "tau2": fit.tau2, "tau": jnp.sqrt(fit.tau2), "mu": fit.mu, "se": fit.se,
        "ci": _interval(fit.ci), "pi": _interval(fit.pi),
        "se_knha": fit.se_knha, "ci_knha": _interval(fit.ci_knha), "pi_knha": _interval(fit.pi_knha),
        "q": fit.q, "q_df": num_studies - 1, "q_p_value": fit.q_p_value, "i2": fit.i2, "h2": fit.h2,
        "tau2_ci": _interval(fit.tau2_ci), "i2_ci": _interval(fit.i2_ci), "h2_ci": _interval(fit.h2_ci),
        "leave_one_out": {
            "mu": loo.mu, "ci_lower": loo.ci[:, 0], "ci_upper": loo.ci[:, 1], "tau2": loo.tau2, "i2": loo.i2,
            "q": loo.q, "q_p_value": loo.q_p_value,
        },
    }


def build(config: dict, data: Schools) -> results.Classical | None:
    """summary.json's ``classical`` section for ``data`` (one dataset, every study in), or None when
    ``classical.methods`` is empty."""
    section = config["classical"]
    methods = tuple(section["methods"])
    if not methods:
        return None
    num_studies = int(jnp.sum(data.mask))
    fits, egger = _fits(data.y, data.sigma, data.mask, methods, float(section["level"]))
    return results.Classical.build({
        "level": section["level"],
        "num_studies": num_studies,
        "fits": {method: _fit_entry(*fits[method], num_studies) for method in methods},
        "egger": None if num_studies < 3 else {**egger._asdict(), "df": num_studies - 2},
    })


def __dir__():
    # The public names only, not the imports (``dir(js.diagnostics)`` lists no ``jax`` or ``jnp``).
    return list(__all__)
