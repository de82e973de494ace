r"""Classical random-effects meta-analysis, as R's metafor (``rma.uni``, version 3.8) computes it.

Study i reports y_i with known sampling variance v_i = sigma_i^2; the model is y_i ~ N(mu, v_i + tau^2).
For a heterogeneity variance t the inverse-variance weights, the weighted mean and the generalised Q are

.. math::  w_i(t) = 1 / (v_i + t), \quad \hat\mu(t) = \sum w_i y_i / \sum w_i, \quad
           Q(t) = \sum w_i (y_i - \hat\mu(t))^2 .

Estimators of tau^2 (k studies; every one truncated at 0, as metafor does):

* ``DL``, DerSimonian & Laird (1986): (Q(0) - (k - 1)) / (S_1 - S_2 / S_1), S_r = sum w_i(0)^r.
* ``HE``, Hedges' (1983) unweighted moment estimator: sum (y_i - ybar)^2 / (k - 1) - mean(v).
* ``SJ``, Sidik & Jonkman (2005): t0 = sum (y_i - ybar)^2 / k, then t0 Q(t0) / (k - 1).
* ``PM``, Paule & Mandel (1982): the root of Q(t) = k - 1.
* ``EB``, Morris's (1983) empirical Bayes: the root of sum w_i [k/(k-1) (y_i - mu(t))^2 - v_i - t] = 0.
* ``ML`` and ``REML``: the maximisers of the (restricted) log-likelihood
  -1/2 sum log(v_i + t) - 1/2 Q(t) [- 1/2 log sum w_i], found as the root of its derivative in t.

The roots are found by bisection on a bracket that provably holds the sign change (see ``_upper_bracket``):
a fixed number of halvings, so the estimators are plain traceable ``jnp`` and vmap over datasets (a
simulation study runs them beside the Bayesian fit) and over leave-one-out masks. Where the likelihood has
several stationary points bisection finds one of them; metafor's Fisher scoring may find another.

Inference on mu (Hartung & Knapp 2001; Sidik & Jonkman 2002 for the Knapp-Hartung/HKSJ variant):
``se = (sum w_i)^{-1/2}`` with normal quantiles (Wald), or ``se_kh = sqrt(Q(tau^2) / ((k - 1) sum w_i))`` with
t_{k-1} quantiles (metafor's ``test = "knha"``, not truncated at the Wald se). The prediction interval is
mu -/+ c sqrt(se^2 + tau^2), c the same quantile. Heterogeneity summaries (Higgins & Thompson 2002) use the
typical within-study variance s^2 = (k - 1) S_1 / (S_1^2 - S_2): I^2 = tau^2 / (tau^2 + s^2) (in percent, as
metafor prints it) and H^2 = (tau^2 + s^2) / s^2. The Q-profile interval of tau^2 (Viechtbauer 2007) solves
Q(t) = chi^2_{k-1} quantiles; the I^2 and H^2 intervals are its ends mapped by the same formulas.

**Egger's regression test** of funnel-plot asymmetry (Egger et al. 1997; metafor's ``regtest(model = "lm")``):
the least-squares regression of the standardised effect y_i / sigma_i on the precision 1 / sigma_i,

.. math:: y_i / \sigma_i = b_0 + b_1 / \sigma_i + e_i,

equivalently y_i = b_1 + b_0 sigma_i weighted by 1 / v_i. Small studies reporting larger effects tilt the
funnel: b_0 != 0. The test is t = b_0 / se(b_0) on k - 2 degrees of freedom (se from the residual variance of
the unweighted fit), two-sided; b_1 is the "limit" effect of a study of infinite precision.

Masked studies (``Schools.mask``) are left out everywhere: k = the number unmasked.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import betainc, gammainc, gammaincc, ndtri

from jaxschools.core.data import Schools

__all__ = ["METHODS", "Fit", "Egger", "fit", "tau2", "leave_one_out", "generalised_q", "egger"]

METHODS = ("DL", "REML", "ML", "PM", "SJ", "HE", "EB")
# Halvings of a bracket [0, U]: U / 2^200 is far below any double's resolution of an estimate.
_BISECTIONS = 200


class Fit(NamedTuple):
    """One estimator's random-effects fit (each field a scalar, or batched like the data)."""

    tau2: jax.Array
    mu: jax.Array
    se: jax.Array
    ci: jax.Array  # (2,) Wald interval of mu
    pi: jax.Array  # (2,) prediction interval, normal quantile
    se_knha: jax.Array
    ci_knha: jax.Array  # (2,) Knapp-Hartung interval, t_{k-1}
    pi_knha: jax.Array  # (2,) prediction interval, t_{k-1}
    q: jax.Array  # Cochran's Q, Q(0)
    q_p_value: jax.Array
    i2: jax.Array  # percent
    h2: jax.Array
    tau2_ci: jax.Array  # (2,) Q-profile
    i2_ci: jax.Array
    h2_ci: jax.Array


def _parts(data: Schools):
    v = jnp.where(data.mask, data.sigma**2, 1.0)
    return data.y, v, data.mask.astype(v.dtype)


def _weighted(y, v, m, t):
    w = m / (v + t)
    mu = jnp.sum(w * y, axis=-1) / jnp.sum(w, axis=-1)
    return w, mu


def _q(y, v, m, t):
    w, mu = _weighted(y, v, m, t)
    return jnp.sum(w * (y - mu) ** 2, axis=-1)


def generalised_q(data: Schools, t):
    """Q(t) = sum w_i(t) (y_i - mu(t))^2; Q(0) is Cochran's Q."""
    return _q(*_parts(data), t)


def _bisect(f, lo, hi):
    """The root of f on [lo, hi], where f(lo) > 0 >= f(hi) (f decreasing through its root)."""

    def halve(_, bracket):
        a, b = bracket
        c = 0.5 * (a + b)
        positive = f(c) > 0
        return jnp.where(positive, c, a), jnp.where(positive, b, c)

    a, b = jax.lax.fori_loop(0, _BISECTIONS, halve, (lo, hi))
    return 0.5 * (a + b)


def _root_at_or_above_zero(f, upper):
    """tau^2 = 0 where f(0) <= 0 (the estimating equation has no positive root), else the bisected root."""
    zero = jnp.zeros_like(upper)
    return jnp.where(f(zero) > 0, _bisect(f, zero, upper), zero)


def _upper_bracket(y, v, m):
    """A t at which every estimating function below is negative.

    With r_i = y_i - mu(t), |r_i| <= R = range(y) and w_i <= 1/t: Q(t) <= k R^2 / t, so Q(t) < k - 1 once
    t > k R^2 / (k - 1) (PM, and EB's sum likewise); the ML score -S_1 + sum w_i^2 r_i^2 <= S_1 (R^2 / t - 1)
    < 0 once t > R^2; REML's adds max w / S_1 <= (t + max v) / (k t) to R^2 / t, below 1 once
    t >= 4 (R^2 + max v) for k >= 2. 4 (R^2 + max v) + 1 covers all of them.
    """
    big = jnp.finfo(y.dtype).max
    spread = jnp.max(jnp.where(m > 0, y, -big), axis=-1) - jnp.min(jnp.where(m > 0, y, big), axis=-1)
    return 4.0 * (spread**2 + jnp.max(jnp.where(m > 0, v, 0.0), axis=-1)) + 1.0


def _unweighted(y, m):
    """k and the residual sum of squares about the unweighted mean (HE's and SJ's moments)."""
    k = jnp.sum(m, axis=-1)
    ybar = jnp.sum(m * y, axis=-1) / k
    return k, jnp.sum(m * (y - ybar) ** 2, axis=-1)


def _fixed_effect_sums(v, m):
    """S_1 and S_2, the sums of the fixed-effect weights 1/v_i and of their squares."""
    w = m / v
    return jnp.sum(w, axis=-1), jnp.sum(w**2, axis=-1)


def _tau2_one(y, v, m, method: str):
    k, rss = _unweighted(y, m)
    upper = _upper_bracket(y, v, m)

    def q(t):
        return _q(y, v, m, t)

    if method == "DL":
        s1, s2 = _fixed_effect_sums(v, m)
        return jnp.maximum(0.0, (q(0.0) - (k - 1)) / (s1 - s2 / s1))
    if method == "HE":
        return jnp.maximum(0.0, rss / (k - 1) - jnp.sum(m * v) / k)
    if method == "SJ":
        t0 = rss / k
        return t0 * q(t0) / (k - 1)
    if method == "PM":
        return _root_at_or_above_zero(lambda t: q(t) - (k - 1), upper)
    if method == "EB":

        def eb(t):
            w, mu = _weighted(y, v, m, t)
            return jnp.sum(w * (k / (k - 1) * (y - mu) ** 2 - v - t))  # w is 0 where masked

        return _root_at_or_above_zero(eb, upper)
    if method in ("ML", "REML"):

        def score(t):
            w, mu = _weighted(y, v, m, t)
            s = -jnp.sum(w) + jnp.sum(w**2 * (y - mu) ** 2)
            return s + jnp.sum(w**2) / jnp.sum(w) if method == "REML" else s

        return _root_at_or_above_zero(score, upper)
    raise ValueError(f"unknown tau^2 estimator {method!r}: one of {', '.join(METHODS)}")


def _batched(fn, data: Schools, *args):
    y, v, m = _parts(data)
    for _ in range(y.ndim - 1):
        fn = jax.vmap(fn, in_axes=(0, 0, 0) + (None,) * len(args))
    return fn(y, v, m, *args)


def tau2(data: Schools, method: str = "REML"):
    """The estimate of tau^2 by ``method`` (one of ``METHODS``)."""
    return _batched(_tau2_one, data, method)


def _t_quantile(p, df):
    """The t_df quantile for p > 1/2, by bisection on its CDF 1 - I_{df/(df+x^2)}(df/2, 1/2) / 2 (the bracket
    holds t_1's quantile up to p = 1 - 1e-8: 1e8 / 2^200 is still far below a double's resolution)."""
    return _bisect(lambda x: p - (1.0 - 0.5 * betainc(0.5 * df, 0.5, df / (df + x**2))), 0.0, 1e8)


def _chi2_quantile(p, df):
    """The chi^2_df quantile, by bisection on its CDF P(df/2, x/2)."""
    return _bisect(lambda x: p - gammainc(0.5 * df, 0.5 * x), 0.0, 1e4 + 100.0 * df)


def _fit_one(y, v, m, method: str, level: float):
    k = jnp.sum(m)
    t2 = _tau2_one(y, v, m, method)
    w, mu = _weighted(y, v, m, t2)
    sw = jnp.sum(w)
    se = 1.0 / jnp.sqrt(sw)
    se_kh = jnp.sqrt(_q(y, v, m, t2) / ((k - 1) * sw))
    upper_p = 0.5 + 0.5 * level
    z = ndtri(upper_p)
    t = _t_quantile(upper_p, k - 1)
    half_pi, half_pi_kh = z * jnp.sqrt(se**2 + t2), t * jnp.sqrt(se_kh**2 + t2)

    s1, s2 = _fixed_effect_sums(v, m)
    q0 = _q(y, v, m, 0.0)
    typical = (k - 1) * s1 / (s1**2 - s2)

    def i2(t):
        return 100.0 * t / (t + typical)

    def h2(t):
        return (t + typical) / typical

    upper = _upper_bracket(y, v, m)
    # Q(t) decreases in t: the interval's lower end solves Q = chi^2_{1 - a/2}, its upper end Q = chi^2_{a/2}.
    # Q(t) <= k R^2 / t (see _upper_bracket), below c once t > k R^2 / c; upper (2 k / c) >= 8 k R^2 / c.
    ends = []
    for p in (upper_p, 1.0 - upper_p):
        c = _chi2_quantile(p, k - 1)
        ends.append(_root_at_or_above_zero(lambda s, c=c: _q(y, v, m, s) - c, upper * (1.0 + 2.0 * k / c)))
    tau2_ci = jnp.stack(ends)
    return Fit(
        tau2=t2, mu=mu, se=se, ci=jnp.stack([mu - z * se, mu + z * se]),
        pi=jnp.stack([mu - half_pi, mu + half_pi]), se_knha=se_kh,
        ci_knha=jnp.stack([mu - t * se_kh, mu + t * se_kh]), pi_knha=jnp.stack([mu - half_pi_kh, mu + half_pi_kh]),
        q=q0, q_p_value=gammaincc(0.5 * (k - 1), 0.5 * q0), i2=i2(t2), h2=h2(t2),
        tau2_ci=tau2_ci, i2_ci=i2(tau2_ci), h2_ci=h2(tau2_ci),
    )


def fit(data: Schools, method: str = "REML", level: float = 0.95) -> Fit:
    """The random-effects fit by the tau^2 estimator ``method``, intervals at ``level``."""
    if method not in METHODS:
        raise ValueError(f"unknown tau^2 estimator {method!r}: one of {', '.join(METHODS)}")
    return _batched(_fit_one, data, method, level)


def leave_one_out(data: Schools, method: str = "REML", level: float = 0.95) -> Fit:
    """``fit`` with each study left out in turn: every field gains a leading axis of length J (a study
    already masked out gives the fit without it, as it is)."""
    num = data.y.shape[-1]
    eye = jnp.eye(num, dtype=bool)

    def without(drop):
        return fit(Schools(data.y, data.sigma, names=data.names, mask=data.mask & ~drop), method, level)

    # lax.map in blocks of 32 studies rather than one vmap over all J: memory O(32 J), not O(J^2) (at J = 5,000
    # the vmap took a run's peak past its memory estimate, jaxschools.app.resources).
    return jax.lax.map(without, eye, batch_size=32)


class Egger(NamedTuple):
    """Egger's regression test (module docstring): each field a scalar, or batched like the data."""

    intercept: jax.Array  # b_0, the asymmetry
    intercept_se: jax.Array
    t: jax.Array
    df: jax.Array  # k - 2
    p_value: jax.Array  # two-sided, t_{k-2}
    limit: jax.Array  # b_1, the effect at sigma -> 0


def _egger_one(y, v, m):
    sigma = jnp.sqrt(v)
    z, x = m * y / sigma, m / sigma  # masked studies contribute nothing to the sums below
    k = jnp.sum(m)
    x_mean, z_mean = jnp.sum(x) / k, jnp.sum(z) / k
    sxx = jnp.sum(m * (x - x_mean) ** 2)
    slope = jnp.sum(m * (x - x_mean) * (z - z_mean)) / sxx
    intercept = z_mean - slope * x_mean
    residual = jnp.sum(m * (z - intercept - slope * x) ** 2) / (k - 2)
    se = jnp.sqrt(residual * (1.0 / k + x_mean**2 / sxx))
    t = intercept / se
    df = k - 2
    # Two-sided p = I_{df / (df + t^2)}(df / 2, 1 / 2).
    return Egger(intercept, se, t, df, betainc(0.5 * df, 0.5, df / (df + t * t)), slope)


def egger(data: Schools) -> Egger:
    """Egger's regression test of funnel-plot asymmetry (module docstring); needs k >= 3 studies (NaN else)."""
    return _batched(_egger_one, data)


def __dir__():
    # The public names only, not the imports (``dir(js.diagnostics)`` lists no ``jax`` or ``jnp``).
    return list(__all__)
