r"""The exact posterior of the eight-schools model, up to one integral over log tau (BDA3 section 5.4).

Model (see :mod:`jaxschools.core.models`): y_j | theta_j ~ N(theta_j, sigma_j^2), theta_j | mu, tau ~ N(mu, tau^2),
(mu, tau) ~ p(mu, tau). Everything but tau is conditionally Gaussian, so every posterior quantity is a
one-dimensional integral over x = log tau of a closed-form Gaussian quantity. This module evaluates those
integrals by quadrature to near machine precision; it is the project's ground truth.

**Given tau** (BDA3 eqs. 5.17-5.20), with w_j = 1 / (sigma_j^2 + tau^2) over the schools in the likelihood
(``mask`` True) and, for a proper prior, mu ~ N(mu_loc, mu_scale^2) entered as one more observation
y_0 = mu_loc with precision w_0 = mu_scale^-2 (a flat prior on mu has w_0 = 0):

.. math::
    \mu \mid \tau, y \sim N(\hat\mu, V_\mu), \quad \hat\mu = \frac{\sum_j w_j y_j}{\sum_j w_j}, \quad
    V_\mu = \frac{1}{\sum_j w_j}

    \theta_j \mid \mu, \tau, y \sim N((1 - B_j) y_j + B_j \mu,\; \tau^2 B_j), \quad
    B_j = \frac{\sigma_j^2}{\sigma_j^2 + \tau^2} = \frac{\tau^{-2}}{\tau^{-2} + \sigma_j^{-2}}

(theta_hat_j = (y_j tau^2 + mu sigma_j^2) / (tau^2 + sigma_j^2) and V_j = sigma_j^2 tau^2 / (sigma_j^2 + tau^2),
written with B_j as a logistic function of 2 (log sigma_j - log tau), so both stay exact as tau -> 0 or inf).
A masked school has no likelihood term: B_j = 1, theta_j | mu, tau ~ N(mu, tau^2). Integrating mu out,
theta_j | tau, y ~ N((1 - B_j) y_j + B_j mu_hat, tau^2 B_j + B_j^2 V_mu).

**The marginal of tau** (BDA3 eq. 5.21). The integrand of p(y | mu, tau) p(mu, tau) is exactly Gaussian in
mu, so its integral over mu is its value at the maximiser mu_hat times sqrt(2 pi V_mu):

.. math::
    \log h(\tau) = \log p(y \mid \hat\mu, \tau) + \log p(\hat\mu, \tau) + \tfrac12 \log(2\pi V_\mu),
    \qquad p(\log\tau \mid y) = h(\tau)\,\tau / Z,

with every normalising constant kept, so for a proper prior Z = integral of h(tau) tau d log tau = p(y), the
marginal likelihood. (The flat prior is improper: Z is then not p(y), and ``log_evidence`` is NaN.)

**The quadrature rule.** In x = log tau the density is smooth (analytic in the strip |Im x| < pi/2: its
singularities are where sigma_j^2 + tau^2 = 0) and has exponential tails on both sides: as tau -> 0 it falls
like tau = e^x (p(tau | y) is finite at 0), and as tau -> inf like tau^-(J - 2) for the flat prior (only e^-x
for J = 3) or faster for a proper prior. The rule is therefore built in two steps, both with node counts
fixed at trace time (so everything is jittable and vmappable):

1. *Search bracket from the data*: [log s_lo - 40, log s_hi + 40] with s_lo = (sum_j sigma_j^-2)^-1/2
   (the narrowest scale on which p(tau | y) can vary near 0; also tau_scale for a proper prior) and
   s_hi = max(max sigma_j, max y - min y) (beyond which the tail is a pure power of tau; also tau_scale and
   mu_scale for a proper prior). Both tails decay at least like e^-|x| past those points, so the mass
   outside is below e^-40 ~ 4e-18 of the total. The bracket is scanned with a uniform coarse grid of
   max(1024, 20 sqrt(J)) points (a log-tau posterior is no narrower than 1/sqrt(2 J)).
2. *Integration range*: the hull of the coarse points whose log density is within 40 nats of the largest,
   widened by one coarse step each side. Outside it the density is below e^-40 of its peak (for a unimodal
   density, the point just outside bounds everything beyond), so the neglected mass is below ~1e-16.
   Because it is a level set, the range adapts itself to a log-tau posterior of width 0.007 (J = 10,000)
   as well as to a heavy tail 80 units long (flat prior, J = 3), on any scale of the data (1e-6 or 1e6).

On that range: composite Gauss-Legendre with ``num_nodes / 16`` equal panels of 16 nodes each (default 1024
nodes, 64 panels). Gauss-Legendre panels rather than one global rule because the range can be 80 units long
with the mass in a bump of width ~1: equal panels resolve both, and each panel converges like a
16-point rule on an analytic function (panels of width <= 1.3 against a strip of half-width pi/2). The same
16 nodes give a degree-15 interpolant of the log density inside each panel, from which the CDF of log tau
(quantiles, inverse-CDF sampling) is computed. ``error`` is the largest change between this rule and the
one with half as many panels (n vs n/2 nodes) of log Z and of the means and sds of log tau, tau and mu (in
units of their sd): a pessimistic estimate for the n-node result, whose own error is far smaller (the rule
converges geometrically). Against scipy's adaptive quadrature the default rule agrees to ~1e-12.

The flat prior gives a proper posterior only with J >= 3 schools in the likelihood (BDA3 section 5.4); with
fewer, the tail is not integrable and the results here are those of the truncated range, with every mean
and sd NaN in :func:`summary` (the CLI refuses such data before this module runs). Cost: O(num_nodes x J)
time and memory (the per-node moments of theta).

References: Gelman et al., *Bayesian Data Analysis*, 3rd ed. (BDA3), section 5.4, eqs. 5.17-5.21.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtri

from jaxschools.core import moments
from jaxschools.core._jit import filter_jit
from jaxschools.core.data import Schools
from jaxschools.core.models import Prior, make_prior

__all__ = [
    "ExactPosterior",
    "QUANTILES",
    "posterior",
    "log_tau_logdensity",
    "tau_density",
    "summary",
    "sample",
]

_LOG_2PI = math.log(2.0 * math.pi)
_SQRT_HALF = math.sqrt(0.5)
# Nats below the peak at which the integration range is cut, and log-tau units of tail beyond the data's
# scales in the search bracket: e^-40 ~ 4e-18, far below the 1e-12 the ground truth needs.
_TAIL = 40.0
# Gauss-Legendre nodes per panel: enough for the widest panels (heavy tails) and a good interpolant.
_PANEL = 16
_GL_X, _GL_W = np.polynomial.legendre.leggauss(_PANEL)
# Barycentric weights of the Gauss-Legendre nodes, 1 / prod_{k != i} (x_i - x_k), scaled to max 1.
_BARY = np.array([1.0 / np.prod(_GL_X[i] - np.delete(_GL_X, i)) for i in range(_PANEL)])
_BARY = _BARY / np.abs(_BARY).max()
# Normalised weights below this carry nothing a float64 sum could see; such nodes are left out of brackets.
_NEGLIGIBLE_LOG_WEIGHT = -45.0
_MAX_ROOT_ITERATIONS = 100  # safeguarded Newton: a few steps as a rule; bisection alone needs < 100 in float64
_DEFAULT_NODES = 1024
# P(theta_i > theta_j) grows as J^2: past this many schools it is None (null in summary.json), the same
# limit as posterior.P_GREATER_MAX_SCHOOLS (not imported, to keep this module free of the sampler stack).
P_GREATER_MAX_SCHOOLS = 200

QUANTILES = {"q025": 0.025, "q25": 0.25, "q50": 0.5, "q75": 0.75, "q975": 0.975}


class ExactPosterior(NamedTuple):
    """The quadrature representation of p(mu, tau, theta | y): nodes in log tau and conditionals there.

    N = num_nodes nodes (``num_nodes / 16`` Gauss-Legendre panels of 16 nodes on ``bounds``), J schools.
    Any posterior expectation is ``sum(exp(log_weights) * E[. | tau_i, y])``.
    """

    log_tau: jax.Array  # (N,) nodes x_i = log tau_i
    log_weights: jax.Array  # (N,) log of the normalised weights (quadrature weight x posterior density); sum 1
    log_density: jax.Array  # (N,) log p(log tau = x_i | y), normalised
    bounds: jax.Array  # (2,) the integration range [a, b] in log tau
    mu_hat: jax.Array  # (N,) E[mu | tau_i, y]
    mu_var: jax.Array  # (N,) Var[mu | tau_i, y] = V_mu
    shrinkage: jax.Array  # (N, J) B_j(tau_i) (1 for a masked school)
    theta_mean: jax.Array  # (N, J) E[theta_j | tau_i, y]
    theta_var: jax.Array  # (N, J) Var[theta_j | tau_i, y] (mu integrated out)
    theta_cond_var: jax.Array  # (N, J) Var[theta_j | mu, tau_i, y] = tau_i^2 B_j
    log_norm: jax.Array  # () log Z, the integral of h(tau) tau over log tau
    log_evidence: jax.Array  # () log p(y) = log Z for a proper prior; NaN for the flat prior
    error: jax.Array  # () quadrature error estimate (n vs n/2 nodes), relative


class _Conditional(NamedTuple):
    log_h: jax.Array  # log of the integral over mu of p(y | mu, tau) p(mu, tau) (density w.r.t. d tau)
    mu_hat: jax.Array
    mu_var: jax.Array
    shrinkage: jax.Array  # (J,)
    theta_cond_var: jax.Array  # (J,)


# ---------------------------------------------------------------------------------------------------------
# Closed forms given tau (BDA3 eqs. 5.17-5.21). Each takes one scalar log tau; callers vmap.


def _anonymous(data: Schools) -> Schools:
    """The same leaves without names: names are static, so dropping them shares one compilation per shape."""
    return Schools.tree_unflatten((), data.tree_flatten()[0])


def _softplus(a):
    """log(1 + e^a), exact for any a (jnp.logaddexp is ~6x slower, and this runs N x J times)."""
    return jnp.maximum(a, 0.0) + jnp.log1p(jnp.exp(-jnp.abs(a)))


def _ndtr(z):
    """Phi(z) as one erfc: accurate relative to Phi in the lower tail, to 1e-16 absolute in the upper
    (all that sums of probabilities need), and ~3x cheaper than jax.scipy.special.ndtr."""
    return 0.5 * jax.scipy.special.erfc(-z * _SQRT_HALF)


def _conditional(data: Schools, prior: Prior, log_tau) -> _Conditional:
    """Everything given tau, from one log(sigma_j^2 + tau^2) per school (all in log space, so no w_j over-
    or underflows for any tau, tau = 0 included)."""
    dtype = data.y.dtype
    # Per-school constants (not batched over nodes). The mask enters as a float factor and a -inf offset,
    # not as a select on the (nodes, J) arrays, which XLA's CPU backend runs several times slower; masked
    # y and sigma may hold anything (NaN included), so they are replaced by harmless values first.
    keep = data.mask.astype(dtype)
    log_sigma2 = 2.0 * jnp.log(jnp.where(data.mask, data.sigma, 1.0))
    y = jnp.where(data.mask, data.y, 0.0)
    # log(sigma^2 + tau^2) = log sigma^2 + softplus(2 (log tau - log sigma)); B_j = exp(-softplus).
    soft = _softplus(2.0 * log_tau - log_sigma2)
    log_var = log_sigma2 + soft
    log_w = jnp.where(data.mask, 0.0, -jnp.inf) - log_var
    y_all = y
    if prior.proper:
        # The N(mu_loc, mu_scale^2) prior on mu is one more precision-weighted observation.
        log_w = jnp.concatenate([log_w, jnp.reshape(-2.0 * jnp.log(jnp.asarray(prior.mu_scale, dtype)), (1,))])
        y_all = jnp.concatenate([y, jnp.reshape(jnp.asarray(prior.mu_loc, dtype), (1,))])
    top = jnp.max(log_w)
    rel = jnp.exp(log_w - top)
    total = jnp.sum(rel)
    log_precision = top + jnp.log(total)
    mu_hat = jnp.sum(rel * y_all) / total
    # log p(y | mu_hat, tau) over the schools in the likelihood (models.marginal_loglik, sharing log_var).
    resid = y - mu_hat
    log_lik = -0.5 * jnp.sum(keep * (_LOG_2PI + log_var + resid * resid * jnp.exp(-log_var)))
    log_b = -keep * soft  # B_j = sigma_j^2 / (sigma_j^2 + tau^2); 1 when masked
    return _Conditional(
        # The integrand is Gaussian in mu: its integral is its peak value times sqrt(2 pi V_mu).
        log_h=log_lik + prior.log_prob(mu_hat, log_tau) + 0.5 * (_LOG_2PI - log_precision),
        mu_hat=mu_hat,
        mu_var=jnp.exp(-log_precision),
        shrinkage=jnp.exp(log_b),
        theta_cond_var=jnp.exp(2.0 * log_tau + log_b),  # tau^2 B_j = sigma_j^2 tau^2 / (sigma_j^2 + tau^2)
    )


def _log_h(data: Schools, prior: Prior, log_tau):
    """log of the integral over mu of p(y | mu, tau) p(mu, tau), a density in tau (BDA3 eq. 5.21)."""
    return _conditional(data, prior, log_tau).log_h


def _theta_moments(data: Schools, cond: _Conditional):
    """E and Var of theta_j given tau (mu integrated out); broadcasts over leading node axes."""
    b = cond.shrinkage
    mu_hat, mu_var = cond.mu_hat[..., None], cond.mu_var[..., None]
    mean = jnp.where(data.mask, data.y + b * (mu_hat - data.y), mu_hat)
    var = cond.theta_cond_var + b * b * mu_var
    return mean, var


# ---------------------------------------------------------------------------------------------------------
# The rule.


def _num_coarse(num_schools: int) -> int:
    # The log-tau posterior is no narrower than 1/sqrt(2 J) (Fisher information of log tau <= 2 per school),
    # and its 40-nat level set is ~13/sqrt(J) wide: the coarse step must stay below that.
    return max(1024, 20 * math.ceil(math.sqrt(num_schools)))


def _search_bracket(data: Schools, prior: Prior):
    """[lo, hi] in log tau, from the data's scales, outside which the mass is below e^-40 (see module doc)."""
    dtype = data.y.dtype
    log_sigma = jnp.log(data.sigma)
    log_sigma_eff = -0.5 * jax.nn.logsumexp(jnp.where(data.mask, -2.0 * log_sigma, -jnp.inf))
    log_sigma_max = jnp.max(jnp.where(data.mask, log_sigma, -jnp.inf))
    spread = jnp.max(jnp.where(data.mask, data.y, -jnp.inf)) - jnp.min(jnp.where(data.mask, data.y, jnp.inf))
    log_lo = log_sigma_eff
    log_hi = jnp.maximum(log_sigma_max, jnp.log(spread))  # log(0) = -inf when all y are equal: harmless
    if prior.proper:
        log_tau_scale = jnp.log(jnp.asarray(prior.tau_scale, dtype))
        log_lo = jnp.minimum(log_lo, log_tau_scale)
        log_hi = jnp.maximum(jnp.maximum(log_hi, log_tau_scale), jnp.log(jnp.asarray(prior.mu_scale, dtype)))
    return log_lo - _TAIL, log_hi + _TAIL


def _integration_range(data: Schools, prior: Prior):
    """The 40-nat level set of p(log tau | y), found on a coarse grid over the search bracket."""
    lo, hi = _search_bracket(data, prior)
    num = _num_coarse(data.y.shape[-1])
    grid = lo + (hi - lo) * jnp.linspace(0.0, 1.0, num, dtype=data.y.dtype)
    log_f = jax.vmap(lambda x: _log_h(data, prior, x) + x)(grid)
    log_f = jnp.where(jnp.isnan(log_f), -jnp.inf, log_f)
    keep = log_f > jnp.max(log_f) - _TAIL
    first = jnp.argmax(keep)
    last = num - 1 - jnp.argmax(keep[::-1])
    step = (hi - lo) / (num - 1)
    # One coarse step beyond the last kept point: for a unimodal density that point bounds all beyond it.
    return jnp.maximum(grid[first] - step, lo), jnp.minimum(grid[last] + step, hi)


def _gauss_legendre(a, b, num_panels: int, dtype):
    """Nodes (P * 16,) and log weights of composite Gauss-Legendre with P equal panels on [a, b]."""
    width = (b - a) / num_panels
    left = a + width * jnp.arange(num_panels, dtype=dtype)
    nodes = left[:, None] + 0.5 * width * (1.0 + jnp.asarray(_GL_X, dtype))[None, :]
    log_w = jnp.log(0.5 * width) + jnp.log(jnp.asarray(_GL_W, dtype))
    return nodes.reshape(-1), jnp.tile(log_w, num_panels)


def _weighted_moments(log_weights, mean, var=None):
    """Mean and sd of a mixture with component means ``mean`` (and variances ``var``) along axis 0."""
    w = jnp.exp(log_weights).reshape(log_weights.shape + (1,) * (mean.ndim - 1))
    m = jnp.sum(w * mean, axis=0)
    spread = (mean - m) ** 2 if var is None else var + (mean - m) ** 2
    return m, jnp.sqrt(jnp.sum(w * spread, axis=0))


def _on_rules(data, prior, a, b, num_panels):
    """The conditionals on the n-node rule and on the n/2-node rule that checks it (one vmap for both)."""
    fine, log_qw = _gauss_legendre(a, b, num_panels, data.y.dtype)
    half, half_log_qw = _gauss_legendre(a, b, num_panels // 2, data.y.dtype)
    cond = jax.vmap(lambda x: _conditional(data, prior, x))(jnp.concatenate([fine, half]))
    out = []
    n = fine.shape[0]
    for nodes, qw, part in ((fine, log_qw, slice(0, n)), (half, half_log_qw, slice(n, None))):
        c = jax.tree_util.tree_map(lambda leaf: leaf[part], cond)
        log_f = c.log_h + nodes  # + log tau: the Jacobian of tau -> log tau
        log_norm = jax.nn.logsumexp(log_f + qw)
        out.append((nodes, log_f - log_norm, log_f + qw - log_norm, c, log_norm))
    return out


def _error_stats(nodes, log_weights, cond):
    """(mean, sd) of log tau, tau and mu: the quantities whose change n vs n/2 estimates the error."""
    return [
        _weighted_moments(log_weights, nodes),
        _weighted_moments(log_weights, jnp.exp(nodes)),
        _weighted_moments(log_weights, cond.mu_hat, cond.mu_var),
    ]


def _posterior(data: Schools, prior: Prior, num_nodes: int) -> ExactPosterior:
    dtype = data.y.dtype
    a, b = _integration_range(data, prior)
    num_panels = num_nodes // _PANEL
    fine, half = _on_rules(data, prior, a, b, num_panels)
    nodes, log_density, log_weights, cond, log_norm = fine
    h_nodes, _, h_log_weights, h_cond, h_log_norm = half
    # n vs n/2 nodes: the change of log Z (a relative error of Z), and of each mean and sd in units of the sd.
    changes = [jnp.abs(log_norm - h_log_norm)]
    stats, h_stats = _error_stats(nodes, log_weights, cond), _error_stats(h_nodes, h_log_weights, h_cond)
    for (m, sd), (h_m, h_sd) in zip(stats, h_stats):
        changes += [jnp.abs(m - h_m) / sd, jnp.abs(sd - h_sd) / sd]
    theta_mean, theta_var = _theta_moments(data, cond)
    log_evidence = log_norm if prior.proper else jnp.full((), jnp.nan, dtype)
    return ExactPosterior(
        log_tau=nodes,
        log_weights=log_weights,
        log_density=log_density,
        bounds=jnp.stack([a, b]),
        mu_hat=cond.mu_hat,
        mu_var=cond.mu_var,
        shrinkage=cond.shrinkage,
        theta_mean=theta_mean,
        theta_var=theta_var,
        theta_cond_var=cond.theta_cond_var,
        log_norm=log_norm,
        log_evidence=log_evidence,
        error=jnp.max(jnp.stack(changes)),
    )


def _check_num_nodes(num_nodes: int):
    if num_nodes < 2 * _PANEL or num_nodes % (2 * _PANEL):
        raise ValueError(f"num_nodes must be a positive multiple of {2 * _PANEL}, got {num_nodes}")


# ---------------------------------------------------------------------------------------------------------
# The CDF of log tau: panel masses, plus the interpolated log density inside a panel.


def _interpolate(values, xi):
    """Barycentric interpolation of ``values`` (at the 16 Gauss-Legendre nodes of [-1, 1]) at ``xi`` (...,)."""
    gl = jnp.asarray(_GL_X, values.dtype)
    diff = xi[..., None] - gl
    hit = diff == 0
    c = jnp.asarray(_BARY, values.dtype) / jnp.where(hit, 1.0, diff)
    interp = jnp.sum(c * values, axis=-1) / jnp.sum(c, axis=-1)
    # At a node itself the formula is 0/0: take the node's value.
    return jnp.where(jnp.any(hit, axis=-1), jnp.sum(jnp.where(hit, values, 0.0), axis=-1), interp)


def _logtau_icdf(post: ExactPosterior, u):
    """Inverse CDF of log tau at a scalar u: the panel from the cumulative panel masses, then a root of
    the in-panel CDF (16-point Gauss-Legendre on the interpolated density) by safeguarded Newton."""
    dtype = post.log_tau.dtype
    num_panels = post.log_tau.shape[0] // _PANEL
    a, b = post.bounds[0], post.bounds[1]
    width = (b - a) / num_panels
    mass = jnp.sum(jnp.exp(post.log_weights).reshape(num_panels, _PANEL), axis=1)
    cum = jnp.concatenate([jnp.zeros((1,), dtype), jnp.cumsum(mass)])
    k = jnp.clip(jnp.searchsorted(cum, u, side="right") - 1, 0, num_panels - 1)
    log_f = post.log_density.reshape(num_panels, _PANEL)[k]
    target = jnp.clip(u - cum[k], 0.0, mass[k])
    gl_x, gl_w = jnp.asarray(_GL_X, dtype), jnp.asarray(_GL_W, dtype)

    def cdf_pdf(s):  # local coordinate s in [-1, 1]
        t = -1.0 + 0.5 * (s + 1.0) * (1.0 + gl_x)
        local = 0.5 * width * 0.5 * (s + 1.0) * jnp.sum(gl_w * jnp.exp(_interpolate(log_f, t)))
        return local, 0.5 * width * jnp.exp(_interpolate(log_f, s[None])[0])

    # Linear interpolation as the start (a panel whose mass underflowed to 0 starts mid-panel).
    s0 = jnp.clip(-1.0 + 2.0 * target / jnp.maximum(mass[k], jnp.finfo(dtype).tiny), -1.0, 1.0)
    s = _safeguarded_newton(cdf_pdf, target, jnp.asarray(-1.0, dtype), jnp.asarray(1.0, dtype), s0, 2.0)
    return a + width * (k + 0.5 * (s + 1.0))


def _safeguarded_newton(cdf_pdf, target, lo, hi, x0, width):
    """Root of cdf(x) = target in [lo, hi]: Newton steps, bisection when a step leaves the bracket, until
    the step is below ~1e-14 of ``width`` (a scale of x). Converges in a few steps from a good start;
    bisection bounds the worst case."""
    tol = 64.0 * jnp.finfo(x0.dtype).eps * width

    def unfinished(state):
        i, lo, hi, _, dx = state
        return (i < _MAX_ROOT_ITERATIONS) & (jnp.abs(dx) > tol) & (hi - lo > tol)

    def step(state):
        i, lo, hi, x, _ = state
        f, df = cdf_pdf(x)
        below = f < target
        lo, hi = jnp.where(below, x, lo), jnp.where(below, hi, x)
        newton = x - (f - target) / df
        ok = jnp.isfinite(newton) & (newton >= lo) & (newton <= hi)
        new = jnp.where(ok, newton, 0.5 * (lo + hi))
        return i + 1, lo, hi, new, new - x

    state = (jnp.zeros((), jnp.int32), lo, hi, x0, jnp.full_like(x0, jnp.inf))
    return jax.lax.while_loop(unfinished, step, state)[3]


def _mixture_quantiles(log_weights, loc, scale, probs):
    """Quantiles of sum_i w_i N(loc_i, scale_i^2) at each of ``probs``, by safeguarded Newton on the CDF."""
    w = jnp.exp(log_weights)
    live = log_weights > _NEGLIGIBLE_LOG_WEIGHT
    # 12 sd beyond every non-negligible component: the mass outside is below Phi(-12) ~ 2e-33.
    lo = jnp.min(jnp.where(live, loc - 12.0 * scale, jnp.inf))
    hi = jnp.max(jnp.where(live, loc + 12.0 * scale, -jnp.inf))
    mean, sd = _weighted_moments(log_weights, loc, scale**2)

    def cdf_pdf(x):
        z = (x - loc) / scale
        return jnp.sum(w * _ndtr(z)), jnp.sum(w * jnp.exp(-0.5 * z * z) / scale) / math.sqrt(2.0 * math.pi)

    def one(p):
        x0 = jnp.clip(mean + sd * ndtri(p), lo, hi)
        return _safeguarded_newton(cdf_pdf, p, lo, hi, x0, sd + jnp.abs(mean))

    return jax.vmap(one)(probs)


# ---------------------------------------------------------------------------------------------------------
# Sampling.


def _draws(rng_key, data: Schools, prior: Prior, post: ExactPosterior, n: int):
    """n independent draws of (log tau, mu, theta): inverse CDF for log tau, then the exact Gaussians."""
    dtype = data.y.dtype
    tau_key, mu_key, theta_key = jax.random.split(rng_key, 3)
    u = jax.random.uniform(tau_key, (n,), dtype)
    log_tau = jax.vmap(lambda p: _logtau_icdf(post, p))(u)
    cond = jax.vmap(lambda x: _conditional(data, prior, x))(log_tau)
    mu = cond.mu_hat + jnp.sqrt(cond.mu_var) * jax.random.normal(mu_key, (n,), dtype)
    b = cond.shrinkage
    theta_mean = jnp.where(data.mask, data.y + b * (mu[:, None] - data.y), mu[:, None])
    theta = theta_mean + jnp.sqrt(cond.theta_cond_var) * jax.random.normal(theta_key, b.shape, dtype)
    return log_tau, mu, theta


def _p_best(rng_key, data: Schools, prior: Prior, post: ExactPosterior, num_draws: int):
    """P(theta_j is the largest) from draws, in chunks of at most ~4M numbers so large J fits in memory."""
    num_schools = data.y.shape[-1]
    num_chunks = max(1, math.ceil(num_draws * num_schools / 2**22))
    chunk = math.ceil(num_draws / num_chunks)

    def body(counts, i):
        theta = _draws(jax.random.fold_in(rng_key, i), data, prior, post, chunk)[2]
        return counts + jnp.sum(jax.nn.one_hot(jnp.argmax(theta, axis=1), num_schools, dtype=theta.dtype), 0), None

    counts, _ = jax.lax.scan(body, jnp.zeros((num_schools,), data.y.dtype), jnp.arange(num_chunks))
    return counts / (chunk * num_chunks)


# ---------------------------------------------------------------------------------------------------------
# Public API.


@filter_jit
def _posterior_jit(data, prior, num_nodes):
    return _posterior(data, prior, num_nodes)


def posterior(data: Schools, prior="flat", num_nodes: int = _DEFAULT_NODES) -> ExactPosterior:
    """The exact posterior on a quadrature rule in log tau (see the module docstring).

    Args:
      data: a :class:`~jaxschools.core.data.Schools` (leaves may be batched under ``vmap``).
      prior: a name (``flat``, ``half_cauchy``, ``half_normal``, default scales) or a
        :class:`~jaxschools.core.models.Prior`.
      num_nodes: N, a multiple of 32 (N / 16 Gauss-Legendre panels of 16 nodes); the error estimate
        compares with N / 2.

    Returns:
      An :class:`ExactPosterior`: nodes, normalised log weights, the conditional moments of mu and theta
      at each node, ``log_evidence`` (log p(y), NaN for the flat prior) and ``error``.
    """
    _check_num_nodes(num_nodes)
    return _posterior_jit(_anonymous(data), make_prior(prior), num_nodes)


def log_tau_logdensity(data: Schools, prior="flat", log_tau=0.0, num_nodes: int = _DEFAULT_NODES):
    """Normalised log p(log tau | y) at ``log_tau`` (any shape): log h(tau) + log tau - log Z (BDA3 eq. 5.21)."""
    post = posterior(data, prior, num_nodes)
    return _log_tau_logdensity(_anonymous(data), make_prior(prior), post.log_norm, jnp.asarray(log_tau, data.y.dtype))


@filter_jit
def _log_tau_logdensity(data, prior, log_norm, log_tau):
    flat = jax.vmap(lambda x: _log_h(data, prior, x) + x)(log_tau.reshape(-1))
    return flat.reshape(log_tau.shape) - log_norm


def tau_density(data: Schools, prior="flat", tau=1.0, num_nodes: int = _DEFAULT_NODES):
    """Normalised p(tau | y) = h(tau) / Z at ``tau`` >= 0 (any shape); finite at tau = 0 (BDA3 eq. 5.21)."""
    post = posterior(data, prior, num_nodes)
    return _tau_density(_anonymous(data), make_prior(prior), post.log_norm, jnp.asarray(tau, data.y.dtype))


@filter_jit
def _tau_density(data, prior, log_norm, tau):
    # log(0) = -inf is a valid log tau here: w_j, B_j and the priors all have finite limits at tau = 0.
    flat = jax.vmap(lambda x: _log_h(data, prior, x))(jnp.log(tau.reshape(-1)))
    return jnp.exp(flat.reshape(tau.shape) - log_norm)


def sample(rng_key, data: Schools, n: int, prior="flat", num_nodes: int = _DEFAULT_NODES) -> dict:
    """``n`` independent exact draws from p(mu, tau, theta | y) (BDA3 section 5.4's simulation recipe).

    log tau by inversion of its CDF (panel masses of the quadrature rule, then the 16-point interpolant
    of the log density inside the panel, solved by safeguarded Newton: exact to ~1e-12 in probability);
    then mu | tau, y ~ N(mu_hat, V_mu) and theta_j | mu, tau, y ~ N((1 - B_j) y_j + B_j mu, tau^2 B_j),
    evaluated at the drawn tau itself. The draws are independent, so no burn-in or ESS applies.

    Returns ``{"mu": (n,), "tau": (n,), "log_tau": (n,), "theta": (n, J)}``.
    """
    post = posterior(data, prior, num_nodes)
    return _sample_jit(rng_key, _anonymous(data), make_prior(prior), post, n)


@filter_jit
def _sample_jit(rng_key, data, prior, post, n):
    log_tau, mu, theta = _draws(rng_key, data, prior, post, n)
    return {"mu": mu, "tau": jnp.exp(log_tau), "log_tau": log_tau, "theta": theta}


def summary(
    data: Schools,
    prior="flat",
    query_school=0,
    threshold=None,
    rng_key=None,
    num_draws: int = 10_000,
    num_nodes: int = _DEFAULT_NODES,
) -> dict:
    r"""Exact posterior summaries: every entry a 1-D quadrature over log tau of a closed form (BDA3 section 5.4).

    * ``mu``, ``log_tau``, ``tau``: ``{mean, sd, q025, q25, q50, q75, q975}``. Quantiles of mu (a Gaussian
      mixture over the nodes) by safeguarded Newton on the mixture CDF; of log tau by inverting its CDF
      (see :func:`sample`); those of tau are exp of those of log tau.
    * ``theta``: the same keys, each (J,): mixtures of N(E[theta_j | tau], Var[theta_j | tau]).
    * ``shrinkage`` (J,): E[B_j | y], B_j = tau^-2 / (tau^-2 + sigma_j^-2).
    * ``p_exceeds``: P(theta_k > c | y), k = ``query_school``, c = ``threshold`` (default y_k; echoed as
      ``threshold``).
    * ``p_greater`` (J, J): P(theta_i > theta_j | y), exact: given tau, theta_i - theta_j is Gaussian with
      mean E[theta_i | tau] - E[theta_j | tau] and variance tau^2 B_i + tau^2 B_j + (B_i - B_j)^2 V_mu
      (both depend linearly on the same mu). Diagonal NaN. ``None`` when J > 200.
    * ``p_best`` (J,): P(theta_j is the largest | y), the one query that is a J-dimensional integral: by
      exact simulation (``num_draws`` independent draws, see :func:`sample`; Monte Carlo sd
      sqrt(p (1 - p) / num_draws)). Only with ``rng_key``; NaN otherwise.
    * ``log_evidence``: log p(y) (NaN for the flat prior); ``quadrature_error``: the estimate of
      :class:`ExactPosterior`.

    **Moments that do not exist are NaN** (:mod:`jaxschools.core.moments`), decided from the prior family and J,
    the number of schools in the likelihood (``mask``; a traced count under ``vmap``): p(tau | y) falls like
    tau^(1 - J) under the flat prior and like p(tau) tau^-J with the normal prior on mu, so

    * flat: the mean of mu and tau needs J >= 4, their sd J >= 5 (J < 3: improper, every mean, sd and the
      shrinkage NaN);
    * half_cauchy: the mean of tau needs J >= 1, its sd J >= 2; mu's moments always exist;
    * half_normal: every moment exists;
    * theta_j of a school in the likelihood, log tau, the shrinkage: every moment exists when the posterior
      is proper; theta_j of a masked school (theta_j | mu, tau ~ N(mu, tau^2)) has tau's conditions.

    Otherwise the quadrature would return the (large, finite) moment of its truncated range.

    Traceable: ``jax.vmap`` over datasets (and prior scales) works; eager calls compile once per shape.
    """
    post = posterior(data, prior, num_nodes)
    kind = make_prior(prior).kind
    # The prior is needed again only to draw (p_best); leaving it out otherwise lets all priors share one
    # compiled summary per shape.
    prior = make_prior(prior) if rng_key is not None else None
    out = _summary_jit(_anonymous(data), prior, post, query_school, threshold, rng_key, num_draws)
    return _nan_where_no_moment(out, kind, data.mask)


def _nan_where_no_moment(out: dict, kind: str, mask) -> dict:
    """``out`` with NaN for each mean and sd that does not exist (:func:`jaxschools.core.moments.null_nonexistent`;
    a masked school's theta_j | mu, tau ~ N(mu, tau^2) has tau's conditions, not theta's).

    J = sum(mask) may be traced, so this is a select on values, never a Python branch on J.
    """
    num_schools = jnp.sum(jnp.asarray(mask, jnp.int32))
    mask = jnp.asarray(mask, bool)
    out = dict(out)
    for name in ("mu", "tau", "log_tau", "theta"):
        out[name] = moments.null_nonexistent(out[name], kind, name, num_schools, jnp.where, observed=mask)
    out["shrinkage"] = moments.null_nonexistent({"mean": out["shrinkage"]}, kind, "shrinkage", num_schools,
                                                jnp.where)["mean"]
    return out


@filter_jit
def _summary_jit(data, prior, post, query_school, threshold, rng_key, num_draws):
    dtype = data.y.dtype
    probs = jnp.asarray(list(QUANTILES.values()), dtype)
    lw = post.log_weights

    def block(mean, sd, quantiles):
        return {"mean": mean, "sd": sd, **{key: quantiles[..., i] for i, key in enumerate(QUANTILES)}}

    log_tau_q = jax.vmap(lambda p: _logtau_icdf(post, p))(probs)
    # mu and the theta_j are all Gaussian mixtures over the same nodes: one solver for the J + 1 of them.
    loc = jnp.concatenate([post.mu_hat[:, None], post.theta_mean], axis=1)
    scale = jnp.sqrt(jnp.concatenate([post.mu_var[:, None], post.theta_var], axis=1))
    q = jax.vmap(lambda m, s: _mixture_quantiles(lw, m, s, probs), in_axes=1)(loc, scale)
    mu_q, theta_q = q[0], q[1:]
    theta_sd_nodes = scale[:, 1:]
    out = {
        "mu": block(*_weighted_moments(lw, post.mu_hat, post.mu_var), mu_q),
        "log_tau": block(*_weighted_moments(lw, post.log_tau), log_tau_q),
        "tau": block(*_weighted_moments(lw, jnp.exp(post.log_tau)), jnp.exp(log_tau_q)),
        "theta": block(*_weighted_moments(lw, post.theta_mean, post.theta_var), theta_q),
        "shrinkage": _weighted_moments(lw, post.shrinkage)[0],
    }
    w = jnp.exp(lw)
    threshold = data.y[query_school] if threshold is None else jnp.asarray(threshold, dtype)
    z = (post.theta_mean[:, query_school] - threshold) / theta_sd_nodes[:, query_school]
    out["p_exceeds"] = jnp.sum(w * _ndtr(z))
    out["threshold"] = threshold
    num_schools = data.y.shape[-1]
    if num_schools <= P_GREATER_MAX_SCHOOLS:
        diff = post.theta_mean[:, :, None] - post.theta_mean[:, None, :]
        b = post.shrinkage
        var = (
            post.theta_cond_var[:, :, None]
            + post.theta_cond_var[:, None, :]
            + (b[:, :, None] - b[:, None, :]) ** 2 * post.mu_var[:, None, None]
        )
        p = jnp.einsum("n,nij->ij", w, _ndtr(diff / jnp.sqrt(var)))
        out["p_greater"] = jnp.where(jnp.eye(num_schools, dtype=bool), jnp.nan, p)
    else:
        out["p_greater"] = None
    if rng_key is None:
        out["p_best"] = jnp.full((num_schools,), jnp.nan, dtype)
    else:
        out["p_best"] = _p_best(rng_key, data, prior, post, num_draws)
    out["log_evidence"] = post.log_evidence
    out["quadrature_error"] = post.error
    return out


def __dir__():
    # The public names only, not the imports (``dir(js.diagnostics)`` lists no ``jax`` or ``jnp``).
    return list(__all__)
