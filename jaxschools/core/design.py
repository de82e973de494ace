r"""Design of a new study: how precise should it be, given what it costs? By gradient through the exact posterior.

A new study (school J + 1) will report y_new with standard error sigma_new = unit_sd / sqrt(n) (n subjects, each
with sd ``unit_sd``). Before it is run, y_new is unknown; its law is the current posterior predictive (BDA3
section 5.5, "a new school"): theta_new | mu, tau ~ N(mu, tau^2), y_new | theta_new ~ N(theta_new, sigma_new^2).
The design criterion is a *preposterior* expectation (Lindley 1956; Chaloner & Verdinelli 1995) of what the
posterior of mu will be once y_new is in:

* ``"sd"``: E_{y_new}[sd(mu | y, y_new)], the expected posterior sd of mu;
* ``"var"``: E_{y_new}[Var(mu | y, y_new)] (by the law of total variance, Var(mu | y) - Var(E[mu | y, y_new]));
* ``"information"``: the expected information about mu, E_{y_new}[KL(p(mu | y, y_new) || p(mu | y))] =
  I(mu; y_new | y) (Lindley 1956), in nats.

**Exactness.** Everything is conditionally Gaussian given tau. On the exact rule of the current posterior
(:func:`jaxschools.core.exact.posterior`: nodes tau_n with normalised weights w_n, mu | tau_n, y ~ N(m_n, V_n)):

.. math::
    y_{new} \mid \tau_n, y \sim N(m_n, c_n), \quad c_n = V_n + \tau_n^2 + \sigma_{new}^2;\qquad
    w_n' \propto w_n\, N(y_{new} \mid m_n, c_n),

    \mu \mid \tau_n, y, y_{new} \sim N\Big(m_n + \frac{V_n}{c_n}(y_{new} - m_n),\;
    V_n \frac{\tau_n^2 + \sigma_{new}^2}{c_n}\Big).

These are exactly the posterior of the augmented data (J + 1 schools) on the same nodes: the new study's
marginal likelihood term N(y_new | mu, tau^2 + sigma_new^2) reweights the rule and updates mu's Gaussian
(tests/test_design.py checks it against :func:`exact.posterior` of the augmented data). The predictive of
y_new is the Gaussian mixture sum_n w_n N(m_n, c_n), so the expectation over y_new is a one-dimensional
integral, taken **by quadrature, never by Monte Carlo**: the trapezoid rule in u with y_new = centre + S
sinh(u) (``num_points`` points; S the narrowest component's sd). The map matters: the components' sds span
orders of magnitude (tau_n runs over the whole posterior of tau, whose tail is a power of tau under the flat
prior), so the integrand has structure on the scale S near the centre and only on ever wider scales further
out; the sinh map puts the points S h apart in the middle and |y_new| h apart in the tails (Gauss-Hermite
per component, tried first, converged slowly for that reason: 1e-6 relative at 40 nodes for the eight
schools). The criterion is a deterministic, smooth function of sigma_new whose gradient ``jax.grad`` takes
through the closed forms above (the current rule does not depend on sigma_new, so no exact draw and no
quantile is differentiated). The information is I(mu; y_new | y) = H(y_new | y) - E_mu[H(y_new | mu, y)];
given mu, y_new - mu is the scale mixture sum_l p(tau_l | mu, y) N(0, tau_l^2 + sigma_new^2), whose entropy
is one more sinh rule, averaged over a sinh rule for p(mu | y) (cost M^2 N for M points and N nodes,
against M N for sd and var).

**Cost and the optimum.** More data never increases the expected posterior variance (nor decreases the
expected information), so without a cost the best study is infinitely large. :func:`optimal_sample_size`
minimises, over n > 0,

.. math::
    L(n) = U(n) + \text{cost} \cdot n \quad (U = \text{the expected sd or variance}), \qquad
    L(n) = -I(n) + \text{cost} \cdot n \quad (\text{information}),

cost in the criterion's units per subject (units of mu, of mu^2, or nats). It runs optax's L-BFGS on x = log(n
/ n_ref), n_ref = unit_sd^2 / s_pool^2 (a study as precise as all current studies pooled; s_pool = (sum_j
sigma_j^-2)^-1/2), with L divided by its value at n = 0 so that one tolerance fits every scale. As n -> 0
the study tells nothing (L -> U(0), the current sd or variance, or 0 for information) and L(n) - L(0) ~ (cost -
slope) n: when the cost exceeds what the first subjects are worth, the minimum is the **boundary n = 0** (no
study is worth its cost), reported as such (``boundary=True``, n exactly 0, the loss L(0)), never as a small n.
It is detected as in :mod:`jaxschools.core.empirical_bayes`: the search stops once n < ``N_FLOOR`` n_ref with
the gradient pointing at 0, and the boundary is declared whenever L(0) is not above the loss found.

References: D. V. Lindley (1956), On a measure of the information provided by an experiment, *Ann. Math.
Statist.* 27, 986-1005; K. Chaloner & I. Verdinelli (1995), Bayesian experimental design: a review, *Statist.
Sci.* 10, 273-304; Gelman et al., *Bayesian Data Analysis*, 3rd ed., sections 5.4-5.5.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxschools.core import exact, moments
from jaxschools.core._jit import filter_jit
from jaxschools.core._optimize import minimize
from jaxschools.core.data import Schools
from jaxschools.core.models import make_prior

__all__ = [
    "OBJECTIVES",
    "N_FLOOR",
    "BOUNDARY_TOL",
    "Preposterior",
    "SampleSize",
    "preposterior",
    "optimal_sample_size",
]

OBJECTIVES = ("sd", "var", "information")
# n below this fraction of n_ref (sigma_new 1000 times the pooled standard error), with the gradient pointing at
# 0, ends the search: such a study moves the criterion by ~1e-6 of its value, and the L(0) comparison decides.
N_FLOOR = 1e-6
# How far (relative to L(0)) the loss found may sit below L(0) and still be called the boundary: above the
# quadrature's error, far below any difference a design decision could rest on.
BOUNDARY_TOL = 1e-9
_LOG_2PI = math.log(2.0 * math.pi)
# The rules over y_new and mu reach this many sds beyond every live component (Phi(-12) ~ 2e-33); nodes whose
# normalised log weight is below _NEGLIGIBLE_LOG_WEIGHT (as in exact.py) carry nothing a float64 sum could see.
_REACH = 12.0
_NEGLIGIBLE_LOG_WEIGHT = -45.0


class Preposterior(NamedTuple):
    """Expectations over the unknown y_new of a new study (module docstring); arrays.

    ``sd``: E[sd(mu | y, y_new)]; ``var``: E[Var(mu | y, y_new)]; ``var_of_mean``: Var(E[mu | y, y_new]) (with
    ``var``, Var(mu | y) by the law of total variance); ``information``: E[KL(p(mu | y, y_new) || p(mu | y))]
    in nats (NaN unless asked for); ``current_sd``: sd(mu | y), the criterion with no study; ``mass``: the
    predictive's integral on the rule over y_new (1 up to the quadrature error: a check).
    """

    sd: jax.Array
    var: jax.Array
    var_of_mean: jax.Array
    information: jax.Array
    current_sd: jax.Array
    mass: jax.Array


class SampleSize(NamedTuple):
    """The result of :func:`optimal_sample_size`; arrays.

    ``n``: the best sample size (0 exactly at the boundary: no study is worth its cost); ``sigma_new``:
    unit_sd / sqrt(n) (inf at the boundary); ``criterion``: the expected sd, variance or information at n;
    ``loss``: criterion + cost n (-information + cost n), L(0) at the boundary; ``no_study_loss``: L(0);
    ``grad_norm``: |dL/dx| / |L(0)| at the last iterate (x = log(n / n_ref)); ``iterations``; ``converged``:
    the search ended properly (gradient test, or the boundary reached with the gradient pointing at it);
    ``boundary``: the minimum is n -> 0.
    """

    n: jax.Array
    sigma_new: jax.Array
    criterion: jax.Array
    loss: jax.Array
    no_study_loss: jax.Array
    grad_norm: jax.Array
    iterations: jax.Array
    converged: jax.Array
    boundary: jax.Array


class _Rule(NamedTuple):
    """The current posterior on its nodes: what the preposterior needs of :class:`exact.ExactPosterior`."""

    log_weights: jax.Array  # (N,) normalised
    tau2: jax.Array  # (N,) tau_n^2
    mu_hat: jax.Array  # (N,) m_n
    mu_var: jax.Array  # (N,) V_n


def _rule(post) -> _Rule:
    return _Rule(post.log_weights, jnp.exp(2.0 * post.log_tau), post.mu_hat, post.mu_var)


def _log_normal(x, mean, var):
    return -0.5 * (_LOG_2PI + jnp.log(var) + (x - mean) ** 2 / var)


def _mixture_moments(log_weights, mean, var):
    """Mean and variance of sum_n w_n N(mean_n, var_n) along the last axis (no E[x^2] - E[x]^2 cancellation)."""
    w = jnp.exp(log_weights)
    m = jnp.sum(w * mean, axis=-1)
    return m, jnp.sum(w * (var + (mean - m[..., None]) ** 2), axis=-1)


def _sinh_rule(log_weights, mean, var, num_points: int):
    r"""Points and weights for integrals against the mixture sum_n w_n N(mean_n, var_n): the trapezoid rule in u,
    x = centre + S sinh(u), S the narrowest live component's sd, u in [-U, U] with S sinh(U) reaching
    ``_REACH`` sds beyond every live component. Near the centre the points are S h apart (h the step in u,
    resolving the narrowest component); far out they spread like |x|, following the widest components' scales,
    so a mixture whose sds span many orders of magnitude (heavy tails) is covered by a few hundred points.
    The integrands are smooth and decay past the ends, where the trapezoid rule converges exponentially."""
    live = log_weights > _NEGLIGIBLE_LOG_WEIGHT
    centre = jnp.sum(jnp.exp(log_weights) * mean)
    sd = jnp.sqrt(var)
    scale = jnp.min(jnp.where(live, sd, jnp.inf))
    reach = jnp.max(jnp.where(live, jnp.abs(mean - centre) + _REACH * sd, 0.0))
    u_max = jnp.arcsinh(reach / scale)
    u = jnp.linspace(-1.0, 1.0, num_points, dtype=mean.dtype) * u_max
    step = 2.0 * u_max / (num_points - 1)
    return centre + scale * jnp.sinh(u), step * scale * jnp.cosh(u)


def _preposterior(rule: _Rule, sigma2, num_points: int, information: bool) -> Preposterior:
    lw, tau2, m, v = rule
    dtype = m.dtype
    a = tau2 + sigma2  # Var(y_new | mu, tau_n)
    c = v + a  # Var(y_new | tau_n, y)
    y_new, dy = _sinh_rule(lw, m, c, num_points)  # (M,) points for the predictive sum_n w_n N(m_n, c_n)
    log_joint = lw + _log_normal(y_new[:, None], m, c)  # (M, N): w_n N(y_new | m_n, c_n)
    log_pred = jax.nn.logsumexp(log_joint, axis=1)  # log p(y_new | y)
    # The augmented posterior (J + 1 schools) on the same nodes: reweighted, and mu's Gaussian updated.
    means, variances = _mixture_moments(
        log_joint - log_pred[:, None], m + (v / c) * (y_new[:, None] - m), v * a / c
    )
    weight = dy * jnp.exp(log_pred)  # the predictive's quadrature weights over y_new
    mu_mean, mu_var = _mixture_moments(lw, m, v)
    info = jnp.full((), jnp.nan, dtype)
    if information:
        info = _information(rule, a, num_points) - jnp.sum(weight * log_pred)
    return Preposterior(
        sd=jnp.sum(weight * jnp.sqrt(variances)),
        var=jnp.sum(weight * variances),
        var_of_mean=jnp.sum(weight * (means - mu_mean) ** 2),
        information=info,
        current_sd=jnp.sqrt(mu_var),
        mass=jnp.sum(weight),
    )


def _information(rule: _Rule, a, num_points: int):
    r"""E_mu[E[log p(y_new | mu, y) | mu]] = -E_mu[H(y_new | mu, y)]: given mu, y_new - mu is the scale mixture
    sum_l pi_l(mu) N(0, a_l), pi_l(mu) = w_l N(mu | m_l, V_l) / p(mu | y), a_l = tau_l^2 + sigma_new^2. Its
    entropy on a sinh rule in r = y_new - mu (the same for every mu), then the average over mu on a sinh rule
    for p(mu | y): M^2 N terms for M points and N nodes."""
    lw, _, m, v = rule
    mu, dmu = _sinh_rule(lw, m, v, num_points)
    log_mu = lw + _log_normal(mu[:, None], m, v)  # (M, N): w_l N(mu | m_l, V_l)
    log_p_mu = jax.nn.logsumexp(log_mu, axis=1)
    log_pi = log_mu - log_p_mu[:, None]
    r, dr = _sinh_rule(lw, jnp.zeros_like(a), a, num_points)
    log_phi = _log_normal(r[:, None], 0.0, a)  # (R, N)

    def neg_entropy(log_pi_mu):
        log_f = jax.nn.logsumexp(log_pi_mu + log_phi, axis=1)  # (R,) log p(y_new = mu + r | mu, y)
        return jnp.sum(dr * jnp.exp(log_f) * log_f)

    # checkpoint: reverse mode recomputes each (R, N) slice instead of storing M of them.
    values = jax.lax.map(jax.checkpoint(neg_entropy), log_pi, batch_size=16)
    return jnp.sum(dmu * jnp.exp(log_p_mu) * values)


def _check_common(data: Schools, prior, objective: str, num_nodes, num_points):
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; expected one of {', '.join(OBJECTIVES)}")
    for name, value, low in (("num_nodes", num_nodes, 32), ("num_points", num_points, 16)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if num_nodes % 32:
        raise ValueError(f"num_nodes must be a positive multiple of 32 (exact.posterior's rule), got {num_nodes}")
    prior = make_prior(prior)
    if not isinstance(data.mask, jax.core.Tracer) and np.ndim(data.mask) == 1:
        num_schools = int(np.sum(np.asarray(data.mask)))
        # The sd and variance of mu must exist now (the criterion at n = 0); the posterior must be proper.
        order = 0 if objective == "information" else 2
        needs = moments.min_schools(prior, "mu", order)
        if num_schools < needs:
            what = "the posterior is improper" if order == 0 else "the posterior variance of mu does not exist"
            raise ValueError(
                f"{what} under the {prior.kind} prior with {num_schools} schools in the likelihood (needs "
                f"{needs}): the design criterion {objective!r} is undefined"
            )
    return prior


def _positive(name, value):
    if isinstance(value, jax.core.Tracer) or np.ndim(value) != 0:
        return
    value = float(value)
    if not (math.isfinite(value) and value > 0.0):
        raise ValueError(f"{name} must be finite and > 0, got {value}")


def preposterior(
    data: Schools,
    prior="flat",
    sigma_new=1.0,
    *,
    information: bool = False,
    num_nodes: int = 1024,
    num_points: int = 256,
) -> Preposterior:
    """Expected posterior sd, variance (and information) of mu after a new study with standard error sigma_new.

    See the module docstring. ``sigma_new`` is a scalar or a 1-D array (the criterion at each value, on one
    exact rule: fields shaped like ``sigma_new``). Differentiable in ``sigma_new`` (and in the data, through the
    exact rule). ``information=True`` adds the expected KL divergence (M^2 N cost).
    """
    _check_common(data, prior, "information" if information else "var", num_nodes, num_points)
    if not isinstance(sigma_new, jax.core.Tracer) and np.ndim(sigma_new) <= 1:
        values = np.asarray(sigma_new, float).reshape(-1)
        if not (np.all(np.isfinite(values)) and np.all(values > 0.0)):
            raise ValueError(f"sigma_new must be finite and > 0, got {sigma_new}")
    if np.ndim(sigma_new) > 1:
        raise ValueError(f"sigma_new must be a scalar or a 1-D array, got shape {np.shape(sigma_new)}")
    sigma2 = jnp.asarray(sigma_new, data.y.dtype) ** 2
    return _preposterior_jit(data.without_names(), make_prior(prior), sigma2, num_nodes, num_points, information)


@filter_jit
def _preposterior_jit(data, prior, sigma2, num_nodes, num_points, information):
    # The exact rule inside the compiled function: only the fields used here are computed (the full eager
    # posterior, with its theta moments and error rule, costs twice as much to compile).
    rule = _rule(exact.posterior(data, prior, num_nodes))
    if sigma2.ndim == 1:
        return jax.vmap(lambda s2: _preposterior(rule, s2, num_points, information))(sigma2)
    return _preposterior(rule, sigma2, num_points, information)


def optimal_sample_size(
    data: Schools,
    prior="flat",
    *,
    unit_sd,
    cost,
    objective: str = "sd",
    n_start=None,
    num_nodes: int = 1024,
    num_points: int = 256,
    gtol: float = 1e-8,
    max_iterations: int = 100,
) -> SampleSize:
    """The sample size n of one new study (sigma_new = unit_sd / sqrt(n)) minimising criterion + cost n.

    Args:
      data, prior: the current studies and the prior (any family; the posterior must have the criterion).
      unit_sd: the sd of one subject's outcome, in the units of y (> 0).
      cost: the price of one subject in the criterion's units (of mu for ``sd``, mu^2 for ``var``, nats for
        ``information``); > 0 (with no cost the best study is infinite).
      objective: ``sd`` (default), ``var`` or ``information`` (module docstring).
      n_start: the first n (default n_ref = unit_sd^2 / s_pool^2).
      num_nodes, num_points: the exact rule's nodes and the points of the sinh rules over y_new (and mu).
      gtol: convergence when |dL/d log n| / |L(0)| is at most this.
      max_iterations: L-BFGS iterations at most.

    Returns:
      A :class:`SampleSize`; ``boundary=True`` with ``n`` 0 when no study is worth its cost.

    Raises:
      ValueError: an unknown objective, a non-positive or non-finite ``unit_sd``, ``cost`` or ``n_start``, bad
      ``num_nodes``, ``num_points``, ``gtol`` or ``max_iterations``, or a posterior without the criterion.
    """
    _check_common(data, prior, objective, num_nodes, num_points)
    _positive("unit_sd", unit_sd)
    _positive("cost", cost)
    if n_start is not None:
        _positive("n_start", n_start)
    if not (isinstance(gtol, (int, float)) and math.isfinite(gtol) and gtol > 0):
        raise ValueError(f"gtol must be a finite number > 0, got {gtol!r}")
    if isinstance(max_iterations, bool) or not isinstance(max_iterations, int) or max_iterations < 1:
        raise ValueError(f"max_iterations must be an integer >= 1, got {max_iterations!r}")
    dtype = data.y.dtype
    n_start = None if n_start is None else jnp.asarray(n_start, dtype)
    out = _optimal_jit(
        data.without_names(), make_prior(prior), jnp.asarray(unit_sd, dtype), jnp.asarray(cost, dtype), n_start,
        objective, num_nodes, num_points, float(gtol), max_iterations,
    )
    return SampleSize(*out)


@filter_jit
def _optimal_jit(data, prior, unit_sd, cost, n_start, objective, num_nodes, num_points, gtol, max_iterations):
    information = objective == "information"
    rule = _rule(exact.posterior(data, prior, num_nodes))
    log_prec = jnp.where(data.mask, -2.0 * jnp.log(jnp.where(data.mask, data.sigma, 1.0)), -jnp.inf)
    n_ref = unit_sd**2 * jnp.exp(jax.nn.logsumexp(log_prec))
    n_start = n_ref if n_start is None else n_start

    def criterion(n):
        pre = _preposterior(rule, unit_sd**2 / n, num_points, information)
        return {"sd": pre.sd, "var": pre.var, "information": pre.information}[objective]

    _, current_var = _mixture_moments(rule.log_weights, rule.mu_hat, rule.mu_var)
    no_study = {"sd": jnp.sqrt(current_var), "var": current_var, "information": jnp.zeros_like(current_var)}
    no_study = no_study[objective]  # the criterion without the study
    sign = -1.0 if information else 1.0
    no_study_loss = sign * no_study + 0.0  # L(0) (+ 0.0: no -0.0 for the information's 0)
    # The information's L(0) is 0: scale by 1 nat, the information's own unit, instead.
    scale = jnp.ones_like(no_study) if information else no_study

    def loss(n):
        return sign * criterion(n) + cost * n

    def scaled_loss(x):
        return loss(n_ref * jnp.exp(x[0])) / scale

    x0 = jnp.reshape(jnp.log(n_start / n_ref), (1,))
    found = minimize(scaled_loss, x0, gtol=gtol, max_iterations=max_iterations, floor=math.log(N_FLOOR))
    n = n_ref * jnp.exp(found.x[0])
    best = found.value * scale
    boundary = found.finite & (best >= no_study_loss - BOUNDARY_TOL * scale)
    n = jnp.where(boundary, 0.0, n)
    return (
        n,
        unit_sd / jnp.sqrt(n),
        jnp.where(boundary, no_study, sign * (best - cost * n)),
        jnp.where(boundary, no_study_loss, best),
        no_study_loss,
        found.grad_norm,
        found.iterations,
        found.ended,
        boundary,
    )


def __dir__():
    # The public names only, not the imports.
    return list(__all__)
