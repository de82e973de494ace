r"""School effects and posterior queries from draws of (mu, log tau).

Given (mu, tau), the school effects are independent Gaussians (BDA3 eqs. 5.17, 5.19):

.. math:: \theta_j \mid \mu, \tau, y \sim N(\hat\theta_j, V_j), \quad
          \hat\theta_j = (1 - B_j) y_j + B_j \mu, \quad V_j = (1 - B_j)\sigma_j^2, \quad
          B_j = \frac{\sigma_j^2}{\sigma_j^2 + \tau^2} = \frac{\tau^{-2}}{\tau^{-2} + \sigma_j^{-2}}

so each (mu, tau) draw gives a theta draw (the seed's ``theta_samples``), and the quantities with a
closed form given (mu, tau) are estimated by Rao-Blackwellisation (Gelfand & Smith 1990): the
posterior mean of the conditional mean or probability, which has smaller variance than the raw
indicator average. Their Monte Carlo standard errors come from the ESS of the per-draw conditional
values (Vehtari et al. 2021).

Everything is pure ``jnp`` on arrays shaped ``(chain, draw, ...)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.special import ndtr

from jaxschools.core import diagnostics
from jaxschools.core._jit import filter_jit
from jaxschools.core.data import Schools

__all__ = [
    "shrinkage",
    "conditional_theta",
    "theta_draws",
    "summarize_draws",
    "rao_blackwell",
    "queries",
    "P_GREATER_MAX_SCHOOLS",
    "to_inference_data",
]

# P(theta_i > theta_j) grows as J^2: past this many schools the matrix is not computed.
P_GREATER_MAX_SCHOOLS = 200


def shrinkage(log_tau, data: Schools):
    r"""B_j = sigma_j^2 / (sigma_j^2 + tau^2), the weight on mu in E[theta_j | mu, tau, y].

    Written as a logistic function of 2 (log sigma_j - log tau), so it is exact in (0, 1) for any
    tau. Shape ``log_tau.shape + (J,)``.
    """
    log_tau = jnp.asarray(log_tau)[..., None]
    return jax.nn.sigmoid(2.0 * (jnp.log(data.sigma) - log_tau))


def conditional_theta(mu, log_tau, data: Schools):
    """(theta_hat, V): mean and variance of theta_j given (mu, tau, y); shapes ``mu.shape + (J,)``.

    A masked school (``data.mask`` False) has no data in the likelihood, so its theta given (mu, tau)
    is a new draw from the population, N(mu, tau^2).
    """
    log_tau = jnp.asarray(log_tau)[..., None]
    # B_j and 1 - B_j each as their own logistic, so neither loses digits when the other is near 1.
    b = jax.nn.sigmoid(2.0 * (jnp.log(data.sigma) - log_tau))
    one_minus_b = jax.nn.sigmoid(2.0 * (log_tau - jnp.log(data.sigma)))
    mu = jnp.asarray(mu)[..., None]
    theta_hat = jnp.where(data.mask, one_minus_b * data.y + b * mu, mu)
    variance = jnp.where(data.mask, one_minus_b * data.sigma**2, jnp.exp(2.0 * log_tau))
    return theta_hat, variance


@filter_jit
def theta_draws(rng_key, positions, data: Schools):
    """One theta draw per (mu, log tau) draw: ``positions`` (..., 2) -> (..., J).

    ``positions[..., 0]`` is mu and ``positions[..., 1]`` is log tau (the marginal target's
    coordinates). The normal noise is drawn in the positions' dtype.
    """
    positions = jnp.asarray(positions)
    theta_hat, variance = conditional_theta(positions[..., 0], positions[..., 1], data)
    noise = jax.random.normal(rng_key, theta_hat.shape, dtype=positions.dtype)
    return theta_hat + jnp.sqrt(variance) * noise


def _per_variable(fn, draws):
    """Apply a (chain, draw) -> scalar diagnostic to every trailing coordinate of (chain, draw, ...)."""
    flat = draws.reshape(draws.shape[:2] + (-1,))
    values = jax.vmap(fn, in_axes=2)(flat)
    return values.reshape(draws.shape[2:])


@filter_jit
def summarize_draws(draws):
    """Mean, sd, 2.5%/97.5% quantiles, MCSE of the mean, bulk/tail ESS and R-hat of (chain, draw, ...)."""
    flat = draws.reshape((-1,) + draws.shape[2:])
    return {
        "mean": jnp.mean(flat, axis=0),
        "sd": jnp.std(flat, axis=0, ddof=1),
        "q025": jnp.quantile(flat, 0.025, axis=0),
        "q975": jnp.quantile(flat, 0.975, axis=0),
        "mcse_mean": _per_variable(diagnostics.mcse_mean, draws),
        "ess_bulk": _per_variable(diagnostics.ess, draws),
        "ess_tail": _per_variable(diagnostics.ess_tail, draws),
        "rhat": _per_variable(diagnostics.rhat, draws),
    }


def rao_blackwell(values):
    """Posterior mean of per-draw conditional values (chain, draw, ...) and its MCSE."""
    flat = values.reshape((-1,) + values.shape[2:])
    return jnp.mean(flat, axis=0), _per_variable(diagnostics.mcse_mean, values)


@filter_jit
def queries(positions, theta, data: Schools, school: int, threshold, *, p_greater: bool = True):
    r"""The seed's probability questions, Rao-Blackwellised where a closed form given (mu, tau) exists.

    Args:
      positions: (chain, draw, 2) draws of (mu, log tau).
      theta: (chain, draw, J) theta draws from :func:`theta_draws` (used for P(best), which has no
        closed form given (mu, tau)).
      school: index k for P(theta_k > threshold).
      p_greater: whether to compute the J x J matrix.

    Returns a dict of arrays: ``theta_mean`` and its ``theta_mean_mcse`` (E[theta_hat_j]),
    ``shrinkage`` and ``shrinkage_mcse`` (E[B_j]), ``p_exceeds`` and ``p_exceeds_mcse``
    (E[Phi((theta_hat_k - c)/sqrt(V_k))]), ``p_greater`` (E[Phi((theta_hat_i - theta_hat_j) /
    sqrt(V_i + V_j))], the thetas being independent given (mu, tau); diagonal NaN) and ``p_best``
    (share of draws in which theta_j is the largest).
    """
    theta_hat, variance = conditional_theta(positions[..., 0], positions[..., 1], data)
    out = {}
    out["theta_mean"], out["theta_mean_mcse"] = rao_blackwell(theta_hat)
    out["shrinkage"], out["shrinkage_mcse"] = rao_blackwell(shrinkage(positions[..., 1], data))
    z = (theta_hat[..., school] - threshold) / jnp.sqrt(variance[..., school])
    out["p_exceeds"], out["p_exceeds_mcse"] = rao_blackwell(ndtr(z))
    if p_greater:
        # One row at a time: a (chain, draw, J, J) intermediate would not fit for J near the cap.
        def row(i):
            difference = theta_hat[..., i, None] - theta_hat
            spread = jnp.sqrt(variance[..., i, None] + variance)
            return jnp.mean(ndtr(difference / spread), axis=(0, 1))

        matrix = jax.lax.map(row, jnp.arange(theta_hat.shape[-1]))
        out["p_greater"] = jnp.where(jnp.eye(matrix.shape[-1], dtype=bool), jnp.nan, matrix)
    num_schools = theta.shape[-1]
    best = jax.nn.one_hot(jnp.argmax(theta, axis=-1), num_schools, dtype=theta.dtype)
    out["p_best"] = jnp.mean(best, axis=(0, 1))
    return out


def to_inference_data(samples, data: Schools, **kwargs):
    """ArviZ's container (``InferenceData``, or a ``DataTree`` on ArviZ 1.x) for draws of this model.

    A lazy re-export of :func:`jaxschools.interop.inference_data.to_inference_data` (see it for the groups and
    arguments), so that ArviZ, an optional extra, is imported only when asked for.
    """
    from jaxschools.interop.inference_data import to_inference_data as convert

    return convert(samples, data, **kwargs)


def __dir__():
    # The public names only, not the imports (``dir(js.diagnostics)`` lists no ``jax`` or ``jnp``).
    return list(__all__)
