"""Building the typed result (:mod:`jaxschools.app.results`) of the single analysis.

:func:`summary_record` completes the analysis's computed summary with what the report shows beside it
(the pooled 95% interval, the Laplace sds and correlation, P(theta_k > c) under the separate and pooled
analyses, the Laplace fit against the exact posterior, the exact check's rows) and types it;
:func:`analysis_figures` computes the arrays the figures draw (the log posterior on a grid, the Laplace
fit's 95% ellipse and normal marginals, the exact density of log tau, autocorrelations and white noise's band,
the shrinkage curve, the divergence panels). Everything the report
and the figures show is computed here, once, so that they only render.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxschools.app import results
from jaxschools.app.results import Z975 as _Z975
from jaxschools.app.results import finite as _finite
from jaxschools.app.results import finite_rows as _finite_rows
from jaxschools.app.results import valid_cov as _valid_cov
from jaxschools.core import bayes_factors, diagnostics, exact
from jaxschools.core._jit import filter_jit

__all__ = ["summary_record", "analysis_figures", "sweep_figures", "simulation_figures", "shrinkage_curve", "PPC_LABELS",
           "CONTOUR_GRID", "EXACT_GRID", "MAX_LAG", "HPD_FRACTIONS", "hpd_levels", "MAX_FOREST_SCHOOLS",
           "forest_schools", "OFF_CENTRE_SHIFT", "CHI2_2_95", "laplace_ellipse", "laplace_marginals",
           "autocorrelation_band", "not_mixed_reasons"]

# The posterior predictive check's test statistics (jaxschools.core.predictive.STATISTICS), worded for people.
PPC_LABELS = {"max": "largest y_j", "min": "smallest y_j", "mean": "mean of the y_j", "sd": "sd of the y_j",
              "range": "max − min"}
# The contour figure's grid (points per side), the exact log tau density's points, the autocorrelation's lags.
CONTOUR_GRID, EXACT_GRID, MAX_LAG = 150, 400, 50
# log tau draws averaged over for the shrinkage curve E[sigma^2 / (sigma^2 + tau^2) | y] (evenly thinned).
CURVE_DRAWS = 4000
# Posterior mass inside the highest-density contours of the (mu, log tau) plot.
HPD_FRACTIONS = (0.5, 0.8, 0.95, 0.99)
# Schools shown in the forest plot (the most outlying ones beyond this many).
MAX_FOREST_SCHOOLS = 40
# |Laplace mode - exact mean| / exact sd beyond which the report calls the mode off the posterior's centre.
OFF_CENTRE_SHIFT = 0.1
# chi^2_2 quantile at 0.95 (chi^2 with 2 df is exponential with mean 2, F(q) = 1 - exp(-q / 2)): the Laplace
# approximation's 95% region is (x - m)' cov^-1 (x - m) <= this; its boundary is drawn with ELLIPSE_POINTS points.
CHI2_2_95 = -2.0 * math.log(0.05)
ELLIPSE_POINTS = 200
# The marginals figure's Laplace normal curves: points, and their reach beyond the mode in sds (besides the draws'
# central 99.8%, results.central_range, which the panel's histogram shows).
LAPLACE_POINTS, LAPLACE_REACH = 400, 3.5


def _sqrt(x):
    return math.sqrt(x) if _finite(x) and x >= 0 else None


def not_mixed_reasons(num_chains: int, rhat, ess, *, rhat_limit: float, ess_limit: float) -> list[str]:
    """Why the chains are not shown to have mixed (:data:`results.NOT_MIXED_REASONS`, in that order), or [] when
    they are: R-hat below ``rhat_limit`` and every ESS at least ``ess_limit`` (Vehtari et al. 2021).

    ``rhat``: split R-hat of mu and log tau; ``ess``: their bulk and tail ESS (Python floats, NaN where
    undefined). An undefined value is no evidence of mixing, and one chain cannot show it (R-hat compares
    chains), whatever the numbers. The analysis sets ``flags.not_mixed`` to whether this is non-empty.
    """
    reasons = []
    if num_chains == 1:
        reasons.append("one_chain")
    elif not all(_finite(v) for v in (*rhat, *ess)):
        reasons.append("undefined")
    known = [v for v in rhat if _finite(v)]
    if known and max(known) >= rhat_limit:
        reasons.append("rhat")
    known = [v for v in ess if _finite(v)]
    if known and min(known) < ess_limit:
        reasons.append("ess")
    return reasons


def _upper_tail(threshold, mean, sd):
    """P(X > threshold) for X ~ N(mean, sd^2); None where a value is missing or sd <= 0."""
    if not (_finite(threshold) and _finite(mean) and _finite(sd)) or sd <= 0:
        return None
    return 0.5 * math.erfc((threshold - mean) / (sd * math.sqrt(2.0)))


def _ratio(a, b):
    return a / b if _finite(a) and _finite(b) and b > 0 else None


def summary_record(summary: dict, *, limits: dict) -> results.Summary:
    """The :class:`~jaxschools.app.results.Summary` of the analysis's computed ``summary`` (JSON-ready).

    Adds the derived keys of schema 3: ``pooled.sd/q025/q975`` (the pooled mean -/+ 1.96 sd),
    ``laplace.sd/corr/tau_at_mode``, ``mcmc.limits``, ``mcmc.frozen_accepting`` and
    ``mcmc.frozen_accepted_every_proposal``, ``queries.p_exceeds.exact/separate/pooled`` (N(y_k,
    sigma_k^2) and N(pooled mean, pooled var) upper tails at c), ``predictive.ppc.<T>.label``,
    and ``laplace_vs_exact``. Every other key must be in ``summary`` already: a missing one fails
    (:class:`~jaxschools.app.results.SchemaError`).
    """
    s = dict(summary)
    pooled = dict(s["pooled"])
    sd = _sqrt(pooled["var"])
    known = _finite(pooled["mean"]) and sd is not None
    pooled.update(sd=sd, q025=pooled["mean"] - _Z975 * sd if known else None,
                  q975=pooled["mean"] + _Z975 * sd if known else None)
    s["pooled"] = pooled

    fit = dict(s["laplace"])
    mode, cov = fit["mode"], fit["cov"]
    sds = [_sqrt(cov[0][0]), _sqrt(cov[1][1])]
    corr = cov[0][1] / (sds[0] * sds[1]) if _finite(cov[0][1]) and sds[0] and sds[1] else None
    fit.update(sd=sds, corr=corr, tau_at_mode=math.exp(mode[1]) if _finite(mode[1]) and mode[1] < 709 else None)
    s["laplace"] = fit

    mcmc = dict(s["mcmc"])
    acceptance = mcmc["acceptance_rate"]
    # A frozen chain that rejected (nearly) everything is explained by that (stuck); the others moved too little.
    accepting = [c for c in mcmc["flags"]["frozen_chains"]
                 if not (_finite(acceptance[c]) and acceptance[c] < limits["stuck_acceptance"])]
    # Accepting every proposal while not moving: each step rounds back to the current point (a step below
    # floating-point resolution, which "accepts" exactly), not a slowly mixing chain.
    rates = [acceptance[c] for c in accepting if _finite(acceptance[c])]
    mcmc.update(limits=limits, frozen_accepting=accepting,
                frozen_accepted_every_proposal=bool(rates) and min(rates) >= 1.0)
    s["mcmc"] = mcmc

    ex = s["exact"]
    queries = dict(s["queries"])
    query = dict(queries["p_exceeds"])
    names = s["data"]["names"]
    k = names.index(query["school"])
    query.update(exact=ex["p_exceeds"],
                 separate=_upper_tail(query["threshold"], s["data"]["y"][k], s["data"]["sigma"][k]),
                 pooled=_upper_tail(query["threshold"], pooled["mean"], sd))
    queries["p_exceeds"] = query
    s["queries"] = queries

    predictive = dict(s["predictive"])
    predictive["ppc"] = {name: {"label": PPC_LABELS[name], **entry} for name, entry in predictive["ppc"].items()}
    s["predictive"] = predictive

    versus = {}
    for d, key in enumerate(("mu", "log_tau")):
        mean, exact_sd = ex[key]["mean"], ex[key]["sd"]
        shift = (mode[d] - mean) / exact_sd if _finite(mode[d]) and _finite(mean) and _ratio(1.0, exact_sd) else None
        versus[key] = {"shift": shift, "sd_ratio": _ratio(sds[d], exact_sd),
                       "off_centre": None if shift is None else abs(shift) > OFF_CENTRE_SHIFT}
    s["laplace_vs_exact"] = versus

    return results.Summary.build(s)


# ----------------------------------------------------------------------------------------------------------
# The figures' arrays.


@filter_jit
def _on_grid(logdensity, points):
    """``logdensity`` at each of ``points`` (n, 2); compiled once per density function and grid size (a
    ``models.LogDensity``'s data and prior are traced leaves), not once per analysis."""
    return jax.vmap(logdensity)(points)


@filter_jit
def _autocorrelation(positions):
    """(chain, 2, draw) autocorrelations of mu and log tau of (chain, draw, 2) positions."""
    return jnp.stack([diagnostics.autocorrelation(positions[..., d]) for d in range(2)], axis=1)


def hpd_levels(logp, fractions=HPD_FRACTIONS) -> tuple[np.ndarray, tuple, tuple]:
    """(density, levels, kept fractions): the highest-density regions of a gridded log density.

    density = exp(logp - max logp) on the grid (0 where logp is not finite); for each fraction f (largest
    first) the level is the density of the cell at which the cells sorted by decreasing density first hold f
    of the total, so {density >= level} is the smallest set of cells holding at least f of the mass. Levels
    come back increasing, one per kept fraction (a fraction whose level is 0 or not above the next larger
    fraction's is left out: on a coarse grid two fractions can share a cell).
    """
    logp = np.asarray(logp, float)
    finite = np.isfinite(logp)
    if not np.any(finite):
        return np.zeros_like(logp), (), ()
    density = np.where(finite, np.exp(np.where(finite, logp - np.max(logp[finite]), 0.0)), 0.0)
    ordered = np.sort(density.ravel())[::-1]
    mass = np.cumsum(ordered) / ordered.sum()
    levels, kept = [], []
    for fraction in sorted(fractions, reverse=True):
        level = ordered[min(np.searchsorted(mass, fraction), ordered.size - 1)]
        if level > 0 and (not levels or level > levels[-1]):
            levels.append(float(level))
            kept.append(fraction)
    return density, tuple(levels), tuple(kept)


def forest_schools(y, sigma, pooled_mean, limit: int = MAX_FOREST_SCHOOLS) -> np.ndarray:
    """Indices of the schools the forest plot shows, in data order: all of them up to ``limit``, else
    the ``limit`` with the largest |y_j - pooled mean| / sigma_j (the ones pooling fits worst)."""
    y, sigma = np.asarray(y, float), np.asarray(sigma, float)
    if y.size <= limit:
        return np.arange(y.size)
    outlying = np.abs(y - (np.nan if pooled_mean is None else pooled_mean)) / sigma
    return np.sort(np.argsort(-outlying, kind="stable")[:limit])


def _contour(logdensity, draws, mode, cov) -> results.ContourGrid:
    """The log posterior on a CONTOUR_GRID^2 grid spanning the draws and the Laplace fit's 3-sd box, and its
    highest-density levels (:func:`hpd_levels`)."""
    have_fit = np.all(np.isfinite(mode)) and _valid_cov(cov)
    lows, highs = [], []
    for d in range(2):
        values = [draws[:, d]] if draws.size else []
        if have_fit:
            sd = math.sqrt(float(cov[d, d]))
            values.append(np.asarray([mode[d] - 3 * sd, mode[d] + 3 * sd]))
        values = np.concatenate(values) if values else np.zeros(1)
        low, high = results.span(float(values.min()), float(values.max()))
        lows.append(low)
        highs.append(high)
    mu_grid = np.linspace(lows[0], highs[0], CONTOUR_GRID)
    log_tau_grid = np.linspace(lows[1], highs[1], CONTOUR_GRID)
    mesh_mu, mesh_log_tau = np.meshgrid(mu_grid, log_tau_grid)
    points = np.stack([mesh_mu.ravel(), mesh_log_tau.ravel()], axis=-1)
    logp = np.asarray(_on_grid(logdensity, jnp.asarray(points, jnp.result_type(float))), float)
    logp = logp.reshape(mesh_mu.shape)
    density, levels, fractions = hpd_levels(logp)
    return results.ContourGrid(mu=mu_grid, log_tau=log_tau_grid, logp=logp, density=density, levels=levels,
                               fractions=fractions)


def _exact_log_tau(data, prior, draws, mode, cov):
    """(grid, density) of the exact marginal of log tau over the draws' central 99.8% and the Laplace
    mode -/+ 3.5 sd, or (None, why not); (None, "") without draws."""
    if not draws.size:
        return None, ""
    low, high = np.quantile(draws[:, 1], [0.001, 0.999])
    reach = 3.5 * math.sqrt(max(cov[1, 1], 0.0))
    low, high = min(low, mode[1] - reach), max(high, mode[1] + reach)
    if not (np.isfinite(low) and np.isfinite(high) and high > low):
        return None, ""
    grid = np.linspace(float(low), float(high), EXACT_GRID)
    try:
        density = np.exp(np.asarray(exact.log_tau_logdensity(data, prior, jnp.asarray(grid, data.y.dtype)), float))
    except Exception as error:  # noqa: BLE001 - the figure stands without this overlay; its caption says why
        return None, f"the exact density could not be evaluated ({type(error).__name__}: {error})"
    if density.shape != grid.shape or not np.any(np.isfinite(density)):
        return None, "the exact density came back with the wrong shape"
    return (grid, density), ""


# Points of the p(tau | y) and p(I^2 | y) curves.
DENSITY_GRID = 400


@filter_jit
def _tau_prior_density(data, prior, tau):
    """p(tau) on ``tau`` (the prior with a flat mu part: its log p(mu, tau) is log p(tau))."""
    tau_prior = bayes_factors.with_parts(prior, mu="flat")
    return jnp.exp(jax.vmap(lambda t: tau_prior.log_prob(0.0, jnp.log(t), data))(tau))


def tau_curves(summary: results.Summary, data, prior):
    """(tau grid, p(tau | y), p(tau) or None for an improper prior) and (I^2 grid, p(I^2 | y)) for the figures,
    or (None, None). p(I^2 | y) = p(tau | y) d tau / d I^2 with tau = s sqrt(I^2 / (1 - I^2)), so
    d tau / d I^2 = s / (2 sqrt(I^2) (1 - I^2)^(3/2)). Infinite values (a density with a pole at tau = 0, the sqrt
    prior's) are NaN, not drawn."""
    ex = summary.exact
    top = max(v for v in (ex.tau.q975, ex.shortest.tau.upper, 0.0) if _finite(v))
    s2 = ex.heterogeneity.typical_variance
    if not (top > 0 and _finite(s2) and s2 > 0):
        return None, None
    tau = np.linspace(0.0, 1.6 * top, DENSITY_GRID)
    i2 = np.linspace(0.0, 1.0, DENSITY_GRID + 1)[1:-1]
    s = math.sqrt(s2)
    dtype = data.y.dtype
    both = np.concatenate([tau, s * np.sqrt(i2 / (1.0 - i2))])
    density = np.array(exact.tau_density(data, prior, jnp.asarray(both, dtype)), float)
    density[~np.isfinite(density)] = np.nan
    post, i2_density = density[: tau.size], density[tau.size:] * s / (2.0 * np.sqrt(i2) * (1.0 - i2) ** 1.5)
    if not np.any(np.isfinite(post)):
        return None, None
    prior_density = None
    if prior.spec.proper:
        prior_density = np.array(_tau_prior_density(data.without_names(), prior, jnp.asarray(tau, dtype)), float)
        prior_density[~np.isfinite(prior_density)] = np.nan
    return (tau, post, prior_density), (i2, i2_density)


def shrinkage_curve(sigma, log_tau_draws):
    """(sigma grid (200,), E[sigma^2 / (sigma^2 + tau^2) | y] on it) from draws of log tau, or None.

    B = sigma^2 / (sigma^2 + tau^2) is the logistic function of 2 (log sigma - log tau), written with tanh
    so nothing overflows; the grid runs from the data's smallest sigma / 1.5 to its largest x 1.5,
    geometric where the sigmas span more than a factor 20 (the figure's axis is then logarithmic).
    """
    sigma = np.asarray(sigma, float)
    draws = np.asarray(log_tau_draws, float).ravel()
    draws = draws[np.isfinite(draws)]
    if not draws.size:
        return None
    draws = draws[np.linspace(0, draws.size - 1, min(draws.size, CURVE_DRAWS)).round().astype(int)]
    low, high = sigma.min() / 1.5, sigma.max() * 1.5
    if sigma.max() / sigma.min() > 20:
        grid = np.geomspace(low, high, 200)
    else:
        grid = np.linspace(max(low, 0.5 * sigma.min()), high, 200)
    z = 2.0 * (np.log(grid)[:, None] - draws[None, :])
    return grid, np.mean(0.5 * (1.0 + np.tanh(0.5 * z)), axis=1)


def laplace_ellipse(mode, cov, num_points: int = ELLIPSE_POINTS):
    """(2, num_points) points on the boundary of the Laplace fit's 95% region, or None.

    The region is {x : (x - mode)' cov^-1 (x - mode) <= chi^2_2(0.95)}; with cov = L L' (Cholesky), its boundary
    is mode + sqrt(chi^2_2(0.95)) L (cos a, sin a)' for a in [0, 2 pi] (the first point repeated last, so the
    drawn ring closes). None where the mode is not finite or cov is not positive definite (no ellipse exists).
    """
    mode, cov = np.asarray(mode, float), np.asarray(cov, float)
    if not (np.all(np.isfinite(mode)) and _valid_cov(cov)):
        return None
    angle = np.linspace(0, 2 * np.pi, num_points)
    factor = np.linalg.cholesky(cov)
    circle = np.stack([np.cos(angle), np.sin(angle)])
    return mode[:, None] + math.sqrt(CHI2_2_95) * factor @ circle


def _normal_pdf(x, mean, sd):
    """The N(mean, sd^2) density at ``x``."""
    return np.exp(-0.5 * ((x - mean) / sd) ** 2) / (sd * math.sqrt(2 * math.pi))


def laplace_marginals(draws, mode, cov, converged: bool) -> tuple:
    """Per coordinate (mu, log tau): ``(grid, density)`` of the Laplace normal N(mode_d, cov_dd), or None.

    The grid (:data:`LAPLACE_POINTS` points) spans the draws' central 99.8% (:func:`results.central_range`, the
    range the marginals figure bins them over) and mode_d -/+ :data:`LAPLACE_REACH` sd, so the curve covers the
    whole panel. None for both coordinates where the fit did not converge or cov is not positive definite (the
    figure then shows no normal approximation), and for a coordinate without finite draws or a finite mode.
    ``draws``: (n, 2) finite rows of (mu, log tau).
    """
    mode, cov = np.asarray(mode, float), np.asarray(cov, float)
    if not (converged and _valid_cov(cov)):
        return (None, None)
    curves = []
    for d in range(2):
        try:
            shown = results.central_range(draws[:, d])
        except results.Unplottable:  # the panel's histogram cannot be drawn either; the report says why
            shown = None
        if shown is None or not np.isfinite(mode[d]):
            curves.append(None)
            continue
        sd = math.sqrt(float(cov[d, d]))
        low, high = min(shown[0], mode[d] - LAPLACE_REACH * sd), max(shown[1], mode[d] + LAPLACE_REACH * sd)
        grid = np.linspace(low, high, LAPLACE_POINTS)
        curves.append((grid, _normal_pdf(grid, mode[d], sd)))
    return tuple(curves)


def autocorrelation_band(num_draws: int) -> float:
    """Phi^-1(0.975) / sqrt(num_draws): the sample autocorrelation of ``num_draws`` white-noise draws at a lag > 0 is
    approximately N(0, 1 / num_draws) (Bartlett), so it falls within -/+ this 95% of the time."""
    return _Z975 / math.sqrt(max(num_draws, 1))


def _divergence_panels(parameterization, samples, theta, contrast) -> list:
    """(title, log tau, theta_1, divergent) for the run and its contrast, when any divergence occurred."""
    runs = [(parameterization, samples, theta)]
    if contrast is not None and contrast.theta is not None:
        runs.append((contrast.parameterization, contrast.samples, contrast.theta))
    panels = []
    for name, run_samples, run_theta in runs:
        if run_samples.is_divergent is None:
            continue
        divergent = np.asarray(run_samples.is_divergent, bool)
        panels.append(results.DivergencePanel(
            title=f"{name} parameterization" if name else "this run",
            log_tau=np.asarray(run_samples.positions[..., 1], float),
            theta_first=np.asarray(run_theta, float)[..., 0], divergent=divergent,
            num_divergent=int(divergent.sum()), num_transitions=divergent.size,
            rate=divergent.sum() / max(divergent.size, 1)))
    return panels if any(np.any(panel.divergent) for panel in panels) else []


def analysis_figures(summary: results.Summary, *, data, prior, logdensity, fit, samples, theta, contrast,
                     predictive) -> results.AnalysisFigures:
    """The arrays the single analysis's figures draw (:class:`~jaxschools.app.results.AnalysisFigures`).

    A piece that cannot be computed for these data (a grid whose span overflows double precision) is None
    with a note saying why; the figure that needs it is then listed in the report as not drawn.
    """
    positions = np.asarray(samples.positions, float)
    draws = _finite_rows(positions)
    mode, cov = np.asarray(fit.mode, float), np.asarray(fit.cov, float)
    try:
        contour, contour_note = _contour(logdensity, draws, mode, cov), ""
    except Exception as error:  # noqa: BLE001 - only this figure is lost, and the report says why
        contour, contour_note = None, results.failure_note(error)
    exact_curve, exact_note = _exact_log_tau(data, prior, draws, mode, cov)
    try:
        tau_density, i2_density = tau_curves(summary, data, prior)
    except Exception:  # noqa: BLE001 - only these two figures are lost; the report lists them as not drawn
        tau_density, i2_density = None, None
    num_draws = positions.shape[1]
    lags = max(0, min(MAX_LAG, num_draws - 1)) + 1
    rho = np.asarray(_autocorrelation(samples.positions), float)[..., :lags]
    check = predictive.check
    return results.AnalysisFigures(
        positions=positions,
        contour=contour,
        contour_note=contour_note,
        laplace_ellipse=laplace_ellipse(mode, cov),
        exact_log_tau=exact_curve,
        exact_note=exact_note,
        laplace_marginals=laplace_marginals(draws, mode, cov, bool(fit.converged)),
        autocorrelation=rho,
        autocorrelation_band=autocorrelation_band(num_draws),
        mu_median=float(np.median(draws[:, 0])) if draws.size else None,
        shrinkage_curve=shrinkage_curve(data.sigma, positions[..., 1]),
        divergence_panels=tuple(_divergence_panels(summary.mcmc.parameterization, samples, theta, contrast)),
        ppc=(np.asarray(check.observed, float), np.asarray(check.replicated, float), np.asarray(check.p_value, float)),
        new_school=(np.asarray(predictive.new_school.theta, float), np.asarray(predictive.new_school.y, float)),
        forest_schools=forest_schools(summary.data.y, summary.data.sigma, summary.pooled.mean),
        tau_density=tau_density,
        i2_density=i2_density,
    )


# ----------------------------------------------------------------------------------------------------------
# Sweeps and simulation studies.

# Datasets drawn from each proper prior for a prior sweep's prior predictive figure.
PRIOR_PREDICTIVE_DRAWS = 4000


def _prior_predictive(config: dict, data, priors) -> tuple:
    """Per proper prior of a prior sweep: PRIOR_PREDICTIVE_DRAWS datasets y ~ N(theta, sigma^2),
    theta ~ N(mu, tau^2), (mu, tau) from the prior, with the data's sigmas; the first school's y and the sd
    of y across schools (key ``fold_in(key(seed), 100 + index)``, index among the proper priors)."""
    from jaxschools.core import models

    model, out = config["model"], []
    made = {kind: models.make_prior(kind, mu_loc=model["mu_loc"], mu_scale=model["mu_scale"],
                                    tau_scale=model["tau_scale"]) for kind in priors}
    proper = [kind for kind in priors if made[kind].proper]
    for index, kind in enumerate(proper):
        prior = made[kind]
        key = jax.random.fold_in(jax.random.key(config["sampler"]["seed"]), 100 + index)
        k1, k2, k3 = jax.random.split(key, 3)
        dtype, n = data.y.dtype, PRIOR_PREDICTIVE_DRAWS
        mu, tau = models.sample_prior(k1, prior, (n,), dtype, data=data)
        theta = mu[:, None] + tau[:, None] * jax.random.normal(k2, (n, data.num_schools), dtype)
        y = np.asarray(theta + data.sigma * jax.random.normal(k3, theta.shape, dtype))
        out.append(results.PriorPredictive(prior=kind, y_first=y[:, 0], sd=np.std(y, axis=1, ddof=1)))
    return tuple(out)


def sweep_figures(config: dict, data, rows: tuple, kind: str, column: str, timing: dict) -> results.SweepFigures:
    """A sweep's figure data: ESS per second per cell (from ``timing["ess_per_second"]``, None where
    unknown), the best cell (the largest smaller-of-two ESS of mu and log tau, per second where every cell's
    is known, else per 1,000 draws; None when no cell has one) and a prior sweep's prior predictive draws."""
    per_second = [None if item is None else (item["mu"], item["log_tau"])
                  for item in timing.get("ess_per_second") or [None] * len(rows)]
    if per_second and all(item is not None for item in per_second):
        speed = np.asarray(per_second, float)
    else:
        speed = np.asarray([[np.nan if v is None else v for v in (row.ess_per_1000_draws.mu,
                                                                 row.ess_per_1000_draws.log_tau)] for row in rows])
    worst = speed.min(axis=1) if speed.size else speed
    best = int(np.nanargmax(worst)) if np.any(np.isfinite(worst)) else None
    priors = config["sweep"]["priors"] if kind == "prior" else []
    return results.SweepFigures(kind=kind, column=column, ess_per_second=tuple(per_second), best=best,
                                prior_predictive=_prior_predictive(config, data, priors))


def simulation_figures(arrays: dict, studies) -> results.SimulationFigures:
    """A simulation's figure data: per study with SBC, its ranks and their ECDF (as counts of ranks below each
    of the band's points, per parameter) against the simultaneous band (Säilynoja et al. 2022)."""
    from jaxschools.core import calibration

    num_ranks, alpha = arrays["num_ranks"], arrays["alpha"]
    per_study = {}
    for study in studies:
        if study.sbc is None:
            continue
        ranks = np.asarray(arrays["arrays"][study.prior]["rank"])
        z, lower, upper = calibration.ecdf_band(num_ranks, ranks.shape[0], alpha)
        counts = np.stack([calibration.ecdf_counts(ranks[:, i], num_ranks) for i in range(ranks.shape[1])])
        per_study[study.prior] = results.StudyFigures(ranks=ranks, z=z, lower=lower, upper=upper, counts=counts)
    return results.SimulationFigures(params=tuple(arrays["params"]), num_ranks=num_ranks, alpha=alpha,
                                     studies=per_study)
