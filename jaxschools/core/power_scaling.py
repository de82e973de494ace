r"""Power-scaling sensitivity, exactly (issue 15, item 3; Kallioinen, Paananen, Bürkner & Vehtari 2024).

How much does the posterior move when the prior, or the likelihood, is made a little stronger or weaker? The
R package priorsense answers it by *power-scaling*: one component of the posterior is raised to a power
alpha near 1,

.. math:: p_\alpha^{\mathrm{prior}}(\vartheta \mid y) \propto p(\vartheta)^\alpha\, p(y \mid \vartheta), \qquad
          p_\alpha^{\mathrm{lik}}(\vartheta \mid y) \propto p(\vartheta)\, p(y \mid \vartheta)^\alpha,

and the change is measured on the scale t = log2(alpha) (alpha = 2 doubles the component, 1/2 halves it).
priorsense estimates everything by importance-reweighting posterior draws (w ∝ component^(alpha - 1), Pareto
smoothed) and finite differences at alpha = 0.99 and 1.01. Here every quantity is computed on the exact
posterior (:mod:`jaxschools.core.exact`), and the derivatives at alpha = 1 are exact (``jax.linearize``).

**The components.** The prior is p(mu, tau) (:class:`~jaxschools.core.models.Prior`), proper priors only: the
flat prior p(mu, tau) ∝ 1 has p^alpha = p, so prior power-scaling is *not applicable* (NaN numbers and the
label ``"not applicable"``, never a 0 that would read "insensitive"). :class:`PowerScaledPrior` is p^alpha as a
``Prior``: N(mu | m, s)^alpha = N(mu | m, s / sqrt(alpha)) up to a constant, so its ``mu_scale`` is
s / sqrt(alpha) (which is how :mod:`~jaxschools.core.exact` reads mu's prior: one more Gaussian observation
of precision alpha / s^2), and its ``log_prob`` is alpha times the base prior's (which adds alpha log p(tau)
and, at mu_hat, alpha log N(mu_hat | m, s) = log N(mu_hat | m, s / sqrt(alpha)) + const: consistent). The
likelihood has two natural readings in a hierarchical model, both exact here (``likelihood=``):

* ``"marginal"`` (the default): the likelihood of the model jaxschools samples, p(y_j | mu, tau) =
  N(y_j | mu, sigma_j^2 + tau^2), raised to alpha. That is exactly case weights all equal to alpha
  (``exact``'s ``case_weights``), which also gives theta_j | mu, tau, y the tempered conditional of
  y_j | theta_j ~ N(theta_j, sigma_j^2 / alpha) (``exact``'s docstring).
* ``"conditional"``: the joint model's data term p(y_j | theta_j) = N(y_j | theta_j, sigma_j^2) raised to
  alpha, which is N(y_j | theta_j, sigma_j^2 / alpha) up to a constant: the same model with sigma_j / sqrt(alpha).
  This is what priorsense and ArviZ compute from a Stan / PyMC / NumPyro eight-schools fit, whose pointwise
  log-likelihood is log N(y_j | theta_j, sigma_j^2) (as is the one
  :func:`jaxschools.interop.inference_data.to_inference_data` writes).

The two share theta's conditional and differ in the marginal of (mu, tau) (N(y_j | mu, sigma_j^2 + tau^2)^alpha
against N(y_j | mu, sigma_j^2 / alpha + tau^2)), so their numbers differ, already at first order.

**Derivatives of the summaries** (:class:`Stats`): d/dt at t = 0 of the mean, sd and the quantiles
(2.5, 25, 50, 75, 97.5%) of mu, tau and each theta_j, by forward-mode differentiation of ``exact.summary`` (its
quantiles by implicit differentiation) with respect to t, through alpha = 2^t. priorsense's
``powerscale_gradients(type = "quantities")`` estimates the same numbers by finite differences of weighted draws.

**The diagnostic** (priorsense's ``powerscale_sensitivity``, its default ``div_measure = "cjs_dist"``). For a
scalar quantity with base CDF P = F_1 and power-scaled CDF Q = F_alpha, on a range [a, b], the cumulative
Jensen-Shannon distance (Nguyen & Vreeken 2015, as priorsense normalises it) is

.. math:: D_+(\alpha)^2 = \frac{\int_a^b \big[P \log_2 \frac{P}{M} + Q \log_2 \frac{Q}{M}\big]\,dx}
                             {\int_a^b (P + Q)\,dx}, \qquad M = \tfrac12 (P + Q),

(priorsense's two halves CJS(P‖Q) and CJS(Q‖P) carry the terms ± (1 / 2 ln 2) ∫(Q - P), which cancel in the
sum), D_- the same with the survival functions 1 - P, 1 - Q (the distance of -x: priorsense's ``unsigned``),
and D = max(D_+, D_-). D(1) = 0 and D grows like |t|, so D has no derivative at t = 0 but one-sided limits:
expanding Q = P + t dP/dt + O(t^2), the integrand is (Q - P)^2 / (4 ln 2 P) + O(t^3), so

.. math:: \lim_{t \to 0^\pm} \frac{D_+}{|t|} = S_+ = \sqrt{\frac{\int_a^b (\partial_t F)^2 / F \,dx}
                                                              {8 \ln 2 \int_a^b F\,dx}}, \qquad
          S_- \text{ likewise with } 1 - F,

the same limit from both sides. The diagnostic is max(S_+, S_-): what priorsense's
(D(alpha_lower) + D(alpha_upper)) / (2 log2(alpha_upper)) estimates (alpha = 0.99 and 1.01; ArviZ's ``psens``:
1 / (1 + delta) and 1 + delta, delta = 0.01), here computed in the limit, exactly: dF/dt at fixed x is a
forward-mode derivative of the exact CDF (mu and theta_j: Gaussian mixtures over the quadrature nodes; tau:
the CDF of log tau from ``exact``'s panel rule), and the integrals over [a, b] are composite Gauss-Legendre
(:data:`NUM_GRID` nodes; over log tau, with the Jacobian, for tau). ``delta=`` gives priorsense's finite
difference instead, also on the exact CDFs (the comparison with ArviZ uses it: it removes the gap between the
two, O(delta^2), leaving only ArviZ's Monte Carlo error).

**The range [a, b].** priorsense integrates over the range of the draws, [min, max], and normalises by
∫(P + Q) over it. That integral grows without bound with the range (the population value over an unbounded
support is 0), so the statistic is defined relative to a number of draws. Here [a, b] is
[F^-1(1 / (n + 1)), F^-1(n / (n + 1))] of the base posterior, the CDF values that the minimum and maximum of n
independent draws have in expectation, with n = ``num_draws`` (default 4,000, the 4 chains x 1,000 draws of
Stan, brms, PyMC and priorsense's examples); ``bounds=`` takes any other range (e.g. that of your draws:
:func:`bounds_of_draws`). The dependence is mild but real: for a light tail the distance falls like the
square root of the range's half-width (a Gaussian's maximum of 1,000 draws sits at 3.2 sd, of 100,000 at 4.3 sd);
for the eight schools' mu under the half-Cauchy prior, 0.112 at n = 1,000 and 0.093 at n = 100,000
(``docs/sensitivity.md``).

**The labels** (priorsense's ``powerscale_sensitivity``; ArviZ's ``psense_summary``), with the threshold 0.05
on the log2 scale: prior >= 0.05 and likelihood >= 0.05 is ``"potential prior-data conflict"`` (recent
priorsense releases call it "potential prior-likelihood conflict"; the same rule), prior > 0.05 and likelihood < 0.05 is
``"potential strong prior / weak likelihood"``, anything else ``"-"``; ``"not applicable"`` under the flat
prior.

References: N. Kallioinen, T. Paananen, P.-C. Bürkner and A. Vehtari (2024), "Detecting and diagnosing prior
and likelihood sensitivity with power-scaling", *Statistics and Computing* 34, 57 (the R package priorsense);
H.-V. Nguyen and J. Vreeken (2015), "Non-parametric Jensen-Shannon divergence", ECML PKDD, LNCS 9285;
Gelman et al., *Bayesian Data Analysis*, 3rd ed., section 5.4 (the exact posterior).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtr

from jaxschools.core import exact, moments
from jaxschools.core._jit import filter_jit
from jaxschools.core.data import Schools
from jaxschools.core.models import Prior, make_prior

__all__ = [
    "THRESHOLD",
    "DEFAULT_NUM_DRAWS",
    "NUM_GRID",
    "LIKELIHOODS",
    "PRIOR_DATA_CONFLICT",
    "STRONG_PRIOR_WEAK_LIKELIHOOD",
    "NO_FLAG",
    "NOT_APPLICABLE",
    "PowerScaledPrior",
    "Stats",
    "Quantities",
    "Component",
    "PowerScaling",
    "label",
    "bounds_of_draws",
    "analyse",
    "diagnose",
]

THRESHOLD = 0.05  # priorsense's sensitivity_threshold, on the log2(alpha) scale
DEFAULT_NUM_DRAWS = 4000
LIKELIHOODS = ("marginal", "conditional")
PRIOR_DATA_CONFLICT = "potential prior-data conflict"
STRONG_PRIOR_WEAK_LIKELIHOOD = "potential strong prior / weak likelihood"
NO_FLAG = "-"
NOT_APPLICABLE = "not applicable"

_LN2 = math.log(2.0)
_DEFAULT_NODES = 1024
# The integrals over [a, b] of the diagnostic: composite Gauss-Legendre, 32 panels of 16 nodes. The CDFs are
# smooth on the scale of the posterior's sd and [a, b] spans about 7 sd (n = 4,000), so each panel holds a
# fifth of an sd: the rule is exact to rounding (the tests' oracle, integrating with a rule of its own, agrees to
# 1e-9).
_GL_PANELS, _GL_POINTS = 32, 16
NUM_GRID = _GL_PANELS * _GL_POINTS
_GL_X, _GL_W = np.polynomial.legendre.leggauss(_GL_POINTS)


@jax.tree_util.register_pytree_node_class
class PowerScaledPrior(Prior):
    r"""p(mu, tau)^alpha for a proper :class:`~jaxschools.core.models.Prior` (unnormalised), usable wherever a
    ``Prior`` is (``exact``, ``models``' densities).

    ``mu_scale`` is s / sqrt(alpha) (N(mu | m, s)^alpha ∝ N(mu | m, s / sqrt(alpha))) and :meth:`log_prob` is
    alpha log p(mu, tau) of the base prior; ``kind``, ``mu_loc`` and ``tau_scale`` are the base prior's. The
    leaves are (mu_loc, mu_scale, tau_scale, power), so alpha can be traced and differentiated. The constant
    that alpha log N(mu | m, s) and log N(mu | m, s / sqrt(alpha)) differ by changes no posterior, only
    ``exact``'s ``log_evidence`` (the evidence of the unnormalised p^alpha). Not for
    :func:`~jaxschools.core.models.sample_prior` (HalfCauchy^alpha is not a half-Cauchy). A power-scaled
    ``PowerScaledPrior`` multiplies the powers.
    """

    __slots__ = ("power",)

    def __init__(self, prior, power):
        prior = make_prior(prior)
        if not prior.proper:
            raise ValueError(f"the {prior.kind} prior is improper: power-scaling needs a proper p(mu, tau) (the flat "
                             "prior's p^alpha ∝ 1 for every alpha)")
        base_scale = prior.mu_scale
        if isinstance(prior, PowerScaledPrior):
            base_scale = prior.mu_scale * jnp.sqrt(prior.power)
            power = prior.power * power
        self.kind = prior.kind
        self.tau_log_density = prior.tau_log_density
        self.mu_loc = prior.mu_loc
        self.tau_scale = prior.tau_scale
        self.power = power
        self.mu_scale = base_scale / jnp.sqrt(power)

    def log_prob(self, mu, log_tau, data=None):
        """alpha log p(mu, tau) of the base prior (density with respect to d mu d tau)."""
        aux = Prior.tree_flatten(self)[1]
        base = Prior.tree_unflatten(aux, (self.mu_loc, self.mu_scale * jnp.sqrt(self.power), self.tau_scale))
        return self.power * base.log_prob(mu, log_tau, data)

    def tree_flatten(self):
        return (self.mu_loc, self.mu_scale, self.tau_scale, self.power), Prior.tree_flatten(self)[1]

    @classmethod
    def tree_unflatten(cls, aux, leaves):
        obj = object.__new__(cls)
        obj.kind, obj.tau_log_density = (aux, None) if isinstance(aux, str) else aux
        obj.mu_loc, obj.mu_scale, obj.tau_scale, obj.power = leaves
        return obj

    def __repr__(self) -> str:
        return (f"PowerScaledPrior({self.kind!r}, mu_loc={self.mu_loc}, mu_scale={self.mu_scale}, "
                f"tau_scale={self.tau_scale}, power={self.power})")


class Stats(NamedTuple):
    """A quantity's summary (or its derivatives): the keys of ``exact.summary``'s blocks."""

    mean: jax.Array
    sd: jax.Array
    q025: jax.Array
    q25: jax.Array
    q50: jax.Array
    q75: jax.Array
    q975: jax.Array


class Quantities(NamedTuple):
    """One entry per posterior quantity: mu and tau scalars, theta (J,) (labels: a tuple of J strings)."""

    mu: object
    tau: object
    theta: object


class Component(NamedTuple):
    """Power-scaling one component (the prior or the likelihood) at alpha = 1, t = log2(alpha)."""

    applicable: bool  # False: the flat prior (every number NaN)
    derivative: Quantities  # of Stats: d statistic / dt
    sensitivity: Quantities  # priorsense's diagnostic, the CJS distance's slope in t (limit, or delta's quotient)


class PowerScaling(NamedTuple):
    """:func:`diagnose`'s result."""

    value: Quantities  # of Stats: the base posterior's summary (alpha = 1)
    prior: Component
    likelihood: Component
    diagnosis: Quantities  # labels (:func:`label`)
    names: tuple  # the schools' names (theta's order)
    threshold: float
    likelihood_kind: str  # "marginal" or "conditional"
    num_draws: int  # n of the range [F^-1(1/(n+1)), F^-1(n/(n+1))]

    def rows(self) -> list:
        """``(variable, prior, likelihood, diagnosis)`` per quantity (``theta[name]`` per school), as priorsense
        prints them; prior is NaN when not applicable."""
        out = []
        for name in Quantities._fields:
            p, lik, lab = (getattr(self.prior.sensitivity, name), getattr(self.likelihood.sensitivity, name),
                           getattr(self.diagnosis, name))
            if name != "theta":
                out.append((name, float(p), float(lik), lab))
                continue
            for j, school in enumerate(self.names):
                out.append((f"theta[{school}]", float(p[j]), float(lik[j]), lab[j]))
        return out


def label(prior, likelihood, threshold: float = THRESHOLD) -> str:
    """priorsense's diagnosis of one quantity from its two sensitivities (concrete numbers).

    NaN prior sensitivity (the flat prior) gives ``"not applicable"``; otherwise prior >= threshold and
    likelihood >= threshold: ``"potential prior-data conflict"``; prior > threshold and likelihood < threshold:
    ``"potential strong prior / weak likelihood"``; else ``"-"`` (priorsense's rules, ``>=`` and ``>`` as it
    writes them)."""
    prior, likelihood = float(prior), float(likelihood)
    if math.isnan(prior):
        return NOT_APPLICABLE
    if prior >= threshold and likelihood >= threshold:
        return PRIOR_DATA_CONFLICT
    if prior > threshold and likelihood < threshold:
        return STRONG_PRIOR_WEAK_LIKELIHOOD
    return NO_FLAG


def bounds_of_draws(mu, tau, theta) -> Quantities:
    """[min, max] of draws of mu, tau (any shape) and theta (..., J): the range priorsense integrates over,
    as ``bounds=`` of :func:`analyse` (mu, tau: (2,); theta: (J, 2))."""
    theta = jnp.asarray(theta)
    theta = theta.reshape(-1, theta.shape[-1])
    return Quantities(
        jnp.stack([jnp.min(mu), jnp.max(mu)]),
        jnp.stack([jnp.min(tau), jnp.max(tau)]),
        jnp.stack([jnp.min(theta, axis=0), jnp.max(theta, axis=0)], axis=-1),
    )


# ---------------------------------------------------------------------------------------------------------
# The computation: one traced function of the log2 powers t = (t_prior, t_likelihood) (t_likelihood only for
# the flat prior).


def _perturbed(data: Schools, prior: Prior, likelihood: str, t):
    """(data, prior, case_weights) of the posterior power-scaled by alpha = 2^t (t as in the module doc)."""
    t_likelihood = t[-1]
    if prior.proper:
        prior = PowerScaledPrior(prior, jnp.exp2(t[0]))
    if likelihood == "marginal":
        return data, prior, jnp.exp2(t_likelihood) * jnp.ones_like(data.y)
    return data.replace(sigma=data.sigma * jnp.exp2(-0.5 * t_likelihood)), prior, None


def _rule(lo, hi):
    """Composite Gauss-Legendre nodes and weights on [lo, hi] (``_GL_PANELS`` panels of ``_GL_POINTS``)."""
    width = (hi - lo) / _GL_PANELS
    left = lo + width * jnp.arange(_GL_PANELS, dtype=lo.dtype)
    nodes = left[:, None] + 0.5 * width * (1.0 + jnp.asarray(_GL_X, lo.dtype))
    weights = jnp.broadcast_to(0.5 * width * jnp.asarray(_GL_W, lo.dtype), nodes.shape)
    return nodes.reshape(-1), weights.reshape(-1)


def _grids(bounds: Quantities):
    """The integration rules of the diagnostic: x nodes for mu and theta_j, log-tau nodes for tau, each with
    weights for dx (tau: d tau = tau d log tau, the Jacobian folded into the weights)."""
    mu = _rule(bounds.mu[0], bounds.mu[1])
    log_tau, w = _rule(jnp.log(bounds.tau[0]), jnp.log(bounds.tau[1]))
    theta = jax.vmap(lambda b: _rule(b[0], b[1]))(bounds.theta)
    return Quantities(mu, (log_tau, w * jnp.exp(log_tau)), theta)


def _mixture(post: exact.ExactPosterior, loc, var, x):
    """CDF and survival function at x (K,) of sum_i w_i N(loc_i, var_i), each summed directly (1 - F would
    lose the survival function's relative precision where it is small)."""
    w = jnp.exp(post.log_weights)
    z = (x[:, None] - loc) / jnp.sqrt(var)
    return ndtr(z) @ w, ndtr(-z) @ w


def _cdfs(post: exact.ExactPosterior, grids: Quantities) -> Quantities:
    """(CDF, survival) of mu, tau and each theta_j at the grids' nodes, on the posterior ``post``."""
    mu = _mixture(post, post.mu_hat, post.mu_var, grids.mu[0])
    # The CDF of log tau: exact's panel masses plus the in-panel interpolant (the CDF its quantiles invert),
    # whose derivative in the posterior's parameters at a fixed point is an ordinary JVP.
    cdf = jax.vmap(lambda u: exact._logtau_cdf(post.log_weights, post.log_density, post.bounds, u)[0])
    tau_cdf = cdf(grids.tau[0])
    theta = jax.vmap(lambda m, v, x: _mixture(post, m, v, x), in_axes=(1, 1, 0))(
        post.theta_mean, post.theta_var, grids.theta[0])
    return Quantities(mu, (tau_cdf, 1.0 - tau_cdf), theta)


def _limit(weights, cdf, survival, slope):
    """max(S_+, S_-): the one-sided limits of D / |t| at t = 0 (module docstring); slope = dF/dt."""
    plus = jnp.sum(weights * slope**2 / cdf, -1) / jnp.sum(weights * cdf, -1)
    minus = jnp.sum(weights * slope**2 / survival, -1) / jnp.sum(weights * survival, -1)
    return jnp.sqrt(jnp.maximum(plus, minus) / (8.0 * _LN2))


def _half_distance(weights, p, q):
    """D^2 of one orientation: sum of P log2(P / M) + Q log2(Q / M) over the sum of P + Q (module doc), each log
    by log1p of the relative difference, exact as Q -> P."""
    e = q - p
    terms = -p * jnp.log1p(0.5 * e / p) + q * jnp.log1p(0.5 * e / (p + 0.5 * e))
    return jnp.sum(weights * terms, -1) / (_LN2 * jnp.sum(weights * (p + q), -1))


def _distance(weights, base, scaled):
    """D = max(D_+, D_-) between the base and a power-scaled posterior ((CDF, survival) pairs)."""
    return jnp.sqrt(jnp.maximum(_half_distance(weights, base[0], scaled[0]),
                                _half_distance(weights, base[1], scaled[1])))


_PROBS = tuple(exact.QUANTILES.values())  # the quantile levels of Stats, in its order


def _stats(post: exact.ExactPosterior, probs: tuple, quantiles: bool):
    """Mean, sd and (``quantiles``) the quantiles of mu, tau and each theta_j on the rule, as ``exact.summary``
    computes them but without its other entries (the compiled derivative is half as large), and the quantiles at
    ``probs[len(_PROBS):]`` (the range's ends; held apart). Quantiles left out are NaN."""
    w = jnp.exp(post.log_weights)
    dtype = post.log_tau.dtype

    def moments(mean, var=None):
        m = w @ mean
        spread = (mean - m) ** 2 if var is None else var + (mean - m) ** 2
        return m, jnp.sqrt(w @ spread)

    if probs:
        q = exact.quantiles(post, jnp.asarray(probs, dtype))
        q = Quantities(q["mu"], q["tau"], jnp.moveaxis(q["theta"], -1, 0))  # levels first
    n = len(_PROBS) if quantiles else 0
    mean_sd = (moments(post.mu_hat, post.mu_var), moments(jnp.exp(post.log_tau)),
               moments(post.theta_mean, post.theta_var))
    blocks = []
    for name, (m, sd) in zip(Quantities._fields, mean_sd):
        levels = tuple(getattr(q, name)[:n]) if quantiles else (jnp.full_like(m, jnp.nan),) * len(_PROBS)
        blocks.append(Stats(m, sd, *levels))
    ends = None
    if len(probs) > n:
        ends = Quantities(q.mu[n:], q.tau[n:], jnp.moveaxis(q.theta[n:], 0, -1))  # theta (J, 2)
    return Quantities(*blocks), ends


def _null_nonexistent(value: Quantities, kind: str, data: Schools) -> Quantities:
    """NaN for each mean and sd that does not exist (the rule of ``exact.summary``, :mod:`~jaxschools.core.moments`)."""
    num_schools = exact.num_in_likelihood(data)
    out = []
    for name in Quantities._fields:
        block = moments.null_nonexistent(getattr(value, name)._asdict(), kind, name, num_schools, jnp.where,
                                         observed=data.mask)
        out.append(Stats(**block))
    return Quantities(*out)


def _per_quantity(fn, *trees):
    """``fn`` applied to the fields of :class:`Quantities` ``trees`` (whose entries are themselves tuples)."""
    return Quantities(*(fn(*(getattr(tree, name) for tree in trees)) for name in Quantities._fields))


@filter_jit
def _analyse(data, prior, likelihood, num_nodes, num_draws, bounds, delta, quantiles):
    num_t = 2 if prior.proper else 1
    dtype = data.y.dtype
    eye = jnp.eye(num_t, dtype=dtype)

    def posterior_at(t):
        d, p, w = _perturbed(data, prior, likelihood, t)
        return exact.posterior(d, p, num_nodes, case_weights=w)

    # The posterior and its tangents (row c: d/dt_c, one forward pass per component), then everything else
    # as a function of the posterior: each quantile solver is compiled once, for the statistics and the range.
    post, d_post = jax.linearize(posterior_at, jnp.zeros((num_t,), dtype))
    d_post = jax.vmap(d_post)(eye)
    ends = () if bounds is not None else (1.0 / (num_draws + 1), num_draws / (num_draws + 1))
    probs = (_PROBS if quantiles else ()) + ends
    value, stats_tangent = jax.linearize(lambda p: _stats(p, probs, quantiles), post)
    derivative = jax.vmap(lambda dp: stats_tangent(dp)[0])(d_post)
    value, expected = value
    if bounds is None:
        bounds = expected
    bounds = jax.lax.stop_gradient(jax.tree_util.tree_map(lambda b: jnp.asarray(b, dtype), bounds))
    grids = _grids(bounds)
    base, cdf_tangent = jax.linearize(lambda p: _cdfs(p, grids), post)
    value = _null_nonexistent(value, prior.kind, data)
    if delta is None:
        d_cdfs = jax.vmap(cdf_tangent)(d_post)
        sensitivity = _per_quantity(lambda g, c, dc: _limit(g[1], c[0], c[1], dc[0]), grids, base, d_cdfs)
    else:
        # priorsense's / ArviZ's finite difference on the exact CDFs: alpha = 1 / (1 + delta) and 1 + delta.
        step = jnp.log2(1.0 + jnp.asarray(delta, dtype))
        scaled = jax.vmap(lambda t: _cdfs(posterior_at(t), grids))(step * jnp.concatenate([-eye, eye]))

        def quotient(g, c, s):
            d = jax.vmap(lambda one: _distance(g[1], c, one))(s)
            return (d[:num_t] + d[num_t:]) / (2.0 * step)

        sensitivity = _per_quantity(quotient, grids, base, scaled)
    return value, derivative, sensitivity, bounds


def _component(derivative: Quantities, sensitivity: Quantities, value: Quantities, row, applicable: bool):
    """Row ``row`` of the batched results as a :class:`Component` (all NaN when not applicable; a derivative
    NaN where its value is: a moment that does not exist, or a quantile left out)."""
    if not applicable:
        nan = lambda x: jnp.full(jnp.shape(x), jnp.nan, jnp.result_type(x))  # noqa: E731
        return Component(False, jax.tree_util.tree_map(nan, value),
                         Quantities(*(nan(getattr(value, n).mean) for n in Quantities._fields)))
    d = jax.tree_util.tree_map(lambda v, s: jnp.where(jnp.isnan(v), jnp.nan, s[row]), value, derivative)
    return Component(True, d, jax.tree_util.tree_map(lambda s: s[row], sensitivity))


def _check(likelihood: str, num_draws: int, delta):
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"likelihood must be one of {', '.join(LIKELIHOODS)}; got {likelihood!r}")
    if int(num_draws) != num_draws or num_draws < 2:
        raise ValueError(f"num_draws must be an integer >= 2; got {num_draws!r}")
    if delta is not None and not float(delta) > 0:
        raise ValueError(f"delta must be > 0; got {delta!r}")


def analyse(data: Schools, prior="flat", *, likelihood: str = "marginal", bounds: Quantities | None = None,
            num_draws: int = DEFAULT_NUM_DRAWS, delta=None, quantiles: bool = True,
            num_nodes: int = _DEFAULT_NODES):
    """The numbers behind :func:`diagnose`: ``(value, prior, likelihood, bounds)``.

    ``value``: the base summary (:class:`Quantities` of :class:`Stats`); ``prior``, ``likelihood``: a
    :class:`Component` each (``prior.applicable`` False under the flat prior, every number NaN); ``bounds``:
    the ranges [a, b] the diagnostic integrated over (mu, tau: (2,), theta: (J, 2)).

    Args:
      data, prior: the dataset and a proper or flat prior (a name or a :class:`~jaxschools.core.models.Prior`).
      likelihood: ``"marginal"`` (p(y_j | mu, tau)^alpha, case weights alpha) or ``"conditional"``
        (p(y_j | theta_j)^alpha, sigma_j / sqrt(alpha)); see the module docstring.
      bounds: the range of each quantity, a :class:`Quantities` of [a, b] (mu, tau: (2,), tau's a > 0; theta:
        (J, 2)); :func:`bounds_of_draws` of your draws gives priorsense's. Default: the expected range of
        ``num_draws`` draws.
      delta: None (the exact limit) or priorsense's finite difference, (D(1 / (1 + delta)) + D(1 + delta)) /
        (2 log2(1 + delta)), as ArviZ's ``psens`` (delta = 0.01) computes it, but on the exact CDFs.
      quantiles: False leaves the quantiles and their derivatives out (NaN): their solvers are most of the
        compilation, and the diagnostic needs none when ``bounds`` are given.
      num_nodes: ``exact``'s quadrature rule.

    Traceable (under ``jit``/``vmap`` over datasets and prior scales); compiled once per shape, prior family,
    likelihood kind, num_draws, ``quantiles``, and bounds and delta being None or not.
    """
    _check(likelihood, num_draws, delta)
    prior = make_prior(prior)
    data = data.without_names()
    value, derivative, sensitivity, used = _analyse(
        data, prior, likelihood, int(num_nodes), int(num_draws), bounds, None if delta is None else float(delta),
        bool(quantiles))
    proper = prior.proper
    prior_part = _component(derivative, sensitivity, value, 0, proper)
    likelihood_part = _component(derivative, sensitivity, value, 1 if proper else 0, True)
    return value, prior_part, likelihood_part, used


def diagnose(data: Schools, prior="flat", *, likelihood: str = "marginal", threshold: float = THRESHOLD,
             num_draws: int = DEFAULT_NUM_DRAWS, bounds: Quantities | None = None, quantiles: bool = True,
             num_nodes: int = _DEFAULT_NODES) -> PowerScaling:
    """Power-scaling sensitivity of mu, tau and each theta_j, exactly, with priorsense's labels.

    Returns a :class:`PowerScaling`: the base summary, per component (prior, likelihood) the exact derivatives
    of the means, sds and quantiles with respect to log2(alpha) at alpha = 1 and priorsense's diagnostic
    (the one-sided limit of the cumulative Jensen-Shannon distance's slope, module docstring), and the label of
    each quantity at ``threshold`` (default 0.05). ``.rows()`` gives priorsense's table. Under the flat prior
    the prior's numbers are NaN and the labels ``"not applicable"``. The other arguments are :func:`analyse`'s,
    which gives the same numbers traceably (the labels are strings: this function is eager).

    >>> ps = diagnose(js.data.eight_schools(), js.models.Prior("half_normal", 0.0, 5.0, 5.0))
    >>> ps.prior.sensitivity.mu, ps.likelihood.derivative.tau.mean, ps.diagnosis.tau
    """
    if not float(threshold) > 0:
        raise ValueError(f"threshold must be > 0; got {threshold!r}")
    value, prior_part, likelihood_part, _ = analyse(data, prior, likelihood=likelihood, bounds=bounds,
                                                    num_draws=num_draws, quantiles=quantiles, num_nodes=num_nodes)
    p = jax.tree_util.tree_map(np.asarray, prior_part.sensitivity)
    lik = jax.tree_util.tree_map(np.asarray, likelihood_part.sensitivity)
    labels = Quantities(label(p.mu, lik.mu, threshold), label(p.tau, lik.tau, threshold),
                        tuple(label(a, b, threshold) for a, b in zip(p.theta, lik.theta)))
    return PowerScaling(value, prior_part, likelihood_part, labels, tuple(data.names), float(threshold),
                        likelihood, int(num_draws))


def __dir__():
    # The public names only, not the imports (``dir(js.diagnostics)`` lists no ``jax`` or ``jnp``).
    return list(__all__)
