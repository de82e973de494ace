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

**Case weights** (``case_weights=``, shape (J,), default None: all ones, the computation unchanged). School j's
*marginal* likelihood term is raised to the power w_j:

.. math:: p(\mu, \tau \mid y; w) \propto p(\mu, \tau) \prod_j N(y_j \mid \mu, \sigma_j^2 + \tau^2)^{w_j},

so w_j enters mu_hat's precision as w_j / (sigma_j^2 + tau^2) and the log-likelihood as w_j times its term
(mu_hat, V_mu and h(tau) above with the w_j of BDA3 multiplied by the case weight). For theta_j given
(mu, tau) the tempered conditional is used, y_j | theta_j ~ N(theta_j, sigma_j^2 / w_j):

.. math:: B_j = \frac{\sigma_j^2}{\sigma_j^2 + w_j \tau^2}, \qquad
          \theta_j \mid \mu, \tau, y \sim N((1 - B_j) y_j + B_j \mu,\; \tau^2 B_j),

computed as log B_j = -softplus(2 log tau + log w_j - log sigma_j^2) (exact as tau -> 0 or inf, and B_j = 1
at w_j = 0, with its derivative -tau^2 / sigma_j^2 there too). w_j = 1 is the data as given, w_j = 0 is exactly
leaving school j out (the same as ``mask`` False: it is also left out of the search bracket, so the rule is
the masked dataset's). The weight is defined once, on the marginal term: weighting the joint model's term
N(y_j | theta_j, sigma_j^2)^w_j instead (under which y_j | mu, tau ~ N(mu, sigma_j^2 / w_j + tau^2)) gives the
same posterior of (mu, tau) at w_j = 0 and 1 but not the same derivative in w_j. The tempered conditional of
theta_j is what makes w_j = 0 leave school j out of theta_j's posterior too; d E[theta_j | y] / d w_j therefore
includes E[(dB_j / dw_j)(mu - y_j)] (:mod:`jaxschools.core.models`' weighted densities define the same
weighted posterior). A masked school has weight 0 whatever ``case_weights`` says. The moments' existence
rule (:mod:`jaxschools.core.moments`) then counts J = ceil(sum_j w_j): p(tau | y) falls like tau^(1 - sum w)
(flat) or p(tau) tau^(-sum w), and with an integer threshold n, sum w > n - 1 iff ceil(sum w) >= n. The
coarse grid assumes a posterior of log tau no narrower than that of J unit weights (weights up to about 1).

**Derivatives.** Everything here differentiates in both modes (``jax.grad``, ``jacrev``, ``jacfwd``, under
``vmap``) with respect to y, sigma, the case weights and the prior's leaves (mu_loc, mu_scale, tau_scale):

* The integration range [a, b] is held fixed (``lax.stop_gradient``): the integral over it does not depend on
  it to e^-40, and its derivative through the coarse grid's discrete argmax would be meaningless. The
  quadrature sums, Gaussian conditionals and probabilities are then differentiated as written.
* Quantiles by implicit differentiation of F(q; phi) = p (``jax.custom_jvp``, never through the solver's
  iterations): dq = (dp - dF(q)) / f(q), with dF the tangent of the CDF at fixed x = q, written without loops
  (the mixture CDF of mu and theta_j; the panel masses plus the in-panel interpolant for log tau), so the
  tangent is linear and JAX transposes it for reverse mode.
* Exact draws (:func:`sample`) by reparameterisation: the uniforms and normals are held fixed and log tau =
  F^-1(u) carries the implicit derivative above.
* ``p_best`` is a Monte Carlo estimate, piecewise constant in the inputs: it has no derivative, and
  differentiating :func:`summary` with an ``rng_key`` raises an error rather than return a silent zero
  (differentiate the summary without ``rng_key``; everything else is exact).
* A moment that does not exist is NaN, and its derivative there is a meaningless 0 (``jnp.where``);
  :mod:`jaxschools.core.sensitivity` reports it as NaN.

References: Gelman et al., *Bayesian Data Analysis*, 3rd ed. (BDA3), section 5.4, eqs. 5.17-5.21; implicit
differentiation of a root: Blondel et al. (2022), "Efficient and modular implicit differentiation", NeurIPS.
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
    "quantiles",
    "num_in_likelihood",
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


def _softplus(a):
    """log(1 + e^a), exact for any a (jnp.logaddexp is ~6x slower, and this runs N x J times)."""
    return jnp.maximum(a, 0.0) + jnp.log1p(jnp.exp(-jnp.abs(a)))


def _ndtr(z):
    """Phi(z) as one erfc: accurate relative to Phi in the lower tail, to 1e-16 absolute in the upper
    (all that sums of probabilities need), and ~3x cheaper than jax.scipy.special.ndtr."""
    return 0.5 * jax.scipy.special.erfc(-z * _SQRT_HALF)


def _case_weights(data: Schools, case_weights):
    """The effective weight w_j of each school: ``case_weights`` (all ones when None) where the school is in
    the likelihood, 0 where it is masked (whatever ``case_weights`` says there)."""
    dtype = data.y.dtype
    if case_weights is None:
        return data.mask.astype(dtype)
    return jnp.where(data.mask, jnp.asarray(case_weights, dtype), 0.0)


@jax.custom_jvp
def _log_shrinkage(a, weight):
    """log B = -log(1 + w e^a) = -softplus(a + log w), a = 2 log tau - log sigma^2: B = sigma^2 / (sigma^2 +
    w tau^2). Exact for any a (tau -> 0 or inf) and 0 at w = 0 (log 0 = -inf, softplus(-inf) = 0)."""
    return -_softplus(a + jnp.log(weight))


@_log_shrinkage.defjvp
def _log_shrinkage_jvp(primals, tangents):
    # d log B = -(1 - B) da - B e^a dw, with B e^a = exp(log B + a) (e^a at w = 0, where the chain rule
    # through log w would give inf * 0). Capped below the dtype's largest number so that a zero tangent
    # dw (a masked school) times it stays 0 in float32 at huge tau.
    a, weight = primals
    da, dweight = tangents
    log_b = _log_shrinkage(a, weight)
    cap = math.log(jnp.finfo(log_b.dtype).max) - 1.0
    return log_b, -(1.0 - jnp.exp(log_b)) * da - jnp.exp(jnp.minimum(log_b + a, cap)) * dweight


def _conditional(data: Schools, prior: Prior, log_tau, weight) -> _Conditional:
    """Everything given tau, from one log(sigma_j^2 + tau^2) per school (all in log space, so no precision
    over- or underflows for any tau, tau = 0 included). ``weight``: :func:`_case_weights`."""
    dtype = data.y.dtype
    # Per-school constants (not batched over nodes). The mask and the weights enter as float factors and a
    # -inf offset, not as a select on the (nodes, J) arrays, which XLA's CPU backend runs several times
    # slower; masked y and sigma may hold anything (NaN included), so they are replaced by harmless values.
    log_sigma2 = 2.0 * jnp.log(jnp.where(data.mask, data.sigma, 1.0))
    y = jnp.where(data.mask, data.y, 0.0)
    # log(sigma^2 + tau^2) = log sigma^2 + softplus(2 (log tau - log sigma)).
    a = 2.0 * log_tau - log_sigma2
    soft = _softplus(a)
    log_var = log_sigma2 + soft
    # Precisions w_j / (sigma_j^2 + tau^2) relative to the largest among the schools with w_j > 0.
    log_prec, scale = -log_var, weight
    offset = jnp.where(weight > 0, 0.0, -jnp.inf)
    y_all = y
    if prior.mu_normal:
        # The N(mu_loc, mu_scale^2) prior on mu is one more precision-weighted observation.
        log_prec = jnp.concatenate([log_prec, jnp.reshape(-2.0 * jnp.log(jnp.asarray(prior.mu_scale, dtype)), (1,))])
        scale = jnp.concatenate([scale, jnp.ones((1,), dtype)])
        offset = jnp.concatenate([offset, jnp.zeros((1,), dtype)])
        y_all = jnp.concatenate([y, jnp.reshape(jnp.asarray(prior.mu_loc, dtype), (1,))])
    # The shift cancels exactly (log_precision and mu_hat do not depend on it): no derivative through it.
    top = jax.lax.stop_gradient(jnp.max(offset + log_prec))
    rel = scale * jnp.exp(log_prec - top)
    total = jnp.sum(rel)
    log_precision = top + jnp.log(total)
    mu_hat = jnp.sum(rel * y_all) / total
    # sum_j w_j log N(y_j | mu_hat, sigma_j^2 + tau^2) (models.marginal_loglik with weights, sharing log_var).
    resid = y - mu_hat
    log_lik = -0.5 * jnp.sum(weight * (_LOG_2PI + log_var + resid * resid * jnp.exp(-log_var)))
    log_b = _log_shrinkage(a, weight)  # B_j = sigma_j^2 / (sigma_j^2 + w_j tau^2); 1 when masked or w_j = 0
    return _Conditional(
        # The integrand is Gaussian in mu: its integral is its peak value times sqrt(2 pi V_mu).
        log_h=log_lik + prior.log_prob(mu_hat, log_tau, data) + 0.5 * (_LOG_2PI - log_precision),
        mu_hat=mu_hat,
        mu_var=jnp.exp(-log_precision),
        shrinkage=jnp.exp(log_b),
        theta_cond_var=jnp.exp(2.0 * log_tau + log_b),  # tau^2 B_j = sigma_j^2 tau^2 / (sigma_j^2 + w_j tau^2)
    )


def _log_h(data: Schools, prior: Prior, log_tau, weight):
    """log of the integral over mu of p(y | mu, tau)^w p(mu, tau), a density in tau (BDA3 eq. 5.21)."""
    return _conditional(data, prior, log_tau, weight).log_h


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
    spec = prior.spec
    if spec.has_scale:
        # The prior's scale: a prior narrower than the data (or wider) moves the mass there. The lognormal's and
        # log-t_5's log tau spreads c/2 sds per unit; c/2 * 40 covers their e^-40 tails.
        log_tau_scale = jnp.log(jnp.asarray(prior.tau_scale, dtype))
        reach = 20.0 * spec.shape if spec.tau in ("lognormal", "log_t5") else 0.0
        log_lo = jnp.minimum(log_lo, log_tau_scale - reach)
        log_hi = jnp.maximum(log_hi, log_tau_scale + reach)
    if prior.mu_normal:
        log_hi = jnp.maximum(log_hi, jnp.log(jnp.asarray(prior.mu_scale, dtype)))
    return log_lo - _TAIL, log_hi + _TAIL


def _integration_range(data: Schools, prior: Prior, weight):
    """The 40-nat level set of p(log tau | y), found on a coarse grid over the search bracket.

    Held fixed under differentiation (the inputs' gradients are stopped, see the module docstring). The
    bracket comes from the schools with w_j > 0 only, so a weight of 0 gives exactly the masked rule."""
    data, prior, weight = jax.lax.stop_gradient((data, prior, weight))
    lo, hi = _search_bracket(data.replace(mask=weight > 0), prior)
    if prior.spec.tau == "uniform_bounded":
        # No mass above the bound: the rule ends there exactly, not at a jump inside a panel.
        hi = jnp.minimum(hi, jnp.log(jnp.asarray(prior.tau_scale, data.y.dtype)))
        lo = jnp.minimum(lo, hi - 2.0 * _TAIL)
    num = _num_coarse(data.y.shape[-1])
    grid = lo + (hi - lo) * jnp.linspace(0.0, 1.0, num, dtype=data.y.dtype)
    log_f = jax.vmap(lambda x: _log_h(data, prior, x, weight) + x)(grid)
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


def _on_rules(data, prior, weight, a, b, num_panels):
    """The conditionals on the n-node rule and on the n/2-node rule that checks it. The n/2 rule serves only
    the error estimate, which has no derivative: its inputs' gradients are stopped (a third of the cost of a
    forward-mode derivative)."""
    fine, log_qw = _gauss_legendre(a, b, num_panels, data.y.dtype)
    half, half_log_qw = _gauss_legendre(a, b, num_panels // 2, data.y.dtype)
    fixed = jax.lax.stop_gradient((data, prior, weight))
    conds = (jax.vmap(lambda x: _conditional(data, prior, x, weight))(fine),
             jax.vmap(lambda x: _conditional(*fixed[:2], x, fixed[2]))(half))
    out = []
    for nodes, qw, c in ((fine, log_qw, conds[0]), (half, half_log_qw, conds[1])):
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


def _posterior(data: Schools, prior: Prior, num_nodes: int, weight) -> ExactPosterior:
    dtype = data.y.dtype
    a, b = _integration_range(data, prior, weight)
    num_panels = num_nodes // _PANEL
    fine, half = _on_rules(data, prior, weight, a, b, num_panels)
    nodes, log_density, log_weights, cond, log_norm = fine
    h_nodes, _, h_log_weights, h_cond, h_log_norm = half
    # n vs n/2 nodes: the change of log Z (a relative error of Z), and of each mean and sd in units of the sd.
    changes = [jnp.abs(log_norm - h_log_norm)]
    stats, h_stats = _error_stats(nodes, log_weights, cond), _error_stats(h_nodes, h_log_weights, h_cond)
    for (m, sd), (h_m, h_sd) in zip(stats, h_stats):
        changes += [jnp.abs(m - h_m) / sd, jnp.abs(sd - h_sd) / sd]
    changes = jax.lax.stop_gradient(changes)
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


def _panel_cdf(log_f, width, s):
    """The CDF within one panel at local coordinate s in [-1, 1] (16-point Gauss-Legendre on [-1, s] of the
    interpolated density ``exp(log_f)``, panel width ``width`` in log tau) and its derivative in s."""
    gl_x, gl_w = jnp.asarray(_GL_X, log_f.dtype), jnp.asarray(_GL_W, log_f.dtype)
    t = -1.0 + 0.5 * (s + 1.0) * (1.0 + gl_x)
    local = 0.5 * width * 0.5 * (s + 1.0) * jnp.sum(gl_w * jnp.exp(_interpolate(log_f, t)))
    return local, 0.5 * width * jnp.exp(_interpolate(log_f, s[None])[0])


def _panel_masses(log_weights):
    """The posterior mass of each panel and their cumulative sums (P + 1,), starting at 0."""
    mass = jnp.sum(jnp.exp(log_weights).reshape(-1, _PANEL), axis=1)
    return mass, jnp.concatenate([jnp.zeros((1,), mass.dtype), jnp.cumsum(mass)])


def _logtau_cdf(log_weights, log_density, bounds, x):
    """P(log tau <= x | y) and p(log tau = x | y) at a scalar x in the range: the masses of the panels left
    of x plus the in-panel integral. The CDF that :func:`_logtau_quantile` inverts, without a loop, so that
    its derivative in the posterior's parameters at fixed x is an ordinary (linear, transposable) JVP."""
    num_panels = log_weights.shape[0] // _PANEL
    width = (bounds[1] - bounds[0]) / num_panels
    mass, cum = _panel_masses(log_weights)
    pos = (x - bounds[0]) / width
    # The panel holding x: a discrete choice, no derivative (the CDF is continuous across panel edges).
    k = jnp.clip(jnp.floor(jax.lax.stop_gradient(pos)), 0, num_panels - 1).astype(jnp.int32)
    local, dlocal = _panel_cdf(log_density.reshape(num_panels, _PANEL)[k], width, 2.0 * (pos - k) - 1.0)
    return cum[k] + local, dlocal * 2.0 / width


@jax.custom_jvp
def _logtau_quantile(log_weights, log_density, bounds, u):
    """Inverse CDF of log tau at a scalar u: the panel from the cumulative panel masses, then a root of
    the in-panel CDF (16-point Gauss-Legendre on the interpolated density) by safeguarded Newton.
    Differentiated implicitly (the JVP rule below), never through the solver's loop."""
    dtype = log_weights.dtype
    num_panels = log_weights.shape[0] // _PANEL
    a, b = bounds[0], bounds[1]
    width = (b - a) / num_panels
    mass, cum = _panel_masses(log_weights)
    k = jnp.clip(jnp.searchsorted(cum, u, side="right") - 1, 0, num_panels - 1)
    log_f = log_density.reshape(num_panels, _PANEL)[k]
    target = jnp.clip(u - cum[k], 0.0, mass[k])
    # Linear interpolation as the start (a panel whose mass underflowed to 0 starts mid-panel).
    s0 = jnp.clip(-1.0 + 2.0 * target / jnp.maximum(mass[k], jnp.finfo(dtype).tiny), -1.0, 1.0)
    s = _safeguarded_newton(lambda s: _panel_cdf(log_f, width, s), target, jnp.asarray(-1.0, dtype),
                            jnp.asarray(1.0, dtype), s0, 2.0)
    return a + width * (k + 0.5 * (s + 1.0))


def _implicit_quantile_jvp(quantile, cdf_pdf):
    """The JVP rule of a quantile q(params, p) defined by F(q; params) = p: dq = (dp - dF(q)) / f(q), dF the
    tangent of the CDF in its parameters at fixed x = q (implicit function theorem). Linear in the tangents,
    so reverse mode transposes it."""

    def jvp(primals, tangents):
        *params, p = primals
        *dparams, dp = tangents
        q = quantile(*primals)
        (_, density), (dcdf, _) = jax.jvp(lambda *args: cdf_pdf(*args, q), tuple(params), tuple(dparams))
        return q, (dp - dcdf) / density

    return jvp


_logtau_quantile.defjvp(_implicit_quantile_jvp(_logtau_quantile, _logtau_cdf))


def _logtau_icdf(post: ExactPosterior, u):
    """Inverse CDF of log tau at a scalar u (:func:`_logtau_quantile` on the posterior's rule)."""
    return _logtau_quantile(post.log_weights, post.log_density, post.bounds, jnp.asarray(u, post.log_tau.dtype))


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


def _mixture_cdf(log_weights, loc, scale, x):
    """CDF and density at x of the mixture sum_i w_i N(loc_i, scale_i^2), w = exp(log_weights)."""
    w = jnp.exp(log_weights)
    z = (x - loc) / scale
    return jnp.sum(w * _ndtr(z)), jnp.sum(w * jnp.exp(-0.5 * z * z) / scale) / math.sqrt(2.0 * math.pi)


@jax.custom_jvp
def _mixture_quantile(log_weights, loc, scale, p):
    """The quantile at p of sum_i w_i N(loc_i, scale_i^2), by safeguarded Newton on the CDF; differentiated
    implicitly (the JVP rule below), never through the solver's loop."""
    live = log_weights > _NEGLIGIBLE_LOG_WEIGHT
    # 12 sd beyond every non-negligible component: the mass outside is below Phi(-12) ~ 2e-33.
    lo = jnp.min(jnp.where(live, loc - 12.0 * scale, jnp.inf))
    hi = jnp.max(jnp.where(live, loc + 12.0 * scale, -jnp.inf))
    mean, sd = _weighted_moments(log_weights, loc, scale**2)
    x0 = jnp.clip(mean + sd * ndtri(p), lo, hi)
    return _safeguarded_newton(lambda x: _mixture_cdf(log_weights, loc, scale, x), p, lo, hi, x0,
                               sd + jnp.abs(mean))


_mixture_quantile.defjvp(_implicit_quantile_jvp(_mixture_quantile, _mixture_cdf))


def _mixture_quantiles(log_weights, loc, scale, probs):
    """Quantiles of sum_i w_i N(loc_i, scale_i^2) at each of ``probs`` (:func:`_mixture_quantile`)."""
    return jax.vmap(lambda p: _mixture_quantile(log_weights, loc, scale, p))(probs)


# ---------------------------------------------------------------------------------------------------------
# Sampling.


def _draws(rng_key, data: Schools, prior: Prior, weight, post: ExactPosterior, n: int):
    """n independent draws of (log tau, mu, theta): inverse CDF for log tau, then the exact Gaussians.
    Differentiable by reparameterisation: the uniforms and normals are fixed given the key."""
    dtype = data.y.dtype
    tau_key, mu_key, theta_key = jax.random.split(rng_key, 3)
    u = jax.random.uniform(tau_key, (n,), dtype)
    log_tau = jax.vmap(lambda p: _logtau_icdf(post, p))(u)
    cond = jax.vmap(lambda x: _conditional(data, prior, x, weight))(log_tau)
    mu = cond.mu_hat + jnp.sqrt(cond.mu_var) * jax.random.normal(mu_key, (n,), dtype)
    b = cond.shrinkage
    theta_mean = jnp.where(data.mask, data.y + b * (mu[:, None] - data.y), mu[:, None])
    theta = theta_mean + jnp.sqrt(cond.theta_cond_var) * jax.random.normal(theta_key, b.shape, dtype)
    return log_tau, mu, theta


@jax.custom_jvp
def _without_derivative(estimate, parameters):
    """``estimate``, refusing to be differentiated with respect to ``parameters`` (see :func:`_p_best`)."""
    del parameters
    return estimate


@_without_derivative.defjvp
def _without_derivative_jvp(primals, tangents):
    raise TypeError(
        "exact.summary's p_best is a Monte Carlo estimate, piecewise constant in the data, the case weights "
        "and the prior: it has no derivative. Differentiate exact.summary without rng_key (p_best is then NaN "
        "and every other entry is exact)."
    )


def _p_best(rng_key, data: Schools, prior: Prior, weight, post: ExactPosterior, num_draws: int):
    """P(theta_j is the largest) from draws, in chunks of at most ~4M numbers so large J fits in memory.

    A count of argmaxes: piecewise constant in every input, so its derivative would be a silent 0 almost
    everywhere. It is wrapped so that differentiating it raises instead (:func:`_without_derivative`)."""
    num_schools = data.y.shape[-1]
    num_chunks = max(1, math.ceil(num_draws * num_schools / 2**22))
    chunk = math.ceil(num_draws / num_chunks)

    def body(counts, i):
        theta = _draws(jax.random.fold_in(rng_key, i), data, prior, weight, post, chunk)[2]
        return counts + jnp.sum(jax.nn.one_hot(jnp.argmax(theta, axis=1), num_schools, dtype=theta.dtype), 0), None

    counts, _ = jax.lax.scan(body, jnp.zeros((num_schools,), data.y.dtype), jnp.arange(num_chunks))
    return _without_derivative(counts / (chunk * num_chunks), (data, prior, weight, post))


# ---------------------------------------------------------------------------------------------------------
# Public API.


@filter_jit
def _posterior_jit(data, prior, num_nodes, case_weights):
    return _posterior(data, prior, num_nodes, _case_weights(data, case_weights))


def posterior(data: Schools, prior="flat", num_nodes: int = _DEFAULT_NODES, *, case_weights=None) -> ExactPosterior:
    """The exact posterior on a quadrature rule in log tau (see the module docstring).

    Args:
      data: a :class:`~jaxschools.core.data.Schools` (leaves may be batched under ``vmap``).
      prior: a name (``flat``, ``half_cauchy``, ``half_normal``, default scales) or a
        :class:`~jaxschools.core.models.Prior`.
      num_nodes: N, a multiple of 32 (N / 16 Gauss-Legendre panels of 16 nodes); the error estimate
        compares with N / 2.
      case_weights: (J,) w_j >= 0 on each school's marginal likelihood term (module docstring); None: all 1.

    Returns:
      An :class:`ExactPosterior`: nodes, normalised log weights, the conditional moments of mu and theta
      at each node, ``log_evidence`` (log p(y), NaN for the flat prior) and ``error``. Differentiable in
      the data, the case weights and the prior's leaves, the nodes (``log_tau``, ``bounds``) held fixed.
    """
    _check_num_nodes(num_nodes)
    return _posterior_jit(data.without_names(), make_prior(prior), num_nodes, case_weights)


def num_in_likelihood(data: Schools, case_weights=None):
    """J, the count of schools in the likelihood that :mod:`jaxschools.core.moments`' rules take: ceil(sum_j
    w_j) over the unmasked schools (the number of unmasked schools without weights). p(tau | y) falls like
    tau^(1 - sum w) (flat prior) or p(tau) tau^(-sum w), and for an integer threshold n, sum w > n - 1 iff
    ceil(sum w) >= n, so the rules stay exact for fractional weights. A float array; traceable."""
    return jnp.ceil(jnp.sum(_case_weights(data.without_names(), case_weights), axis=-1))


def log_tau_logdensity(data: Schools, prior="flat", log_tau=0.0, num_nodes: int = _DEFAULT_NODES, *,
                       case_weights=None):
    """Normalised log p(log tau | y) at ``log_tau`` (any shape): log h(tau) + log tau - log Z (BDA3 eq. 5.21)."""
    post = posterior(data, prior, num_nodes, case_weights=case_weights)
    return _log_tau_logdensity(data.without_names(), make_prior(prior), case_weights, post.log_norm,
                               jnp.asarray(log_tau, data.y.dtype))


@filter_jit
def _log_tau_logdensity(data, prior, case_weights, log_norm, log_tau):
    weight = _case_weights(data, case_weights)
    flat = jax.vmap(lambda x: _log_h(data, prior, x, weight) + x)(log_tau.reshape(-1))
    return flat.reshape(log_tau.shape) - log_norm


def tau_density(data: Schools, prior="flat", tau=1.0, num_nodes: int = _DEFAULT_NODES, *, case_weights=None):
    """Normalised p(tau | y) = h(tau) / Z at ``tau`` >= 0 (any shape); finite at tau = 0 (BDA3 eq. 5.21)."""
    post = posterior(data, prior, num_nodes, case_weights=case_weights)
    return _tau_density(data.without_names(), make_prior(prior), case_weights, post.log_norm,
                        jnp.asarray(tau, data.y.dtype))


@filter_jit
def _tau_density(data, prior, case_weights, log_norm, tau):
    # log(0) = -inf is a valid log tau here: w_j, B_j and the priors all have finite limits at tau = 0.
    weight = _case_weights(data, case_weights)
    flat = jax.vmap(lambda x: _log_h(data, prior, x, weight))(jnp.log(tau.reshape(-1)))
    return jnp.exp(flat.reshape(tau.shape) - log_norm)


def sample(rng_key, data: Schools, n: int, prior="flat", num_nodes: int = _DEFAULT_NODES, *,
           case_weights=None) -> dict:
    """``n`` independent exact draws from p(mu, tau, theta | y) (BDA3 section 5.4's simulation recipe).

    log tau by inversion of its CDF (panel masses of the quadrature rule, then the 16-point interpolant
    of the log density inside the panel, solved by safeguarded Newton: exact to ~1e-12 in probability);
    then mu | tau, y ~ N(mu_hat, V_mu) and theta_j | mu, tau, y ~ N((1 - B_j) y_j + B_j mu, tau^2 B_j),
    evaluated at the drawn tau itself. The draws are independent, so no burn-in or ESS applies.

    Differentiable by reparameterisation: for a fixed key the uniforms u and normals z are fixed and each
    draw is a smooth function of the data, case weights and prior (log tau = F^-1(u) with the implicit
    derivative -dF / f, then mu_hat + sqrt(V_mu) z, ...), so ``jax.jacfwd``/``jacrev`` give d draw / d input.

    Returns ``{"mu": (n,), "tau": (n,), "log_tau": (n,), "theta": (n, J)}``.
    """
    post = posterior(data, prior, num_nodes, case_weights=case_weights)
    return _sample_jit(rng_key, data.without_names(), make_prior(prior), case_weights, post, n)


@filter_jit
def _sample_jit(rng_key, data, prior, case_weights, post, n):
    log_tau, mu, theta = _draws(rng_key, data, prior, _case_weights(data, case_weights), post, n)
    return {"mu": mu, "tau": jnp.exp(log_tau), "log_tau": log_tau, "theta": theta}


def quantiles(post: ExactPosterior, probs, *, theta: bool = True) -> dict:
    """Quantiles at ``probs`` (P,) of mu, log tau, tau and (``theta=True``) each theta_j, from the rule.

    mu and theta_j | y are Gaussian mixtures over the nodes (solved by safeguarded Newton on the mixture CDF),
    log tau by inverting its CDF (see :func:`sample`), tau = exp of log tau's. Each is differentiable in the
    posterior's parameters by the implicit function theorem: dq = (dp - dF(q)) / f(q), so ``jax.grad`` of
    a quantile with respect to the data (through :func:`posterior`) works in both modes.

    Returns ``{"mu": (P,), "log_tau": (P,), "tau": (P,), "theta": (J, P)}`` (no ``theta`` when False).
    """
    return _quantiles_jit(post, jnp.asarray(probs, post.log_tau.dtype), theta)


@filter_jit
def _quantiles_jit(post, probs, theta):
    log_tau_q = jax.vmap(lambda p: _logtau_icdf(post, p))(probs)
    out = {"log_tau": log_tau_q, "tau": jnp.exp(log_tau_q)}
    if not theta:
        out["mu"] = _mixture_quantiles(post.log_weights, post.mu_hat, jnp.sqrt(post.mu_var), probs)
        return out
    # mu and the theta_j are all Gaussian mixtures over the same nodes: one solver for the J + 1 of them.
    loc = jnp.concatenate([post.mu_hat[:, None], post.theta_mean], axis=1)
    scale = jnp.sqrt(jnp.concatenate([post.mu_var[:, None], post.theta_var], axis=1))
    q = jax.vmap(lambda m, s: _mixture_quantiles(post.log_weights, m, s, probs), in_axes=1)(loc, scale)
    out["mu"], out["theta"] = q[0], q[1:]
    return out


def summary(
    data: Schools,
    prior="flat",
    query_school=0,
    threshold=None,
    rng_key=None,
    num_draws: int = 10_000,
    num_nodes: int = _DEFAULT_NODES,
    *,
    case_weights=None,
) -> dict:
    r"""Exact posterior summaries: every entry a 1-D quadrature over log tau of a closed form (BDA3 section 5.4).

    * ``mu``, ``log_tau``, ``tau``: ``{mean, sd, q025, q25, q50, q75, q975}``. Quantiles of mu (a Gaussian
      mixture over the nodes) by safeguarded Newton on the mixture CDF; of log tau by inverting its CDF
      (see :func:`sample`); those of tau are exp of those of log tau.
    * ``theta``: the same keys, each (J,): mixtures of N(E[theta_j | tau], Var[theta_j | tau]).
    * ``shrinkage`` (J,): E[B_j | y], B_j = tau^-2 / (tau^-2 + w_j sigma_j^-2).
    * ``p_exceeds``: P(theta_k > c | y), k = ``query_school``, c = ``threshold`` (default y_k; echoed as
      ``threshold``).
    * ``p_greater`` (J, J): P(theta_i > theta_j | y), exact: given tau, theta_i - theta_j is Gaussian with
      mean E[theta_i | tau] - E[theta_j | tau] and variance tau^2 B_i + tau^2 B_j + (B_i - B_j)^2 V_mu
      (both depend linearly on the same mu). Diagonal NaN. ``None`` when J > 200.
    * ``p_best`` (J,): P(theta_j is the largest | y), the one query that is a J-dimensional integral: by
      exact simulation (``num_draws`` independent draws, see :func:`sample`; Monte Carlo sd
      sqrt(p (1 - p) / num_draws)). Only with ``rng_key``; NaN otherwise. It has no derivative:
      differentiating a summary computed with ``rng_key`` raises (see the module docstring).
    * ``log_evidence``: log p(y) (NaN for the flat prior); ``quadrature_error``: the estimate of
      :class:`ExactPosterior`.

    **Moments that do not exist are NaN** (:mod:`jaxschools.core.moments`), decided from the prior family and J,
    the number of schools in the likelihood (``mask``; a traced count under ``vmap``; with case weights
    ceil(sum w_j), :func:`num_in_likelihood`): p(tau | y) falls like
    tau^(1 - J) under the flat prior and like p(tau) tau^-J with the normal prior on mu, so

    * flat: the mean of mu and tau needs J >= 4, their sd J >= 5 (J < 3: improper, every mean, sd and the
      shrinkage NaN);
    * half_cauchy: the mean of tau needs J >= 1, its sd J >= 2; mu's moments always exist;
    * half_normal: every moment exists;
    * theta_j of a school in the likelihood, log tau, the shrinkage: every moment exists when the posterior
      is proper; theta_j of a masked school (theta_j | mu, tau ~ N(mu, tau^2)) has tau's conditions.

    Otherwise the quadrature would return the (large, finite) moment of its truncated range.

    ``case_weights`` (J,): w_j on school j's marginal likelihood term and the tempered conditional of theta_j
    (module docstring); w_j = 0 gives the same summary as masking school j.

    Traceable: ``jax.vmap`` over datasets (and prior scales, case weights) works; eager calls compile once per
    shape. Differentiable in both modes with respect to y, sigma, the case weights and the prior's leaves
    (every entry but ``p_best``, ``threshold`` echoing its input, and ``quadrature_error``).
    """
    post = posterior(data, prior, num_nodes, case_weights=case_weights)
    kind = make_prior(prior).kind
    # The prior is needed again only to draw (p_best); leaving it out otherwise lets all priors share one
    # compiled summary per shape.
    prior = make_prior(prior) if rng_key is not None else None
    out = _summary_jit(data.without_names(), prior, case_weights, post, query_school, threshold, rng_key, num_draws)
    return _nan_where_no_moment(out, kind, data, case_weights)


def _nan_where_no_moment(out: dict, kind: str, data: Schools, case_weights) -> dict:
    """``out`` with NaN for each mean and sd that does not exist (:func:`jaxschools.core.moments.null_nonexistent`;
    a masked school's theta_j | mu, tau ~ N(mu, tau^2) has tau's conditions, not theta's).

    J (:func:`num_in_likelihood`) may be traced, so this is a select on values, never a Python branch on J.
    """
    num_schools = num_in_likelihood(data, case_weights)
    mask = _case_weights(data.without_names(), case_weights) > 0
    out = dict(out)
    for name in ("mu", "tau", "log_tau", "theta"):
        out[name] = moments.null_nonexistent(out[name], kind, name, num_schools, jnp.where, observed=mask)
    out["shrinkage"] = moments.null_nonexistent({"mean": out["shrinkage"]}, kind, "shrinkage", num_schools,
                                                jnp.where)["mean"]
    return out


@filter_jit
def _summary_jit(data, prior, case_weights, post, query_school, threshold, rng_key, num_draws):
    dtype = data.y.dtype
    probs = jnp.asarray(list(QUANTILES.values()), dtype)
    lw = post.log_weights

    def block(mean, sd, quantiles):
        return {"mean": mean, "sd": sd, **{key: quantiles[..., i] for i, key in enumerate(QUANTILES)}}

    q = _quantiles_jit(post, probs, True)
    theta_sd_nodes = jnp.sqrt(post.theta_var)
    out = {
        "mu": block(*_weighted_moments(lw, post.mu_hat, post.mu_var), q["mu"]),
        "log_tau": block(*_weighted_moments(lw, post.log_tau), q["log_tau"]),
        "tau": block(*_weighted_moments(lw, jnp.exp(post.log_tau)), q["tau"]),
        "theta": block(*_weighted_moments(lw, post.theta_mean, post.theta_var), q["theta"]),
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
        out["p_best"] = _p_best(rng_key, data, prior, _case_weights(data, case_weights), post, num_draws)
    out["log_evidence"] = post.log_evidence
    out["quadrature_error"] = post.error
    return out


def __dir__():
    # The public names only, not the imports (``dir(js.diagnostics)`` lists no ``jax`` or ``jnp``).
    return list(__all__)
