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

from jaxschools.core import classical, datasets, diagnostics, exact, laplace, models, moments, posterior, sampling
from jaxschools.app import _record, classical_record, exact_check, inference, meta_record, results, sensitivity_record
from jaxschools.app.inference import Chains
from jaxschools.core import predictive as predictive_checks
from jaxschools.core.data import Schools

__all__ = ["Analysis", "analyze", "SCHEMA_VERSION", "to_json"]

# summary.json's schema: the typed record's (jaxschools.app.results); CHANGELOG.md lists the changes.
SCHEMA_VERSION = results.SCHEMA_VERSION

# A chain accepting less than this share of proposals is flagged as stuck.
STUCK_ACCEPTANCE = 0.01
RHAT_THRESHOLD, ESS_THRESHOLD = diagnostics.RHAT_THRESHOLD, diagnostics.ESS_THRESHOLD
# Exact draws for P(theta_j is best): this many, or fewer when draws x J would exceed EXACT_NUMBERS.
EXACT_DRAWS, EXACT_NUMBERS = 10_000, 10_000_000


class Analysis(NamedTuple):
    """``record``: the typed result the report and figures render (:class:`jaxschools.app.results.RunRecord`;
    ``summary`` is its summary.json content as a dict). The rest: the computation's own objects.

    ``logdensity`` is always the marginal (mu, log tau) density (the contour plot's); ``contrast`` holds
    the chains of ``model.contrast`` when the config asks for one; ``predictive`` the posterior predictive
    draws (a new school, replicated data) and their check (:mod:`jaxschools.core.predictive`).
    """

    record: results.RunRecord
    data: Schools
    logdensity: Any
    fit: laplace.LaplaceFit
    samples: sampling.Samples
    theta: jax.Array
    timings: dict
    contrast: Chains | None = None
    predictive: predictive_checks.Predictive | None = None

    @property
    def summary(self) -> dict:
        """The content of summary.json: ``record.summary.to_json()`` (a new dict on each access)."""
        return self.record.summary.to_json()


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


# Built once: a jit of a fresh vmap inside the function would be a new function, compiled again on every call.
_BATCHED_MCSE_SD = jax.jit(jax.vmap(diagnostics.mcse_sd))


def _sd_mcse(mu, log_tau) -> list:
    """MCSE of the posterior sd of mu, log tau and tau from (chain, draw) draws (Vehtari et al. 2021)."""
    return list(_BATCHED_MCSE_SD(jnp.stack([mu, log_tau, jnp.exp(log_tau)])))


def _frozen_chains(positions, reference: dict, fit: laplace.LaplaceFit) -> list[int]:
    """Chains whose mu or log tau barely moved (``diagnostics.frozen_chains``), as a list of indices.

    The scale is the exact posterior's, robustly: (q97.5 - q2.5) / 3.92, the sd of a normal with the same
    central 95% interval (it exists even where the posterior sd does not); the Laplace sd where that is
    not finite. A chain is frozen when its within-chain sd of mu or of log tau is at most
    ``diagnostics.FROZEN_RTOL`` (1e-3) times that scale, or its draws are equal to rounding.
    """
    frozen = np.zeros(positions.shape[0], bool)
    for d, key in enumerate(("mu", "log_tau")):
        low, high = (float(np.asarray(reference[key][q])) for q in ("q025", "q975"))
        scale = (high - low) / (2 * 1.959963984540054)
        if not (math.isfinite(scale) and scale > 0):
            scale = math.sqrt(float(fit.cov[d, d])) if float(fit.cov[d, d]) > 0 else float("nan")
        frozen |= np.asarray(diagnostics.frozen_chains(positions[..., d], scale))
    return [int(c) for c in np.flatnonzero(frozen)]


def _with_exact_check(summary: dict, prior_kind: str, num_schools: int) -> dict:
    """Add ``exact_check`` (:mod:`jaxschools.app.exact_check`) and, when it fails, ``mcmc.flags.exact_mismatch``.

    The MCSE of an sd needs a finite fourth moment: where that does not exist (flat prior, J < 7, for mu and
    tau) the sd's z-score would be meaningless, so its MCSE is nulled first (log tau has every moment).
    """
    for name in ("mu", "tau"):
        block = summary["posterior"][name]
        if not moments.exists(prior_kind, name, 4, num_schools):
            block["mcse_sd"] = None
    verdict = exact_check.check(summary, prior=prior_kind, num_schools=num_schools)
    summary["exact_check"] = verdict
    summary["mcmc"]["flags"]["exact_mismatch"] = verdict["num_beyond"]
    return summary


def sample_chains(config: dict, data: Schools, prior, fit: laplace.LaplaceFit, parameterization: str,
                  init_key, sample_key, *, between: Callable | None = None) -> Chains:
    """The sampling stage of ``config`` on the ``parameterization`` target: :func:`jaxschools.app.inference.sample`
    with the config's plan and knobs (the one inference path, which sweeps and simulation studies share).

    Traceable (tests vmap it over datasets) unless ``between`` is given (the command line's interrupt check).
    """
    plan = inference.plan(config)._replace(parameterization=parameterization)
    return inference.sample(plan, inference.knobs(config, data.y.dtype), data, prior, fit, init_key, sample_key,
                            between=between)


def divergence_summary(chains: Chains, median_log_tau) -> dict:
    """Divergent transitions of a run: count, rate, and where they fall (``mcmc.divergences`` and kin).

    ``below_median_tau`` is the share of divergent transitions whose draw has log tau below the exact
    posterior median: about 0.5 if divergences fell anywhere, near 1 when they pile up in the neck of
    the funnel at small tau (Betancourt & Girolami 2015). Null without divergences or trajectories.
    """
    samples = chains.samples
    if samples.is_divergent is None:
        return {"divergences": None, "divergence_rate": None, "divergences_below_median_tau": None}
    flags = np.asarray(samples.is_divergent)
    count = int(flags.sum())
    log_tau = np.asarray(samples.positions[..., 1])
    below = float(np.mean(log_tau[flags] < float(median_log_tau))) if count else None
    return {"divergences": count, "divergence_rate": count / flags.size, "divergences_below_median_tau": below}


def _adapted(samples: sampling.Samples, sampler_cfg: dict) -> dict:
    """The step size per chain (as tuned, or as configured) and the mean gradient evaluations per draw.

    Both null for random-walk Metropolis, which has neither.
    """
    out = {"step_size": None, "num_integration_steps": None}
    parameters = samples.parameters or {}
    if "step_size" in parameters:
        out["step_size"] = parameters["step_size"]
    elif sampler_cfg["kernel"] != "rwmh":
        out["step_size"] = [sampler_cfg["step_size"]] * samples.positions.shape[0]
    if samples.num_integration_steps is not None:
        out["num_integration_steps"] = jnp.mean(samples.num_integration_steps.astype(float))
    return out


def _contrast_summary(chains: Chains, median_log_tau, sampler_cfg: dict) -> dict:
    """``mcmc.contrast``: the second parameterization's divergences, mixing and posterior means."""
    positions = chains.samples.positions
    mu, log_tau = positions[..., 0], positions[..., 1]
    return {
        "parameterization": chains.parameterization,
        **divergence_summary(chains, median_log_tau),
        **_adapted(chains.samples, sampler_cfg),
        "acceptance_rate": chains.samples.acceptance_rate,
        "ess": {"mu": diagnostics.ess(mu), "log_tau": diagnostics.ess(log_tau)},
        "rhat": {"mu": diagnostics.rhat(mu), "log_tau": diagnostics.rhat(log_tau)},
        "posterior": {"mu": {"mean": jnp.mean(mu)}, "log_tau": {"mean": jnp.mean(log_tau)}},
    }


def _null_nonexistent_moments(summary: dict, prior_kind: str, mask) -> dict:
    """``summary`` with every mean, sd and MCSE of a mean that does not exist set to NaN (``null`` in JSON).

    Existence is decided per quantity from the prior family and J, the schools in the likelihood
    (:mod:`jaxschools.core.moments`): under the flat prior p(tau | y) ~ tau^(1 - J), so mu and tau need J >= 4 for a
    mean and J >= 5 for an sd; under the half-Cauchy E[tau] needs J >= 1 and sd(tau) J >= 2; theta_j of a
    school in the likelihood and log tau keep every moment; a new (or left-out) school's theta and y have
    tau's conditions. The exact values are already NaN there (``exact.summary``); the sampler's estimates of
    them (means of draws, which never settle) are nulled by the same rule. An MCSE of a mean needs the
    variance too. The reason is recorded as ``exact.nonexistent_moments``.
    """
    observed = np.asarray(mask, bool)
    num_schools = int(observed.sum())

    def null(block, quantity, **kwargs):
        block.update(moments.null_nonexistent(block, prior_kind, quantity, num_schools, np.where, **kwargs))

    for name in ("mu", "tau", "log_tau"):
        null(summary["posterior"][name], name)
    null(summary["theta"], "theta", observed=observed)
    for block in summary["predictive"]["new_school"]["theta"], summary["predictive"]["new_school"]["y"]:
        null(block, "theta_out")
    contrast = summary["mcmc"].get("contrast")
    if contrast is not None:
        for name, block in contrast["posterior"].items():
            null(block, name)
    reasons = moments.messages(prior_kind, num_schools, ("mu", "tau", "log_tau", "theta", "theta_out"))
    summary["exact"] = {**summary["exact"], "nonexistent_moments": "; ".join(reasons) if reasons else None}
    return summary


def provenance() -> dict:
    """What produced a result: versions (of this run's jaxschools, JAX, NumPy and matplotlib, which draws the
    figures), platform and the x64 flag (recorded in every summary; the report shows these, not the versions of
    whatever renders it later)."""
    from importlib import metadata

    import jaxlib

    from jaxschools import __version__

    return {
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "python": sys.version.split()[0],
        "platform": f"{platform.system()}-{platform.machine()}",
        "backend": jax.default_backend(),
        "x64": bool(jax.config.read("jax_enable_x64")),
        "jaxschools": __version__,
        "numpy": np.__version__,
        "matplotlib": metadata.version("matplotlib"),
    }


def _data_description(config: dict, table: dict | None) -> dict:
    """summary.json's description of the data beside y and sigma (see docs/summary.md)."""
    if table is None:
        return {"layout": "y_sigma", "measure": config["data"]["measure"] or None, "zero_cell_corrected": None,
                "covariates": {}, "source": "python", "dataset": None, "citation": None}
    described = {key: table[key] for key in ("layout", "measure", "zero_cell_corrected", "covariates")}
    if config["data"]["path"]:
        return {**described, "source": "file", "dataset": None, "citation": None}
    dataset = config["data"]["dataset"] or "eight_schools"
    return {**described, "source": "dataset", "dataset": dataset, "citation": datasets.CITATIONS[dataset]}


def analyze(config: dict, data: Schools, *, table: dict | None = None, progress: Callable | None = None,
            between: Callable | None = None) -> Analysis:
    """Run the analysis a resolved config describes (see ``jaxschools/configs/default.toml``).

    ``table``: the table ``data`` was read from (:func:`jaxschools.core.validation.read_data`), whose layout,
    measure, zero-cell corrections and covariates summary.json's ``data`` records; None: effects given as they
    are, on the scale ``data.measure`` names.

    ``between``: called between the chunks of the sampling stages (see :func:`sample_chains`); the command
    line's check for Ctrl-C and SIGTERM. Without it the chains run in one jitted call each.
    """
    timings = {}
    start = time.perf_counter()
    # The names are static metadata (part of a Schools pytree's structure), so a jitted stage compiles once
    # per tuple of names: every stage below runs on the unnamed data, and datasets that differ only in their
    # names share one compilation per shape. The names go to the record and the returned Analysis.
    named, data = data, data.without_names()
    model_cfg, sampler_cfg = config["model"], config["sampler"]
    prior = models.make_prior(
        model_cfg["prior"], mu_loc=model_cfg["mu_loc"], mu_scale=model_cfg["mu_scale"], tau_scale=model_cfg["tau_scale"]
    )
    parameterization, kind = model_cfg["parameterization"], sampler_cfg["kernel"]
    # A user's kernel is imported and tried on each target it will run on now, before any work.
    plan, knobs = inference.plan(config), inference.knobs(config, data.y.dtype)
    for name in dict.fromkeys(p for p in (parameterization, model_cfg["contrast"]) if p is not None):
        inference.check(plan._replace(parameterization=name), knobs, data, prior)
    root = jax.random.key(sampler_cfg["seed"])
    init_key, sample_key, theta_key, exact_key = jax.random.split(root, 4)

    logdensity = models.marginal_logdensity(data, prior)
    _stage(progress, "Laplace approximation")
    fit = laplace.fit(logdensity, laplace.default_init(data), max_iterations=config["laplace"]["max_iterations"])
    timings["laplace_s"] = time.perf_counter() - start

    num_chains, num_samples, burn_in = sampler_cfg["num_chains"], sampler_cfg["num_samples"], sampler_cfg["burn_in"]
    target_name = "" if parameterization == "marginal" else f" on the {parameterization} joint density"
    _stage(progress, f"{inference.label(kind)}{target_name}: {num_chains} chains x {burn_in + num_samples} steps")
    t0 = time.perf_counter()
    chains = sample_chains(config, data, prior, fit, parameterization, init_key, sample_key, between=between)
    samples = chains.samples
    samples.positions.block_until_ready()
    timings["sampling_s"] = time.perf_counter() - t0
    contrast = None
    if model_cfg["contrast"] is not None:
        _stage(progress, f"{inference.label(kind)} on the {model_cfg['contrast']} target, for contrast")
        t0 = time.perf_counter()
        contrast = sample_chains(config, data, prior, fit, model_cfg["contrast"], init_key, sample_key,
                                 between=between)
        contrast.samples.positions.block_until_ready()
        timings["contrast_sampling_s"] = time.perf_counter() - t0

    _stage(progress, "posterior summaries")
    positions = samples.positions
    mu, log_tau = positions[..., 0], positions[..., 1]
    # Joint targets sample theta themselves; the marginal one draws theta | mu, tau, y afterwards.
    theta = chains.theta if chains.theta is not None else posterior.theta_draws(theta_key, positions, data)
    school, threshold = _default_query(config, named)
    num_schools = data.num_schools
    want_matrix = num_schools <= posterior.P_GREATER_MAX_SCHOOLS
    answers = posterior.queries(positions, theta, data, school, threshold, p_greater=want_matrix)
    theta_stats = posterior.summarize_draws(theta)
    # A new school and replicated data (BDA3 ch. 6), from a key of their own hung off theta_key.
    predictive = predictive_checks.posterior_predictive(jax.random.fold_in(theta_key, 1), positions, theta, data)

    mu_stats, log_tau_stats, tau_stats = _stats(mu[..., None]), _stats(log_tau[..., None]), _stats(jnp.exp(log_tau)[..., None])
    scalar = lambda stats: {key: value[0] for key, value in stats.items()}  # noqa: E731
    mu_stats, log_tau_stats, tau_stats = scalar(mu_stats), scalar(log_tau_stats), scalar(tau_stats)
    for stats, value in zip((mu_stats, log_tau_stats, tau_stats), _sd_mcse(mu, log_tau)):
        stats["mcse_sd"] = value

    acceptance = samples.acceptance_rate
    # Why the chains are not shown to have mixed (none: they are); the flag and the report's words both come
    # from this one verdict.
    rhats = [float(mu_stats["rhat"]), float(log_tau_stats["rhat"])]
    esses = [float(s[k]) for s in (mu_stats, log_tau_stats) for k in ("ess_bulk", "ess_tail")]
    not_mixed = _record.not_mixed_reasons(num_chains, rhats, esses, rhat_limit=RHAT_THRESHOLD,
                                          ess_limit=ESS_THRESHOLD)
    flags = {
        "stuck_chains": [int(c) for c in np.flatnonzero(np.asarray(acceptance) < STUCK_ACCEPTANCE)],
        "not_mixed": bool(not_mixed),
        "laplace_not_converged": not bool(fit.converged),
    }

    _stage(progress, "exact posterior by quadrature")
    t0 = time.perf_counter()
    # P(theta_j is best) by exact simulation costs draws x J: at most ~10^7 numbers, so J = 10,000 takes
    # 1,000 draws (its Monte Carlo sd, sqrt(p / draws) with p ~ 1/J, is as large as p either way).
    num_draws = min(EXACT_DRAWS, max(1_000, EXACT_NUMBERS // data.num_schools))
    reference = exact.summary(data, prior, query_school=school, threshold=threshold, rng_key=exact_key,
                              num_draws=num_draws)
    # Bayes factors, I^2 and H^2, the new study, shortest intervals and predictive p-values (issue 16).
    reference = {**reference, **meta_record.build(data, prior, jax.random.fold_in(exact_key, 1))}
    timings["exact_s"] = time.perf_counter() - t0
    if config["sensitivity"]["enabled"]:
        _stage(progress, "sensitivity: exact derivatives, leave-one-out and prior curves")
    t0 = time.perf_counter()
    sensitivity, sensitivity_figures = sensitivity_record.build(config, data, prior, school, threshold,
                                                                named.names[school], names=named.names)
    timings["sensitivity_s"] = time.perf_counter() - t0
    median_log_tau = reference["log_tau"]["q50"]
    frozen = _frozen_chains(positions, reference, fit)
    flags["frozen_chains"] = frozen
    flags["stuck_chains"] = sorted(set(flags["stuck_chains"]) | set(frozen))
    divergence = divergence_summary(chains, median_log_tau)
    flags["divergent_transitions"] = divergence["divergences"] or 0  # 0 also for a kernel without divergences
    flags["exact_mismatch"] = 0  # the exact check's count beyond its threshold, set by _with_exact_check

    pooled = classical.pooled(data)
    t0 = time.perf_counter()
    classical_section = classical_record.build(config, data)
    timings["classical_s"] = time.perf_counter() - t0
    summary = {
        "schema_version": SCHEMA_VERSION,
        "data": {"names": list(named.names), "y": data.y, "sigma": data.sigma, **_data_description(config, table)},
        "separate": classical.separate(data),
        "pooled": pooled,
        "classical": classical_section,  # a typed record already (jaxschools.app.classical_record), or None
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
            "divergences": divergence["divergences"],
            "flags": flags,
            "not_mixed_reasons": not_mixed,
            "parameterization": parameterization,
            "divergence_rate": divergence["divergence_rate"],
            "divergences_below_median_tau": divergence["divergences_below_median_tau"],
            **_adapted(samples, sampler_cfg),
            "contrast": None if contrast is None else _contrast_summary(contrast, median_log_tau, sampler_cfg),
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
                "school": named.names[school],
                "threshold": threshold,
                "p": answers["p_exceeds"],
                "mcse": answers["p_exceeds_mcse"],
            },
            "p_greater": answers.get("p_greater"),
            "p_best": answers["p_best"],
        },
        "predictive": predictive_checks.summarize(predictive),
        "exact": reference,
        "sensitivity": sensitivity,  # a typed record already (jaxschools.app.sensitivity_record), or None
        "config": config,
        "provenance": provenance(),
        "sweep": None,  # experiments.run fills these in when the config asks for them
        "simulation": None,
    }
    summary = _null_nonexistent_moments(summary, prior.kind, data.mask)
    timings["total_s"] = time.perf_counter() - start
    in_likelihood = int(np.sum(np.asarray(data.mask)))
    summary = _with_exact_check(to_json(summary), prior.kind, in_likelihood)
    limits = {"rhat": RHAT_THRESHOLD, "ess": ESS_THRESHOLD, "frozen_rtol": diagnostics.FROZEN_RTOL,
              "stuck_acceptance": STUCK_ACCEPTANCE}
    typed = _record.summary_record(summary, limits=limits)
    figures = _record.analysis_figures(typed, data=data, prior=prior, logdensity=logdensity, fit=fit,
                                       samples=samples, theta=theta, contrast=contrast, predictive=predictive)
    record = results.RunRecord(typed, figures, sensitivity=sensitivity_figures)
    return Analysis(record, named, logdensity, fit, samples, theta, timings, contrast, predictive)


def __dir__():
    # The public names only, not the imports (``dir(js.diagnostics)`` lists no ``jax`` or ``jnp``).
    return list(__all__)
