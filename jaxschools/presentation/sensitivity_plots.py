"""The figures of the report's Sensitivity section (matplotlib's object API, no pyplot).

:func:`make_figures` takes the typed result (:class:`jaxschools.app.results.RunRecord`; its ``summary.sensitivity``
and ``sensitivity`` figure arrays, computed by :mod:`jaxschools.app.sensitivity_record`) and returns
:class:`~jaxschools.presentation.plots.FigureSpec` items in report order, each built through
:func:`~jaxschools.presentation.plots.attempt`:

* ``influence_matrix``: the heatmap of d E[theta_i | y] / d y_j (J <= :data:`plots.MAX_HEATMAP_SCHOOLS`);
* ``influence_loo``: per quantity (E[mu], E[tau], E[theta_k], P(theta_k > c)), each school's linear prediction of
  the leave-one-out change, -dQ / dw_j, against the exact change, with the line y = x;
* ``prior_curves`` (proper priors): E[mu], E[tau] and the 95% interval ends of mu and tau against tau_scale on a
  logarithmic axis, with each point's tangent (its exact derivative).

Nothing here computes a statistic: every number drawn is a field of the record.
"""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from jaxschools.app import results
from jaxschools.presentation.plots import MAX_HEATMAP_SCHOOLS, FigureSpec, attempt, plain_text

__all__ = ["make_figures", "plot_influence_matrix", "plot_influence_loo", "plot_prior_curves", "NAMES",
           "MAX_LABELLED_SCHOOLS", "MAX_TANGENTS"]

# The figures' file stems, in report order (the report's Sensitivity section links to them).
NAMES = ("influence_matrix", "influence_loo", "prior_curves")
# Points of the leave-one-out figure are labelled with their school's name up to this many schools.
MAX_LABELLED_SCHOOLS = 20
# Tangents drawn per prior curve (evenly spread over its grid).
MAX_TANGENTS = 7
# The influence quantities (the keys of results.SensitivitySection.influence), labelled for the panels' titles.
_INFLUENCE_TITLES = {"mu_mean": r"E[$\mu$ | y]", "tau_mean": r"E[$\tau$ | y]", "theta_mean": r"E[$\theta_k$ | y]",
                     "p_exceeds": r"P($\theta_k > c$ | y)"}


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _floats(values) -> np.ndarray:
    """A record's numbers (None where undefined, nested tuples for a matrix) as a float array (NaN there)."""
    if isinstance(values, (tuple, list)) and values and isinstance(values[0], (tuple, list)):
        return np.asarray([_floats(row) for row in values], float)
    return np.asarray([np.nan if v is None else v for v in values], float)


def _short(name, limit: int = 14) -> str:
    text = str(name)
    if len(text) > limit:
        tail = (limit - 1) // 2
        text = text[: limit - 1 - tail] + "…" + text[len(text) - tail:]
    return plain_text(text)


def plot_influence_matrix(matrix, names) -> Figure:
    """Heatmap of the influence matrix M[i, j] = d E[theta_i | y] / d y_j (row i, column j), on a colour scale
    symmetric about 0; NaN cells grey. Values are printed in the cells up to 12 schools."""
    matrix = np.asarray(matrix, float)
    num = matrix.shape[0]
    side = min(11.0, 4.0 + 0.3 * num)
    figure = _figure(side + 1.8, side)
    ax = figure.add_subplot()
    finite = matrix[np.isfinite(matrix)]
    reach = float(np.max(np.abs(finite))) if finite.size and np.max(np.abs(finite)) > 0 else 1.0
    cmap = colormaps["RdBu_r"].with_extremes(bad="0.92")
    image = ax.imshow(np.ma.masked_invalid(matrix), cmap=cmap, vmin=-reach, vmax=reach)
    labels = [_short(name) for name in names]
    fontsize = 8 if num <= 20 else 6
    ax.set_xticks(range(num), labels, fontsize=fontsize, rotation=90 if num > 10 else 0)
    ax.set_yticks(range(num), labels, fontsize=fontsize)
    ax.set_xlabel(r"school $j$ (whose $y_j$ moves)")
    ax.set_ylabel(r"school $i$ (whose E[$\theta_i$ | y] responds)")
    if num <= 12:
        for i in range(num):
            for j in range(num):
                if np.isfinite(matrix[i, j]):
                    shade = "white" if abs(matrix[i, j]) > 0.6 * reach else "black"
                    ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=7, color=shade)
    figure.colorbar(image, ax=ax, shrink=0.8, label=r"d E[$\theta_i$ | y] / d $y_j$")
    ax.set_title(r"Influence matrix d E[$\theta_i$ | y] / d $y_j$")
    return figure


def plot_influence_loo(influence: dict, names, query_school: str) -> Figure:
    """Per quantity Q of ``influence`` (its :class:`~jaxschools.app.results.InfluenceEntry` by name; one panel
    each): every school's linear prediction of the leave-one-out change, -dQ/dw_j at w = 1 (x), against the exact
    change Q(w_j = 0) - Q(1) (y), with the line y = x on which the two agree.
    A school without an exact change (a moment that stops existing without it) is left out of its panel."""
    figure = _figure(9.0, 7.4)
    axes = figure.subplots(2, 2).ravel()
    labelled = len(names) <= MAX_LABELLED_SCHOOLS
    for ax, name in zip(axes, _INFLUENCE_TITLES):
        entry = influence[name]
        x, y = _floats(entry.linear), _floats(entry.change)
        shown = np.isfinite(x) & np.isfinite(y)
        ax.set_title(_INFLUENCE_TITLES[name], fontsize=10)
        if not shown.any():
            ax.text(0.5, 0.5, "no school has a defined change", transform=ax.transAxes, ha="center", va="center",
                    fontsize=8, color="0.4")
            continue
        low = float(min(x[shown].min(), y[shown].min()))
        high = float(max(x[shown].max(), y[shown].max()))
        pad = 0.08 * (high - low) if high > low else max(abs(high), 1e-12) * 0.5
        line = (low - pad, high + pad)
        ax.plot(line, line, ls="--", color="0.5", lw=1, label="y = x (the linear prediction is exact)")
        ax.axhline(0, color="0.85", lw=0.8, zorder=0)
        ax.axvline(0, color="0.85", lw=0.8, zorder=0)
        ax.scatter(x[shown], y[shown], s=24, color="tab:blue", zorder=3, label="school")
        if labelled:
            for j in np.flatnonzero(shown):
                ax.annotate(_short(names[j], 10), (x[j], y[j]), xytext=(3, 3), textcoords="offset points",
                            fontsize=7, color="0.25")
        ax.set_xlim(line)
        ax.set_ylim(line)
        ax.set_xlabel(r"linear prediction $-\partial Q / \partial w_j$", fontsize=8)
        ax.set_ylabel("exact leave-one-out change", fontsize=8)
    drawn = [ax for ax in axes if ax.get_legend_handles_labels()[0]]
    if drawn:
        drawn[0].legend(fontsize=7, loc="upper left")
    figure.suptitle(f"Dropping one school: linear prediction against exact change (k: {_short(query_school, 30)})",
                    fontsize=10)
    return figure


def plot_prior_curves(curves: results.PriorCurves, tangents: dict) -> Figure:
    """Two panels, mu and tau: E[.] and the 2.5% and 97.5% quantiles against tau_scale (logarithmic axis), each
    point's tangent (``tangents[name]``: (G, 2, 2) segment ends, from the record) in black, and the configured
    tau_scale as a dotted line."""
    grid = np.asarray(curves.tau_scale, float)
    figure = _figure(10.0, 4.6)
    axes = figure.subplots(1, 2)
    panels = ((r"$\mu$", ("mu_mean", "mu_q025", "mu_q975")), (r"$\tau$", ("tau_mean", "tau_q025", "tau_q975")))
    styles = {"mean": ("tab:blue", "-", "posterior mean"), "q025": ("tab:orange", "--", "2.5% quantile"),
              "q975": ("tab:green", "--", "97.5% quantile")}
    for ax, (symbol, names) in zip(axes, panels):
        for name in names:
            color, style, label = styles[name.split("_")[1]]
            value = _floats(curves.curves[name].value)
            ax.plot(grid, value, style, color=color, marker="o", ms=3, lw=2.2, alpha=0.6, label=label)
            segments = np.asarray(tangents[name], float)
            # A few tangents, evenly spread over the grid, so that each stays visible.
            for index in np.unique(np.linspace(0, len(segments) - 1, min(len(segments), MAX_TANGENTS)).round()):
                (x0, y0), (x1, y1) = segments[int(index)]
                if np.isfinite([x0, y0, x1, y1]).all():
                    ax.plot((x0, x1), (y0, y1), color="black", lw=1.1, zorder=4)
        ax.axvline(curves.configured, color="0.4", ls=":", lw=1.2, label=f"configured tau_scale {curves.configured:g}")
        ax.set_xscale("log")
        ax.set_xlabel("tau_scale (prior scale of τ)")
        ax.set_ylabel(symbol)
        ax.set_title(f"{symbol} against the prior scale of τ")
    axes[0].plot([], [], color="black", lw=1.1, label="tangent: the exact derivative")
    figure.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=5, fontsize=8,
                  frameon=False)
    return figure


def make_figures(record: results.RunRecord) -> list[FigureSpec]:
    """The Sensitivity section's figures (see the module docstring); none when the section is off or was not
    computed (its note says why), no heatmap beyond :data:`plots.MAX_HEATMAP_SCHOOLS` schools, no curves for the
    flat prior."""
    section = record.summary.sensitivity
    if section is None or section.theta is None:
        return []
    names = record.summary.data.names
    num = len(names)
    specs = []
    if num <= MAX_HEATMAP_SCHOOLS:
        def matrix():
            return (plot_influence_matrix(_floats(section.theta.y), names),
                    "Influence matrix: how far school i's posterior mean E[θ_i | y] moves per unit increase of school "
                    "j's reported effect y_j (exact derivatives of the exact posterior). The diagonal is each school's "
                    "weight on its own estimate; the off-diagonal entries are what it borrows from the others "
                    "through μ (red) and through τ (blue where a larger y_j, spreading the data, raises τ, loosens "
                    "the pooling and so pulls θ_i away from it). Shifting every y_j by the same amount shifts every "
                    "θ_i by it, so under the flat prior each row sums to 1; under a proper prior the rest of the 1 "
                    "is d E[θ_i] / d mu_loc.")

        specs.append(attempt("influence_matrix", matrix))

    if section.influence is not None:
        def loo():
            return (plot_influence_loo(section.influence, names, section.query_school),
                    "Influence against exact leave-one-out, one point per school: the change the first-order "
                    "(infinitesimal-jackknife) approximation predicts when school j is dropped, −dQ/dw_j at case "
                    "weights w = 1 (x), against the exact change computed with school j left out, w_j = 0 (y). "
                    "Points on the dashed line y = x are schools whose removal the derivative predicts well; "
                    "points far from it are where the linear approximation (Broderick, Giordano & Meager 2020; "
                    f"Nguyen et al. 2024) misleads. k is school {section.query_school}, c = "
                    f"{section.threshold:.4g}.")

        specs.append(attempt("influence_loo", loo))

    curves, arrays = section.prior_curves, record.sensitivity
    if curves is not None and arrays is not None and arrays.tangents is not None:
        def prior_curves():
            grid = curves.tau_scale
            return (plot_prior_curves(curves, arrays.tangents),
                    f"Prior sensitivity: the exact posterior mean and 95% interval ends of μ (left) and τ (right) at "
                    f"{len(grid)} values of the prior scale tau_scale from {grid[0]:.3g} to {grid[-1]:.3g} "
                    "(logarithmic axis), with the exact derivative at each point drawn as a short tangent (black). "
                    "Flat curves mean the data decide; steep ones, that the answer is the prior's choice. Where "
                    "the tangents follow the curve, the derivative at the configured scale (dotted line; the "
                    "table above) describes the change over that range.")

        specs.append(attempt("prior_curves", prior_curves))
    return specs


def __dir__():
    # The public names only, not the imports (``dir(js.diagnostics)`` lists no ``jax`` or ``jnp``).
    return list(__all__)
