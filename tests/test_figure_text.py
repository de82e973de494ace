"""A user's strings are shown literally in every figure, never parsed as mathtext (issue #13 finding 6).

Matplotlib typesets any text with an even number of unescaped '$' as mathtext: a school named "$x$" would be
shown as an italic x, and one named "$\\frac$" made drawing fail (``ParseFatalException``), on the old main
after a whole sweep, because ``experiment_plots._theta_sweep`` and the leave-one-out ticks did not escape
names. Every place where names, sweep values or swept keys become matplotlib text now goes through one
helper, :func:`jaxschools.presentation.plots.plain_text`; each figure below is drawn with hostile names and every text in
it is checked to be shown as typed.
"""

import io
import types

import numpy as np
import pytest
from matplotlib.text import Text

from jaxschools.presentation import experiment_plots, plots

# Unparseable mathtext; two dollars around plain text; an escaped dollar the user typed; a lone dollar.
HOSTILE = ("$\\frac$", "$x$ high", "a\\$b$c$", "cost $5")
SHORT = ("Oak Park", "Elm")  # two ordinary schools beside them


def _texts(figure):
    """(shown text, is mathtext) of every text artist of ``figure``: titles, labels, ticks, legends, notes."""
    shown = []
    for artist in figure.findobj(Text):
        text = artist.get_text()
        if text:
            shown.append(artist._preprocess_math(text))
    return shown


def _check(figure, strings):
    """Draw ``figure`` (mathtext errors surface only here) and check each string is shown, as typed, as plain
    text, and that no text holding a user's string is typeset as math."""
    figure.savefig(io.BytesIO(), format="png", dpi=40)
    shown = _texts(figure)
    for string in strings:
        holders = [(text, math) for text, math in shown if string in text]
        assert holders, f"{string!r} is not shown; texts: {[text for text, _ in shown]}"
        assert not any(math for _, math in holders), holders
    figure.clear()


def _rows(names, values):
    """Sweep rows with the fields the sweep figures read (the figures read a row by attribute, as the typed
    ``jaxschools.app.results.SweepRow`` has them)."""
    rng = np.random.default_rng(0)
    rows = []
    for value in values:
        mean = rng.normal(size=len(names))
        rows.append(types.SimpleNamespace(
            value=value,
            theta=types.SimpleNamespace(names=tuple(names), mean=tuple(mean), q025=tuple(mean - 1),
                                        q975=tuple(mean + 1)),
            loo=types.SimpleNamespace(pointwise=tuple(rng.normal(size=len(names))), elpd_loo=float(rng.normal())),
        ))
    return rows


def test_plain_text_is_shown_as_typed():
    for string in HOSTILE + ("no dollar", "\\$", "$$", "$"):
        text = Text(text=plots.plain_text(string))
        assert text._preprocess_math(text.get_text()) == (string, False)


def test_theta_sweep_names_values_and_key():
    names = HOSTILE + SHORT
    spec = experiment_plots._theta_sweep(_rows(names, [1.0, 2.0, 3.0]), f"y[{HOSTILE[0]}]")
    _check(spec.figure, list(names) + [f"y[{HOSTILE[0]}]"])


def test_theta_sweep_with_names_as_values():
    """A leave-one-out sweep: each cell's value is the name of the school left out, shown as a tick."""
    names = HOSTILE + SHORT
    spec = experiment_plots._theta_sweep(_rows(names, list(names)), "school left out")
    _check(spec.figure, list(names))


def test_leave_one_out_ticks_and_legend():
    names = HOSTILE + SHORT
    spec = experiment_plots._loo(_rows(names, ["half_cauchy", "my $prior$"]))
    _check(spec.figure, list(names) + ["my $prior$"])


def test_sbc_legends():
    params = ["mu", "tau"] + [f"theta[{name}]" for name in HOSTILE]
    from jaxschools.app import results
    from jaxschools.core import calibration

    ranks = np.random.default_rng(2).integers(0, 20, size=(40, len(params)))
    z, lower, upper = calibration.ecdf_band(19, 40, 0.05)
    counts = np.stack([calibration.ecdf_counts(ranks[:, i], 19) for i in range(len(params))])
    arrays = results.StudyFigures(ranks=ranks, z=z, lower=lower, upper=upper, counts=counts)
    spec = experiment_plots._sbc("half_cauchy", arrays, params, 19, 0.05)
    _check(spec.figure, params)


def test_prior_predictive_names_the_first_school():
    pytest.importorskip("jax")
    from jaxschools.app import _record
    from jaxschools.core import data

    schools = data.Schools(y=[28.0, 8.0, -3.0], sigma=[15.0, 10.0, 16.0], names=HOSTILE[:3])
    config = {"model": {"mu_loc": 0.0, "mu_scale": 5.0, "tau_scale": 5.0}, "sampler": {"seed": 0}}
    draws = _record._prior_predictive(config, schools, ["flat", "half_cauchy"])
    summary = types.SimpleNamespace(
        data=types.SimpleNamespace(names=HOSTILE[:3], y=(28.0, 8.0, -3.0)),
        predictive=types.SimpleNamespace(ppc={"sd": types.SimpleNamespace(observed=15.5)}))
    spec = experiment_plots._prior_predictive(summary, draws)
    _check(spec.figure, [f"y[{HOSTILE[0]}]"])


def test_every_sweep_figure_of_a_leave_one_out_result_is_drawn():
    names = HOSTILE + SHORT
    record = types.SimpleNamespace(
        summary=types.SimpleNamespace(sweep=_rows(names, list(names))),
        sweep=types.SimpleNamespace(kind="leave_one_out", column="school left out"),
        simulation=None,
    )
    specs = experiment_plots.make_figures(record)
    assert [spec.name for spec in specs] == ["sweep_theta"]
    for spec in specs:
        assert spec.figure is not None, spec
        _check(spec.figure, list(names))


def test_the_main_figures_show_names_as_typed():
    names = list(HOSTILE + SHORT)
    y = np.linspace(-5.0, 20.0, len(names))
    sigma = np.linspace(8.0, 16.0, len(names))
    _check(plots.plot_shrinkage(y, sigma, names, 0.5 * y, np.full(len(names), 0.4), 5.0, 5.0), names)
    _check(plots.plot_forest(y, y - 1.96 * sigma, y + 1.96 * sigma, names, 0.5 * y, y - 10, y + 10, 5.0, -1.0, 11.0), names)
    matrix = np.full((len(names), len(names)), 0.5)
    _check(plots.plot_p_greater(matrix, names), names)
    from jaxschools.app import results

    flags = np.zeros((1, 30), bool)
    flags[0, :3] = True
    panels = [results.DivergencePanel(title="centered", log_tau=np.zeros((1, 30)), theta_first=np.zeros((1, 30)),
                                      divergent=flags, num_divergent=3, num_transitions=30, rate=0.1)]
    _check(plots.plot_divergences(panels, HOSTILE[0]), [f"θ of school {HOSTILE[0]}"])
