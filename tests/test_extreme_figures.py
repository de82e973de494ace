"""Extreme data never crash a run through its figures (issue #13 finding 5).

On the old main, one sigma of 1e-300, 1e-320 or 1e300 crashed ``plots.plot_ppc`` (a histogram of no finite
draws) and one y of 1e308 ``plots.plot_shrinkage`` (a NaN axis limit), after the whole computation. Now:

* data whose squares leave double precision are refused before JAX with one ``error:`` line (exit 2): the
  model cannot be computed on them (the cases are in ``tests/test_validation.py``'s MALFORMED, which the
  command-line battery ``tests/test_bad_input.py`` also runs);
* data just inside the bounds run to the end, their exact posterior equal to an independent scipy oracle,
  every figure drawn;
* a figure that still cannot be drawn (values beyond what an axis can hold, no finite draws) is skipped
  and named in the report with the reason, and the run goes on.
"""

import math
import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from jaxschools.presentation import meta_plots, plots, report, sensitivity_plots
from jaxschools.core import validation
from jaxschools.errors import InputError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from oracle import Oracle  # noqa: E402
from sizes import cli_sets  # noqa: E402

Y = [28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0]
SIGMA = [15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0]
NAMES = list("ABCDEFGH")


def _draw(figure):
    figure.canvas.draw()  # renders every artist: bad limits or text fail here
    figure.clear()


# ----------------------------------------------------------------------------- the plotting functions


def test_ppc_with_no_finite_draws_is_drawn():
    """What the old main's sigma = 1e-300 run handed to plot_ppc: every replicated statistic and every draw of
    a new school NaN (the sampler's positions were NaN)."""
    observed = np.array([28.0, -3.0, 8.75])
    figure = plots.plot_ppc(["max", "min", "mean"], observed, np.full((2, 50, 3), np.nan), np.full(3, np.nan),
                            (np.full((2, 50), np.nan), np.full((2, 50), np.nan), 10.5))
    texts = [text.get_text() for ax in figure.get_axes() for text in ax.texts]
    assert texts.count("no finite values to show") == 3 + 2  # three statistics, two histograms of the new school
    _draw(figure)


def test_ppc_keeps_the_finite_draws_of_a_partly_failed_run():
    rng = np.random.default_rng(1)
    replicated = rng.normal(size=(400, 2))
    replicated[::3] = np.nan
    theta = rng.normal(size=400)
    theta[:100] = np.inf
    figure = plots.plot_ppc(["max", "min"], np.array([1.0, -1.0]), replicated, np.array([0.4, 0.6]),
                            (theta, theta + rng.normal(size=400), 1.0))
    assert all(ax.patches for ax in figure.get_axes()[:3])  # a histogram in each panel
    _draw(figure)


def test_shrinkage_with_a_huge_y_and_an_undefined_posterior_mean_is_drawn():
    """What the old main's y = 1e308 run handed to plot_shrinkage: E[theta_1 | y] was NaN."""
    y = np.array([1e308, *Y[1:]])
    theta_mean = np.array([np.nan, *Y[1:]])
    curve = (np.linspace(5.0, 20.0, 200), np.linspace(0.9, 0.2, 200))  # E[B | y] over sigma, as the analysis gives it
    figure = plots.plot_shrinkage(y, np.array(SIGMA), NAMES, theta_mean, np.full(8, 0.5), math.nan, math.nan, curve)
    low, high = figure.get_axes()[0].get_ylim()
    assert math.isfinite(low) and math.isfinite(high) and high >= 1e308
    _draw(figure)


def test_histogram_of_a_constant_is_drawn():
    figure = Figure()
    ax = figure.add_subplot()
    low, high = plots._histogram(ax, np.full(100, 7.0), "tab:blue", "constant")
    assert low < 7.0 < high
    assert plots._histogram(ax, np.array([np.nan, np.inf]), "tab:blue", "none") is None


def test_the_marginal_panels_range_is_the_draws_central_part():
    """results.central_range, the range the histograms bin and the Laplace curves span: the 0.001 and 0.999
    quantiles of the finite values; widened about a constant; None without a finite value."""
    from jaxschools.app import results

    x = np.random.default_rng(3).standard_cauchy(5000)
    x[::7] = np.nan
    assert results.central_range(x) == tuple(np.quantile(x[np.isfinite(x)], [0.001, 0.999]))
    low, high = results.central_range(np.full(10, 7.0))
    assert low < 7.0 < high
    assert results.central_range(np.array([np.nan, -np.inf])) is None
    with pytest.raises(plots.Unplottable), np.errstate(over="ignore"):  # the quantiles' own arithmetic overflows
        results.central_range(np.array([-1.5e308, 1.5e308]))


def test_values_wider_than_double_precision_are_unplottable():
    with pytest.raises(plots.Unplottable, match="span more than double precision"):
        plots._span(-1.5e308, 1.5e308)


# ----------------------------------------------------------------------------- skipped, with a note


def test_attempt_turns_a_failing_figure_into_a_note():
    def unplottable():
        raise plots.Unplottable("the values from -1e308 to 1e308 span more than double precision can plot")

    spec = plots.attempt("ppc", unplottable)
    assert spec.name == "ppc" and spec.figure is None
    assert spec.not_drawn == "Unplottable: the values from -1e308 to 1e308 span more than double precision can plot"
    with pytest.raises(KeyboardInterrupt):  # interrupts are not figures' failures
        plots.attempt("ppc", lambda: (_ for _ in ()).throw(KeyboardInterrupt()))


def test_write_outputs_skips_figures_that_fail_and_names_them(tmp_path, monkeypatch):
    """One figure that could not be built, one whose drawing fails when saved, one that is fine: the report
    and figures/ hold the fine one, and the report names the two others with their reasons."""
    def fine():
        figure = Figure()
        figure.add_subplot().plot([0, 1], [0, 1])
        return figure

    def fails_when_drawn():
        figure = Figure()
        figure.add_subplot().set_xlim(0, 1)
        figure.axes[0].set_title(r"$\frac$")  # mathtext that cannot be parsed: only savefig finds out
        return figure

    specs = [plots.attempt("contour", lambda: (_ for _ in ()).throw(ValueError("Axis limits cannot be NaN or Inf"))),
             plots.FigureSpec("trace", fails_when_drawn(), "caption of trace"),
             plots.FigureSpec("forest", fine(), "caption of forest")]
    monkeypatch.setattr(plots, "make_figures", lambda record: specs)
    monkeypatch.setattr(sensitivity_plots, "make_figures", lambda record: [])  # the stand-in has no summary
    monkeypatch.setattr(meta_plots, "make_figures", lambda record: [])
    # A stand-in result without numbers: the page is its figures section (what write_outputs decides).
    monkeypatch.setattr(report, "render_html", lambda summary, figures, drawn, not_drawn:
                        report._figures_section(figures, drawn, not_drawn))
    analysis = types.SimpleNamespace(record=types.SimpleNamespace(summary=None, sweep=None, simulation=None))
    page = report.write_outputs(analysis, tmp_path).read_text(encoding="utf-8")
    assert sorted(path.name for path in (tmp_path / "figures").iterdir()) == ["forest.png"]
    assert len(re.findall("<figure ", page)) == 1 and "caption of forest" in page
    note = re.search(r"2 figures could not be drawn for these data.*?</p>", page).group(0)
    assert "contour (ValueError: Axis limits cannot be NaN or Inf)" in note
    assert re.search(r"trace \((ValueError|ParseFatalException): .*frac", note), note


# ----------------------------------------------------------------------------- what the rest of the run does


@pytest.mark.parametrize("column, value", [("sigma", 1e-300), ("sigma", 1e-320), ("sigma", 1e300), ("y", 1e308),
                                           ("y", -1e308), ("sigma", np.nextafter(1e-150, 0)),
                                           ("y", np.nextafter(1e150, np.inf))])
def test_values_whose_squares_leave_double_precision_are_refused(column, value):
    y, sigma = list(Y), list(SIGMA)
    (y if column == "y" else sigma)[0] = value
    with pytest.raises(InputError, match="double precision, so the model cannot be computed") as raised:
        validation.check_schools(y, sigma, NAMES)
    assert str(raised.value).startswith("school 'A' (index 0): ")


def test_the_bounds_themselves_are_accepted():
    validation.check_schools([1e150, -1e150, 0.0], [1e-150, 1e150, 1.0])


def test_data_at_the_bounds_run_to_the_end_with_the_exact_posterior_right(tmp_path, capsys):
    """One school known to 1e-150 and one to 1e150: the run ends with exit 0, every figure drawn, and the exact
    posterior of mu and of a theta equal to the scipy oracle's (independent code, adaptive quadrature)."""
    import json

    from jaxschools.cli import main

    sigma = [validation.MIN_SIGMA, validation.MAX_MAGNITUDE, *SIGMA[2:]]
    data = tmp_path / "bounds.csv"
    data.write_text("name,y,sigma\n" + "".join(f"{n},{y!r},{s!r}\n" for n, y, s in zip(NAMES, Y, sigma)))
    out = tmp_path / "out"
    # The suite's shared sampler size (tests/sizes.py), so that one compilation serves all in a suite run.
    argv = ["run", "--data", str(data), "--out", str(out)] + cli_sets()
    assert main(argv) == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    oracle = Oracle(Y, sigma)
    assert summary["exact"]["mu"]["mean"] == pytest.approx(oracle.mu_mean(), rel=1e-7)
    assert summary["exact"]["theta"]["mean"][2] == pytest.approx(oracle.theta_mean(2), rel=1e-7)
    assert summary["exact"]["theta"]["mean"][0] == pytest.approx(28.0, rel=1e-12)  # known to 1e-150
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "could not be drawn" not in page
    assert len(list((out / "figures").glob("*.png"))) == len(re.findall("<figure ", page)) >= 8
