"""The sampler against the exact posterior: z-scores and one alarm adjusted for their number.

For every estimate q_hat that has an exact counterpart q (by quadrature, :mod:`jaxschools.core.exact`) and a
Monte Carlo standard error, z = (q_hat - q) / MCSE. If the chains sample the posterior and the MCSE is
right, each z is approximately N(0, 1) (the Markov chain central limit theorem; Vehtari et al. 2021,
section 3), so a large |z| means the draws are not from the posterior (a stuck or biased sampler), not
merely noisy.

With m such z-scores, flagging any |z| > 4 would raise false alarms more often the more schools there
are. The threshold is Bonferroni's: z* = Phi^-1(1 - ALPHA / (2 m)) with ALPHA = 0.001, so a sampler that
is right raises the alarm in at most 0.1% of runs whatever m (about 4.09 for the eight schools' m = 23,
3.29 for m = 1, 5.5 for m = 20,000). The quantities: mean and sd of mu, log tau and tau (the sd's MCSE
from ``posterior.<name>.mcse_sd``), E[theta_j | y] and E[B_j | y] for every
school, and P(theta_k > c | y).

A z is undefined (None) for one of four reasons, counted apart in ``check()["undefined"]`` because they
mean different things:

* ``moment_does_not_exist``: the mean or sd itself does not exist (:mod:`jaxschools.core.moments`: under the flat
  prior p(tau | y) ~ tau^(1 - J), so E[mu], E[tau] need J >= 4 and their sds J >= 5). Exact and sampled
  values are null; nothing is wrong with the run.
* ``mcse_needs_higher_moment``: the moment exists but its MCSE needs a higher one that does not. The MCSE of
  a mean needs the variance (order 2), that of an sd the fourth moment (the sample variance's variance is
  (E[(x - m)^4] - sd^4) / ESS; Vehtari et al. 2021): flat prior, mean(mu) and mean(tau) for J = 4, sd(mu) and
  sd(tau) for J < 7; half-Cauchy, sd(tau) for J < 4. The estimate stands, but a z-score in units of an MCSE that does not converge would be
  meaningless, so none is formed (even if a summary carries a number there).
* ``draws_do_not_vary``: the MCSE is missing, not finite or not positive while the estimate and the exact
  value are there: the draws do not vary within the chains (or are too few for an MCSE;
  ``jaxschools.core.diagnostics``). A frozen chain is flagged by the convergence checks instead, and z stays
  undefined rather than becoming (q_hat - q) / 1e-17.
* ``missing``: anything else (the estimate or the exact value is null).

The prior family and J come from the summary (``config.model.prior``, the number of ``data.names``) unless
given; with an unknown family the first two reasons cannot be told apart from the others.

No JAX: on the typed :class:`~jaxschools.app.results.Summary` or its JSON, read strictly (a missing key is an
error, never a "missing" value), so a saved summary can be checked again without JAX.
"""

from __future__ import annotations

from statistics import NormalDist
from typing import NamedTuple

from jaxschools.app.results import Summary
from jaxschools.app.results import finite as _finite
from jaxschools.app.results import school_label as _school
from jaxschools.core import moments

__all__ = ["ALPHA", "MAX_LISTED", "REASONS", "Row", "check", "reason", "rows", "threshold", "z_score"]

# Family-wise false-alarm rate of the sampler-vs-exact check (Bonferroni over the m z-scores).
ALPHA = 0.001
# summary.json names at most this many of the quantities beyond the threshold.
MAX_LISTED = 20

# Why a compared quantity has no z-score, in the order the report lists them (see the module docstring).
NO_MOMENT = "moment_does_not_exist"
MCSE_NEEDS_MOMENT = "mcse_needs_higher_moment"
NO_VARIATION = "draws_do_not_vary"
MISSING = "missing"
REASONS = (NO_MOMENT, MCSE_NEEDS_MOMENT, NO_VARIATION, MISSING)


class Row(NamedTuple):
    """One compared quantity: ``z`` is None when undefined, and then ``reason`` (one of :data:`REASONS`) says
    why; ``school`` is the index of the school a per-school quantity is about (None for the others)."""

    label: str
    estimate: object
    mcse: object
    exact: object
    z: float | None
    reason: str | None
    school: int | None = None


def threshold(num_compared: int, alpha: float = ALPHA) -> float:
    """Bonferroni's two-sided threshold Phi^-1(1 - alpha / (2 m)) for m = ``num_compared`` z-scores."""
    # -Phi^-1(p) rather than Phi^-1(1 - p): 1 - p would round away the digits of a small p.
    return -NormalDist().inv_cdf(alpha / (2.0 * max(int(num_compared), 1)))


def z_score(estimate, mcse, truth):
    """(estimate - truth) / mcse, or None where any is missing or not finite or mcse <= 0."""
    usable = _finite(estimate) and _finite(truth) and _finite(mcse) and mcse > 0
    return (estimate - truth) / mcse if usable else None


def reason(quantity, order, estimate, mcse, truth, prior=None, num_schools=None) -> str | None:
    """Why E[quantity^order]'s estimate has no z-score (one of :data:`REASONS`), or None when it has one.

    ``quantity`` is a :data:`jaxschools.core.moments.QUANTITIES` name, or None for a probability (every moment
    exists); ``prior`` and ``num_schools`` (schools in the likelihood) decide existence, and without them
    only the values are looked at.
    """
    if quantity is not None and prior is not None and num_schools is not None:
        if not moments.exists(prior, quantity, order, num_schools):
            return NO_MOMENT
        if not moments.exists(prior, quantity, 2 * order, num_schools):
            return MCSE_NEEDS_MOMENT
    if z_score(estimate, mcse, truth) is not None:
        return None
    return NO_VARIATION if _finite(estimate) and _finite(truth) else MISSING


def _prior_and_schools(summary: dict, prior, num_schools):
    """The prior family and J: as given, else from the summary; the family None when it is not known."""
    prior = summary["config"]["model"]["prior"] if prior is None else getattr(prior, "kind", prior)
    try:
        moments.tail_exponent(prior, 0)
    except (KeyError, ValueError, TypeError):
        prior = None
    if num_schools is None:
        num_schools = len(summary["data"]["names"])
    return prior, int(num_schools)


def rows(summary: dict | Summary, max_schools: int | None = None, *, prior=None,
         num_schools: int | None = None) -> list[Row]:
    """A :class:`Row` for every compared quantity (the first ``max_schools`` schools).

    ``summary``: the typed :class:`~jaxschools.app.results.Summary`, or its JSON (summary.json as loaded, or
    the analysis's before it is typed), read strictly: a key that is missing raises ``KeyError`` (a value may
    be null, and its z is then undefined). ``prior`` (a family name or a ``models.Prior``) and
    ``num_schools`` default to the summary's ``config.model.prior`` and number of schools (a run's schools
    are all in the likelihood).
    """
    summary = summary.to_json() if isinstance(summary, Summary) else summary
    exact = summary["exact"]
    prior, num_schools = _prior_and_schools(summary, prior, num_schools)
    out = []

    def add(label, quantity, order, estimate, mcse, truth, school=None):
        why = reason(quantity, order, estimate, mcse, truth, prior, num_schools)
        z = z_score(estimate, mcse, truth) if why is None else None
        out.append(Row(label, estimate, mcse, truth, z, why, school))

    for key, label in (("mu", "μ"), ("log_tau", "log τ"), ("tau", "τ")):
        post = summary["posterior"][key]
        add(f"mean of {label}", key, 1, post["mean"], post["mcse_mean"], exact[key]["mean"])
        add(f"sd of {label}", key, 2, post["sd"], post["mcse_sd"], exact[key]["sd"])
    names = summary["data"]["names"]
    theta, shrinkage, shrinkage_mcse = summary["theta"], summary["shrinkage"], summary["shrinkage_mcse"]
    shown = len(names) if max_schools is None else min(len(names), max_schools)
    for j in range(shown):
        add(f"E[θ | y], {_school(names, j)}", "theta", 1, theta["mean"][j], theta["mean_mcse"][j],
            exact["theta"]["mean"][j], j)
    for j in range(shown):
        add(f"shrinkage E[B], {_school(names, j)}", "shrinkage", 1, shrinkage[j], shrinkage_mcse[j],
            exact["shrinkage"][j], j)
    query = summary["queries"]["p_exceeds"]
    c = query["threshold"]
    label = format(float(c), ".4g") if _finite(c) else str(c)
    add(f"P(θ > {label}), {_school([query['school']], 0)}", None, 1, query["p"], query["mcse"], exact["p_exceeds"])
    return out


def _number(x):
    """A row's value as JSON: a finite number, else null (a NaN or inf MCSE is as undefined as a missing one)."""
    return x if _finite(x) else None


def check(summary: dict | Summary, alpha: float = ALPHA, *, prior=None, num_schools: int | None = None) -> dict:
    """The comparison's verdict (summary.json's ``exact_check``), from ``summary`` read strictly (:func:`rows`).

    ``num_compared`` z-scores were defined, ``threshold`` is Bonferroni's for them, ``num_beyond`` exceed
    it (``beyond`` names up to MAX_LISTED, worst first), ``max_abs_z`` and ``worst`` give the largest,
    ``num_undefined`` quantities had no z and ``undefined`` counts them by reason (every key of
    :data:`REASONS`; see the module docstring), ``flagged`` says whether any |z| exceeds the threshold, and
    ``rows`` lists every compared quantity (:class:`Row`'s fields, ``label`` as ``quantity``) in order.
    """
    compared = rows(summary, prior=prior, num_schools=num_schools)
    scored = sorted(((abs(row.z), row.label) for row in compared if row.z is not None), reverse=True)
    limit = threshold(len(scored), alpha)
    beyond = [label for z, label in scored if z > limit]
    return {
        "alpha": alpha,
        "num_compared": len(scored),
        "threshold": limit,
        "max_abs_z": scored[0][0] if scored else None,
        "worst": scored[0][1] if scored else None,
        "num_beyond": len(beyond),
        "beyond": beyond[:MAX_LISTED],
        "num_undefined": len(compared) - len(scored),
        "undefined": {key: sum(row.reason == key for row in compared) for key in REASONS},
        "flagged": bool(beyond),
        "rows": [{"quantity": row.label, "school": row.school, "estimate": _number(row.estimate),
                  "mcse": _number(row.mcse), "exact": _number(row.exact), "z": row.z, "reason": row.reason}
                 for row in compared],
    }


def __dir__():
    # The public names only, not the imports (``dir(js.diagnostics)`` lists no ``jax`` or ``jnp``).
    return list(__all__)
