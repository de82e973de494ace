r"""Which posterior moments exist: a pure function of the prior family and J (no JAX; the CLI uses it before
JAX is imported, :func:`jaxschools.core.exact.summary` inside traced code).

J counts the schools **in the likelihood** (a masked school does not count). Write v_j = sigma_j^2 + tau^2.
Everything below is for finite positive prior scales; the rule does not depend on their values.

**The tail of p(tau | y)** (BDA3 eq. 5.21). Integrating mu out of p(mu, tau) prod_j N(y_j | mu, v_j):

* *flat* (p(mu, tau) ∝ 1): the integrand is Gaussian in mu with precision sum_j 1/v_j, so

  .. math:: p(\tau \mid y) \propto V_\mu^{1/2} \prod_j v_j^{-1/2}
            \exp\Big(-\tfrac12 \sum_j (y_j - \hat\mu)^2 / v_j\Big), \qquad V_\mu = 1 / \textstyle\sum_j v_j^{-1}.

  As tau -> inf, v_j ~ tau^2, V_mu ~ tau^2 / J and the exponential -> 1 (mu_hat stays inside the range of the
  y_j), so p(tau | y) ~ c tau^(1 - J).
* *normal prior on mu* (``half_cauchy``: tau ~ HalfCauchy(tau_scale), ``half_normal``: tau ~
  HalfNormal(tau_scale); both with mu ~ N(mu_loc, mu_scale^2), tau independent of mu):
  p(tau | y) ∝ p(tau) E_{mu ~ N(mu_loc, mu_scale^2)}[prod_j N(y_j | mu, v_j)], and for fixed mu the product is
  (2 pi)^(-J/2) tau^(-J) (1 + o(1)), dominated by (2 pi tau^2)^(-J/2); so p(tau | y) ~ c p(tau) tau^(-J):
  tau^(-(J + 2)) for the half-Cauchy (p(tau) ~ 2 tau_scale / (pi tau^2)), and a Gaussian tail for the
  half-normal.

Near tau = 0 the density is finite in every case, so only the upper tail matters: E[tau^k] < inf iff
tau^k p(tau | y) is integrable at infinity, i.e. iff the tail exponent a (p ~ tau^-a) exceeds k + 1. Hence,
for integer J:

============  =====================  =========  ===================  ===================
family        p(tau | y), tau large  proper     E[tau], E[|mu|]      E[tau^2], E[mu^2]
============  =====================  =========  ===================  ===================
flat          ~ tau^(1 - J)          J >= 3     J >= 4               J >= 5
half_cauchy   ~ tau^-(J + 2)         always     J >= 1 (mu: always)  J >= 2 (mu: always)
half_normal   Gaussian tail          always     always               always
============  =====================  =========  ===================  ===================

(In general E[tau^k] needs J >= k + 3 under the flat prior and J >= k under the half-Cauchy.)

**Any tau family** (:mod:`jaxschools.core.prior_families`): with p(tau) ~ tau^-a at infinity, p(tau | y) ~
tau^-(J + a - 1) under a flat prior on mu and tau^-(J + a) under a normal one, by the same argument; so
E[tau^k] < inf iff J + a - f > k + 1 (f = 1 for a flat mu, else 0), the offset c = a - f below. The log-t_5
family's extra 1 / log^6 tau factor makes the boundary case J + c = k + 1 integrable too. A family whose tail is
faster than any power (half-normal, exponential, lognormal, bounded uniform) has every moment.

**mu.** Given tau, mu | tau, y ~ N(mu_hat, V_mu) (BDA3 eq. 5.20). Under the flat prior mu_hat is a weighted
mean of the y_j (bounded) and V_mu ~ tau^2 / J, so E[|mu|^k | tau, y] grows exactly like tau^k: mu's k-th
moment exists iff tau's does. Under a normal prior on mu, the prior is one more observation with precision
mu_scale^-2: V_mu = 1 / (mu_scale^-2 + sum_j 1/v_j) <= mu_scale^2 and mu_hat is a weighted mean of mu_loc and
the y_j, so E[|mu|^k | tau, y] is bounded in tau and every moment of mu exists (the posterior being proper).

**theta_j of a school in the likelihood.** theta_j | tau, y ~ N((1 - B_j) y_j + B_j mu_hat, tau^2 B_j +
B_j^2 V_mu) with B_j = sigma_j^2 / v_j. The mean is bounded (a weighted mean of y_j and mu_hat); tau^2 B_j <
sigma_j^2, and B_j^2 V_mu <= sigma_j^4 / v_j < sigma_j^2 because V_mu <= v_j (with a normal prior on mu too).
So the conditional moments are bounded in tau and every moment of theta_j exists whenever the posterior is
proper, for every family.

**theta_j of a school out of the likelihood** (a masked school, or a new one): theta_j | tau, y ~ N(mu_hat,
tau^2 + V_mu), whose k-th absolute moment grows like tau^k: it has tau's conditions. The same holds for a
new school's y (theta plus independent N(0, sigma^2) noise).

**log tau, B_j** (and quantiles, probabilities): log tau has exponential tails on both sides (p(tau | y) is
finite at 0 and a power or faster at infinity), and 0 <= B_j <= 1: all their moments exist when the posterior
is proper.

References: Gelman et al., *Bayesian Data Analysis*, 3rd ed. (BDA3), section 5.4, eqs. 5.17-5.21; Gelman
(2006), "Prior distributions for variance parameters in hierarchical models", Bayesian Analysis 1(3).
"""

from __future__ import annotations

import math
from typing import NamedTuple

from jaxschools.core import prior_families

__all__ = [
    "PRIORS",
    "PARAMETERIZATIONS",
    "QUANTITIES",
    "STATISTICS",
    "MOMENT_KEYS",
    "Missing",
    "tail_exponent",
    "min_schools",
    "exists",
    "nonexistent",
    "messages",
    "defined",
    "null_nonexistent",
]

# What the rule covers. "theta" is a school in the likelihood, "theta_out" one out of it (masked, or new).
QUANTITIES = ("mu", "tau", "log_tau", "theta", "theta_out", "shrinkage")
# The summaries that are moments, and the order of the absolute moment each needs (sd needs E[x^2]).
STATISTICS = {"mean": 1, "sd": 2}

# The prior families, the one list of the first releases' names (``config.PRIORS`` is this tuple); every other
# prior is a kind string of ``jaxschools.core.prior_families`` ("normal+lomax:1.5"), whose tail decides the rule.
PRIORS = tuple(prior_families.LEGACY)
# The parameterizations a model can be sampled in, the one list of their names (``models`` and ``config`` take it
# from here, pure Python, so that the config is checked before JAX starts): the marginal (mu, log tau), and the
# joint (mu, log tau, theta) centred or non-centred.
PARAMETERIZATIONS = ("marginal", "centered", "noncentered")
# Quantities whose k-th moment exists with tau's k-th under a flat prior on mu (their conditional spread ~ tau).
_LIKE_TAU_WHEN_FLAT = ("mu", "tau", "theta_out")
_LIKE_TAU_ALWAYS = ("tau", "theta_out")


class Missing(NamedTuple):
    """A moment that does not exist: ``statistic`` ("mean" or "sd") of ``quantity``, which needs
    ``needs`` schools in the likelihood."""

    statistic: str
    quantity: str
    needs: int


def _spec(prior) -> prior_families.Spec:
    return prior_families.spec(prior)


def _offset(spec: prior_families.Spec):
    """c with p(tau | y) ~ tau^-(J + c) at large tau: the prior's tail a, one less under a flat prior on mu
    (integrating mu out leaves V_mu^(1/2) ~ tau / sqrt(J)); None for a tail faster than any power."""
    if math.isinf(spec.tail):
        return None
    return spec.tail - (1.0 if spec.mu_flat else 0.0)


def tail_exponent(prior, num_schools) -> float:
    """a such that p(tau | y) ~ c tau^-a as tau -> inf (``math.inf`` for a tail faster than any power, the
    half-normal's Gaussian tail)."""
    offset = _offset(_spec(prior))
    return math.inf if offset is None else num_schools + offset


def _fewest(offset: float, order: int, tail_log: bool) -> int:
    # E[tau^k] < inf iff J + offset > k + 1 (or >= with the log-t_5's extra log factor); never fewer than 0.
    bound = order + 1 - offset
    return max(math.ceil(bound) if tail_log else math.floor(bound) + 1, 0)


def min_schools(prior, quantity: str, order: int) -> int:
    """The fewest schools in the likelihood for E[|quantity|^order | y] to be finite (order 0: the posterior
    is proper). ``prior`` is a kind string or a :class:`jaxschools.core.models.Prior`. See the module docstring."""
    spec = _spec(prior)
    if quantity not in QUANTITIES:
        raise ValueError(f"unknown quantity {quantity!r}; expected one of {', '.join(QUANTITIES)}")
    offset = _offset(spec)
    proper = 0 if offset is None else _fewest(offset, 0, spec.tail_log)
    like_tau = _LIKE_TAU_WHEN_FLAT if spec.mu_flat else _LIKE_TAU_ALWAYS
    if quantity in like_tau and offset is not None:
        return max(_fewest(offset, order, spec.tail_log), proper)
    return proper


def exists(prior, quantity: str, order: int, num_schools):
    """Whether E[|quantity|^order | y] is finite with ``num_schools`` schools in the likelihood: a bool, or an
    array of them when ``num_schools`` is an array (NumPy or a JAX tracer: this is a comparison only)."""
    return num_schools >= min_schools(prior, quantity, order)


def nonexistent(prior, num_schools: int, quantities=("mu", "tau", "log_tau", "theta")) -> list[Missing]:
    """The means and sds of ``quantities`` that do not exist with ``num_schools`` schools in the likelihood."""
    return [
        Missing(statistic, quantity, min_schools(prior, quantity, order))
        for statistic, order in STATISTICS.items()
        for quantity in quantities
        if not exists(prior, quantity, order, num_schools)
    ]


# The summary keys that are moments, and the moments each needs: an MCSE of a mean needs the variance as well
# (Vehtari et al. 2021). summary.json spells the theta block's MCSE "mean_mcse".
MOMENT_KEYS = {"mean": ("mean",), "sd": ("sd",), "mcse_mean": ("mean", "sd"), "mean_mcse": ("mean", "sd")}


def defined(prior, quantity: str, key: str, num_schools, observed=None):
    """Whether the summary ``key`` (a key of :data:`MOMENT_KEYS`) of ``quantity`` exists with ``num_schools`` in
    the likelihood. For ``quantity = "theta"`` with ``observed`` (per-school booleans: the mask), per school:
    theta's rule where the school is in the likelihood, theta_out's (tau's conditions) where it is not.

    Comparisons and boolean operators only, so ``num_schools`` and ``observed`` may be Python, NumPy or JAX values
    (traced ones under ``vmap``) and the answer is of the same kind.
    """
    ok = True
    for statistic in MOMENT_KEYS[key]:
        order = STATISTICS[statistic]
        if quantity == "theta" and observed is not None:
            here = ((observed & exists(prior, "theta", order, num_schools))
                    | (~observed & exists(prior, "theta_out", order, num_schools)))
        else:
            here = exists(prior, quantity, order, num_schools)
        ok = ok & here
    return ok


def null_nonexistent(block: dict, prior, quantity: str, num_schools, where, observed=None) -> dict:
    """A copy of ``block`` (a summary of ``quantity``: ``{"mean": ..., "sd": ..., "q025": ...}``) with every moment
    that does not exist (:func:`defined`) replaced by NaN, which summary.json writes as null.

    The one rule for nulling, used by the exact summary, the analysis's summary and every sweep cell; ``where``
    is ``numpy.where`` or ``jax.numpy.where`` (called ``where(ok, value, nan)``; this module imports neither), so a
    traced J selects values instead of branching. Keys that are not moments (quantiles, probabilities) and
    values that are None are kept.
    """
    out = dict(block)
    for key in MOMENT_KEYS:
        if out.get(key) is not None:
            out[key] = where(defined(prior, quantity, key, num_schools, observed), out[key], math.nan)
    return out


_LABELS = {
    "mu": "mu",
    "tau": "tau",
    "log_tau": "log tau",
    "theta": "theta",
    "theta_out": "theta and y of a new or left-out school",
    "shrinkage": "the shrinkage B",
}


def messages(prior, num_schools: int, quantities=("mu", "tau", "log_tau", "theta")) -> list[str]:
    """One sentence per (statistic, condition) naming the moments that do not exist and what they need, e.g.
    ``"sd(mu) and sd(tau) do not exist for the flat prior with J = 4 schools (need J >= 5)"``."""
    _spec(prior)  # ValueError for an unknown kind
    kind = getattr(prior, "kind", prior)
    groups: dict[tuple[str, int], list[str]] = {}
    for missing in nonexistent(kind, num_schools, quantities):
        groups.setdefault((missing.statistic, missing.needs), []).append(missing.quantity)
    out = []
    schools = f"J = {num_schools} school{'' if num_schools == 1 else 's'}"
    for (statistic, needs), names in groups.items():
        listed = [f"{statistic}({_LABELS[name]})" for name in names]
        subject = listed[0] if len(listed) == 1 else ", ".join(listed[:-1]) + " and " + listed[-1]
        verb, need = ("does", "needs") if len(listed) == 1 else ("do", "need")
        why = ": the posterior is improper" if num_schools < min_schools(kind, "tau", 0) else ""
        out.append(f"{subject} {verb} not exist for the {kind} prior with {schools} ({need} J >= {needs}{why})")
    return out


def __dir__():
    # The public names only, not the imports (``dir(js.diagnostics)`` lists no ``jax`` or ``jnp``).
    return list(__all__)
