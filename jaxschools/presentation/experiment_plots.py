"""Figures of sweeps and simulation studies (matplotlib ``Figure`` objects, no pyplot global state).

:func:`make_figures` takes the typed result (:class:`jaxschools.app.results.RunRecord`) and returns
:class:`jaxschools.presentation.plots.FigureSpec` items in report order; every number and array drawn is a field
of the record (the application computed it):

* proposal-scale sweep: acceptance rate and ESS per second against the scale, the best scale marked;
* any other sweep: each school's posterior mean and 95% interval against the swept value;
* prior sweep: prior predictive distributions of the data next to the observed y, and the exact
  leave-one-out predictive densities per school;
* simulation study: per prior, ECDF-difference plots of the SBC ranks inside their simultaneous bands
  (Säilynoja et al. 2022) and rank histograms, and the interval coverage against the nominal level.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from jaxschools.app import results
from jaxschools.presentation.plots import FigureSpec, attempt, plain_text

__all__ = ["make_figures"]

_MAX_SCHOOLS_DRAWN = 12


def _numeric(values):
    try:
        return np.asarray(values, float)
    except (TypeError, ValueError):
        return None


def _floats(values) -> np.ndarray:
    return np.asarray([np.nan if v is None else v for v in values], float)


def _scale_sweep(rows, figures: results.SweepFigures):
    x = np.asarray([row.value for row in rows], float)
    acceptance = _floats(row.acceptance_rate for row in rows)
    have_speed = bool(figures.ess_per_second) and all(item is not None for item in figures.ess_per_second)
    if have_speed:
        speed, label = np.asarray(figures.ess_per_second, float), "ESS per second"
    else:
        speed = np.asarray([_floats((row.ess_per_1000_draws.mu, row.ess_per_1000_draws.log_tau)) for row in rows])
        label = "ESS per 1,000 draws"
    figure = Figure(figsize=(9.5, 3.8), layout="constrained")
    left, right = figure.subplots(1, 2)
    left.plot(x, acceptance, "o-", color="tab:blue")
    left.axhspan(0.2, 0.45, color="tab:green", alpha=0.1, label="common target range")
    left.set_xlabel("proposal scale")
    left.set_ylabel("acceptance rate")
    left.legend(loc="upper right", fontsize=8)
    right.plot(x, speed[:, 0], "o-", label="mu")
    right.plot(x, speed[:, 1], "s-", label="log tau")
    best = figures.best
    if best is not None:
        right.axvline(x[best], color="tab:red", ls="--", label=f"best scale {x[best]:g}")
    right.set_xlabel("proposal scale")
    right.set_ylabel(label)
    right.legend(fontsize=8)
    figure.suptitle("Random-walk proposal scale")
    chosen = f"the best scale ({x[best]:g}) maximises the smaller of the two" if best is not None else \
        "no scale has a defined ESS"
    caption = (f"Acceptance and {label} (bulk ESS of mu and of log tau) for each proposal scale; {chosen}. "
               "All cells ran in one vmapped computation.")
    return FigureSpec("sweep_scale", figure, caption)


def _theta_sweep(rows, column):
    values = [row.value for row in rows]
    x = _numeric(values)
    positions = x if x is not None else np.arange(len(values))
    names = rows[0].theta.names
    mean = np.asarray([_floats(row.theta.mean) for row in rows])
    low = np.asarray([_floats(row.theta.q025) for row in rows])
    high = np.asarray([_floats(row.theta.q975) for row in rows])
    shown = list(range(min(len(names), _MAX_SCHOOLS_DRAWN)))
    figure = Figure(figsize=(9.5, 4.6), layout="constrained")
    axes = figure.subplots()
    width = 0.8 * (np.min(np.diff(np.sort(positions))) if len(positions) > 1 else 1.0)
    offsets = np.linspace(-0.4, 0.4, len(shown)) * width if len(shown) > 1 else [0.0]
    for offset, j in zip(offsets, shown):
        axes.errorbar(positions + offset, mean[:, j], yerr=[mean[:, j] - low[:, j], high[:, j] - mean[:, j]],
                      fmt="o", ms=3, capsize=2, label=plain_text(names[j]))
    if x is None:
        axes.set_xticks(positions, [plain_text(v) for v in values])
    axes.set_xlabel(plain_text(column))
    axes.set_ylabel("theta_j: posterior mean and 95% interval")
    axes.legend(ncol=min(len(shown), 6), fontsize=7, loc="best")
    more = f" (first {len(shown)} of {len(names)} schools)" if len(names) > len(shown) else ""
    caption = f"Each school's posterior against the swept {column}{more}."
    return FigureSpec("sweep_theta", figure, caption)


def _loo(rows):
    figure = Figure(figsize=(7.5, 3.6), layout="constrained")
    axes = figure.subplots()
    names = rows[0].theta.names
    for row in rows:
        axes.plot(range(len(names)), _floats(row.loo.pointwise), "o-",
                  label=plain_text(f"{row.value} (elpd {row.loo.elpd_loo:.2f})"))
    axes.set_xticks(range(len(names)), [plain_text(name) for name in names])
    axes.set_xlabel("school left out")
    axes.set_ylabel("log p(y_j | y_-j)")
    axes.legend(fontsize=8)
    caption = ("Exact leave-one-out predictive log densities per school, by quadrature (no importance-sampling "
               "error); higher is better. The sum is the elpd_loo of each prior.")
    return FigureSpec("loo", figure, caption)


def _prior_predictive(summary: results.Summary, draws):
    """``draws``: the sweep's :class:`~jaxschools.app.results.PriorPredictive`, one per proper prior."""
    if not draws:
        return None
    figure = Figure(figsize=(9.5, 3.6), layout="constrained")
    axes = figure.subplots(1, 2)
    for item in draws:
        axes[0].hist(np.clip(item.y_first, -150, 150), bins=80, density=True, histtype="step",
                     label=plain_text(item.prior))
        axes[1].hist(np.clip(item.sd, 0, 150), bins=80, density=True, histtype="step", label=plain_text(item.prior))
    first = plain_text(summary.data.names[0])
    axes[0].axvline(summary.data.y[0], color="k", ls="--", label=f"observed y[{first}]")
    axes[0].set_xlabel(f"y[{first}] (clipped to ±150)")
    axes[1].axvline(summary.predictive.ppc["sd"].observed, color="k", ls="--", label="observed sd(y)")
    axes[1].set_xlabel("sd of y across schools (clipped at 150)")
    for ax in axes:
        ax.set_ylabel("prior predictive density")
        ax.legend(fontsize=8)
    caption = (f"Prior predictive distributions ({draws[0].y_first.size:,} datasets from each proper prior, with the "
               "data's sigmas) of the first school's y and of the spread of y, against the observed values. The flat "
               "prior is improper and has no prior predictive distribution.")
    return FigureSpec("prior_predictive", figure, caption)


def _sbc(kind, arrays: results.StudyFigures, params, num_ranks, alpha):
    ranks, z, lower, upper = arrays.ranks, arrays.z, arrays.lower, arrays.upper
    num = ranks.shape[0]
    figure = Figure(figsize=(9.5, 3.8), layout="constrained")
    left, right = figure.subplots(1, 2)
    left.fill_between(z, lower / num - z, upper / num - z, color="0.85", step="mid", label=f"{1 - alpha:.4g} band")
    for i, name in enumerate(params[:_MAX_SCHOOLS_DRAWN]):
        left.plot(z, arrays.counts[i] / num - z, lw=1, label=plain_text(name))  # the ECDF at the band's points z
    left.set_xlabel("fractional rank")
    left.set_ylabel("ECDF - uniform")
    left.legend(fontsize=6, ncol=2)
    bins = min(20, num_ranks + 1)
    for i, name in enumerate(params[:3]):
        right.hist(ranks[:, i], bins=bins, range=(0, num_ranks + 1), histtype="step", label=plain_text(name))
    right.axhline(num / bins, color="k", ls=":", label="uniform")
    right.set_xlabel(f"rank of the true value among {num_ranks} draws")
    right.set_ylabel("datasets")
    right.legend(fontsize=8)
    figure.suptitle(plain_text(f"Simulation-based calibration, {kind} prior, {num} datasets"))
    caption = (f"SBC (Talts et al. 2018): ECDF of the ranks minus the uniform CDF, with simultaneous bands "
               f"(Säilynoja et al. 2022) at level {1 - alpha:.4g} per parameter (Bonferroni over parameters); "
               "rank histograms of mu, tau and the first school's theta.")
    return FigureSpec(f"sbc_{kind}", figure, caption)


def _coverage(studies):
    figure = Figure(figsize=(7.5, 3.8), layout="constrained")
    axes = figure.subplots()
    for study in studies:
        levels = sorted(study.coverage, key=float)
        axes.plot([float(level) for level in levels], [study.coverage[level].mean_share for level in levels], "o-",
                  label=plain_text(f"{study.prior} ({study.draws_from})"))
    axes.plot([0, 1], [0, 1], "k:", label="nominal")
    axes.set_xlim(0.4, 1.0)
    axes.set_ylim(0.4, 1.0)
    axes.set_xlabel("nominal level of the central interval")
    axes.set_ylabel("coverage (mean over parameters)")
    axes.legend(fontsize=8)
    caption = ("Interval coverage averaged over parameters (per-parameter values and their binomial bands are in the "
               "table). Under a proper prior a calibrated procedure covers at the nominal rate; the flat prior's study "
               "is at fixed (mu, tau) and measures frequentist coverage, which need not be nominal.")
    return FigureSpec("coverage", figure, caption)


def make_figures(record: results.RunRecord) -> list[FigureSpec]:
    """The sweep and simulation figures of a run's record (empty if neither ran).

    Each is built on its own (:func:`jaxschools.presentation.plots.attempt`): one that cannot be drawn comes back with
    ``figure`` None and the reason in ``not_drawn``.
    """
    specs = []
    summary = record.summary

    def add(name, build):
        """``build()`` returns a FigureSpec (or None: nothing to draw); a failure skips only this figure."""
        def pair():
            spec = build()
            return (None, None) if spec is None else (spec.figure, spec.caption)

        spec = attempt(name, pair)
        if spec.figure is not None or spec.not_drawn:
            specs.append(spec)

    sweep = record.sweep
    if sweep is not None:
        rows = summary.sweep
        if sweep.kind == "config" and sweep.column == "sampler.scale":
            add("sweep_scale", lambda: _scale_sweep(rows, sweep))
        if sweep.kind == "prior":
            add("loo", lambda: _loo(rows))
            add("prior_predictive", lambda: _prior_predictive(summary, sweep.prior_predictive))
        add("sweep_theta", lambda: _theta_sweep(rows, sweep.column))
    simulation = record.simulation
    if simulation is not None:
        studies = summary.simulation
        for study in studies:
            if study.sbc is not None:
                add(f"sbc_{study.prior}", lambda study=study: _sbc(
                    study.prior, simulation.studies[study.prior], simulation.params, simulation.num_ranks,
                    simulation.alpha))
        add("coverage", lambda: _coverage(studies))
    return specs


def __dir__():
    # The public names only, not the imports (``dir(js.diagnostics)`` lists no ``jax`` or ``jnp``).
    return list(__all__)
