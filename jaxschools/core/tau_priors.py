r"""log p(tau) of every tau family of :mod:`jaxschools.core.prior_families`, in ``jnp`` (traceable, vmappable,
differentiable in tau_scale and, for the families that read them, in the studies' sigmas).

Each density is written in log tau, so that tiny and huge tau stay finite: with t = log tau, s = tau_scale and
c = the family's static shape,

* half-normal: log 2 - log s - log(2 pi)/2 - tau^2 / (2 s^2)
* half-Cauchy: log 2 - log pi - log s - log(1 + (tau/s)^2)
* half-Student-t(nu): log 2 + log Gamma((nu+1)/2) - log Gamma(nu/2) - log(nu pi)/2 - log s
  - (nu+1)/2 log(1 + (tau/s)^2 / nu)
* exponential (mean s): -log s - tau / s
* uniform_bounded on (0, s): -log s below s, -inf above
* lognormal: log tau^2 ~ N(2 log s, c^2), so log p(tau) = log 2 - t - log c - log(2 pi)/2 - z^2 / 2,
  z = (2 t - 2 log s) / c (the Jacobian of tau -> tau^2 is 2 tau, of tau^2 -> log tau^2 is 1 / tau^2)
* log-t_5: log tau^2 ~ 2 log s + c t_5: log 2 - t - log c + log t_5(z), log t_5(z) = log Gamma(3) - log Gamma(5/2)
  - log(5 pi)/2 - 3 log(1 + z^2 / 5)
* Lomax(a): log a - log s - (a + 1) log(1 + tau / s)
* uniform: 0; sqrt: -t / 2 (both improper, up to a constant)
* jeffreys: (1/2) log sum_j (tau / (sigma_j^2 + tau^2))^2 (improper; Tibshirani 1989, the Berger-Bernardo reference
  prior of tau, Bodnar et al. 2017)
* dumouchel: log s0 - 2 log(s0 + tau), s0^2 = k / sum_j sigma_j^-2
* uniform_shrinkage: log 2 + 2 log s0 + t - 2 log(s0^2 + tau^2)
* uniform_i2: the same with s^2 = (k - 1) S1 / (S1^2 - S2), S_r = sum_j sigma_j^(-2r)

the sums over the studies in the likelihood (``Schools.mask``).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.scipy.special import gammaln

from jaxschools.core import prior_families

__all__ = ["log_density", "reference_scale"]

_LOG_2 = math.log(2.0)
_LOG_PI = math.log(math.pi)
_LOG_2PI = math.log(2.0 * math.pi)
_LOG_T5 = math.lgamma(3.0) - math.lgamma(2.5) - 0.5 * math.log(5.0 * math.pi)


def _log1p_square(x_log):
    """log(1 + e^(2 x)), without overflow for large x."""
    return jnp.logaddexp(0.0, 2.0 * x_log)


def _required(data, family: str):
    if data is None:
        raise ValueError(f"the {family} prior depends on the studies' sigmas: evaluate it with the data")
    return data


def _sigma_sums(data):
    """log S1 and log S2, S_r = sum over the studies in the likelihood of sigma_j^(-2r), and k."""
    log_prec = jnp.where(data.mask, -2.0 * jnp.log(data.sigma), -jnp.inf)
    k = jnp.sum(data.mask)
    return jax.nn.logsumexp(log_prec, axis=-1), jax.nn.logsumexp(2.0 * log_prec, axis=-1), k


def reference_scale(spec: prior_families.Spec, data):
    """log of the scale s0 (or s) of a sigma-dependent proper family: sqrt of the harmonic mean of sigma^2
    (``dumouchel``, ``uniform_shrinkage``), or of the typical within-study variance (``uniform_i2``)."""
    log_s1, log_s2, k = _sigma_sums(_required(data, spec.tau))
    if spec.tau == "uniform_i2":
        # s^2 = (k - 1) S1 / (S1^2 - S2); S1^2 - S2 = S1^2 (1 - S2 / S1^2) > 0 for k >= 2 studies.
        log_var = jnp.log(k - 1.0) + log_s1 - 2.0 * log_s1 - jnp.log1p(-jnp.exp(log_s2 - 2.0 * log_s1))
    else:
        log_var = jnp.log(k * 1.0) - log_s1
    return 0.5 * log_var


def log_density(spec: prior_families.Spec, log_tau, tau_scale, data=None):
    """log p(tau) of the family ``spec`` at tau = exp(log_tau), with respect to d tau."""
    family, c = spec.tau, spec.shape
    t = jnp.asarray(log_tau)
    if family == "uniform":
        return jnp.zeros_like(t)
    if family == "sqrt":
        return -0.5 * t
    if family == "jeffreys":
        data = _required(data, family)
        log_sigma2 = jnp.where(data.mask, 2.0 * jnp.log(data.sigma), 0.0)
        # log(tau / (sigma_j^2 + tau^2)) per study, summed in squares over the studies in the likelihood.
        terms = t[..., None] - jnp.logaddexp(log_sigma2, 2.0 * t[..., None])
        return 0.5 * jax.nn.logsumexp(jnp.where(data.mask, 2.0 * terms, -jnp.inf), axis=-1)
    if family in ("dumouchel", "uniform_shrinkage", "uniform_i2"):
        log_s0 = reference_scale(spec, data)
        if family == "dumouchel":
            return log_s0 - 2.0 * jnp.logaddexp(log_s0, t)
        return _LOG_2 + 2.0 * log_s0 + t - 2.0 * jnp.logaddexp(2.0 * log_s0, 2.0 * t)
    log_s = jnp.log(jnp.asarray(tau_scale))
    x = t - log_s  # log(tau / s)
    if family == "half_normal":
        z = jnp.exp(t) * jnp.exp(-log_s)
        return _LOG_2 - 0.5 * _LOG_2PI - log_s - 0.5 * z * z
    if family == "half_cauchy":
        return _LOG_2 - _LOG_PI - log_s - _log1p_square(x)
    if family == "half_student_t":
        const = _LOG_2 + gammaln(0.5 * (c + 1.0)) - gammaln(0.5 * c) - 0.5 * math.log(c * math.pi)
        return const - log_s - 0.5 * (c + 1.0) * jnp.logaddexp(0.0, 2.0 * x - math.log(c))
    if family == "exponential":
        return -log_s - jnp.exp(x)
    if family == "uniform_bounded":
        return jnp.where(x <= 0.0, -log_s, -jnp.inf)
    if family == "lognormal":
        z = 2.0 * x / c
        return _LOG_2 - t - math.log(c) - 0.5 * _LOG_2PI - 0.5 * z * z
    if family == "log_t5":
        z = 2.0 * x / c
        return _LOG_2 - t - math.log(c) + _LOG_T5 - 3.0 * jnp.log1p(z * z / 5.0)
    if family == "lomax":
        return math.log(c) - log_s - (c + 1.0) * jnp.logaddexp(0.0, x)
    raise ValueError(f"no density for the tau family {family!r}")


def __dir__():
    # The public names only, not the imports (``dir(js.diagnostics)`` lists no ``jax`` or ``jnp``).
    return list(__all__)
