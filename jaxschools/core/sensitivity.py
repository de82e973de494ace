r"""Exact sensitivities of the posterior: derivatives with respect to the data, case weights and prior (issue 15).

"How much does this answer depend on each input" answered exactly and in one compiled call, by automatic
differentiation of the exact posterior (:mod:`jaxschools.core.exact`, whose docstring gives how each quantity
differentiates: quantiles implicitly, the integration range held fixed), instead of refitting.

**Inputs** phi (:class:`Inputs`): the estimates y_j and standard errors sigma_j, the case weights w_j (school
j's marginal likelihood term raised to w_j, :mod:`jaxschools.core.exact`), and the prior's leaves mu_loc,
mu_scale, tau_scale (:class:`jaxschools.core.models.Prior`). The flat prior has no scales: their derivatives
are NaN ("not applicable"), never a 0 that would read as "no influence".

**Headline quantities** (:class:`Headline`): E[mu], sd(mu), the 95% interval ends of mu and tau, E[tau],
E[theta_j] (all j), P(theta_k > c) for the query school k at a fixed threshold c (default the observed y_k,
held fixed when y_k moves), and log p(y) (proper priors). A moment that does not exist
(:mod:`jaxschools.core.moments`) is NaN and so is its row of derivatives.

:func:`jacobian` returns the values and every d quantity / d input (forward or reverse mode). For the
question "which schools drive the answer", :func:`influence` gives, for each school j,

* the derivative at w = 1 of E[mu], E[tau], E[theta_k] and P(theta_k > c) with respect to w_j
  (the infinitesimal jackknife, or influence function, of the weighted posterior);
* the exact leave-one-out change Q(w_j = 0) - Q(w = 1), computed with the same compiled function
  vmapped over j (w_j = 0 is exactly leaving school j out);
* the first-order prediction of that change, -dQ/dw_j (a linear extrapolation from w_j = 1 to 0), and
  its error: change - prediction = change + dQ/dw_j.

This is the data-dropping question of Nguyen, Giordano, Meager & Broderick (2024): would the conclusion
change if a few data points were dropped? Their approximation is the linear one above; here the exact
answer sits next to it, school by school, so the quality of the approximation is measured, not assumed.

References: Giordano, Broderick & Jordan (2018), "Covariances, robustness, and variational Bayes", JMLR 19;
Giordano, Stephenson, Liu, Jordan & Broderick (2019), "A Swiss army infinitesimal jackknife", AISTATS;
Nguyen, Giordano, Meager & Broderick (2024), "Sensitivity of MCMC-based analyses to small-data removal",
arXiv:2408.07240; Broderick, Giordano & Meager (2020), "An automatic finite-sample robustness metric: when
can dropping a little data make a big difference?", arXiv:2011.14999; Gelman et al., BDA3, section 5.4.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import ndtr

from jaxschools.core import exact, moments, prior_families
from jaxschools.core._jit import filter_jit
from jaxschools.core.data import Schools
from jaxschools.core.models import Prior, make_prior

__all__ = [
    "Inputs", "Headline", "Sensitivity", "Quantities", "Influence", "inputs_of", "headline", "jacobian", "influence",
]

_DEFAULT_NODES = 1024


class Inputs(NamedTuple):
    """What the posterior is differentiated with respect to (also the pytree of one row of a Jacobian)."""

    y: jax.Array  # (J,) estimates
    sigma: jax.Array  # (J,) standard errors
    case_weights: jax.Array  # (J,) w_j on school j's marginal likelihood term (1: the data as given)
    mu_loc: jax.Array  # () prior mean of mu (proper priors)
    mu_scale: jax.Array  # () prior sd of mu
    tau_scale: jax.Array  # () scale of the half-Cauchy / half-normal prior on tau


class Headline(NamedTuple):
    """The headline posterior quantities (in :func:`jacobian`'s result, each field is also an :class:`Inputs`
    of its derivatives, shaped ``field.shape + input.shape``)."""

    mu_mean: jax.Array  # () E[mu | y]
    mu_sd: jax.Array  # () sd(mu | y)
    mu_q025: jax.Array  # () 2.5% quantile of mu
    mu_q975: jax.Array  # () 97.5% quantile of mu
    tau_mean: jax.Array  # () E[tau | y]
    tau_q025: jax.Array  # () 2.5% quantile of tau
    tau_q975: jax.Array  # () 97.5% quantile of tau
    theta_mean: jax.Array  # (J,) E[theta_j | y]
    p_exceeds: jax.Array  # () P(theta_k > c | y)
    log_evidence: jax.Array  # () log p(y); NaN for the flat prior


class Sensitivity(NamedTuple):
    """:func:`jacobian`'s result: the values, their derivatives, and the query they were taken for."""

    value: Headline
    jacobian: Headline  # each field an Inputs: d value / d input
    inputs: Inputs  # the point of differentiation
    query_school: int
    threshold: jax.Array  # c, held fixed


class Quantities(NamedTuple):
    """The quantities whose influence :func:`influence` measures."""

    mu_mean: jax.Array  # E[mu | y]
    tau_mean: jax.Array  # E[tau | y]
    theta_mean: jax.Array  # E[theta_k | y], k the query school
    p_exceeds: jax.Array  # P(theta_k > c | y)


class Influence(NamedTuple):
    """:func:`influence`'s result; every field but ``full`` holds one value per school j, shape (J,)."""

    full: Quantities  # Q at w = 1, scalars
    derivative: Quantities  # dQ / dw_j at w = 1
    loo: Quantities  # Q with school j left out (w_j = 0)
    change: Quantities  # loo - full: the exact leave-one-out change
    linear: Quantities  # -derivative: the first-order prediction of the change
    linear_error: Quantities  # change - linear


def inputs_of(data: Schools, prior="flat", case_weights=None) -> Inputs:
    """The :class:`Inputs` of a dataset and prior (case weights default to ones), in the data's dtype."""
    prior = make_prior(prior)
    dtype = data.y.dtype
    weights = jnp.ones_like(data.y) if case_weights is None else jnp.asarray(case_weights, dtype)
    return Inputs(data.y, data.sigma, weights, *(jnp.asarray(leaf, dtype) for leaf in prior.tree_flatten()[0]))


def headline(inputs: Inputs, mask, kind: str, query_school: int, threshold, num_nodes: int = _DEFAULT_NODES,
             intervals: bool = True) -> Headline:
    """The headline quantities as a pure function of the inputs: what :func:`jacobian` differentiates, for
    your own ``jax.grad``/``jvp``/``vmap``. ``mask`` is the data's, ``kind`` the prior family (static),
    ``threshold`` c (held fixed); ``intervals=False`` leaves the quantile solvers out (the interval ends NaN)."""
    data = Schools.tree_unflatten((), (inputs.y, inputs.sigma, mask))
    prior = Prior.tree_unflatten(kind, (inputs.mu_loc, inputs.mu_scale, inputs.tau_scale))
    post = exact.posterior(data, prior, num_nodes, case_weights=inputs.case_weights)
    w = jnp.exp(post.log_weights)
    mu_mean = jnp.sum(w * post.mu_hat)
    mu_sd = jnp.sqrt(jnp.sum(w * (post.mu_var + (post.mu_hat - mu_mean) ** 2)))
    tau_mean = jnp.sum(w * jnp.exp(post.log_tau))
    theta_mean = w @ post.theta_mean
    k = query_school
    p_exceeds = jnp.sum(w * ndtr((post.theta_mean[:, k] - threshold) / jnp.sqrt(post.theta_var[:, k])))
    nan = jnp.full((), jnp.nan, inputs.y.dtype)
    if intervals:
        q = exact.quantiles(post, jnp.asarray([0.025, 0.975], inputs.y.dtype), theta=False)
        mu_q, tau_q = q["mu"], q["tau"]
    else:  # influence needs no quantiles: leave the solvers out of its compiled function
        mu_q = tau_q = jnp.stack([nan, nan])
    # Moments that do not exist are NaN (the rule of exact.summary, with the weighted count of schools).
    num_schools = exact.num_in_likelihood(data, inputs.case_weights)
    observed = (inputs.case_weights > 0) & mask

    def null(value, quantity, key, observed=None):
        return jnp.where(moments.defined(kind, quantity, key, num_schools, observed), value, jnp.nan)

    return Headline(
        mu_mean=null(mu_mean, "mu", "mean"),
        mu_sd=null(mu_sd, "mu", "sd"),
        mu_q025=mu_q[0],
        mu_q975=mu_q[1],
        tau_mean=null(tau_mean, "tau", "mean"),
        tau_q025=tau_q[0],
        tau_q975=tau_q[1],
        theta_mean=null(theta_mean, "theta", "mean", observed),
        p_exceeds=p_exceeds,
        log_evidence=post.log_evidence,
    )


def _nan_rows(value: Headline, jac: Headline, proper: bool) -> Headline:
    """NaN derivatives where the value is NaN (a moment that does not exist: JAX's where would give 0) and,
    for the flat prior, with respect to the prior scales it does not have."""

    def one(v, row: Inputs):
        def leaf(name, d):
            bad = jnp.isnan(v).reshape(v.shape + (1,) * (d.ndim - v.ndim))
            if not proper and name in ("mu_loc", "mu_scale", "tau_scale"):
                bad = jnp.ones_like(bad)
            return jnp.where(bad, jnp.nan, d)

        return Inputs(*(leaf(name, d) for name, d in zip(Inputs._fields, row)))

    return Headline(*(one(v, row) for v, row in zip(value, jac)))


@filter_jit
def _jacobian(inputs, mask, kind, query_school, threshold, num_nodes, mode):
    f = lambda x: headline(x, mask, kind, query_school, threshold, num_nodes)
    jac = (jax.jacfwd if mode == "forward" else jax.jacrev)(f)(inputs)
    value = f(inputs)
    return value, _nan_rows(value, jac, prior_families.spec(kind).has_prior_scales)


def _threshold(data: Schools, query_school: int, threshold):
    return data.y[query_school] if threshold is None else jnp.asarray(threshold, data.y.dtype)


def jacobian(data: Schools, prior="flat", *, query_school: int = 0, threshold=None, case_weights=None,
             num_nodes: int = _DEFAULT_NODES, mode: str = "reverse") -> Sensitivity:
    r"""The headline quantities and their exact derivatives with respect to every input.

    ``result.jacobian.<quantity>.<input>`` is d quantity / d input, shaped ``quantity.shape + input.shape``:
    e.g. ``jacobian.theta_mean.y[i, j]`` = d E[theta_i | y] / d y_j (the influence matrix),
    ``jacobian.mu_q975.tau_scale`` = d (97.5% quantile of mu) / d tau_scale.

    Args:
      data: the dataset (its mask is kept: a masked school has weight 0 and zero derivatives).
      prior: a name or a :class:`~jaxschools.core.models.Prior`; under the flat prior the derivatives with
        respect to the prior scales are NaN (it has none) and so is log p(y).
      query_school, threshold: k and c of P(theta_k > c); c defaults to the observed y_k and is held fixed.
      case_weights: the point w at which to differentiate (default ones: the data as given).
      num_nodes: the quadrature rule (:func:`jaxschools.core.exact.posterior`).
      mode: ``"reverse"`` (``jax.jacrev``: one pass per output, J + 9) or ``"forward"`` (``jax.jacfwd``: one
        per input, 3 J + 3); the same numbers either way.

    Compiled once per shape, prior family, query school and mode; vmappable over datasets.
    """
    if mode not in ("forward", "reverse"):
        raise ValueError(f"mode must be 'forward' or 'reverse', got {mode!r}")
    prior = make_prior(prior)
    inputs = inputs_of(data, prior, case_weights)
    c = _threshold(data, query_school, threshold)
    value, jac = _jacobian(inputs, data.mask, prior.kind, int(query_school), c, int(num_nodes), mode)
    return Sensitivity(value, jac, inputs, int(query_school), c)


@filter_jit
def _influence(inputs, mask, kind, query_school, threshold, num_nodes):
    def quantities(weights):
        h = headline(inputs._replace(case_weights=weights), mask, kind, query_school, threshold, num_nodes,
                     intervals=False)
        return Quantities(h.mu_mean, h.tau_mean, h.theta_mean[query_school], h.p_exceeds)

    ones = jnp.ones_like(inputs.y)
    full = quantities(ones)
    derivative = jax.jacfwd(quantities)(ones)
    # Leave-one-out: row j of 1 - I is w with w_j = 0; one vmapped call for all j.
    loo = jax.vmap(quantities)(ones - jnp.eye(ones.shape[-1], dtype=ones.dtype))
    # Without school j the posterior may be improper (the flat prior with fewer than 3 schools left): the
    # quadrature would return its truncated range's numbers, so those rows are NaN, not a finite guess.
    in_likelihood = jnp.asarray(mask, jnp.int32)
    improper = jnp.sum(in_likelihood) - in_likelihood < moments.min_schools(kind, "tau", 0)
    loo = jax.tree_util.tree_map(lambda value: jnp.where(improper, jnp.nan, value), loo)
    change = jax.tree_util.tree_map(lambda l, f: l - f, loo, full)
    linear = jax.tree_util.tree_map(jnp.negative, derivative)
    error = jax.tree_util.tree_map(jnp.subtract, change, linear)
    return Influence(full, derivative, loo, change, linear, error)


def influence(data: Schools, prior="flat", *, query_school: int = 0, threshold=None,
              num_nodes: int = _DEFAULT_NODES) -> Influence:
    r"""The influence of each school on E[mu], E[tau], E[theta_k] and P(theta_k > c): derivative, exact
    leave-one-out change, and the error of the linear approximation (module docstring).

    With Q(w) a posterior quantity under case weights w (Q(1) the analysis as given),

    .. math:: Q(1 - e_j) - Q(1) \;\approx\; -\frac{\partial Q}{\partial w_j}\Big|_{w=1},

    ``change`` is the left side computed exactly (w_j = 0 is exactly leaving school j out), ``linear`` the
    right side and ``linear_error`` their difference. A masked school is already out: its derivative and
    change are 0. With the flat prior, dropping a school can leave a moment undefined (E[tau] needs J >= 4
    schools in the likelihood) or the posterior improper (J - 1 < 3): that school's ``loo`` and ``change``
    are NaN.

    Args:
      data, prior: as :func:`jacobian`.
      query_school, threshold: k and c; c defaults to the observed y_k, fixed for every j.
      num_nodes: the quadrature rule.

    Compiled once per shape, prior family and query school: the derivative (``jax.jacfwd`` over the J
    weights) and the J leave-one-out posteriors (``jax.vmap``) are one call.
    """
    prior = make_prior(prior)
    inputs = inputs_of(data, prior)
    c = _threshold(data, query_school, threshold)
    return _influence(inputs, data.mask, prior.kind, int(query_school), c, int(num_nodes))


def __dir__():
    # The public names only, not the imports (``dir(js.diagnostics)`` lists no ``jax`` or ``jnp``).
    return list(__all__)
