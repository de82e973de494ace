r"""Empirical Bayes: the prior hyperparameters that maximise the exact marginal likelihood (type-II maximum likelihood).

For a proper prior mu ~ N(mu_loc, mu_scale^2), tau ~ HalfNormal(tau_scale) or HalfCauchy(0, tau_scale) (see
:class:`~jaxschools.core.models.Prior`), the marginal likelihood of the hyperparameters phi is

.. math::
    p(y \mid \phi) = \int_0^\infty \int_{-\infty}^{\infty} \prod_j N(y_j \mid \mu, \sigma_j^2 + \tau^2)\,
                     N(\mu \mid \mu_{loc}, \mu_{scale}^2)\, p(\tau \mid \tau_{scale})\, d\mu\, d\tau ,

which :func:`jaxschools.core.exact.posterior` evaluates to near machine precision (its ``log_evidence``, the
normalising constant of the quadrature rule in log tau), and which ``jax.grad`` differentiates through that rule.
:func:`fit` maximises it over ``tau_scale`` and/or ``mu_loc`` with optax's L-BFGS and these exact gradients
(parametric empirical Bayes, Morris 1983; the hierarchical-model view in BDA3 section 5.1), in the dimensionless
coordinates

.. math:: x_1 = \log(\tau_{scale} / s_{pool}), \qquad x_2 = (\mu_{loc} - \bar y_w) / \mu_{scale},

with s_pool = (sum_j sigma_j^-2)^-1/2 the pooled standard error (the smallest scale on which p(y | tau) varies)
and y_bar_w the precision-weighted mean, so that one gradient tolerance fits data on any scale.

**The boundary tau_scale -> 0.** As tau_scale -> 0 the prior of tau collapses onto 0 and, p(y | tau) being
bounded and continuous, the marginal likelihood tends to that of complete pooling (theta_j = mu for all j):

.. math::
    p_0(y \mid \mu_{loc}, \mu_{scale}) = \int \prod_j N(y_j \mid \mu, \sigma_j^2)\, N(\mu \mid \mu_{loc},
    \mu_{scale}^2)\, d\mu = N(y \mid \mu_{loc} 1, \mathrm{diag}(\sigma^2) + \mu_{scale}^2 1 1^T),

in closed form (:func:`pooled_log_evidence`; maximised over mu_loc at y_bar_w). When the data show no
heterogeneity beyond their standard errors (the eight schools, whose chi-squared statistic is below its degrees
of freedom), p(y | phi) increases all the way to that limit: the supremum is not attained by any tau_scale > 0,
and in log coordinates the gradient vanishes like tau_scale^2 (half-normal) or tau_scale (half-Cauchy) on the
way, so a gradient test alone would "converge" at an arbitrary small number. :func:`fit` therefore (1) stops when
x_1 falls below ``log(TAU_SCALE_FLOOR)`` with the gradient still pointing towards 0, and (2) whatever made it
stop, compares the log evidence found with the closed-form limit: if the limit is at least as large (to
``BOUNDARY_TOL`` nats), the maximum is at the boundary, reported as ``boundary=True`` with ``tau_scale`` exactly
0, ``log_evidence`` the limit (a supremum, not attained) and ``mu_loc`` the limit's own maximiser y_bar_w. No
finite tau_scale is an estimate then.

**Why not mu_scale.** Over (mu_loc, mu_scale) the supremum is always at mu_scale -> 0: p(y | phi) is the prior
average of L(mu) = p(y | mu), which is at most max_mu L(mu), approached only as the prior of mu collapses onto
the maximiser. A fit over mu_scale would always be a boundary, so :func:`fit` refuses it.

References: C. N. Morris (1983), Parametric empirical Bayes inference: theory and applications, *JASA* 78,
47-55; Gelman et al., *Bayesian Data Analysis*, 3rd ed., section 5.1 and eq. 5.21 (the marginal of tau);
Nocedal & Wright (2006), *Numerical Optimization*, chapters 3 and 7 (L-BFGS with a Wolfe line search).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxschools.core import exact
from jaxschools.core._jit import filter_jit
from jaxschools.core._optimize import minimize
from jaxschools.core.data import Schools
from jaxschools.core.models import Prior, make_prior

__all__ = [
    "EmpiricalBayes",
    "PARAMS",
    "TAU_SCALE_FLOOR",
    "BOUNDARY_TOL",
    "fit",
    "pooled_log_evidence",
]

# The hyperparameters fit() can estimate (mu_scale cannot: see the module docstring).
PARAMS = ("tau_scale", "mu_loc")
# tau_scale below this fraction of the pooled standard error, with the gradient pointing at 0, ends the search:
# the prior then puts tau far below any scale the data resolve (p(y | phi) is within ~1e-8 (half-normal) or
# ~1e-4 (half-Cauchy) of its limit, relative), and the limit comparison decides.
TAU_SCALE_FLOOR = 1e-4
# Nats by which the closed-form limit may fall short of the optimum found and still be called the maximum: well
# above the quadrature's error in log p(y) (~1e-12 at 1024 nodes), far below any difference that matters.
BOUNDARY_TOL = 1e-9
_LOG_2PI = math.log(2.0 * math.pi)


class EmpiricalBayes(NamedTuple):
    """The result of :func:`fit`. Arrays (scalars, or batched under ``vmap``).

    ``tau_scale``, ``mu_loc``, ``mu_scale``: the hyperparameters at the maximum (those not estimated as given);
    at the boundary ``tau_scale`` is 0 exactly and ``mu_loc`` (if estimated) the pooled limit's maximiser.
    ``log_evidence``: log p(y | phi) there (at the boundary, the supremum: the closed-form limit).
    ``grad_norm``: the norm of the gradient of log p(y | phi) in the fit's coordinates (module docstring) at
    the last iterate. ``iterations``: L-BFGS iterations. ``converged``: the search ended properly (gradient
    norm at most ``gtol``, or the boundary reached with the gradient pointing at it), not by running out of
    iterations or into a non-finite value. ``boundary``: the maximum is the limit tau_scale -> 0.
    """

    tau_scale: jax.Array
    mu_loc: jax.Array
    mu_scale: jax.Array
    log_evidence: jax.Array
    grad_norm: jax.Array
    iterations: jax.Array
    converged: jax.Array
    boundary: jax.Array


def _pooled(data: Schools):
    """(log s_pool, y_bar_w): the pooled standard error and the precision-weighted mean (masked schools out)."""
    log_prec = jnp.where(data.mask, -2.0 * jnp.log(jnp.where(data.mask, data.sigma, 1.0)), -jnp.inf)
    log_total = jax.nn.logsumexp(log_prec)
    ybar = jnp.sum(jnp.exp(log_prec - log_total) * jnp.where(data.mask, data.y, 0.0))
    return -0.5 * log_total, ybar


def _pooled_log_evidence(data: Schools, mu_loc, mu_scale):
    # The integrand over mu is Gaussian: its integral is its peak value times sqrt(2 pi V) (as in exact.py).
    keep = data.mask.astype(data.y.dtype)
    sigma = jnp.where(data.mask, data.sigma, 1.0)
    y = jnp.where(data.mask, data.y, 0.0)
    prec = keep / sigma**2
    total = jnp.sum(prec) + mu_scale**-2
    mu_hat = (jnp.sum(prec * y) + mu_loc * mu_scale**-2) / total
    z = (y - mu_hat) / sigma
    log_lik = -0.5 * jnp.sum(keep * (_LOG_2PI + 2.0 * jnp.log(sigma) + z * z))
    log_prior = -0.5 * (_LOG_2PI + 2.0 * jnp.log(mu_scale) + ((mu_hat - mu_loc) / mu_scale) ** 2)
    return log_lik + log_prior + 0.5 * (_LOG_2PI - jnp.log(total))


def pooled_log_evidence(data: Schools, mu_loc, mu_scale):
    r"""log p(y | tau = 0, mu ~ N(mu_loc, mu_scale^2)), the limit of the marginal likelihood as tau_scale -> 0.

    Closed form: log N(y | mu_loc 1, diag(sigma^2) + mu_scale^2 1 1^T), computed as the Gaussian integral over mu
    (peak value times sqrt(2 pi V), V = (sum_j sigma_j^-2 + mu_scale^-2)^-1). Masked schools are left out.
    """
    dtype = data.y.dtype
    return _pooled_log_evidence_jit(data.without_names(), jnp.asarray(mu_loc, dtype), jnp.asarray(mu_scale, dtype))


_pooled_log_evidence_jit = filter_jit(_pooled_log_evidence)


def _check(data: Schools, prior, params, gtol, max_iterations) -> tuple[Prior, tuple]:
    """Refuse bad arguments with a ValueError naming the problem (concrete values only; tracers pass)."""
    if isinstance(params, str):
        params = (params,)
    params = tuple(params)
    if not params:
        raise ValueError(f"params is empty: name at least one of {', '.join(PARAMS)}")
    for name in params:
        if name == "mu_scale":
            raise ValueError(
                "mu_scale cannot be estimated by empirical Bayes: p(y | mu_loc, mu_scale) always increases to its "
                "supremum as mu_scale -> 0 (the prior of mu collapsing onto the maximiser of p(y | mu)); "
                f"fix it and estimate {' and/or '.join(PARAMS)}"
            )
        if name not in PARAMS:
            raise ValueError(f"unknown hyperparameter {name!r} in params; expected some of {', '.join(PARAMS)}")
    if len(set(params)) != len(params):
        raise ValueError(f"params names a hyperparameter twice: {params}")
    prior = make_prior(prior)
    if not prior.proper:
        raise ValueError(
            "empirical Bayes needs a proper prior (half_normal or half_cauchy): the flat prior is improper, so "
            "the marginal likelihood p(y | hyperparameters) does not exist"
        )
    for name in ("mu_loc", "mu_scale", "tau_scale"):
        value = getattr(prior, name)
        if isinstance(value, jax.core.Tracer) or np.ndim(value) != 0:
            continue
        value = float(value)
        if not math.isfinite(value) or (name != "mu_loc" and value <= 0.0):
            kind = "finite" if name == "mu_loc" else "finite and > 0"
            raise ValueError(f"prior {name} must be {kind} (it is the start or the fixed value), got {value}")
    if not (isinstance(gtol, (int, float)) and math.isfinite(gtol) and gtol > 0):
        raise ValueError(f"gtol must be a finite number > 0, got {gtol!r}")
    if isinstance(max_iterations, bool) or not isinstance(max_iterations, int) or max_iterations < 1:
        raise ValueError(f"max_iterations must be an integer >= 1, got {max_iterations!r}")
    if not isinstance(data.mask, jax.core.Tracer) and np.ndim(data.mask) == 1 and not np.any(data.mask):
        raise ValueError("the data have no school in the likelihood (every mask entry is False)")
    return prior, params


def fit(
    data: Schools,
    prior="half_normal",
    params=PARAMS,
    num_nodes: int = 1024,
    gtol: float = 1e-6,
    max_iterations: int = 100,
) -> EmpiricalBayes:
    r"""The hyperparameters that maximise the exact log marginal likelihood log p(y | phi) (module docstring).

    Args:
      data: a :class:`~jaxschools.core.data.Schools` (leaves may be batched under ``vmap``).
      prior: ``half_normal`` or ``half_cauchy`` (default scales) or a proper
        :class:`~jaxschools.core.models.Prior`: its family, its fixed hyperparameters and the start of the
        estimated ones.
      params: which of ``tau_scale``, ``mu_loc`` to estimate (default both).
      num_nodes: the exact rule's nodes (:func:`jaxschools.core.exact.posterior`).
      gtol: convergence when the gradient norm in the fit's dimensionless coordinates is at most this.
      max_iterations: L-BFGS iterations at most.

    Returns:
      An :class:`EmpiricalBayes`. A maximum at tau_scale -> 0 is ``boundary=True`` with ``tau_scale`` 0 and the
      limit's log evidence, never a small number.

    Raises:
      ValueError: the flat prior, ``mu_scale`` or an unknown name in ``params``, a non-positive or non-finite
      scale, a bad ``gtol``, ``max_iterations`` or ``num_nodes``.

    Traceable: one compilation per family, ``params``, ``num_nodes`` and data shape; ``jax.vmap`` over datasets.
    """
    prior, params = _check(data, prior, params, gtol, max_iterations)
    if isinstance(num_nodes, bool) or not isinstance(num_nodes, int) or num_nodes < 32 or num_nodes % 32:
        raise ValueError(f"num_nodes must be a positive multiple of 32 (exact.posterior's rule), got {num_nodes!r}")
    dtype = data.y.dtype
    leaves = tuple(jnp.asarray(getattr(prior, name), dtype) for name in ("mu_loc", "mu_scale", "tau_scale"))
    out = _fit_jit(data.without_names(), prior.kind, leaves, params, num_nodes, float(gtol), max_iterations)
    return EmpiricalBayes(*out)


@filter_jit
def _fit_jit(data, kind, leaves, params, num_nodes, gtol, max_iterations):
    mu_loc0, mu_scale, tau_scale0 = leaves
    log_s_pool, ybar = _pooled(data)
    fit_tau, fit_mu = "tau_scale" in params, "mu_loc" in params

    def hyper(x):
        """(tau_scale, mu_loc) from the coordinates, x = [x_tau][x_mu] in that order, the rest fixed."""
        i = 0
        tau_scale, mu_loc = tau_scale0, mu_loc0
        if fit_tau:
            tau_scale, i = jnp.exp(x[i] + log_s_pool), i + 1
        if fit_mu:
            mu_loc = ybar + mu_scale * x[i]
        return tau_scale, mu_loc

    def neg_log_evidence(x):
        tau_scale, mu_loc = hyper(x)
        return -exact.posterior(data, Prior(kind, mu_loc, mu_scale, tau_scale), num_nodes).log_evidence

    x0 = []
    if fit_tau:
        x0.append(jnp.log(tau_scale0) - log_s_pool)
    if fit_mu:
        x0.append((mu_loc0 - ybar) / mu_scale)
    x0 = jnp.stack(x0)
    # Minimising -log p: the search ends below the floor when the descent still heads for tau_scale = 0.
    floor = math.log(TAU_SCALE_FLOOR) if fit_tau else None
    found = minimize(neg_log_evidence, x0, gtol=gtol, max_iterations=max_iterations, floor=floor)
    tau_scale, mu_loc = hyper(found.x)
    log_evidence = -found.value
    if fit_tau:
        # The limit tau_scale -> 0 at its own best mu_loc (y_bar_w, the GLS mean of N(mu_loc 1, D + s^2 1 1^T))
        # when mu_loc is estimated, at the fixed mu_loc otherwise.
        limit_mu = ybar if fit_mu else mu_loc0
        limit = _pooled_log_evidence(data, limit_mu, mu_scale)
        boundary = found.finite & (limit >= log_evidence - BOUNDARY_TOL)
        tau_scale = jnp.where(boundary, 0.0, tau_scale)
        mu_loc = jnp.where(boundary, limit_mu, mu_loc)
        log_evidence = jnp.where(boundary, limit, log_evidence)
    else:
        boundary = jnp.zeros((), bool)
    return (
        tau_scale,
        mu_loc,
        mu_scale,
        log_evidence,
        found.grad_norm,
        found.iterations,
        found.ended,
        boundary,
    )


def __dir__():
    # The public names only, not the imports.
    return list(__all__)
