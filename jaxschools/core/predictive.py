r"""Posterior predictive distributions and posterior predictive checks (BDA3 chapter 6).

Model (see :mod:`jaxschools.core.models`): y_j | theta_j ~ N(theta_j, sigma_j^2), theta_j | mu, tau ~ N(mu, tau^2).

**A new school** (BDA3 section 5.5, "posterior predictive distribution for a new school"): for each draw of
(mu, tau), a new effect and a new estimate with standard error sigma_new,

.. math:: \tilde\theta \mid \mu, \tau \sim N(\mu, \tau^2), \qquad
          \tilde y \mid \tilde\theta \sim N(\tilde\theta, \sigma_{new}^2),

so given (mu, tau) the new estimate is N(mu, tau^2 + sigma_new^2) and its posterior predictive is the
mixture of those over the posterior of (mu, tau).

**Replicated data** (BDA3 section 6.3): the same schools measured again, y_rep_j | theta_j ~ N(theta_j,
sigma_j^2), one replicate per posterior draw of theta.

**Posterior predictive check** (BDA3 section 6.3, eq. 6.3): for test statistics T of the data alone,

.. math:: p_B = \Pr(T(y^{rep}) \ge T(y) \mid y),

estimated by the share of draws whose replicate's T is at least the observed one. p_B near 0 or 1 says the
model would rarely reproduce that feature of the data; it is not a probability that the model is true
(BDA3 section 6.3). The statistics here are those of BDA3 section 6.5's check of the eight schools: the
largest, smallest, mean and standard deviation of the J estimates, plus the range (max - min). A school with
``mask`` False is not part of the data, so it is left out of T (its y_rep is still drawn).

Monte Carlo error: the indicator I(T(y_rep) >= T(y)) is a function of the (autocorrelated) draws, so its
MCSE is sd / sqrt(ESS) of the indicator chains (Vehtari et al. 2021), as for any posterior mean.

Everything is pure ``jnp`` on arrays shaped ``(chain, draw, ...)`` (or any leading batch shape), jittable
and vmappable; the caller passes the keys.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxschools.core import diagnostics
from jaxschools.core._jit import filter_jit
from jaxschools.core.data import Schools

__all__ = [
    "STATISTICS",
    "NewSchool",
    "Check",
    "Predictive",
    "new_school",
    "replicate",
    "statistics",
    "p_values",
    "check",
    "default_sigma_new",
    "posterior_predictive",
    "summarize",
]

# The test statistics T(y), in the order of the last axis of :func:`statistics`.
STATISTICS = ("max", "min", "mean", "sd", "range")


class NewSchool(NamedTuple):
    """Draws for a school not in the data: ``theta`` ~ N(mu, tau^2), ``y`` ~ N(theta, sigma_new^2)."""

    theta: jax.Array
    y: jax.Array


class Check(NamedTuple):
    """A posterior predictive check (BDA3 section 6.3), statistics in :data:`STATISTICS` order.

    observed: (S,) T(y). replicated: (chain, draw, S) T(y_rep) (S = len(STATISTICS)).
    p_value: (S,) P(T(y_rep) >= T(y) | y). mcse: (S,) Monte Carlo standard error of each p-value.
    """

    observed: jax.Array
    replicated: jax.Array
    p_value: jax.Array
    mcse: jax.Array


def new_school(rng_key, positions, sigma_new) -> NewSchool:
    """One new-school draw per (mu, log tau) draw: ``positions`` (..., >= 2), (mu, log tau) first.

    ``sigma_new``: the new school's standard error (scalar, or broadcastable to ``positions.shape[:-1]``).
    Returns :class:`NewSchool` with ``theta`` and ``y`` shaped ``positions.shape[:-1]``.
    """
    positions = jnp.asarray(positions)
    theta_key, y_key = jax.random.split(rng_key)
    mu, tau = positions[..., 0], jnp.exp(positions[..., 1])
    shape, dtype = mu.shape, positions.dtype
    theta = mu + tau * jax.random.normal(theta_key, shape, dtype)
    y = theta + jnp.asarray(sigma_new, dtype) * jax.random.normal(y_key, shape, dtype)
    return NewSchool(theta, y)


def replicate(rng_key, theta, data: Schools):
    """Replicated estimates y_rep_j ~ N(theta_j, sigma_j^2), one per theta draw: (..., J) -> (..., J)."""
    theta = jnp.asarray(theta)
    return theta + data.sigma * jax.random.normal(rng_key, theta.shape, theta.dtype)


def statistics(y, mask=None):
    """T(y) for each statistic of :data:`STATISTICS`: (..., J) -> (..., 5).

    Over the schools with ``mask`` True (all by default); sd with divisor n - 1 (the sample sd).
    """
    y = jnp.asarray(y)
    mask = jnp.ones(y.shape[-1], bool) if mask is None else jnp.asarray(mask)
    count = jnp.sum(mask, axis=-1)
    largest = jnp.max(jnp.where(mask, y, -jnp.inf), axis=-1)
    smallest = jnp.min(jnp.where(mask, y, jnp.inf), axis=-1)
    mean = jnp.sum(jnp.where(mask, y, 0.0), axis=-1) / count
    # Deviations from the mean before squaring: no cancellation for data on a large offset (y ~ 1e6).
    deviation = jnp.where(mask, y - mean[..., None], 0.0)
    sd = jnp.sqrt(jnp.sum(deviation * deviation, axis=-1) / (count - 1))
    return jnp.stack([largest, smallest, mean, sd, largest - smallest], axis=-1)


def p_values(replicated, observed):
    """P(T(y_rep) >= T(y)): the share of draws at or above ``observed``; ``replicated`` (chain, draw, S)."""
    replicated = jnp.asarray(replicated)
    exceed = (replicated >= observed).astype(replicated.dtype)  # a mean of booleans would be float32
    return jnp.mean(exceed, axis=tuple(range(replicated.ndim - 1)))


@filter_jit
def check(replicated_y, data: Schools) -> Check:
    """The posterior predictive check of replicated data ``replicated_y`` (chain, draw, J) against ``data.y``.

    Each p-value's MCSE is that of the mean of its indicator chains (chain, draw) (Vehtari et al. 2021).
    """
    replicated = statistics(replicated_y, data.mask)
    observed = statistics(data.y, data.mask)
    exceed = (replicated >= observed).astype(replicated.dtype)
    mcse = jax.vmap(diagnostics.mcse_mean, in_axes=2)(exceed)
    return Check(observed, replicated, p_values(replicated, observed), mcse)


class Predictive(NamedTuple):
    """The posterior predictive draws of a run and its check (:func:`posterior_predictive`).

    sigma_new: () the new school's standard error. new_school: (chain, draw) draws of its theta and y.
    replicated_y: (chain, draw, J) y_rep. check: the :class:`Check` of ``replicated_y`` against the data.
    """

    sigma_new: jax.Array
    new_school: NewSchool
    replicated_y: jax.Array
    check: Check


def default_sigma_new(data: Schools):
    """The median standard error of the schools in the likelihood: a typical new school's precision."""
    return jnp.nanmedian(jnp.where(data.mask, data.sigma, jnp.nan))


@filter_jit
def posterior_predictive(rng_key, positions, theta, data: Schools, sigma_new=None) -> Predictive:
    """A new school (``sigma_new``; default :func:`default_sigma_new`) and replicated data, and their check.

    ``positions`` (chain, draw, >= 2) with (mu, log tau) first; ``theta`` (chain, draw, J) drawn with them.
    """
    new_key, replicate_key = jax.random.split(rng_key)
    sigma_new = default_sigma_new(data) if sigma_new is None else jnp.asarray(sigma_new, data.sigma.dtype)
    replicated_y = replicate(replicate_key, theta, data)
    return Predictive(sigma_new, new_school(new_key, positions, sigma_new), replicated_y,
                      check(replicated_y, data))


def _describe(draws) -> dict:
    """Mean (with its MCSE), sd and central 95% interval of (chain, draw) draws."""
    flat = draws.reshape(-1)
    return {
        "mean": jnp.mean(flat),
        "mcse_mean": diagnostics.mcse_mean(draws),
        "sd": jnp.std(flat, ddof=1),
        "q025": jnp.quantile(flat, 0.025),
        "q975": jnp.quantile(flat, 0.975),
    }


@filter_jit
def summarize(predictive: Predictive) -> dict:
    """The ``predictive`` section of summary.json: the new school, and per statistic the check's
    ``observed`` T(y), ``p_value`` and its ``mcse``, and the 95% interval of T(y_rep)."""
    check_ = predictive.check
    ppc = {}
    for index, name in enumerate(STATISTICS):
        replicated = check_.replicated[..., index].reshape(-1)
        ppc[name] = {
            "observed": check_.observed[index],
            "p_value": check_.p_value[index],
            "mcse": check_.mcse[index],
            "replicated_q025": jnp.quantile(replicated, 0.025),
            "replicated_q975": jnp.quantile(replicated, 0.975),
        }
    return {
        "new_school": {
            "sigma": predictive.sigma_new,
            "theta": _describe(predictive.new_school.theta),
            "y": _describe(predictive.new_school.y),
        },
        "ppc": ppc,
    }


def __dir__():
    # The public names only, not the imports (``dir(js.diagnostics)`` lists no ``jax`` or ``jnp``).
    return list(__all__)
