r"""ArviZ interop: a run's draws as ArviZ's container, so ArviZ's plots, summaries and ``arviz.loo`` apply.

ArviZ is an optional extra (``pip install 'jaxschools[arviz]'``), never a runtime requirement: it is imported
inside the functions here, and asking for it without it installed raises an ``ImportError`` that says how
to install it. The container is built from xarray Datasets, one per group, and wrapped in what the installed
ArviZ uses: an ``arviz.InferenceData`` on ArviZ 0.x, an ``xarray.DataTree`` on ArviZ 1.x.

Groups (dims ``chain``, ``draw`` and ``school``, the last labelled with the data's school names):

* ``posterior``: ``mu``, ``tau`` (chain, draw) and ``theta`` (chain, draw, school);
* ``sample_stats``: ``acceptance_rate`` (chain: the driver keeps its per-chain mean), ``lp`` (the sampled
  log-density, where the kernel caches it), ``diverging`` (where the kernel has trajectories);
* ``observed_data``: ``y`` (school); ``constant_data``: ``sigma`` (school);
* ``posterior_predictive``: ``y`` (chain, draw, school), replicated data y_rep_j ~ N(theta_j, sigma_j^2),
  and ``theta_new``, ``y_new`` (chain, draw), a new school (:mod:`jaxschools.core.predictive`);
* ``log_likelihood``: ``y`` (chain, draw, school), the pointwise log-likelihood

  .. math:: \log p(y_j \mid \theta_j) = \log N(y_j \mid \theta_j, \sigma_j^2),

  the conditional likelihood of each school given its own effect, as in the centered and non-centered
  eight-schools programs of Stan, PyMC and NumPyro. PSIS-LOO on it (``arviz.loo``; Vehtari, Gelman &
  Gabry 2017) estimates log p(y_j | y_-j), the same quantity
  :func:`jaxschools.app.experiments.exact_loo` computes by quadrature, so priors can be compared with it.
* ``log_prior`` (with ``prior=``, a proper prior only): ``mu`` = log N(mu | mu_loc, mu_scale^2) and ``tau`` =
  log p(tau) (chain, draw), the prior density on (mu, tau) itself (no log-tau Jacobian; they sum to
  ``Prior.log_prob``), which ArviZ's power-scaling diagnostic (``arviz.psens(..., component="prior")``) reads
  with ``log_likelihood`` (``component="likelihood"``; see :mod:`jaxschools.core.power_scaling`). The flat
  prior has no log_prior group: p(mu, tau) ∝ 1 is not a density, and power-scaling it changes nothing.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.stats import norm

from jaxschools import __version__
from jaxschools.core import models, posterior, predictive
from jaxschools.core.data import Schools

__all__ = ["to_inference_data", "from_analysis", "write_netcdf", "pointwise_log_likelihood", "INSTALL_HINT"]

INSTALL_HINT = "pip install 'jaxschools[arviz]'"


def _arviz():
    try:
        import arviz
    except ImportError as error:
        raise ImportError(f"ArviZ output needs ArviZ, which is not installed: {INSTALL_HINT}") from error
    return arviz


def _major(version: str) -> int:
    head = version.split(".")[0]
    return int(head) if head.isdigit() else 0


def pointwise_log_likelihood(theta, data: Schools):
    """log N(y_j | theta_j, sigma_j^2) for each draw and school: ``theta`` (..., J) -> (..., J)."""
    z = (data.y - theta) / data.sigma
    return -0.5 * (jnp.log(2.0 * jnp.pi) + z * z) - jnp.log(data.sigma)


def _positions_and_stats(samples):
    if hasattr(samples, "positions"):
        return jnp.asarray(samples.positions), samples
    return jnp.asarray(samples), None


def _theta(positions, parameterization: str, theta, rng_key, data: Schools):
    if theta is not None:
        return jnp.asarray(theta)
    if parameterization == "centered":
        return positions[..., 2:]
    if parameterization == "noncentered":
        return positions[..., :1] + jnp.exp(positions[..., 1:2]) * positions[..., 2:]
    if rng_key is None:
        raise ValueError("theta draws are needed: pass theta=, or rng_key= to draw theta | mu, tau, y")
    return posterior.theta_draws(rng_key, positions[..., :2], data)


def _sample_stats(stats, num_chains: int, num_draws: int) -> dict:
    out = {}
    if stats is None:
        return out
    out["acceptance_rate"] = (("chain",), np.asarray(stats.acceptance_rate, float))
    lp = np.asarray(stats.logdensity, float)
    if lp.shape == (num_chains, num_draws) and np.isfinite(lp).any():
        out["lp"] = (("chain", "draw"), lp)
    diverging = getattr(stats, "is_divergent", None)
    if diverging is not None:
        out["diverging"] = (("chain", "draw"), np.asarray(diverging, bool))
    steps = getattr(stats, "num_integration_steps", None)
    if steps is not None:
        out["n_steps"] = (("chain", "draw"), np.asarray(steps))
    step_size = (getattr(stats, "parameters", None) or {}).get("step_size")
    if step_size is not None:
        out["step_size"] = (("chain",), np.asarray(step_size, float))
    return out


def _log_prior(positions, prior, dims, data) -> dict:
    """log p(mu) and log p(tau) at the draws (the ``log_prior`` group): mu's normal prior, and tau's as the rest
    of ``prior.log_prob`` (the one definition of the prior's density)."""
    mu, log_tau = positions[..., 0], positions[..., 1]
    log_mu = norm.logpdf(mu, prior.mu_loc, prior.mu_scale)
    log_tau_prior = prior.log_prob(mu, log_tau, data) - log_mu
    return {"mu": (dims, np.asarray(log_mu, float)), "tau": (dims, np.asarray(log_tau_prior, float))}


def to_inference_data(
    samples,
    data: Schools,
    *,
    theta=None,
    rng_key=None,
    parameterization: str = "marginal",
    predictive_draws: predictive.Predictive | None = None,
    attrs: dict | None = None,
    prior=None,
) -> Any:
    """ArviZ's container for a run (see the module docstring for the groups).

    Args:
      samples: a :class:`jaxschools.core.sampling.Samples` (its sample statistics are kept) or positions
        (chain, draw, dim) whose first two coordinates are (mu, log tau).
      data: the :class:`~jaxschools.core.data.Schools` the run conditioned on (every school in the likelihood).
      theta: (chain, draw, J) school effects drawn with the positions. Without it, they come from the
        positions of a joint ``parameterization`` (``centered``: theta itself; ``noncentered``:
        mu + tau eta), or, for the ``marginal``, are drawn from theta | mu, tau, y with ``rng_key``.
      rng_key: the key for whatever has to be drawn (theta; the replicated data and the new school unless
        ``predictive_draws`` is given); derived keys are ``fold_in(rng_key, 0)`` (theta) and
        ``fold_in(rng_key, 1)`` (the predictive).
      predictive_draws: a :class:`jaxschools.core.predictive.Predictive` made with these draws (the analysis's).
      attrs: extra attributes for every group (e.g. the kernel's name).
      prior: the :class:`~jaxschools.core.models.Prior` of the run (a name or a Prior); a proper one adds the
        ``log_prior`` group (module docstring). None (the default) or the flat prior: no such group.

    Returns an ``arviz.InferenceData`` (ArviZ 0.x) or an ``xarray.DataTree`` (ArviZ 1.x).
    Raises ``ImportError`` (with the install command) when ArviZ is missing.
    """
    arviz = _arviz()
    import xarray as xr

    mask = np.asarray(data.mask)
    if not mask.all():
        raise ValueError("to_inference_data needs every school in the likelihood (data.mask all True)")
    positions, stats = _positions_and_stats(samples)
    if positions.ndim != 3 or positions.shape[-1] < 2:
        raise ValueError(f"positions must be (chain, draw, dim >= 2); got shape {positions.shape}")
    theta_key = None if rng_key is None else jax.random.fold_in(rng_key, 0)
    theta = _theta(positions, parameterization, theta, theta_key, data)
    if predictive_draws is None:
        if rng_key is None:
            raise ValueError("the posterior predictive needs predictive_draws= or rng_key=")
        predictive_draws = predictive.posterior_predictive(jax.random.fold_in(rng_key, 1), positions, theta, data)

    num_chains, num_draws = positions.shape[:2]
    coords = {"chain": np.arange(num_chains), "draw": np.arange(num_draws), "school": list(data.names)}
    draws_dims, school_dims = ("chain", "draw"), ("chain", "draw", "school")
    common = {"inference_library": "jaxschools", "inference_library_version": __version__,
              "arviz_version": arviz.__version__, **(attrs or {})}

    def dataset(variables: dict):
        used = {dim for dims, _ in variables.values() for dim in dims}
        return xr.Dataset({name: xr.DataArray(values, dims=dims) for name, (dims, values) in variables.items()},
                          coords={name: value for name, value in coords.items() if name in used}, attrs=common)

    as_np = lambda array: np.asarray(array, float)  # noqa: E731
    groups = {
        "posterior": dataset({
            "mu": (draws_dims, as_np(positions[..., 0])),
            "tau": (draws_dims, as_np(jnp.exp(positions[..., 1]))),
            "theta": (school_dims, as_np(theta)),
        }),
        "posterior_predictive": dataset({
            "y": (school_dims, as_np(predictive_draws.replicated_y)),
            "theta_new": (draws_dims, as_np(predictive_draws.new_school.theta)),
            "y_new": (draws_dims, as_np(predictive_draws.new_school.y)),
        }),
        "log_likelihood": dataset({"y": (school_dims, as_np(pointwise_log_likelihood(theta, data)))}),
        "observed_data": dataset({"y": (("school",), as_np(data.y))}),
        "constant_data": dataset({"sigma": (("school",), as_np(data.sigma))}),
    }
    if prior is not None and models.make_prior(prior).proper:
        groups["log_prior"] = dataset(_log_prior(positions, models.make_prior(prior), draws_dims, data))
    sample_stats = _sample_stats(stats, num_chains, num_draws)
    if sample_stats:
        groups["sample_stats"] = dataset(sample_stats)
    if _major(arviz.__version__) >= 1:
        return xr.DataTree.from_dict({f"/{name}": group for name, group in groups.items()})
    return arviz.InferenceData(**groups)


def from_analysis(analysis) -> Any:
    """The container for an :class:`jaxschools.app.analysis.Analysis`: its draws, theta and posterior predictive
    (and ``log_prior`` for a proper prior)."""
    mcmc = analysis.record.summary.mcmc  # the typed record (jaxschools.app.results.Mcmc): both always present
    attrs = {"kernel": mcmc.kernel, "parameterization": mcmc.parameterization}
    return to_inference_data(analysis.samples, analysis.data, theta=analysis.theta,
                             predictive_draws=analysis.predictive, attrs=attrs, prior=analysis.logdensity.prior)


def write_netcdf(analysis, path) -> None:
    """Write :func:`from_analysis` to ``path`` (netCDF4 with one group per ArviZ group)."""
    container = from_analysis(analysis)
    container.to_netcdf(str(path))


def __dir__():
    # The public names only, not the imports (``dir(js.diagnostics)`` lists no ``jax`` or ``jnp``).
    return list(__all__)
