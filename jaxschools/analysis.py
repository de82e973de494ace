"""One complete analysis of one dataset: the seed's path, from a resolved config to a summary.

data -> classical estimates -> log-density -> Laplace fit -> chains -> diagnostics -> theta draws
-> queries (Rao-Blackwellised) -> exact reference -> ``summary`` (the JSON-ready dict that becomes
summary.json) plus the arrays the figures need.

This module owns the root PRNG key of a run (``jax.random.key(config.sampler.seed)``), split into
named subkeys, so every draw in a run is determined by the seed.
"""

from __future__ import annotations

import math
import platform
import sys
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxschools import classical, diagnostics, exact, laplace, models, posterior, sampling
from jaxschools.data import Schools
from jaxschools.kernels import rwmh

__all__ = ["Analysis", "analyze", "SCHEMA_VERSION", "to_json"]

SCHEMA_VERSION = 1

# A chain accepting less than this share of proposals is flagged as stuck.
STUCK_ACCEPTANCE = 0.01
RHAT_THRESHOLD, ESS_THRESHOLD = diagnostics.RHAT_THRESHOLD, diagnostics.ESS_THRESHOLD


class Analysis(NamedTuple):
    """``summary``: JSON-ready dict (summary.json). The rest: arrays for figures and reports."""

    summary: dict
    data: Schools
    logdensity: Any
    fit: laplace.LaplaceFit
    samples: sampling.Samples
    theta: jax.Array
    timings: dict


def to_json(value):
    """Arrays and numpy scalars to plain Python lists and numbers; NaN and inf become None."""
    if isinstance(value, dict):
        return {key: to_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(item) for item in value]
    if isinstance(value, (jax.Array, np.ndarray, np.generic)):
        return to_json(np.asarray(value).tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _stage(progress: Callable | None, message: str):
    if progress is not None:
        progress(message)


def _default_query(config: dict, data: Schools) -> tuple[int, float]:
    """P(theta_k > c): k and c from [queries], defaulting to the first school and its own y."""
    school = config["queries"].get("school")
    index = data.names.index(school) if school else 0
    threshold = config["queries"].get("threshold")
    if threshold is None:
        threshold = float(data.y[index])
    return index, float(threshold)


def _stats(draws) -> dict:
    summary = posterior.summarize_draws(draws)
    return {key: summary[key] for key in ("mean", "sd", "q025", "q975", "mcse_mean", "ess_bulk", "ess_tail", "rhat")}


def provenance() -> dict:
    """What produced a result: versions, platform and the x64 flag (recorded in every summary)."""
    import jaxlib

    return {
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "python": sys.version.split()[0],
        "platform": f"{platform.system()}-{platform.machine()}",
        "backend": jax.default_backend(),
        "x64": bool(jax.config.read("jax_enable_x64")),
    }


def analyze(config: dict, data: Schools, *, progress: Callable | None = None) -> Analysis:
    """Run the analysis a resolved config describes (see ``jaxschools/configs/default.toml``)."""
    timings = {}
    start = time.perf_counter()
    model_cfg, sampler_cfg = config["model"], config["sampler"]
    prior = models.make_prior(
        model_cfg["prior"], mu_loc=model_cfg["mu_loc"], mu_scale=model_cfg["mu_scale"], tau_scale=model_cfg["tau_scale"]
    )
    if model_cfg["parameterization"] != "marginal" or sampler_cfg["kernel"] != "rwmh":
        raise NotImplementedError("only the marginal model with the rwmh kernel is available so far")
    dtype = data.y.dtype
    root = jax.random.key(sampler_cfg["seed"])
    init_key, sample_key, theta_key, exact_key = jax.random.split(root, 4)

    logdensity = models.marginal_logdensity(data, prior)
    _stage(progress, "Laplace approximation")
    fit = laplace.fit(logdensity, laplace.default_init(data), max_iterations=config["laplace"]["max_iterations"])
    timings["laplace_s"] = time.perf_counter() - start

    num_chains, num_samples, burn_in = sampler_cfg["num_chains"], sampler_cfg["num_samples"], sampler_cfg["burn_in"]
    _stage(progress, f"random-walk Metropolis: {num_chains} chains x {burn_in + num_samples} steps")
    cov = jnp.where(jnp.all(jnp.isfinite(fit.cov)) & bool(fit.converged), fit.cov, jnp.eye(2, dtype=dtype))
    algorithm = rwmh(logdensity, cov, jnp.asarray(sampler_cfg["scale"], dtype))
    starts = sampling.overdispersed_positions(init_key, fit.mode, cov, num_chains, sampler_cfg["init_spread"])
    t0 = time.perf_counter()
    samples = sampling.run(sample_key, algorithm, starts, num_samples=num_samples, num_chains=num_chains, burn_in=burn_in)
    samples.positions.block_until_ready()
    timings["sampling_s"] = time.perf_counter() - t0

    _stage(progress, "posterior summaries")
    positions = samples.positions
    mu, log_tau = positions[..., 0], positions[..., 1]
    theta = posterior.theta_draws(theta_key, positions, data)
    school, threshold = _default_query(config, data)
    num_schools = data.num_schools
    want_matrix = num_schools <= posterior.P_GREATER_MAX_SCHOOLS
    answers = posterior.queries(positions, theta, data, school, threshold, p_greater=want_matrix)
    theta_stats = posterior.summarize_draws(theta)

    mu_stats, log_tau_stats, tau_stats = _stats(mu[..., None]), _stats(log_tau[..., None]), _stats(jnp.exp(log_tau)[..., None])
    scalar = lambda stats: {key: value[0] for key, value in stats.items()}  # noqa: E731
    mu_stats, log_tau_stats, tau_stats = scalar(mu_stats), scalar(log_tau_stats), scalar(tau_stats)

    acceptance = samples.acceptance_rate
    rhat_max = max(float(mu_stats["rhat"]), float(log_tau_stats["rhat"])) if num_chains > 1 else float("nan")
    ess_min = min(float(s[k]) for s in (mu_stats, log_tau_stats) for k in ("ess_bulk", "ess_tail"))
    flags = {
        "stuck_chains": [int(c) for c in np.flatnonzero(np.asarray(acceptance) < STUCK_ACCEPTANCE)],
        "not_mixed": bool(not (rhat_max < RHAT_THRESHOLD) or not (ess_min >= ESS_THRESHOLD)),
        "laplace_not_converged": not bool(fit.converged),
    }

    _stage(progress, "exact posterior by quadrature")
    t0 = time.perf_counter()
    reference = exact.summary(data, prior, query_school=school, threshold=threshold, rng_key=exact_key)
    timings["exact_s"] = time.perf_counter() - t0

    pooled = classical.pooled(data)
    summary = {
        "schema_version": SCHEMA_VERSION,
        "data": {"names": list(data.names), "y": data.y, "sigma": data.sigma},
        "separate": classical.separate(data),
        "pooled": pooled,
        "laplace": {
            "mode": fit.mode,
            "cov": fit.cov,
            "converged": bool(fit.converged),
            "log_evidence": fit.log_evidence,
            "iterations": fit.num_iterations,
        },
        "mcmc": {
            "kernel": sampler_cfg["kernel"],
            "num_chains": num_chains,
            "num_samples": num_samples,
            "burn_in": burn_in,
            "acceptance_rate": acceptance,
            "ess": {"mu": mu_stats["ess_bulk"], "log_tau": log_tau_stats["ess_bulk"]},
            "ess_tail": {"mu": mu_stats["ess_tail"], "log_tau": log_tau_stats["ess_tail"]},
            "rhat": {"mu": mu_stats["rhat"], "log_tau": log_tau_stats["rhat"]},
            "divergences": None if samples.divergences is None else jnp.sum(samples.divergences),
            "flags": flags,
        },
        "posterior": {"mu": mu_stats, "log_tau": log_tau_stats, "tau": tau_stats},
        "theta": {
            "mean": answers["theta_mean"],
            "mean_mcse": answers["theta_mean_mcse"],
            "sd": theta_stats["sd"],
            "q025": theta_stats["q025"],
            "q975": theta_stats["q975"],
        },
        "shrinkage": answers["shrinkage"],
        "shrinkage_mcse": answers["shrinkage_mcse"],
        "queries": {
            "p_exceeds": {
                "school": data.names[school],
                "threshold": threshold,
                "p": answers["p_exceeds"],
                "mcse": answers["p_exceeds_mcse"],
            },
            "p_greater": answers.get("p_greater"),
            "p_best": answers["p_best"],
        },
        "exact": reference,
        "config": config,
        "provenance": provenance(),
    }
    timings["total_s"] = time.perf_counter() - start
    return Analysis(to_json(summary), data, logdensity, fit, samples, theta, timings)
