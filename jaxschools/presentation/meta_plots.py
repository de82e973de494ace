"""The meta-analysis figures of a run's report (matplotlib's object API, no pyplot).

:func:`make_figures` takes the typed result (:class:`jaxschools.app.results.RunRecord`) and returns
:class:`~jaxschools.presentation.plots.FigureSpec` items in report order, each built through
:func:`~jaxschools.presentation.plots.attempt`:

* ``meta_forest``: bayesmeta's forest plot: each study's estimate with its 95% interval and its shrunken
  estimate (exact posterior median and central 95% interval of theta_j), then the average effect mu (a diamond)
  and the prediction for a new study theta_new (a bar), all exact;
* ``funnel``: each study's effect against its standard error (axis reversed), with the pseudo-confidence
  region mu_FE -/+ 1.96 sigma (and 2.58, 99%) around the common-effect estimate and Egger's regression line;
* ``leave_one_out``: the classical estimate of mu (first configured estimator) and its 95% interval with each
  study left out in turn, beside tau^2;
* ``tau_posterior``: p(tau | y) on the tau scale with the prior p(tau) (proper priors), the central and
  shortest 95% intervals marked;
* ``i2_posterior``: p(I^2 | y), its intervals and the classical I^2 estimates.

Nothing here computes a statistic: every number drawn is a field of the record.
"""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from jaxschools.app import results
from jaxschools.presentation.plots import FigureSpec, attempt, plain_text

__all__ = ["make_figures", "plot_meta_forest", "plot_funnel", "plot_leave_one_out", "plot_tau_posterior",
           "plot_i2_posterior", "NAMES", "MAX_FOREST_STUDIES"]

NAMES = ("meta_forest", "funnel", "leave_one_out", "tau_posterior", "i2_posterior")
# Studies drawn one per row in the forest and leave-one-out plots (the first ones, in data order).
MAX_FOREST_STUDIES = 60
_STUDY, _SHRUNK, _SUMMARY, _PRIOR = "0.35", "tab:blue", "black", "tab:orange"


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _array(values) -> np.ndarray:
    return np.asarray([np.nan if v is None else v for v in values], float)


def _short(name, limit: int = 26) -> str:
    text = str(name)
    return plain_text(text if len(text) <= limit else text[: limit - 9] + "…" + text[-8:])


def plot_meta_forest(names, y, sigma, theta_median, theta_low, theta_high, mu, theta_new) -> Figure:
    """The forest plot: per study y_j -/+ 1.96 sigma_j (grey, square at y_j) and the shrunken estimate (blue:
    median and central 95% interval of theta_j); below a line, ``mu`` and ``theta_new``, each (median, low,
    high), as a diamond and a bar."""
    y, sigma = np.asarray(y, float), np.asarray(sigma, float)
    k = y.size
    rows = -np.arange(k, dtype=float)
    figure = _figure(8.0, max(3.4, 0.3 * k + 2.4))
    ax = figure.add_subplot()
    ax.hlines(rows + 0.14, y - 1.959963984540054 * sigma, y + 1.959963984540054 * sigma, color=_STUDY,
              linewidth=1.4, label=r"study: $y_j \pm 1.96\,\sigma_j$")
    ax.plot(y, rows + 0.14, "s", color=_STUDY, markersize=3.5)
    ax.hlines(rows - 0.14, theta_low, theta_high, color=_SHRUNK, linewidth=2.0,
              label=r"shrunken: 95% interval of $\theta_j$ | y")
    ax.plot(theta_median, rows - 0.14, "o", color=_SHRUNK, markersize=3.5)
    base = rows[-1] - 1.2 if k else -1.2
    ax.axhline(base + 0.6, color="0.8", linewidth=0.8)
    m, low, high = mu
    ax.fill([low, m, high, m], [base, base + 0.3, base, base - 0.3], color=_SUMMARY, label=r"$\mu$ (diamond)")
    p, p_low, p_high = theta_new
    ax.fill([p_low, p_low, p_high, p_high], [base - 1.12, base - 0.88, base - 0.88, base - 1.12], color="0.55",
            label=r"prediction $\theta_{new}$")
    ax.plot([p, p], [base - 1.15, base - 0.85], color="white", linewidth=1.0)
    if np.isfinite(m):
        ax.axvline(m, color=_SUMMARY, linewidth=0.7, linestyle=":")
    ticks = list(rows) + [base, base - 1.0]
    labels = [_short(n) for n in names] + [r"effect $\mu$", r"prediction $\theta_{new}$"]
    ax.set_yticks(ticks, labels, fontsize=8 if k <= 25 else 6)
    ax.set_ylim(base - 1.6, 0.7)
    ax.set_xlabel("effect")
    ax.set_title("Studies, shrunken estimates, mean effect and prediction")
    ax.grid(axis="x", color="0.92")
    ax.set_axisbelow(True)
    figure.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=4, fontsize=7, frameon=False)
    return figure


def plot_funnel(y, sigma, centre, egger=None) -> Figure:
    """Effects against standard errors (axis reversed: precise studies at the top) with the pseudo-confidence
    region centre -/+ 1.96 sigma and -/+ 2.58 sigma, and Egger's line y = limit + intercept sigma when given
    ``egger`` = (intercept, limit, p)."""
    y, sigma = np.asarray(y, float), np.asarray(sigma, float)
    figure = _figure(6.4, 4.8)
    ax = figure.add_subplot()
    top = 1.08 * np.nanmax(sigma)
    s = np.linspace(0.0, top, 100)
    for z, shade, label in ((2.5758293035489004, "0.93", "99% region"), (1.959963984540054, "0.82", "95% region")):
        ax.fill_betweenx(s, centre - z * s, centre + z * s, color=shade, label=label, linewidth=0)
    ax.axvline(centre, color="0.3", linewidth=1.0, label="common-effect estimate")
    if egger is not None and all(np.isfinite(egger[:2])):
        intercept, limit, p = egger
        ax.plot(limit + intercept * s, s, color="tab:red", linestyle="--", linewidth=1.2,
                label=f"Egger's regression (p = {p:.2g})")
    ax.plot(y, sigma, "o", color=_SHRUNK, markersize=5, markeredgecolor="white", markeredgewidth=0.5,
            label="studies")
    ax.set_ylim(top, 0.0)
    ax.set_xlabel(r"effect $y_j$")
    ax.set_ylabel(r"standard error $\sigma_j$")
    ax.set_title("Funnel plot")
    ax.legend(fontsize=7, frameon=False, loc="lower right")
    return figure


def plot_leave_one_out(names, mu, low, high, tau2, full, method: str) -> Figure:
    """Per left-out study: the estimate of mu with its 95% interval (left) and tau^2 (right), the all-studies
    fit ``full`` = (mu, low, high, tau2) as lines."""
    k = len(names)
    rows = -np.arange(k, dtype=float)
    figure = _figure(8.0, max(3.2, 0.28 * k + 1.8))
    left, right = figure.subplots(1, 2, sharey=True, width_ratios=(2.2, 1.0))
    f_mu, f_low, f_high, f_tau2 = full
    left.axvspan(f_low, f_high, color="0.9", label="all studies: 95% interval")
    left.axvline(f_mu, color="0.4", linewidth=1.0, label="all studies: estimate")
    left.hlines(rows, low, high, color=_SHRUNK, linewidth=1.8, label="without the study")
    left.plot(mu, rows, "o", color=_SHRUNK, markersize=3.5)
    left.set_yticks(rows, [_short(n) for n in names], fontsize=8 if k <= 25 else 6)
    left.set_xlabel(r"$\mu$ without the study")
    left.set_title(f"Leave one out ({plain_text(method)})", fontsize=10)
    right.axvline(f_tau2, color="0.4", linewidth=1.0)
    right.plot(tau2, rows, "o", color=_SHRUNK, markersize=3.5)
    right.set_xlabel(r"$\tau^2$ without the study")
    right.set_xlim(left=0.0)
    for ax in (left, right):
        ax.grid(axis="x", color="0.92")
        ax.set_axisbelow(True)
    figure.legend(*left.get_legend_handles_labels(), loc="outside lower center", ncols=3, fontsize=7, frameon=False)
    return figure


def _mark_intervals(ax, central, shortest, top):
    ax.hlines([0.06 * top], *central, color="0.3", linewidth=3, label="central 95%")
    ax.hlines([0.12 * top], *shortest, color="tab:red", linewidth=3, label="shortest 95%")


def plot_tau_posterior(tau, posterior, prior, central, shortest) -> Figure:
    """p(tau | y) on the tau scale, the prior p(tau) (None: improper, not drawn) and the two 95% intervals."""
    figure = _figure(6.4, 4.0)
    ax = figure.add_subplot()
    ax.plot(tau, posterior, color=_SHRUNK, linewidth=1.8, label=r"posterior $p(\tau \mid y)$")
    if prior is not None:
        ax.plot(tau, prior, color=_PRIOR, linestyle="--", linewidth=1.4, label=r"prior $p(\tau)$")
    top = np.nanmax(posterior)
    _mark_intervals(ax, central, shortest, top)
    ax.set_xlim(0.0, tau[-1])
    ax.set_ylim(0.0, 1.15 * max(top, np.nanmax(prior) if prior is not None else 0.0))
    ax.set_xlabel(r"heterogeneity $\tau$")
    ax.set_ylabel("density")
    ax.set_title(r"The heterogeneity $\tau$: posterior and prior")
    ax.legend(fontsize=8, frameon=False)
    return figure


def plot_i2_posterior(i2, density, central, shortest, classical) -> Figure:
    """p(I^2 | y) in percent with its intervals and the classical estimates ``classical`` {label: I^2 (%)}."""
    figure = _figure(6.4, 4.0)
    ax = figure.add_subplot()
    percent = 100.0 * np.asarray(i2)
    shown = np.asarray(density) / 100.0  # density per percentage point
    finite = np.isfinite(shown)
    # A density with a pole at I^2 = 0 (p(tau = 0 | y) > 0) is clipped at twice its largest value above 5%, so
    # the rest shows; any other density is drawn whole.
    away = finite & (percent >= 5.0)
    cap = np.max(shown[finite]) if finite.any() else 1.0
    if away.any() and np.nanargmax(np.where(finite, shown, -np.inf)) < np.argmax(percent >= 5.0):
        cap = min(cap, 2.0 * np.max(shown[away]))
    ax.plot(percent, np.minimum(shown, cap * 1.05), color=_SHRUNK, linewidth=1.8, label=r"posterior $p(I^2 \mid y)$")
    _mark_intervals(ax, [100 * c for c in central], [100 * c for c in shortest], cap)
    for (label, value), style in zip(classical.items(), ("-.", ":", "--")):
        if value is not None and np.isfinite(value):
            ax.axvline(value, color="0.3", linestyle=style, linewidth=1.0, label=f"{plain_text(label)}: {value:.3g}%")
    ax.set_xlim(0.0, 100.0)
    ax.set_ylim(0.0, 1.15 * cap)
    ax.set_xlabel(r"$I^2$ (%), the share of the variance between studies")
    ax.set_ylabel("density per percentage point")
    ax.set_title(r"Relative heterogeneity $I^2$")
    ax.legend(fontsize=7, frameon=False)
    return figure


def make_figures(record: results.RunRecord) -> list[FigureSpec]:
    """The meta-analysis figures (module docstring), in report order."""
    summary, arrays = record.summary, record.figures
    data, ex = summary.data, summary.exact
    names, y, sigma = data.names, np.asarray(data.y, float), np.asarray(data.sigma, float)
    shown = min(len(names), MAX_FOREST_STUDIES)
    cap = (f" The first {shown} of {len(names)} studies are drawn." if shown < len(names) else "")
    unit = "school" if data.layout == "y_sigma" else "study"
    specs = []

    def forest():
        theta = ex.theta
        median, low, high = (_array(v)[:shown] for v in (theta.q50, theta.q025, theta.q975))
        new = ex.prediction.theta_new
        return (plot_meta_forest(names[:shown], y[:shown], sigma[:shown], median, low, high,
                                 (ex.mu.q50, ex.mu.q025, ex.mu.q975), (new.q50, new.q025, new.q975)),
                f"Forest plot, as bayesmeta draws it: each {unit}'s estimate y_j with its 95% interval "
                "y_j ± 1.96 σ_j (grey), and its shrunken estimate, the posterior median and central 95% interval "
                "of θ_j (blue). Below the line: the average effect μ (diamond: median and central 95% interval) "
                "and the prediction for a new study, θ_new ~ N(μ, τ²) (bar: its central 95% interval, white "
                "tick at the median), all from the exact posterior. The prediction interval is wider than μ's "
                "by the heterogeneity τ." + cap)

    specs.append(attempt("meta_forest", forest))
    classical = summary.classical

    def funnel():
        egger = classical.egger if classical is not None else None
        line = None if egger is None else (egger.intercept, egger.limit, egger.p_value)
        test = ("" if egger is None else
                f" Red dashed: Egger's regression line y = b₁ + b₀ σ (b₀ = {egger.intercept:.3g}, "
                f"p = {egger.p_value:.2g}, t on {egger.df} degrees of freedom); a slope away from vertical says "
                "small studies report different effects.")
        return (plot_funnel(y, sigma, summary.pooled.mean, line),
                f"Funnel plot: each {unit}'s effect y_j against its standard error σ_j (most precise at the "
                "top). Without heterogeneity or small-study effects the points scatter inside the "
                "pseudo-confidence regions ȳ ± 1.96 σ (95%) and ± 2.58 σ (99%) around the common-effect "
                "estimate ȳ, symmetrically." + test)

    specs.append(attempt("funnel", funnel))

    if classical is not None and classical.fits:
        method, fit = next(iter(classical.fits.items()))

        def leave_one_out():
            loo = fit.leave_one_out
            mu, low, high, tau2 = (_array(v)[:shown] for v in (loo.mu, loo.ci_lower, loo.ci_upper, loo.tau2))
            return (plot_leave_one_out(names[:shown], mu, low, high, tau2,
                                       (fit.mu, fit.ci.lower, fit.ci.upper, fit.tau2), method),
                    f"Leave one out: the classical random-effects estimate of μ (by {method}) with its 95% Wald "
                    f"interval, and τ², refitted with each {unit} left out in turn; the lines are the fit to all "
                    f"of them. A {unit} whose omission moves μ outside the full interval, or τ² far, is "
                    "influential." + cap)

        specs.append(attempt("leave_one_out", leave_one_out))

    def tau_posterior():
        if arrays.tau_density is None:
            raise ValueError("the exact density of tau could not be evaluated")
        tau, posterior, prior = arrays.tau_density
        prior_note = (" Dashed orange: the prior p(τ); where the posterior departs from it, the data speak."
                      if prior is not None else
                      " The prior is improper (it does not integrate to one), so it is not drawn.")
        return (plot_tau_posterior(tau, posterior, prior, (ex.tau.q025, ex.tau.q975),
                                   (ex.shortest.tau.lower, ex.shortest.tau.upper)),
                "The exact marginal posterior of the heterogeneity τ on its own scale, p(τ | y) (blue), with its "
                "central (grey) and shortest (red) 95% intervals; the shortest starts at 0 when the density "
                "falls from there." + prior_note)

    specs.append(attempt("tau_posterior", tau_posterior))

    def i2_posterior():
        if arrays.i2_density is None:
            raise ValueError("the exact density of I² could not be evaluated")
        i2, density = arrays.i2_density
        het = ex.heterogeneity
        estimates = {} if classical is None else {f"{m} estimate": f.i2 for m, f in classical.fits.items()}
        return (plot_i2_posterior(i2, density, (het.i2.q025, het.i2.q975),
                                  (het.i2.shortest_lower, het.i2.shortest_upper), estimates),
                "The exact posterior of I² = τ² / (τ² + s²), the share of the total variance that is between "
                f"studies (s² = {het.typical_variance:.4g}, Higgins & Thompson's typical within-study variance), "
                "with its central (grey) and shortest (red) 95% intervals and the classical point estimates "
                "(lines). Where p(τ = 0 | y) > 0 the density has a pole at I² = 0, clipped here.")

    specs.append(attempt("i2_posterior", i2_posterior))
    return specs


def __dir__():
    return list(__all__)
