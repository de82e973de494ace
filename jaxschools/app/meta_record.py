"""The exact section's meta-analytic quantities (issue 16, item 2): what bayesmeta reports beside the posterior.

:func:`build` computes, for one dataset and prior, the marginal likelihood and the Bayes factors for tau = 0 and
mu = 0 (:mod:`jaxschools.core.bayes_factors`), I^2 and H^2, the prediction for a new study, the shortest
intervals and the posterior predictive p-values (:mod:`jaxschools.core.meta_quantities`), as the JSON-ready
entries that :class:`jaxschools.app.results.Exact` holds under ``bayes_factors``, ``heterogeneity``,
``prediction``, ``shortest`` and ``predictive_check``. The formulas and their references live in those core
modules; this one only lays their results out.
"""

from __future__ import annotations

from jaxschools.core import bayes_factors, exact, meta_quantities, predictive
from jaxschools.core.data import Schools
from jaxschools.core.models import Prior

__all__ = ["build", "Q_DRAWS"]

# Exact draws for the p-value of Cochran's Q: its binomial sd is at most 0.5 / sqrt(4000) ~ 0.008.
Q_DRAWS = 4000


def _distribution(block: dict) -> dict:
    return {key: block[key] for key in ("mean", "sd", *exact.QUANTILES, "shortest_lower", "shortest_upper")}


def build(data: Schools, prior: Prior, rng_key, *, num_draws: int = Q_DRAWS, level: float = 0.95) -> dict:
    """The five entries for summary.json's ``exact`` section (see the module docstring). The new study's
    sigma is the sampler's new school's (:func:`jaxschools.core.predictive.default_sigma_new`), so the two
    predictions can be compared."""
    post = exact.posterior(data, prior)
    factors = bayes_factors.bayes_factors(data, prior, post=post)
    sigma_new = predictive.default_sigma_new(data.without_names())
    quantities = meta_quantities.summary(data, prior, post, sigma_new=sigma_new, level=level, rng_key=rng_key,
                                         num_draws=num_draws)
    theta = quantities["theta_shortest"]
    return {
        "bayes_factors": {**factors, "undefined": bayes_factors.undefined(prior)},
        "heterogeneity": {
            "typical_variance": quantities["typical_variance"],
            "i2": _distribution(quantities["i2"]),
            "h2": _distribution(quantities["h2"]),
        },
        "prediction": {
            "sigma_new": quantities["sigma_new"],
            "theta_new": _distribution(quantities["theta_new"]),
            "y_new": _distribution(quantities["y_new"]),
        },
        "shortest": {
            "level": level,
            "mu": dict(zip(("lower", "upper"), quantities["mu_shortest"])),
            "tau": dict(zip(("lower", "upper"), quantities["tau_shortest"])),
            "theta_lower": None if theta is None else theta[0],
            "theta_upper": None if theta is None else theta[1],
        },
        "predictive_check": {
            "q": quantities["q"],
            "q_p_value": quantities["q_p_value"],
            "q_mcse": quantities["q_mcse"],
            "num_draws": int(quantities["q_num_draws"]),
            "study_p_values": quantities["study_p_values"],
        },
    }


def __dir__():
    return list(__all__)
