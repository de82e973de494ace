r"""What a meta-analyst reads beside the posterior of (mu, tau, theta): the heterogeneity as I^2 and H^2, the
prediction for a new study, the shortest (highest-density) intervals and posterior predictive p-values, each on
the quadrature rule of :mod:`jaxschools.core.exact` (one-dimensional integrals over log tau of closed forms;
only the p-value of Cochran's Q is a Monte Carlo estimate, from exact draws).

**Heterogeneity** (Higgins and Thompson 2002, eqs. 9 and 10): with w_j = sigma_j^-2 over the k studies in the
likelihood, the typical within-study variance and the two relative measures are

.. math::
    s^2 = \frac{(k - 1) \sum_j w_j}{(\sum_j w_j)^2 - \sum_j w_j^2}, \qquad
    I^2 = \frac{\tau^2}{\tau^2 + s^2}, \qquad H^2 = \frac{\tau^2 + s^2}{s^2} = \frac{1}{1 - I^2}.

Both are increasing in tau, so their posterior quantiles are those of tau mapped through them, their moments
are quadratures over the nodes, and p(I^2 | y) = p(log tau | y) / (2 I^2 (1 - I^2)). I^2 lies in [0, 1], so
its moments exist whenever the posterior is proper; E[H^2] needs E[tau^2] and sd(H^2) needs E[tau^4]
(:mod:`jaxschools.core.moments`' rule for tau at orders 2 and 4). s^2 needs k >= 2 studies with unequal or
equal sigmas (k = 1: NaN).

**Prediction for a new study** (BDA3 section 5.5; the meta-analytic-predictive distribution, Neuenschwander et
al. 2010): theta_new | mu, tau ~ N(mu, tau^2) and y_new | theta_new ~ N(theta_new, sigma_new^2), so given tau

.. math::
    \theta_{new} \mid \tau, y \sim N(\hat\mu(\tau), V_\mu(\tau) + \tau^2), \qquad
    y_{new} \mid \tau, y \sim N(\hat\mu(\tau), V_\mu(\tau) + \tau^2 + \sigma_{new}^2),

and each is a Gaussian mixture over the nodes (quantiles by the exact module's mixture solver). Their moments
are those of a study outside the likelihood (``theta_out``: tau's conditions).

**Shortest intervals**: the shortest interval [L, U] holding ``level`` of the posterior mass. For a unimodal
density it is the highest-density interval, where f(L) = f(U) (or L at the lower end of the support when the
density falls from there, as p(tau | y) and p(I^2 | y) often do). It is found in the lower tail probability
p in [0, 1 - level] with L = Q(p), U = Q(p + level): h(p) = f(L) - f(U) increases with p for a unimodal
density, and its root is bracketed and found by 50 bisection steps (p to 1e-16); a p below 1e-12 is the end of
the support (L = 0 for tau and I^2). Computed for mu, tau, I^2, every theta_j, theta_new and y_new, on each
quantity's own scale (the interval for tau is not exp of the one for log tau). The endpoints are the
quantile solver's (implicitly differentiable); the choice of p is not differentiated (it is held fixed), so a
derivative of a shortest interval is that of the interval at the same tail split: use the central ones for
sensitivities.

**Posterior predictive p-values** (BDA3 section 6.3): y_rep_j | theta_j ~ N(theta_j, sigma_j^2) for the same
studies; p_B = P(T(y_rep) >= T(y) | y).

* Cochran's Q = sum_j w_j (y_j - y_w)^2 (y_w the inverse-variance weighted mean), the usual test statistic of
  heterogeneity: Monte Carlo over ``num_draws`` independent draws, with its binomial standard error
  sqrt(p (1 - p) / n). Each draw takes a node of the rule with probability its weight, then mu, theta and y_rep
  from their exact Gaussians given that tau: the expectation of the indicator under this discrete mixture is the
  quadrature value of the p-value, equal to the exact one to the rule's error (~1e-12), so the estimate is
  unbiased for it (and cheaper to compile than inverse-CDF draws of tau).
* The study-level statistics T = y_j: P(y_rep_j >= y_j | y) = sum_i w_i Phi((E[theta_j | tau_i, y] - y_j) /
  sqrt(Var[theta_j | tau_i, y] + sigma_j^2)), exact. Values near 0 or 1 flag a study the model would rarely
  reproduce (conservative: y_j is also in the posterior).

References: Higgins, J. P. T. and Thompson, S. G. (2002), "Quantifying heterogeneity in a meta-analysis",
Stat. Med. 21, 1539-1558; Neuenschwander, B. et al. (2010), Clin. Trials 7, 5-18; Gelman et al., *Bayesian
Data Analysis*, 3rd ed., sections 5.5 and 6.3; Röver, C. (2020), J. Stat. Softw. 93(6) (bayesmeta's shortest
intervals).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxschools.core import moments
from jaxschools.core._jit import filter_jit
from jaxschools.core.data import Schools
# The rule, its CDFs and solvers are the exact module's; this module combines them into further quantities.
from jaxschools.core.exact import (QUANTILES, ExactPosterior, _logtau_cdf, _logtau_icdf,
                                   _mixture_cdf, _mixture_quantile, _mixture_quantiles, _ndtr, _weighted_moments,
                                   num_in_likelihood)
from jaxschools.core.models import Prior, make_prior

__all__ = ["SHORTEST_THETA_MAX_SCHOOLS", "typical_variance", "cochran_q", "summary"]

_BISECTIONS = 50
# Past this many studies the theta_j's shortest intervals are left out (None), as exact.summary's p_greater is.
SHORTEST_THETA_MAX_SCHOOLS = 200
_SUPPORT_END = 1e-12  # a lower tail probability below this puts L at the end of the support


def typical_variance(data: Schools):
    """Higgins and Thompson's typical within-study variance s^2 over the studies in the likelihood."""
    w = jnp.where(data.mask, data.sigma ** -2.0, 0.0)
    k = jnp.sum(data.mask)
    total = jnp.sum(w)
    # (sum w)^2 - sum w^2 = sum_i w_i sum_{j != i} w_j, with the sums over j != i from exclusive prefix and
    # suffix sums: no cancellation when one study's weight dwarfs the rest (sigmas 1e-150 beside 1e150).
    zero = jnp.zeros_like(w[..., :1])
    before = jnp.concatenate([zero, jnp.cumsum(w, axis=-1)[..., :-1]], axis=-1)
    after = jnp.flip(jnp.concatenate([zero, jnp.cumsum(jnp.flip(w, -1), axis=-1)[..., :-1]], axis=-1), -1)
    return (k - 1.0) * total / jnp.sum(w * (before + after), axis=-1)


def cochran_q(y, data: Schools):
    """Cochran's Q of estimates ``y`` (..., J) with the data's sigmas: sum_j w_j (y_j - y_w)^2 over the mask."""
    w = jnp.where(data.mask, data.sigma ** -2.0, 0.0)
    pooled = jnp.sum(w * y, axis=-1, keepdims=True) / jnp.sum(w)
    return jnp.sum(w * (y - pooled) ** 2, axis=-1)


def _shortest(locate, level):
    """The shortest interval of mass ``level``: ``locate(p)`` returns (Q(p), f(Q(p))) on the quantity's scale."""

    def step(_, bracket):
        lo, hi = bracket
        mid = 0.5 * (lo + hi)
        rising = locate(mid)[1] - locate(mid + level)[1] > 0  # f(L) > f(U): move the interval left
        return jnp.where(rising, lo, mid), jnp.where(rising, mid, hi)

    zero = jnp.zeros((), jnp.result_type(level))
    lo, hi = jax.lax.fori_loop(0, _BISECTIONS, step, (zero, 1.0 - level))
    p = jax.lax.stop_gradient(0.5 * (lo + hi))
    return p, locate(p)[0], locate(p + level)[0]


def _block(mean, sd, quantiles, shortest):
    out = {"mean": mean, "sd": sd, **{key: quantiles[..., i] for i, key in enumerate(QUANTILES)}}
    out["shortest_lower"], out["shortest_upper"] = shortest
    return out


@filter_jit
def _summary(data, prior, post, sigma_new, level, rng_key, num_draws):
    dtype = data.y.dtype
    lw = post.log_weights
    probs = jnp.asarray(list(QUANTILES.values()), dtype)
    level = jnp.asarray(level, dtype)
    tau2 = jnp.exp(2.0 * post.log_tau)
    log_tau_q = jax.vmap(lambda p: _logtau_icdf(post, p))(probs)

    def logtau_locate(p):
        x = _logtau_icdf(post, p)
        return x, _logtau_cdf(post.log_weights, post.log_density, post.bounds, x)[1]

    # tau: p(tau | y) = p(log tau | y) / tau.
    def tau_locate(p):
        x, f = logtau_locate(p)
        return jnp.exp(x), f * jnp.exp(-x)

    p_tau, tau_lo, tau_hi = _shortest(tau_locate, level)
    tau_lo = jnp.where(p_tau < _SUPPORT_END, 0.0, tau_lo)

    # I^2 and H^2, increasing in tau.
    s2 = typical_variance(data)
    log_s2 = jnp.log(s2)

    def i2_of(x):
        return jax.nn.sigmoid(2.0 * x - log_s2)

    def i2_locate(p):
        x, f = logtau_locate(p)
        v = i2_of(x)
        return v, f / (2.0 * v * (1.0 - v))

    p_i2, i2_lo, i2_hi = _shortest(i2_locate, level)
    i2_lo = jnp.where(p_i2 < _SUPPORT_END, 0.0, i2_lo)
    i2 = _block(*_weighted_moments(lw, i2_of(post.log_tau)), i2_of(log_tau_q), (i2_lo, i2_hi))
    h2 = _block(*_weighted_moments(lw, 1.0 + tau2 / s2), 1.0 + jnp.exp(2.0 * log_tau_q) / s2,
                (1.0 / (1.0 - i2_lo), 1.0 / (1.0 - i2_hi)))
    num_schools = num_in_likelihood(data)
    h2["mean"] = jnp.where(moments.exists(prior, "tau", 2, num_schools), h2["mean"], jnp.nan)
    h2["sd"] = jnp.where(moments.exists(prior, "tau", 4, num_schools), h2["sd"], jnp.nan)

    # Gaussian mixtures over the nodes: mu, each theta_j, theta_new and y_new.
    sigma_new = jnp.asarray(sigma_new, dtype)
    loc = jnp.concatenate([post.mu_hat[:, None], post.theta_mean, post.mu_hat[:, None], post.mu_hat[:, None]], 1)
    var = jnp.concatenate([post.mu_var[:, None], post.theta_var, (post.mu_var + tau2)[:, None],
                           (post.mu_var + tau2 + sigma_new**2)[:, None]], 1)
    scale = jnp.sqrt(var)

    def mixture(m, s):
        def locate(p):
            x = _mixture_quantile(lw, m, s, p)
            return x, _mixture_cdf(lw, m, s, x)[1]

        _, lo, hi = _shortest(locate, level)
        mean, sd = _weighted_moments(lw, m, s * s)
        return _block(mean, sd, _mixture_quantiles(lw, m, s, probs), (lo, hi))

    num_total = data.y.shape[-1]
    with_theta = num_total <= SHORTEST_THETA_MAX_SCHOOLS
    if not with_theta:  # mu, theta_new and y_new only: the theta_j's shortest intervals cost J x 100 solves
        loc, scale = loc[:, [0, -2, -1]], scale[:, [0, -2, -1]]
    blocks = jax.vmap(mixture, in_axes=1)(loc, scale)
    pick = lambda i: jax.tree_util.tree_map(lambda a: a[i], blocks)  # noqa: E731
    if with_theta:
        theta = jax.tree_util.tree_map(lambda a: a[1:-2], blocks)
        theta_shortest = (theta["shortest_lower"], theta["shortest_upper"])
    else:
        theta_shortest = None
    out = {
        "level": level,
        "typical_variance": s2,
        "i2": i2,
        "h2": h2,
        "mu_shortest": (pick(0)["shortest_lower"], pick(0)["shortest_upper"]),
        "tau_shortest": (tau_lo, tau_hi),
        "theta_shortest": theta_shortest,
        "sigma_new": sigma_new,
        "theta_new": moments.null_nonexistent(pick(-2), prior, "theta_out", num_schools, jnp.where),
        "y_new": moments.null_nonexistent(pick(-1), prior, "theta_out", num_schools, jnp.where),
    }

    # Posterior predictive p-values: per study exactly, Cochran's Q from exact draws.
    z = (post.theta_mean - data.y) / jnp.sqrt(post.theta_var + data.sigma**2)
    out["study_p_values"] = jnp.where(data.mask, jnp.sum(jnp.exp(lw)[:, None] * _ndtr(z), axis=0), jnp.nan)
    q_observed = cochran_q(data.y, data)
    out["q"] = q_observed
    if rng_key is None:
        out["q_p_value"] = out["q_mcse"] = jnp.full((), jnp.nan, dtype)
    else:
        num_schools_total = data.y.shape[-1]
        num_chunks = max(1, math.ceil(num_draws * num_schools_total / 2**22))
        chunk = math.ceil(num_draws / num_chunks)
        def body(count, i):
            # log tau from the rule's nodes with their weights: the discrete mixture whose expectations are the
            # quadrature's, so the estimate is unbiased for the quadrature value of P(Q(y_rep) >= Q(y) | y), which
            # is the exact one to the rule's error (~1e-12); then mu, theta and y_rep exactly given the node.
            node_key, mu_key, theta_key, noise_key = jax.random.split(jax.random.fold_in(rng_key, i), 4)
            node = jax.random.categorical(node_key, lw, shape=(chunk,))
            mu = post.mu_hat[node] + jnp.sqrt(post.mu_var[node]) * jax.random.normal(mu_key, (chunk,), dtype)
            b = post.shrinkage[node]
            centre = jnp.where(data.mask, data.y + b * (mu[:, None] - data.y), mu[:, None])
            theta_draws = centre + jnp.sqrt(post.theta_cond_var[node]) * jax.random.normal(theta_key, b.shape, dtype)
            noise = jax.random.normal(noise_key, theta_draws.shape, dtype)
            q_rep = cochran_q(theta_draws + data.sigma * noise, data)
            return count + jnp.sum(q_rep >= q_observed, dtype=count.dtype), None

        count, _ = jax.lax.scan(body, jnp.zeros((), jnp.int32), jnp.arange(num_chunks))
        n = chunk * num_chunks
        p = count.astype(dtype) / n
        out["q_p_value"], out["q_mcse"] = p, jnp.sqrt(p * (1.0 - p) / n)
        out["q_num_draws"] = n
    return out


def summary(data: Schools, prior, post: ExactPosterior, *, sigma_new=None, level: float = 0.95, rng_key=None,
            num_draws: int = 4000) -> dict:
    """I^2, H^2, the prediction for a new study, the shortest intervals and the predictive p-values (module
    docstring), from ``post`` = :func:`jaxschools.core.exact.posterior` ``(data, prior)``.

    ``sigma_new``: the new study's standard error for y_new (default: the median sigma of the studies in the
    likelihood, :func:`jaxschools.core.predictive.default_sigma_new`). ``rng_key``: for the p-value of Q (NaN
    without one).

    Returns ``level``, ``typical_variance``; ``i2``, ``h2``, ``theta_new``, ``y_new``: ``{mean, sd, q025, ...,
    q975, shortest_lower, shortest_upper}``; ``mu_shortest``, ``tau_shortest`` (lower, upper), ``theta_shortest``
    ((J,), (J,); None past :data:`SHORTEST_THETA_MAX_SCHOOLS` studies); ``sigma_new``; ``study_p_values`` (J,); ``q``, ``q_p_value``, ``q_mcse`` (and ``q_num_draws``
    with a key). Moments that do not exist are NaN.
    """
    data = data.without_names()
    if sigma_new is None:
        sigma_new = jnp.nanmedian(jnp.where(data.mask, data.sigma, jnp.nan))
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    return _summary(data, make_prior(prior), post, sigma_new, float(level), rng_key, num_draws)


def __dir__():
    return list(__all__)
