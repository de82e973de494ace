"""The figures of a run, drawn with matplotlib's object API (no pyplot).

Every function builds a fresh :class:`matplotlib.figure.Figure` attached to an Agg canvas, so
drawing needs no display and touches no global state (pyplot's current figure, the backend
choice): it is safe from threads and leaves a caller's matplotlib setup alone. The plotting
functions take plain arrays; :func:`make_figures` takes them from the typed result
(:class:`~jaxschools.app.results.RunRecord`: the summary's numbers and the figures' arrays, computed by the
application) and returns the figures in report order with captions. Nothing here computes a statistic.

Notation follows the seed analysis (BDA3 section 5.5): mu, log tau (the seed's lambda_1, lambda_2)
and theta_j, with B_j = sigma_j^2 / (sigma_j^2 + tau^2) the shrinkage of y_j toward mu.
Every function works for any J >= 2, any data scale and a single chain.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from jaxschools.app import results
from jaxschools.app.results import Unplottable, failure_note
from jaxschools.app.results import central_range as _central_range
from jaxschools.app.results import finite_rows as _finite_rows
from jaxschools.app.results import span as _span

__all__ = [
    "FigureSpec",
    "make_figures",
    "plot_contour",
    "plot_trace",
    "plot_autocorrelation",
    "plot_marginals",
    "plot_shrinkage",
    "plot_forest",
    "plot_p_greater",
    "plot_ppc",
    "plot_divergences",
    "plain_text",
    "MAX_HEATMAP_SCHOOLS",
    "Unplottable",
    "attempt",
    "failure_note",
]

# The largest J with a P(theta_i > theta_j) heatmap.
MAX_HEATMAP_SCHOOLS = 40
# Draws overlaid on the contour plot, and points per chain in a trace.
MAX_SCATTER_POINTS = 3000
MAX_TRACE_POINTS = 4000
# School names are labelled on the shrinkage plot up to this many schools.
MAX_LABELLED_SCHOOLS = 30

MU, LOG_TAU = r"$\mu$", r"$\log\,\tau$"
_SEPARATE, _POOLED, _HIERARCHICAL, _EXACT, _LAPLACE, _DRAWS = (
    "0.45",
    "tab:orange",
    "tab:blue",
    "black",
    "tab:green",
    "tab:red",
)


class FigureSpec(NamedTuple):
    """One figure of the report: file stem ``name`` (``figures/<name>.png``), the figure, a caption.

    A figure that could not be drawn (extreme data: values too wide for an axis, no finite draws) has
    ``figure`` None and says why in ``not_drawn``; the report lists it instead of failing the run.
    """

    name: str
    figure: Figure | None
    caption: str
    not_drawn: str = ""


class _NotDrawn(Exception):
    """A figure whose data the application could not compute; the message is its note, shown as it is."""


def attempt(name: str, build) -> FigureSpec:
    """``build()`` -> ``(figure, caption)`` as a :class:`FigureSpec`; one that raises gives a skipped spec.

    Any ``Exception`` of a figure's own drawing is caught (matplotlib refuses infinite axis limits, a
    histogram of values spanning more than double precision, ...): a run's numbers must not be lost to a
    figure. Interrupts (``KeyboardInterrupt``, a ``BaseException``) pass through.
    """
    try:
        figure, caption = build()
    except _NotDrawn as note:
        return FigureSpec(name, None, "", not_drawn=str(note))
    except Exception as error:  # noqa: BLE001 - any failure of one figure only skips that figure
        return FigureSpec(name, None, "", not_drawn=failure_note(error))
    return FigureSpec(name, figure, caption)


# ----------------------------------------------------------------------------- helpers


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def plain_text(value) -> str:
    """``value`` as literal matplotlib text, shown exactly as typed.

    Matplotlib parses a string with an even, positive number of unescaped '$' as mathtext, so a school
    name such as "$x$" would be typeset and one such as "$\\frac$" would make drawing fail. Escaping every
    '$' as '\\$' leaves no unescaped dollar (``matplotlib.cbook.is_math_text`` is false), and matplotlib
    then shows each '\\$' as '$': the text is the value, backslashes included. Every place a user's string
    (school names, sweep values, config keys) becomes matplotlib text goes through this.
    """
    return str(value).replace("$", r"\$")


def _label(name, limit: int = 18) -> str:
    """A school name safe for matplotlib text: shortened in the middle (names often differ only at
    the end, "Lincoln High 12"), and literal (:func:`plain_text`)."""
    text = str(name)
    if len(text) > limit:
        tail = (limit - 1) // 2
        text = text[: limit - 1 - tail] + "…" + text[len(text) - tail :]
    return plain_text(text)


def _thin_index(n: int, limit: int) -> np.ndarray:
    return np.arange(n) if n <= limit else np.linspace(0, n - 1, limit).round().astype(int)


def _chain_colors(num_chains: int):
    palette = colormaps["tab10"].colors
    return [palette[c % len(palette)] for c in range(num_chains)]


def _spread(values: np.ndarray, gap: float) -> np.ndarray:
    """Label positions near ``values``, at least ``gap`` apart, keeping their order and mean; NaN where a
    value is not finite (it has no point to label)."""
    values = np.asarray(values, float)
    out = np.full(values.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(values))
    order = finite[np.argsort(values[finite], kind="stable")]
    placed = values[order].copy()
    for i in range(1, placed.size):
        placed[i] = max(placed[i], placed[i - 1] + gap)
    if placed.size:
        placed += np.mean(values[order]) - np.mean(placed)
    out[order] = placed
    return out


def _histogram(ax, x: np.ndarray, color, label: str):
    """Histogram of ``x`` as a density over its finite values, on their central 99.8% (tails cut for view).

    Returns the binned range ``(low, high)``, or None when ``x`` has no finite value (the panel then says
    so); raises :class:`Unplottable` when that range overflows double precision.
    """
    x = np.asarray(x, float).ravel()
    x = x[np.isfinite(x)]
    # The binned range and the number of bins are drawing choices (what part of the draws the panel shows, at
    # what resolution), not statistics of the posterior: the report's numbers come from the record. The range
    # rule is results.central_range, which the application also uses to lay out the Laplace curves it computes
    # for the marginals panels, so the curve and the histogram span the same values.
    drawn = _central_range(x)
    if drawn is None:
        ax.text(0.5, 0.5, "no finite values to show", transform=ax.transAxes, ha="center", va="center",
                fontsize=8, color="0.4")
        return None
    low, high = drawn
    bins = int(np.clip(2.0 * x.size ** (1 / 3), 10, 60))
    counts, edges = np.histogram(x, bins=bins, range=(low, high))
    density = counts / (x.size * np.diff(edges))
    ax.stairs(density, edges, fill=True, color=color, alpha=0.3, label=label)
    ax.stairs(density, edges, color=color, linewidth=0.8)
    return low, high


# ----------------------------------------------------------------------------- figures


def plot_contour(grid: results.ContourGrid, positions, mode=None, ellipse=None) -> Figure:
    """Highest-density contours of the posterior of (mu, log tau), the draws overlaid.

    ``grid``: the application's :class:`~jaxschools.app.results.ContourGrid` (axes, relative density and the
    levels holding its ``fractions`` of the mass), which also sets the axes; ``positions`` (chain, draw, 2);
    ``mode`` the Laplace mode, drawn as a cross, and ``ellipse`` (2, points) the boundary of its 95% region
    (the record's ``laplace_ellipse``), drawn dashed.
    """
    draws = _finite_rows(positions)
    mu_grid, log_tau_grid = np.asarray(grid.mu, float), np.asarray(grid.log_tau, float)
    lows, highs = (mu_grid[0], log_tau_grid[0]), (mu_grid[-1], log_tau_grid[-1])
    mesh_mu, mesh_log_tau = np.meshgrid(mu_grid, log_tau_grid)

    figure = _figure(7.0, 5.2)
    ax = figure.add_subplot()
    levels = list(grid.levels)
    if levels:
        shades = colormaps["Blues"](np.linspace(0.15, 0.55, len(levels)))
        ax.contourf(mesh_mu, mesh_log_tau, grid.density, levels=[*levels, np.inf], colors=shades, alpha=0.8)
        lines = ax.contour(mesh_mu, mesh_log_tau, grid.density, levels=levels, colors="navy", linewidths=0.9)
        ax.clabel(lines, fmt={lv: f"{f:.0%}" for lv, f in zip(levels, grid.fractions)}, fontsize=8, inline=True)
    if draws.size:
        index = _thin_index(draws.shape[0], MAX_SCATTER_POINTS)
        ax.scatter(draws[index, 0], draws[index, 1], s=3, color=_DRAWS, alpha=0.3, linewidths=0, zorder=3)
        # A proxy, so the legend shows a visible dot rather than one faint 3-point marker.
        label = f"draws ({index.size:,} of {draws.shape[0]:,})"
        ax.plot([], [], "o", color=_DRAWS, alpha=0.6, markersize=4, label=label)
    if ellipse is not None:
        ring = np.asarray(ellipse, float)
        ax.plot(ring[0], ring[1], "k--", linewidth=1.2, label="Laplace 95% ellipse", zorder=4)
    if mode is not None and np.all(np.isfinite(mode)):
        ax.plot(mode[0], mode[1], "k+", markersize=12, markeredgewidth=2, label="Laplace mode", zorder=5)
    ax.set_xlim(lows[0], highs[0])
    ax.set_ylim(lows[1], highs[1])
    ax.set_xlabel(MU)
    ax.set_ylabel(LOG_TAU)
    ax.set_title(r"Posterior of $(\mu, \log\,\tau)$: highest-density regions")
    ax.legend(loc="best", fontsize=8, framealpha=0.9)
    return figure


def plot_trace(positions) -> Figure:
    """Trace of mu and log tau against iteration (after burn-in), one line per chain."""
    positions = np.asarray(positions, float)
    num_chains, num_draws = positions.shape[:2]
    index = _thin_index(num_draws, MAX_TRACE_POINTS)
    figure = _figure(8.0, 4.8)
    axes = figure.subplots(2, 1, sharex=True)
    width = 0.5 if num_draws > 500 else 0.9
    for ax, d, label in zip(axes, range(2), (MU, LOG_TAU)):
        for c, color in enumerate(_chain_colors(num_chains)):
            ax.plot(index + 1, positions[c, index, d], color=color, linewidth=width, alpha=0.75, label=f"chain {c + 1}")
        ax.set_ylabel(label)
    axes[-1].set_xlabel("iteration after burn-in")
    axes[0].set_title("Trace plots", loc="left")
    if 1 < num_chains <= 10:
        legend = figure.legend(*axes[0].get_legend_handles_labels(), loc="outside upper right", fontsize=7,
                               ncols=num_chains, frameon=False)
        for line in legend.get_lines():
            line.set_linewidth(2.0)
    return figure


def plot_autocorrelation(autocorrelation, band: float) -> Figure:
    """Autocorrelation of mu and log tau against lag, one line per chain.

    ``autocorrelation``: (chain, 2, lags) of mu and log tau, lags 0, 1, ...; ``band`` the half-width of the grey
    band, the record's ``autocorrelation_band`` (1.96 / sqrt(draws per chain), where the autocorrelation of
    white noise falls 95% of the time).
    """
    autocorrelation = np.asarray(autocorrelation, float)
    num_chains, max_lag = autocorrelation.shape[0], autocorrelation.shape[-1] - 1
    lags = np.arange(max_lag + 1)
    figure = _figure(8.0, 3.6)
    axes = figure.subplots(1, 2, sharey=True)
    for ax, d, label in zip(axes, range(2), (MU, LOG_TAU)):
        rho = autocorrelation[:, d]
        ax.axhspan(-band, band, color="0.85", zorder=0)
        ax.axhline(0.0, color="0.3", linewidth=0.8)
        for c, color in enumerate(_chain_colors(num_chains)):
            ax.plot(lags, rho[c], color=color, marker="o", markersize=2.5, linewidth=0.9, label=f"chain {c + 1}")
        ax.set_xlabel("lag")
        ax.set_title(label)
        ax.set_ylim(-0.3, 1.05)
    axes[0].set_ylabel("autocorrelation")
    if 1 < num_chains <= 10:
        axes[1].legend(loc="upper right", fontsize=7, framealpha=0.9)
    return figure


def plot_marginals(positions, mode=None, laplace=(None, None), exact_log_tau=None, means=(None, None)) -> Figure:
    """Marginal posteriors of mu and log tau: draws (histogram), Laplace normal (dashed), exact.

    ``mode``: the Laplace mode of (mu, log tau); ``laplace`` per coordinate the ``(grid, density)`` of its normal
    approximation or None (the record's ``laplace_marginals``); ``exact_log_tau`` an optional ``(grid, density)``
    pair, the exact density of log tau; ``means`` the posterior means of mu and log tau (None where one does not
    exist). Vertical lines mark the Laplace mode (dashed) and the posterior mean (solid): for the eight schools
    the mode of log tau is 1.84 but its posterior mean is about 1.44, the skew the normal approximation misses.
    """
    draws = _finite_rows(positions)
    figure = _figure(9.0, 3.8)
    axes = figure.subplots(1, 2)
    for ax, d, label in zip(axes, range(2), (MU, LOG_TAU)):
        x = draws[:, d]
        ax.set_xlabel(label)
        if not x.size:
            continue
        mean = means[d]
        known = mean is not None and math.isfinite(mean)
        low, high = _histogram(ax, x, _DRAWS, f"MCMC draws (mean {mean:.3g})" if known else "MCMC draws")
        if known:
            ax.axvline(mean, color=_DRAWS, linewidth=1.2)
        if d == 1 and exact_log_tau is not None:
            grid, density = exact_log_tau
            ax.plot(grid, density, color=_EXACT, linewidth=1.4, label="exact (quadrature)")
            low, high = min(low, grid[0]), max(high, grid[-1])
        if laplace[d] is not None:
            grid, density = laplace[d]
            low, high = min(low, grid[0]), max(high, grid[-1])
            ax.plot(grid, density, "--", color=_LAPLACE, linewidth=1.4, label=f"Laplace normal (mode {mode[d]:.3g})")
            ax.axvline(mode[d], color=_LAPLACE, linestyle="--", linewidth=1.0)
        ax.set_xlim(low, high)
        ax.set_ylim(bottom=0)
        ax.legend(loc="upper left", fontsize=7, framealpha=0.9)
    axes[0].set_ylabel("density")
    figure.suptitle("Marginal posteriors")
    return figure


def plot_shrinkage(y, sigma, names, theta_mean, shrinkage, mu_mean, pooled_mean, curve=None,
                   mu_label: str = r"E[$\mu$ | y]") -> Figure:
    """The seed's shrinkage story in two panels.

    Left: each school's observed y_j joined to its posterior mean E[theta_j | y], pulled toward
    the population mean (a line at ``mu_mean``, labelled ``mu_label``: the posterior median where
    E[mu | y] does not exist). Right: E[B_j | y] against sigma_j; with ``curve``, ``(sigma grid,
    E[sigma^2 / (sigma^2 + tau^2) | y])``, the curve over sigma shows that noisier schools shrink more.
    """
    y, sigma, theta_mean, shrinkage = (np.asarray(v, float) for v in (y, sigma, theta_mean, shrinkage))
    num_schools = y.size
    labelled = num_schools <= MAX_LABELLED_SCHOOLS
    figure = _figure(10.0, 4.6 if labelled else 4.0)
    left, right = figure.subplots(1, 2, width_ratios=(1.0, 1.2))

    alpha = 0.8 if num_schools <= 50 else max(0.15, 40 / num_schools)
    for j in range(num_schools):
        left.plot([0, 1], [y[j], theta_mean[j]], color=_HIERARCHICAL, alpha=alpha, linewidth=1.0, marker="o",
                  markersize=3)
    if np.isfinite(mu_mean):
        left.axhline(mu_mean, color=_HIERARCHICAL, linestyle="-", linewidth=1.0, alpha=0.5, label=mu_label)
    left.axhline(pooled_mean, color=_POOLED, linestyle="--", linewidth=1.2, label="pooled mean")
    # Limits from the finite effects only: a posterior mean that could not be computed (NaN) is not drawn.
    effects = np.concatenate([y, theta_mean])
    effects = effects[np.isfinite(effects)]
    low, high = _span(float(effects.min()), float(effects.max())) if effects.size else (-1.0, 1.0)
    if labelled:
        # Labels are spread apart where effects are close; a faint leader joins each to its point.
        gap = 0.04 * (high - low)
        for x, values, direction in ((0.0, y, -1.0), (1.0, theta_mean, 1.0)):
            placed = _spread(values, gap)
            for j in np.flatnonzero(np.isfinite(placed)):
                left.plot([x + 0.03 * direction, x + 0.13 * direction], [values[j], placed[j]], color="0.75",
                          linewidth=0.6)
                left.text(x + 0.15 * direction, placed[j], _label(names[j], 10), va="center", fontsize=7,
                          ha="left" if direction > 0 else "right")
            if np.any(np.isfinite(placed)):
                low, high = min(low, float(np.nanmin(placed)) - gap), max(high, float(np.nanmax(placed)) + gap)
    left.set_xlim(-0.55, 1.55)
    left.set_ylim(low, high)
    left.set_xticks([0, 1], [r"observed $y_j$", r"E[$\theta_j$ | y]"])
    left.set_ylabel("effect")
    left.set_title(r"$y_j$ shrinks toward $\mu$")

    log_scale = sigma.max() / sigma.min() > 20
    if curve is not None:
        right.plot(*curve, color="0.5", linewidth=1.0, label=r"E[$\sigma^2/(\sigma^2+\tau^2)$ | y]")
    right.scatter(sigma, shrinkage, color=_HIERARCHICAL, s=18, zorder=3, label=r"school $j$")
    if labelled:
        # Schools with the same sigma have the same shrinkage: one label lists them all.
        groups: dict = {}
        for j in range(num_schools):
            groups.setdefault((float(sigma[j]), round(float(shrinkage[j]), 9)), []).append(j)
        for members in groups.values():
            text = ", ".join(_label(names[j], 10) for j in members[:4]) + (", …" if len(members) > 4 else "")
            j = members[0]
            right.annotate(text, (sigma[j], shrinkage[j]), textcoords="offset points", xytext=(4, -10), fontsize=7)
    if log_scale:
        right.set_xscale("log")
    right.set_ylim(0, 1.02)
    right.set_xlabel(r"standard error $\sigma_j$")
    right.set_ylabel(r"shrinkage E[$B_j$ | y]")
    right.set_title(r"noisier schools shrink more")
    handles, labels = [], []
    for ax in (left, right):
        h, l = ax.get_legend_handles_labels()
        handles, labels = handles + h, labels + l
    figure.legend(handles, labels, loc="outside lower center", ncols=len(handles), fontsize=8, frameon=False)
    return figure


def plot_forest(y, separate_low, separate_high, names, theta_mean, theta_low, theta_high, pooled_mean,
                pooled_low, pooled_high) -> Figure:
    """Per school: the separate 95% interval (y_j -/+ 1.96 sigma_j, the record's ``separate``), the hierarchical
    95% interval of theta_j (mean marked) and the pooled 95% interval (band, the record's ``pooled``). Draws the
    intervals it is given, schools in the order given."""
    y, separate_low, separate_high, theta_mean, theta_low, theta_high = (
        np.asarray(v, float) for v in (y, separate_low, separate_high, theta_mean, theta_low, theta_high)
    )
    num_schools = y.size
    rows = -np.arange(num_schools, dtype=float)
    figure = _figure(8.0, max(3.2, 0.34 * num_schools + 1.8))
    ax = figure.add_subplot()
    if np.isfinite(pooled_mean) and np.isfinite(pooled_low) and np.isfinite(pooled_high):
        ax.axvspan(pooled_low, pooled_high, color=_POOLED, alpha=0.18, label="pooled 95% interval")
        ax.axvline(pooled_mean, color=_POOLED, linewidth=1.0)
    ax.hlines(rows + 0.17, separate_low, separate_high, color=_SEPARATE, linewidth=1.6,
              label=r"separate: $y_j \pm 1.96\,\sigma_j$")
    ax.plot(y, rows + 0.17, "o", color=_SEPARATE, markersize=4)
    ax.hlines(rows - 0.17, theta_low, theta_high, color=_HIERARCHICAL, linewidth=2.2,
              label=r"hierarchical: 95% interval of $\theta_j$")
    ax.plot(theta_mean, rows - 0.17, "D", color=_HIERARCHICAL, markersize=4, label=r"E[$\theta_j$ | y]")
    ax.set_yticks(rows, [_label(name, 24) for name in names], fontsize=8 if num_schools <= 20 else 7)
    ax.set_ylim(rows[-1] - 0.7, 0.7)
    ax.set_xlabel(r"effect ($y_j$, $\theta_j$)")
    ax.set_title("Separate, pooled and hierarchical 95% intervals")
    figure.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=4, fontsize=7, frameon=False)
    ax.grid(axis="x", color="0.9")
    ax.set_axisbelow(True)
    return figure


def plot_p_greater(matrix, names) -> Figure:
    """Heatmap of P(theta_i > theta_j | y): row i, column j; the diagonal is blank."""
    matrix = np.asarray(matrix, dtype=float)
    num_schools = matrix.shape[0]
    side = min(11.0, 4.0 + 0.3 * num_schools)
    figure = _figure(side + 1.8, side)
    ax = figure.add_subplot()
    cmap = colormaps["RdBu_r"].with_extremes(bad="0.92")
    image = ax.imshow(np.ma.masked_invalid(matrix), cmap=cmap, vmin=0.0, vmax=1.0)
    labels = [_label(name, 14) for name in names]
    fontsize = 8 if num_schools <= 20 else 6
    ax.set_xticks(range(num_schools), labels, fontsize=fontsize, rotation=90 if num_schools > 10 else 0)
    ax.set_yticks(range(num_schools), labels, fontsize=fontsize)
    ax.set_xlabel(r"school $j$")
    ax.set_ylabel(r"school $i$")
    if num_schools <= 12:
        for i in range(num_schools):
            for j in range(num_schools):
                if np.isfinite(matrix[i, j]):
                    shade = "white" if abs(matrix[i, j] - 0.5) > 0.3 else "black"
                    ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=7, color=shade)
    figure.colorbar(image, ax=ax, shrink=0.8, label=r"P($\theta_i > \theta_j$ | y)")
    ax.set_title(r"P($\theta_i > \theta_j$ | y)")
    return figure


def plot_ppc(names, observed, replicated, p_values, new_school=None) -> Figure:
    """Posterior predictive check (BDA3 section 6.3): one panel per test statistic T, the histogram of
    T(y_rep) over the draws with T(y) as a vertical line and p = P(T(y_rep) >= T(y) | y) in the title.

    ``names`` (S,), ``observed`` (S,), ``replicated`` (n, S) or (chain, draw, S), ``p_values`` (S,).
    ``new_school``: optional ``(theta_draws, y_draws, sigma_new)`` for a last panel with the predictive
    distribution of a new school's effect and of its estimate.
    """
    observed, p_values = np.asarray(observed, float), np.asarray(p_values, float)
    replicated = np.asarray(replicated, float).reshape(-1, observed.size)
    panels = observed.size + (new_school is not None)
    columns = min(panels, 3)
    rows = math.ceil(panels / columns)
    figure = _figure(3.6 * columns + 0.4, 2.8 * rows + 0.2)
    axes = np.atleast_1d(figure.subplots(rows, columns)).ravel()
    for ax, name, t_obs, t_rep, p in zip(axes, names, observed, replicated.T, p_values):
        drawn = _histogram(ax, t_rep, _HIERARCHICAL, "T(y_rep)")
        ax.axvline(t_obs, color=_DRAWS, linewidth=1.6, label="T(y)")
        reach = [value for value in (*(drawn or ()), t_obs) if math.isfinite(value)]
        if reach:  # else: neither draws nor T(y) are finite, matplotlib's default limits stand
            ax.set_xlim(*_span(min(reach), max(reach)))
        ax.set_title(f"T = {name}:  p = {p:.2f}", fontsize=10)
        ax.set_xlabel(f"{name} of the J estimates")
        ax.set_yticks([])
    axes[0].legend(loc="upper right", fontsize=7, framealpha=0.9)
    if new_school is not None:
        ax = axes[observed.size]
        theta_new, y_new, sigma_new = new_school
        theta_new = np.asarray(theta_new, float).ravel()
        y_new = np.asarray(y_new, float).ravel()
        _histogram(ax, y_new, _POOLED, f"new estimate ỹ (σ = {sigma_new:.3g})")
        _histogram(ax, theta_new, _HIERARCHICAL, "new effect θ̃")
        ax.set_title("a new school", fontsize=10)
        ax.set_xlabel("its effect θ̃ and estimate ỹ")
        ax.set_yticks([])
        ax.legend(loc="upper right", fontsize=7, framealpha=0.9)
    for ax in axes[panels:]:
        ax.set_visible(False)
    return figure


def plot_divergences(panels, school: str = "1") -> Figure:
    """Where the divergent transitions fall: log tau against theta_1, one panel per run.

    ``panels``: :class:`~jaxschools.app.results.DivergencePanel` records (title, log tau, theta_1 and which
    transitions diverged, arrays of the same shape (chain, draw), and their count and rate). Non-divergent draws are grey (evenly thinned to :data:`MAX_SCATTER_POINTS`), the
    draws of divergent transitions red, all of them. In the centered eight schools they crowd into the
    neck of the funnel at small tau (Betancourt & Girolami 2015). ``school``: the first school's name as the
    user gave it (shown literally, shortened if long).
    """
    figure = _figure(4.6 * len(panels) + 0.4, 4.2)
    axes = np.atleast_1d(figure.subplots(1, len(panels), sharey=True))
    for ax, panel in zip(axes, panels):
        log_tau, theta = np.asarray(panel.log_tau, float).ravel(), np.asarray(panel.theta_first, float).ravel()
        divergent = np.asarray(panel.divergent, bool).ravel()
        calm = np.flatnonzero(~divergent)
        calm = calm[_thin_index(calm.size, MAX_SCATTER_POINTS)] if calm.size else calm
        ax.scatter(theta[calm], log_tau[calm], s=3, color="0.55", alpha=0.35, linewidths=0,
                   label=f"draws ({calm.size:,} shown)")
        ax.scatter(theta[divergent], log_tau[divergent], s=9, color=_DRAWS, alpha=0.8, linewidths=0,
                   label=f"divergent ({panel.num_divergent:,}, {panel.rate:.2%})")
        ax.set_xlabel(f"θ of school {_label(school)}")  # a user's school name, shown as typed
        ax.set_title(panel.title)
        ax.legend(loc="lower right", fontsize=7, framealpha=0.9, markerscale=2)
    axes[0].set_ylabel(LOG_TAU)
    return figure


# ----------------------------------------------------------------------------- the report's figures


def _array(values) -> np.ndarray:
    """A record's tuple of numbers (None where undefined) as a float array (NaN there)."""
    return np.asarray([np.nan if v is None else v for v in values], float)


def make_figures(record: results.RunRecord) -> list[FigureSpec]:
    """The report's figures, in order: contour, trace, autocorrelation, marginals, shrinkage, forest,
    divergences (only when a run, or its contrast, had divergent transitions), ppc (the posterior predictive
    check), p_greater (only when the matrix exists and J <= :data:`MAX_HEATMAP_SCHOOLS`).

    ``record``: the typed result (:class:`~jaxschools.app.results.RunRecord`); every number and array drawn is
    one of its fields. Each figure is built on its own (:func:`attempt`): one that cannot be drawn for these
    data comes back with ``figure`` None and the reason in ``not_drawn``, and the others are still drawn.
    """
    summary, arrays = record.summary, record.figures
    positions = arrays.positions
    num_chains, num_draws = positions.shape[:2]
    y, sigma, names = np.asarray(summary.data.y), np.asarray(summary.data.sigma), summary.data.names
    num_schools = y.size
    mode = _array(summary.laplace.mode)
    converged = summary.laplace.converged
    draws = _finite_rows(positions)
    specs = []

    def contour():
        if arrays.contour is None:
            raise _NotDrawn(arrays.contour_note)
        shown = min(draws.shape[0], MAX_SCATTER_POINTS)
        fit_note = ("" if converged
                    else " The Laplace fit did not converge, so its mode and ellipse are unreliable.")
        size = arrays.contour.mu.size
        return (plot_contour(arrays.contour, positions, mode, arrays.laplace_ellipse),
                "Posterior density of (μ, log τ) (the seed's contour plot of the log posterior): the shaded "
                "contours bound the highest-density regions holding "
                f"{', '.join(f'{f:.0%}' for f in sorted(arrays.contour.fractions))} of the mass on a {size} × {size} grid. Red points: "
                f"{shown:,} of the {draws.shape[0]:,} kept draws (evenly thinned). Cross and dashed ellipse: the "
                "Laplace mode and its 95% region." + fit_note)

    def trace():
        thin = (f" (thinned to {MAX_TRACE_POINTS:,} evenly spaced draws per chain)"
                if num_draws > MAX_TRACE_POINTS else "")
        return (plot_trace(positions),
                f"Trace plots of μ and log τ for {num_chains} chain{'s' if num_chains > 1 else ''} after "
                f"burn-in{thin}. "
                "Chains that look like overlapping random noise, with no trends or flat stretches, have mixed.")

    def autocorrelation():
        return (plot_autocorrelation(arrays.autocorrelation, arrays.autocorrelation_band),
                f"Autocorrelation of μ and log τ by lag (up to {arrays.autocorrelation.shape[-1] - 1}), one line per "
                "chain; the grey band is ±1.96/√n, where white noise would fall. Fast decay means nearly independent "
                "draws.")

    def marginals():
        exact_curve, why = arrays.exact_log_tau, arrays.exact_note
        exact_note = (
            " Black line: the exact marginal density of log τ by quadrature." if exact_curve is not None
            else f" No exact density is overlaid: {why}." if why else ""
        )
        means = (summary.posterior.mu.mean, summary.posterior.log_tau.mean)
        figure = plot_marginals(positions, mode, arrays.laplace_marginals, exact_curve, means)
        return (figure,
                "Marginal posteriors of μ and log τ: histogram of the draws (solid line: their mean) and the Laplace "
                "normal approximation (dashed; dashed vertical line: the mode)." + exact_note
                + " The posterior of log τ is skewed: its mean lies below the mode, which the normal approximation "
                "misses and the sampler captures.")

    theta_mean = _array(summary.theta.mean)
    pooled = summary.pooled
    pooled_mean = np.nan if pooled.mean is None else pooled.mean
    pooled_low, pooled_high = (np.nan if value is None else value for value in (pooled.q025, pooled.q975))

    def shrinkage():
        # E[mu | y] does not exist for every prior and J (jaxschools.core.moments: flat, J <= 3): the summary
        # has null there, and the line is mu's posterior median instead.
        mu_mean = summary.posterior.mu.mean
        if mu_mean is None:
            mu_line = math.nan if arrays.mu_median is None else arrays.mu_median
            mu_label = r"median of $\mu$ | y"
            mu_text = "μ's posterior median (blue line: E[μ | y] does not exist here)"
        else:
            mu_line, mu_label, mu_text = mu_mean, r"E[$\mu$ | y]", "the population mean μ (blue line)"
        return (plot_shrinkage(y, sigma, names, theta_mean, _array(summary.shrinkage), mu_line, pooled_mean,
                               arrays.shrinkage_curve, mu_label),
                "Shrinkage. Left: each school's observed effect y_j and its posterior mean E[θ_j | y], pulled toward "
                f"{mu_text}; dashed: the pooled estimate. Right: the posterior mean shrinkage "
                "E[B_j | y], B_j = σ_j² / (σ_j² + τ²), against σ_j: the less precise a school's estimate, the more "
                "it borrows from the others.")

    def forest():
        q025, q975 = _array(summary.theta.q025), _array(summary.theta.q975)
        chosen = arrays.forest_schools
        cap_note = ""
        if chosen.size < num_schools:
            cap_note = (f" Only the {chosen.size} of {num_schools} schools with the largest "
                        "|y_j − pooled mean| / σ_j are shown, in data order.")
        low, high = _array(summary.separate.lower), _array(summary.separate.upper)
        return (plot_forest(y[chosen], low[chosen], high[chosen], [names[j] for j in chosen], theta_mean[chosen],
                            q025[chosen], q975[chosen], pooled_mean, pooled_low, pooled_high),
                "95% intervals per school: separate analyses y_j ± 1.96 σ_j (grey), complete pooling (orange band), "
                "and the hierarchical posterior of θ_j (blue, 2.5% to 97.5% quantiles, diamond at the mean)."
                + cap_note)

    for name, build in (("contour", contour), ("trace", trace), ("autocorrelation", autocorrelation),
                        ("marginals", marginals), ("shrinkage", shrinkage), ("forest", forest)):
        specs.append(attempt(name, build))

    panels = arrays.divergence_panels
    if panels:
        def divergences():
            runs = "; ".join(f"{panel.title}: {panel.num_divergent:,} of {panel.num_transitions:,} transitions "
                             "divergent" for panel in panels)
            return (plot_divergences(panels, names[0]),
                    f"Where the sampler's trajectories diverged ({runs}): log τ against θ of school "
                    f"{names[0]}, every divergent transition's draw in red. Divergences that crowd into one "
                    "region, such as small τ in the neck of the centered parameterization's funnel, mark a region the "
                    "chains cannot explore with their step size, and estimates near it are biased; the non-centered "
                    "parameterization removes the funnel (Betancourt & Girolami 2015).")

        specs.append(attempt("divergences", divergences))

    ppc = summary.predictive.ppc

    def ppc_figure():
        sigma_new = summary.predictive.new_school.sigma
        observed, replicated, p_values = arrays.ppc
        p_text = ", ".join(f"{name} {entry.p_value:.2f}" for name, entry in ppc.items())
        return (plot_ppc(tuple(ppc), observed, replicated, p_values, (*arrays.new_school, sigma_new)),
                "Posterior predictive check (BDA3 section 6.3): for each test statistic T of the J estimates, the "
                "distribution of T over data replicated from the posterior, y_rep_j ~ N(θ_j, σ_j²), with the "
                f"observed T(y) in red; p = P(T(y_rep) ≥ T(y) | y) ({p_text}). A p-value near 0 or 1 marks a "
                "feature of the data the model rarely reproduces. Last panel: the posterior predictive "
                f"distribution of a new school's effect θ̃ ~ N(μ, τ²) and of its estimate ỹ ~ N(θ̃, σ²) with "
                f"σ = {sigma_new:.3g}, the median standard error.")

    specs.append(attempt("ppc", ppc_figure))

    matrix = summary.queries.p_greater
    if matrix is not None and num_schools <= MAX_HEATMAP_SCHOOLS:
        def p_greater():
            return (plot_p_greater(np.asarray([_array(row) for row in matrix]), names),
                    "Posterior probability that school i's true effect exceeds school j's, P(θ_i > θ_j | y) "
                    "(Rao-Blackwellised). Under complete pooling every entry would be 0.5; under separate "
                    "analyses they would be far more extreme.")

        specs.append(attempt("p_greater", p_greater))
    return specs


def __dir__():
    # The public names only, not the imports (``dir(js.diagnostics)`` lists no ``jax`` or ``jnp``).
    return list(__all__)
