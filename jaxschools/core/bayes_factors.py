r"""The marginal likelihood and the Bayes factors for tau = 0 and mu = 0, exact (on the quadrature rule of
:mod:`jaxschools.core.exact`), with the minimum Bayes factors.

Model: y_j | mu, tau ~ N(mu, sigma_j^2 + tau^2) (theta integrated out), p(mu, tau) = p(mu) p(tau). Two marginal
likelihoods of one parameter, each the other integrated out against its prior:

.. math::
    p(y \mid \tau) = \int p(y \mid \mu, \tau)\, p(\mu)\, d\mu, \qquad
    p(y \mid \mu) = \int p(y \mid \mu, \tau)\, p(\tau)\, d\tau, \qquad
    p(y) = \int p(y \mid \tau)\, p(\tau)\, d\tau.

* p(y | tau) is closed form: the integrand is Gaussian in mu (BDA3 eq. 5.21 without p(tau)), which is the
  exact module's h(tau) under the same mu prior and a uniform one on tau. At tau = 0 it is the common-effect
  model's marginal likelihood.
* p(y | mu) is the one-dimensional integral over tau; it is read off the posterior under a *flat* mu prior and
  the same tau prior: that posterior's normalising constant is Z_flat = integral of p(y | mu) d mu, and its
  marginal density of mu is p(y | mu) / Z_flat, a Gaussian mixture over the nodes in closed form, so
  log p(y | mu) = log Z_flat + log p_flat(mu | y), exactly, at any mu (0 included, however far in the tail:
  the mixture density is summed in log space).

Then (Kass and Raftery 1995; as bayesmeta reports them, Röver 2020, section 2.6):

* ``tau0`` = p(y | tau = 0) / p(y) and ``mu0`` = p(y | mu = 0) / p(y), the Bayes factors *for* each hypothesis
  against the random-effects model with both parameters free (small values are evidence against it). They need
  p(y), so a proper prior on both mu and tau; otherwise they are undefined (NaN, null in summary.json): an
  improper prior makes p(y) arbitrary up to its constant.
* ``min_tau0`` = p(y | tau = 0) / max_tau p(y | tau) and ``min_mu0`` = p(y | mu = 0) / max_mu p(y | mu), the
  minimum Bayes factors (Spiegelhalter, Abrams and Myles 2004, section 4.4): the smallest Bayes factor for the
  hypothesis over all priors on the tested parameter, i.e. the most evidence against it that the data can
  give. ``min_mu0`` needs a proper tau prior (p(y | mu) integrates tau against it) and ``min_tau0`` a proper mu
  prior (p(y | tau) integrates mu against it); each is undefined otherwise, bayesmeta's convention.

The maximisers (``tau_ml``, the marginal maximum-likelihood tau under the mu prior, which under a flat mu prior
is the restricted (REML) estimate, p(y | tau) being then the restricted likelihood; ``mu_ml``, under the tau
prior) are found on a grid over the search bracket of :mod:`jaxschools.core.exact` (1,024 points in log tau;
512 over the live nodes' span for mu) refined by golden-section search to ~1e-13 of the grid step; the
maximum of p(y | tau) is compared with its limit at tau = 0 (where it often is: the eight schools' REML
estimate of tau is 0). Everything is pure ``jnp``, jittable and vmappable over datasets.

References: Kass, R. E. and Raftery, A. E. (1995), "Bayes factors", JASA 90, 773-795; Spiegelhalter, D. J.,
Abrams, K. R. and Myles, J. P. (2004), *Bayesian Approaches to Clinical Trials and Health-Care Evaluation*,
Wiley, section 4.4; Röver, C. (2020), "Bayesian random-effects meta-analysis using the bayesmeta R package",
J. Stat. Softw. 93(6).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxschools.core import prior_families
from jaxschools.core._jit import filter_jit
from jaxschools.core.data import Schools
# The quadrature rule and the closed forms given tau are the exact module's; this module only combines them.
from jaxschools.core.exact import (_DEFAULT_NODES, _NEGLIGIBLE_LOG_WEIGHT, _case_weights, _check_num_nodes, _log_h,
                                   _posterior, _search_bracket)
from jaxschools.core.models import Prior, make_prior

__all__ = ["BAYES_FACTORS", "bayes_factors", "undefined", "with_parts"]

# The entries of :func:`bayes_factors` that are Bayes factors, with what each needs.
BAYES_FACTORS = ("tau0", "mu0", "min_tau0", "min_mu0")
_GRID = 1024
_MU_GRID = 512
_GOLDEN_STEPS = 64  # each shrinks the bracket by 0.618: 0.618^64 ~ 4e-14
_INVERSE_PHI = (math.sqrt(5.0) - 1.0) / 2.0


def with_parts(prior: Prior, *, mu: str | None = None, tau: str | None = None) -> Prior:
    """``prior`` with its mu part replaced by ``mu`` (``flat`` or ``normal``) and/or its tau family by ``tau``
    (without a shape); the scales (array leaves) are kept, so this works under ``jit`` and ``vmap``."""
    spec = prior.spec
    shape = None if tau is not None or math.isnan(spec.shape) else spec.shape
    kind = prior_families.kind_of(mu or spec.mu, tau or spec.tau, shape)
    density = prior.tau_log_density if tau is None else None
    return Prior(kind, prior.mu_loc, prior.mu_scale, prior.tau_scale, tau_log_density=density)


def undefined(prior) -> dict:
    """Which of :data:`BAYES_FACTORS` (and ``log_marginal_likelihood``) are undefined for ``prior`` (a kind or a
    :class:`Prior`), each with the reason: a plain-Python decision on the prior's kind, for the report."""
    spec = prior_families.spec(prior)
    reasons = {}
    mu_why = "the flat prior on mu is improper" if spec.mu_flat else None
    tau_why = None if spec.proper else f"the {spec.tau} prior on tau is improper"
    both = mu_why or tau_why
    for key in ("log_marginal_likelihood", "tau0", "mu0"):
        if both:
            reasons[key] = both
    if mu_why:
        reasons["min_tau0"] = mu_why
    if tau_why:
        reasons["min_mu0"] = tau_why
    return reasons


def _golden_max(f, lo, hi):
    """The maximiser of a unimodal ``f`` on [lo, hi] by golden-section search (both interior points evaluated
    each step: a fixed trip count, traceable)."""

    def step(_, bracket):
        a, b = bracket
        c, d = b - _INVERSE_PHI * (b - a), a + _INVERSE_PHI * (b - a)
        left = f(c) >= f(d)
        return jnp.where(left, a, c), jnp.where(left, d, b)

    a, b = jax.lax.fori_loop(0, _GOLDEN_STEPS, step, (lo, hi))
    return 0.5 * (a + b)


def _grid_max(f, lo, hi, num):
    """(argmax, max, at_start) of ``f`` on [lo, hi]: the best of ``num`` grid points, refined between its
    neighbours; ``at_start`` when the best grid point is the first (a maximum at or beyond the lower end)."""
    grid = lo + (hi - lo) * jnp.linspace(0.0, 1.0, num, dtype=lo.dtype)
    values = jax.vmap(f)(grid)
    values = jnp.where(jnp.isnan(values), -jnp.inf, values)
    k = jnp.argmax(values)
    best = _golden_max(f, grid[jnp.maximum(k - 1, 0)], grid[jnp.minimum(k + 1, num - 1)])
    # Keep the grid point if the refinement did not improve on it (a maximum at the bracket's end).
    at_best = f(best)
    better = at_best > values[k]
    return jnp.where(better, best, grid[k]), jnp.maximum(at_best, values[k]), k == 0


def _log_mixture_pdf(log_weights, loc, var, x):
    """log sum_i w_i N(x | loc_i, var_i), in log space (exact far in the tails)."""
    return jax.nn.logsumexp(log_weights - 0.5 * jnp.log(2.0 * math.pi * var) - 0.5 * (x - loc) ** 2 / var)


@filter_jit
def _bayes_factors(data: Schools, prior: Prior, num_nodes: int, log_norm) -> dict:
    dtype = data.y.dtype
    weight = _case_weights(data, None)
    nan = jnp.full((), jnp.nan, dtype)
    spec = prior.spec

    # p(y | tau): the same mu prior, a uniform tau prior (log density 0).
    tau_free = with_parts(prior, tau="uniform")

    def log_lik_tau(log_tau):
        return _log_h(data, tau_free, log_tau, weight)

    log_lik_tau0 = log_lik_tau(jnp.asarray(-jnp.inf, dtype))
    lo, hi = _search_bracket(data, prior)
    log_tau_ml, log_lik_tau_max, at_start = _grid_max(log_lik_tau, lo, hi, _GRID)
    # The bracket starts 40 log units below the smallest scale of the data: a maximum there is the limit tau = 0,
    # and so is one whose value is that at tau = 0 to rounding (p(y | tau) is flat to O(tau^2) there, so a tiny
    # tau may win by a rounding error).
    rounding = 64.0 * jnp.finfo(dtype).eps * jnp.maximum(1.0, jnp.abs(log_lik_tau_max))
    at_zero = at_start | (log_lik_tau0 >= log_lik_tau_max - rounding)
    tau_ml = jnp.where(at_zero, 0.0, jnp.exp(log_tau_ml))
    log_lik_tau_max = jnp.maximum(log_lik_tau_max, log_lik_tau0)

    log_tau0 = log_mu0 = log_min_mu0 = log_evidence = mu_ml = nan
    if spec.proper:  # p(y | mu) integrates tau against its prior: nothing to compute for an improper one
        # p(y | mu) = Z_flat p_flat(mu | y): the posterior under a flat mu prior and the same tau prior.
        flat = _posterior(data, with_parts(prior, mu="flat"), num_nodes, weight)
        live = flat.log_weights > _NEGLIGIBLE_LOG_WEIGHT
        spread = 8.0 * jnp.sqrt(flat.mu_var)
        mu_lo = jnp.min(jnp.where(live, flat.mu_hat - spread, jnp.inf))
        mu_hi = jnp.max(jnp.where(live, flat.mu_hat + spread, -jnp.inf))

        def log_lik_mu(mu):
            return flat.log_norm + _log_mixture_pdf(flat.log_weights, flat.mu_hat, flat.mu_var, mu)

        log_lik_mu0 = log_lik_mu(jnp.zeros((), dtype))
        mu_ml, log_lik_mu_max, _ = _grid_max(log_lik_mu, mu_lo, mu_hi, _MU_GRID)
        log_min_mu0 = log_lik_mu0 - log_lik_mu_max
        if spec.joint_proper:
            log_evidence = _posterior(data, prior, num_nodes, weight).log_norm if log_norm is None else log_norm
            log_tau0, log_mu0 = log_lik_tau0 - log_evidence, log_lik_mu0 - log_evidence
    log_min_tau0 = log_lik_tau0 - log_lik_tau_max if spec.mu == "normal" else nan
    logs = {"tau0": log_tau0, "mu0": log_mu0, "min_tau0": log_min_tau0, "min_mu0": log_min_mu0}
    return {
        "log_marginal_likelihood": log_evidence,
        **{key: jnp.exp(value) for key, value in logs.items()},
        **{f"log_{key}": value for key, value in logs.items()},
        "tau_ml": tau_ml,
        "mu_ml": mu_ml,
    }


def bayes_factors(data: Schools, prior="flat", num_nodes: int = _DEFAULT_NODES, *, post=None) -> dict:
    """The marginal likelihood and the (minimum) Bayes factors of tau = 0 and mu = 0 (module docstring).

    Returns ``{"log_marginal_likelihood", "tau0", "mu0", "min_tau0", "min_mu0", "log_tau0", ..., "tau_ml",
    "mu_ml"}`` (scalars; each Bayes factor also as its natural log, which does not underflow). An entry that
    the prior leaves undefined is NaN (:func:`undefined` says why); ``mu_ml`` needs a proper tau prior.
    Traceable (``vmap`` over datasets); the studies are those with ``mask`` True. ``post``: the
    :func:`jaxschools.core.exact.posterior` of the same data and prior when the caller has it (its normalising
    constant is p(y); otherwise it is computed here).
    """
    _check_num_nodes(num_nodes)
    return _bayes_factors(data.without_names(), make_prior(prior), num_nodes,
                          None if post is None else post.log_norm)


def __dir__():
    return list(__all__)
