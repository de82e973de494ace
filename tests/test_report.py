"""Tests of jaxschools.presentation.plots and jaxschools.presentation.report on small real analyses.

Two analyses are built once for the module: the eight schools (4 chains), and a J = 3 dataset on a
scale of millions, with a single chain and hostile school names (HTML and matplotlib mathtext).
"""

import base64
import copy
import html
import re
import struct
import zlib

import numpy as np
import pytest

jax = pytest.importorskip("jax")

from jaxschools.app import config as config_module  # noqa: E402
from jaxschools.core import data as data_module  # noqa: E402
from sizes import SAMPLER_SETS, THREE_SCHOOL_SETS  # noqa: E402

MALICIOUS = "<script>alert(1)</script>"
HOSTILE_NAMES = (MALICIOUS, 'a $x$ & "b"', "School with a rather long name indeed")
FIGURE_NAMES = ["contour", "trace", "autocorrelation", "marginals", "shrinkage", "forest", "ppc", "p_greater",
                "meta_forest", "funnel", "leave_one_out", "tau_posterior", "i2_posterior"]
# The Sensitivity section's figures under the flat prior (no prior-sensitivity curves: it has no scale).
SENSITIVITY_FIGURES = ["influence_matrix", "influence_loo"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SHORT_RUN = SAMPLER_SETS  # tests/sizes.py: compiled chains shared with the other whole-analysis tests


@pytest.fixture(scope="module", autouse=True)
def x64():
    previous = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)


def _analyze(sets, dataset):
    try:
        from jaxschools.app import analysis
    except ImportError as error:  # a module the analysis needs (e.g. exact) is not written yet
        pytest.skip(f"jaxschools.app.analysis cannot be imported yet: {error}")
    return analysis.analyze(config_module.load_config(None, sets=sets), dataset)


@pytest.fixture(scope="module")
def eight_analysis(x64):
    return _analyze(SHORT_RUN, data_module.eight_schools())


@pytest.fixture(scope="module")
def hostile_analysis(x64):
    dataset = data_module.Schools(y=[1.0e6, 3.0e6, -2.0e6], sigma=[1.0e6, 2.0e6, 1.5e6], names=HOSTILE_NAMES)
    return _analyze(THREE_SCHOOL_SETS, dataset)


@pytest.fixture(scope="module")
def eight_report(eight_analysis, tmp_path_factory):
    from jaxschools.presentation import report

    out = tmp_path_factory.mktemp("eight")
    path = report.write_outputs(eight_analysis, out)
    return out, path.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def hostile_report(hostile_analysis, tmp_path_factory):
    from jaxschools.presentation import report

    out = tmp_path_factory.mktemp("hostile")
    path = report.write_outputs(hostile_analysis, out)
    return out, path.read_text(encoding="utf-8")


def check_png(blob: bytes):
    """A PNG signature, then chunks with valid CRCs, starting with IHDR (positive size) and ending with IEND."""
    assert blob[:8] == PNG_SIGNATURE
    offset, kinds = 8, []
    while offset < len(blob):
        (length,) = struct.unpack(">I", blob[offset : offset + 4])
        kind = blob[offset + 4 : offset + 8]
        body = blob[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack(">I", blob[offset + 8 + length : offset + 12 + length])
        assert zlib.crc32(kind + body) == crc, kind
        kinds.append(kind)
        offset += 12 + length
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND"
    width, height = struct.unpack(">II", blob[16:24])
    assert width > 100 and height > 100


def test_every_figure_named_in_the_report_is_a_valid_png(eight_report):
    out, page = eight_report
    named = re.findall(r'data-file="figures/([\w.-]+)\.png"', page)
    assert named == FIGURE_NAMES + SENSITIVITY_FIGURES
    assert sorted(p.stem for p in (out / "figures").glob("*.png")) == sorted(named)
    for name in named:
        blob = (out / "figures" / f"{name}.png").read_bytes()
        check_png(blob)
        # The embedded copy is the file, byte for byte.
        assert base64.b64encode(blob).decode("ascii") in page


def test_report_is_self_contained(eight_report):
    _, page = eight_report
    assert 'src="http' not in page and "src='http" not in page
    assert "<link" not in page and "@import" not in page and "url(" not in page
    assert "<script" not in page
    assert all(src.startswith("data:image/png;base64,") for src in re.findall(r'src="([^"]*)"', page))


def test_report_has_every_school_and_section(eight_analysis, eight_report):
    _, page = eight_report
    for name in eight_analysis.data.names:
        assert f"<td>{html.escape(name)}</td>" in page
    sections = ("data", "pooled", "classical", "laplace", "mcmc", "posterior", "schools", "query", "exact", "ppc",
                "figures", "provenance")
    for anchor in sections:
        assert f'id="{anchor}"' in page
    # The menu links to each section the report has, and to none it lacks (this run has no sweep).
    links = re.findall(r'<a href="#([a-z]+)">', page.split("</nav>")[0])
    assert set(sections) <= set(links) and all(f'id="{anchor}"' in page for anchor in links)
    assert "sweep" not in links and "simulation" not in links
    # The classical table: one row per default estimator, its REML tau^2 the summary's.
    classical = page.split('id="classical"')[1].split("</section>")[0]
    assert "<td>REML</td>" in classical and "<td>DerSimonian-Laird</td>" in classical and "Knapp-Hartung" in classical
    assert "P(θ<sub>A</sub> &gt; 28 | y)" in page
    if eight_analysis.summary.get("exact"):
        assert "Sampler vs exact posterior" in page and "Laplace vs exact posterior" in page
    assert "Posterior predictive check" in page and "A new school" in page


def test_school_names_are_escaped(hostile_analysis, hostile_report):
    out, page = hostile_report
    assert MALICIOUS not in page
    assert "<script" not in page
    for name in HOSTILE_NAMES:
        assert html.escape(name) in page
    assert sorted(p.stem for p in (out / "figures").glob("*.png")) == sorted(FIGURE_NAMES + SENSITIVITY_FIGURES)


def test_single_chain_run_is_flagged(hostile_analysis, hostile_report):
    _, page = hostile_report
    assert hostile_analysis.samples.positions.shape[0] == 1
    assert "R-hat needs two chains or more" in page
    if hostile_analysis.summary["mcmc"]["flags"]["not_mixed"]:
        assert 'class="warn"' in page and "only one chain was run" in page


def test_figures_false_writes_tables_only(eight_analysis, tmp_path):
    from jaxschools.presentation import report

    path = report.write_outputs(eight_analysis, tmp_path, figures=False)
    assert path == tmp_path / "report.html"
    assert not list(tmp_path.rglob("*.png"))
    page = path.read_text(encoding="utf-8")
    assert "<img" not in page and "data:image" not in page
    assert "Figures were not drawn" in page


def test_make_figures_three_schools_one_chain(hostile_analysis):
    from jaxschools.presentation import meta_plots, plots

    specs = plots.make_figures(hostile_analysis.record) + meta_plots.make_figures(hostile_analysis.record)
    assert [spec.name for spec in specs] == FIGURE_NAMES
    for spec in specs:
        assert spec.caption
        axes = spec.figure.get_axes()
        assert axes and all(ax.get_xlabel() or ax.get_ylabel() for ax in axes)
        spec.figure.canvas.draw()  # renders: mathtext in names or labels would fail here
        spec.figure.clear()


def test_forest_keeps_the_most_outlying_schools_in_data_order():
    from jaxschools.app import _record
    from jaxschools.presentation import plots

    num_schools = 45
    y = np.zeros(num_schools)
    sigma = np.ones(num_schools)
    far = [3, 7, 44, 0, 20]  # five schools far from the pooled mean (0 here): they must all be kept
    y[far] = [10.0, -12.0, 9.0, 11.0, -10.0]
    pooled_mean = np.average(y, weights=sigma**-2)
    kept = _record.forest_schools(y, sigma, pooled_mean, limit=40)
    assert kept.size == 40 and np.all(np.diff(kept) > 0)
    assert set(far) <= set(kept.tolist())
    assert _record.forest_schools(y[:8], sigma[:8], pooled_mean).tolist() == list(range(8))
    names = [f"s{j}" for j in kept]
    figure = plots.plot_forest(y[kept], y[kept] - sigma[kept], y[kept] + sigma[kept], names, y[kept], y[kept] - 1,
                               y[kept] + 1, 0.0, -0.4, 0.4)
    assert len(figure.get_axes()[0].get_yticks()) == 40
    figure.clear()


def test_z_scores_beyond_four_mcse_are_flagged(eight_analysis):
    from jaxschools.presentation import report

    from jaxschools.app import exact_check

    summary = copy.deepcopy(eight_analysis.summary)
    mcse = summary["posterior"]["mu"]["mcse_mean"]
    summary["exact"]["mu"]["mean"] = summary["posterior"]["mu"]["mean"] - 10 * mcse
    summary["exact_check"] = exact_check.check(summary)  # the application's verdict on the moved exact value
    page = report.render_html(summary)
    row = re.search(r"<tr><td>mean of μ</td>.*?</tr>", page).group(0)
    assert '<td class="bad">10.00</td>' in row


def test_the_report_refuses_a_summary_with_a_missing_or_an_unknown_key(eight_analysis):
    """The page renders the typed record: a summary.json without a key it shows, or with a key the schema does not
    know, is refused naming the key, never rendered with a blank."""
    from jaxschools.app import results
    from jaxschools.presentation import report

    summary = eight_analysis.summary
    del summary["posterior"]["tau"]["q975"]
    with pytest.raises(results.SchemaError, match=r"posterior\.tau: missing \['q975'\]"):
        report.render_html(summary)
    summary = dict(eight_analysis.summary, extra=1)
    with pytest.raises(results.SchemaError, match=r"unknown \['extra'\]"):
        report.render_html(summary)


@pytest.mark.parametrize(
    "value, text",
    [(None, "—"), (float("nan"), "—"), (float("inf"), "—"), (1.0e6, "1e+06"), (0.06, "0.06"), (-3.0, "-3"),
     (28.0, "28"), (5000, "5,000"), (True, "yes"), (-0.0, "0")],
)
def test_numbers_are_formatted_for_any_scale(value, text):
    from jaxschools.presentation import report

    assert report.fmt(value) == text


def _shrinkage_mu_line(analysis):
    """(label, height) of the shrinkage figure's mu line (the solid horizontal line on the left panel)."""
    from jaxschools.presentation import plots

    spec = next(spec for spec in plots.make_figures(analysis.record) if spec.name == "shrinkage")
    left = spec.figure.get_axes()[0]
    lines = [line for line in left.get_lines() if line.get_linestyle() == "-" and len(set(line.get_ydata())) == 1
             and list(line.get_xdata()) == [0, 1] and line.get_label() and not line.get_label().startswith("_")]
    assert len(lines) == 1, [line.get_label() for line in left.get_lines()]
    height = float(lines[0].get_ydata()[0])
    spec.figure.clear()
    return lines[0].get_label(), height, spec.caption


def test_shrinkage_figure_draws_mus_median_where_its_mean_does_not_exist(hostile_analysis, eight_analysis):
    """Flat prior, J = 3: E[mu | y] does not exist (summary.json has null), so the figure's line is mu's
    posterior median, labelled so; for the eight schools it is the mean of the draws of mu."""
    assert hostile_analysis.summary["posterior"]["mu"]["mean"] is None
    mu = np.asarray(hostile_analysis.samples.positions, float)[..., 0].ravel()
    label, height, caption = _shrinkage_mu_line(hostile_analysis)
    assert "median" in label and "E[" not in label and "does not exist" in caption
    assert height == pytest.approx(np.median(mu), rel=1e-12)
    label, height, caption = _shrinkage_mu_line(eight_analysis)
    assert label == r"E[$\mu$ | y]" and "median" not in caption
    assert height == pytest.approx(eight_analysis.summary["posterior"]["mu"]["mean"], rel=1e-9)


def test_the_record_carries_the_contour_grids_highest_density_levels(eight_analysis):
    """The contour figure draws the record's levels (the application computes them): each level's super-level
    set {density >= level} holds at least its fraction of the grid's mass, and the set strictly above it less,
    checked by summing the grid directly (no sorting or cumulative sums); density is exp(logp - max)."""
    grid = eight_analysis.record.figures.contour
    finite = np.isfinite(grid.logp)
    np.testing.assert_allclose(grid.density[finite], np.exp(grid.logp[finite] - grid.logp[finite].max()), rtol=1e-12)
    assert len(grid.fractions) == 4 and np.all(np.diff(grid.levels) > 0)
    total = grid.density.sum()
    for level, fraction in zip(grid.levels, grid.fractions):
        assert grid.density[grid.density >= level].sum() / total >= fraction
        assert grid.density[grid.density > level].sum() / total < fraction


def test_the_record_carries_the_divergence_counts_and_the_forest_order():
    """Per panel, the count, size and rate of the divergent transitions are the record's (the figure and its
    caption only print them)."""
    import types

    from jaxschools.app import _record

    flags = np.zeros((2, 50), bool)
    flags[0, [3, 9]] = flags[1, 40] = True
    samples = types.SimpleNamespace(is_divergent=flags, positions=np.zeros((2, 50, 2)))
    (panel,) = _record._divergence_panels("centered", samples, np.zeros((2, 50, 3)), None)
    assert (panel.num_divergent, panel.num_transitions, panel.rate) == (3, 100, 0.03)
    assert _record._divergence_panels("centered", types.SimpleNamespace(
        is_divergent=np.zeros((2, 50), bool), positions=np.zeros((2, 50, 2))), np.zeros((2, 50, 3)), None) == []


def test_the_laplace_mode_of_log_tau_is_off_its_exact_centre_for_the_eight_schools(eight_analysis, eight_report):
    """The record's judgement (|mode - mean| / sd > 0.1, computed by the application) for the eight schools, whose
    log tau has mode 1.84 and exact mean about 1.44; the report says so from that field."""
    versus = eight_analysis.record.summary.laplace_vs_exact.log_tau
    assert versus.off_centre is True and abs(versus.shift) > 0.1
    assert "The posterior of log τ is skewed, so its mode is not its centre" in eight_report[1]


def test_the_footer_shows_the_versions_of_the_run_not_of_the_renderer(eight_analysis):
    """The provenance table renders the record's versions (recorded by the run), not those of the process that
    renders the page: a summary from another installation shows that installation's."""
    from jaxschools.presentation import report

    summary = copy.deepcopy(eight_analysis.summary)
    assert summary["provenance"]["numpy"] == np.__version__
    summary["provenance"].update(numpy="0.0.1-elsewhere", matplotlib="0.0.2-elsewhere", jaxschools="0.0.3-elsewhere")
    footer = report.render_html(summary).split('<footer id="provenance">')[1]
    for version in ("0.0.1-elsewhere", "0.0.2-elsewhere", "0.0.3-elsewhere"):
        assert f"<td>{version}</td>" in footer


@pytest.mark.parametrize("which", ["eight_analysis", "hostile_analysis"])
def test_the_record_carries_the_laplace_curves_ellipse_and_autocorrelation_band(which, request):
    """The statistics the marginals, contour and autocorrelation figures draw are the record's, computed by the
    application, and right against independent oracles: each Laplace curve is scipy's N(mode_d, cov_dd) density
    over a grid covering the draws' central 99.8% and mode -/+ 3.5 sd; every point of the ellipse solves
    (x - mode)' cov^-1 (x - mode) = scipy's chi^2_2 0.95 quantile, and the points go once round it; the band is
    scipy's Phi^-1(0.975) / sqrt(draws per chain). The eight schools (4 chains) and J = 3 on a scale of millions
    (1 chain)."""
    stats = pytest.importorskip("scipy.stats")
    analysis = request.getfixturevalue(which)
    summary, figures = analysis.record.summary, analysis.record.figures
    assert summary.laplace.converged
    mode, cov = np.asarray(summary.laplace.mode), np.asarray(summary.laplace.cov)
    draws = np.asarray(analysis.samples.positions, float).reshape(-1, 2)
    for d in range(2):
        grid, density = figures.laplace_marginals[d]
        sd = np.sqrt(cov[d, d])
        np.testing.assert_allclose(density, stats.norm.pdf(grid, mode[d], sd), rtol=1e-12, atol=0)
        assert np.all(np.diff(grid) > 0)
        low, high = np.quantile(draws[:, d], [0.001, 0.999])
        assert grid[0] <= min(low, mode[d] - 3.5 * sd) and grid[-1] >= max(high, mode[d] + 3.5 * sd)
    ring = figures.laplace_ellipse
    centred = ring - mode[:, None]
    quadratic = np.einsum("in,ij,jn->n", centred, np.linalg.inv(cov), centred)
    np.testing.assert_allclose(quadratic, stats.chi2.ppf(0.95, 2), rtol=1e-9)
    whitened = np.linalg.solve(np.linalg.cholesky(cov), centred)
    turned = np.unwrap(np.arctan2(whitened[1], whitened[0]))
    assert np.all(np.diff(turned) > 0) and turned[-1] - turned[0] == pytest.approx(2 * np.pi, rel=1e-9)
    num_draws = analysis.samples.positions.shape[1]
    assert figures.autocorrelation_band == pytest.approx(stats.norm.ppf(0.975) / np.sqrt(num_draws), rel=1e-12)


def test_the_laplace_overlays_are_absent_where_the_fit_cannot_give_them():
    """No ellipse without a finite mode and a positive definite covariance; no normal marginal where the fit did
    not converge (the figure then shows none, as before) or a coordinate has no finite draws."""
    from jaxschools.app import _record

    draws = np.random.default_rng(0).normal(size=(200, 2))
    good, mode = np.array([[2.0, 0.3], [0.3, 0.5]]), np.array([1.0, 0.5])
    assert _record.laplace_ellipse(mode, good).shape == (2, _record.ELLIPSE_POINTS)
    assert _record.laplace_ellipse(mode, np.array([[1.0, 2.0], [2.0, 1.0]])) is None  # indefinite
    assert _record.laplace_ellipse(np.array([np.nan, 0.5]), good) is None
    assert _record.laplace_marginals(draws, mode, good, converged=False) == (None, None)
    assert _record.laplace_marginals(draws, mode, -good, converged=True) == (None, None)
    mu_only = draws.copy()
    mu_only[:, 1] = np.nan
    curves = _record.laplace_marginals(mu_only, mode, good, converged=True)
    assert curves[0] is not None and curves[1] is None


def _line(figure, label):
    (line,) = [line for ax in figure.get_axes() for line in ax.get_lines() if line.get_label().startswith(label)]
    return np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)


def test_the_figures_draw_the_records_laplace_curves_ellipse_and_band_as_given(eight_analysis):
    """The renderers draw the record's values and compute none: given a record whose Laplace curves, ellipse and
    band are not those of the fit (halved densities, a square, a band of 0.123), the figures show exactly those,
    so a renderer that recomputed them from the mode and covariance or the number of draws would fail here."""
    import dataclasses

    from jaxschools.presentation import plots

    record = eight_analysis.record
    figures = record.figures
    curves = tuple((grid, 0.5 * density) for grid, density in figures.laplace_marginals)
    square = np.array([[0.0, 1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0, 0.0]]) + np.asarray(record.summary.laplace.mode)[:, None]
    altered = dataclasses.replace(record, figures=dataclasses.replace(
        figures, laplace_marginals=curves, laplace_ellipse=square, autocorrelation_band=0.123))
    specs = {spec.name: spec for spec in plots.make_figures(altered)}

    drawn = [line for ax in specs["marginals"].figure.get_axes() for line in ax.get_lines()
             if line.get_label().startswith("Laplace normal")]
    assert len(drawn) == 2
    for line, (grid, density) in zip(drawn, curves):
        np.testing.assert_array_equal(line.get_xdata(), grid)
        np.testing.assert_array_equal(line.get_ydata(), density)
    x, y = _line(specs["contour"].figure, "Laplace 95% ellipse")
    np.testing.assert_array_equal(np.stack([x, y]), square)
    for ax in specs["autocorrelation"].figure.get_axes():
        (band,) = ax.patches
        heights = band.get_patch_transform().transform(band.get_path().vertices)[:, 1]
        assert (heights.min(), heights.max()) == pytest.approx((-0.123, 0.123), rel=1e-12)
    for spec in specs.values():
        spec.figure.clear()


def test_the_record_decides_whether_frozen_chains_accepted_every_proposal(eight_analysis):
    """mcmc.frozen_accepted_every_proposal is the application's verdict: true when the frozen chains that did not
    reject (stuck ones excluded) all accepted every proposal among those with a known rate."""
    from jaxschools.app import _record

    def verdict(acceptance, frozen):
        summary = eight_analysis.summary
        summary["mcmc"]["acceptance_rate"] = acceptance
        summary["mcmc"]["flags"]["frozen_chains"] = frozen
        mcmc = _record.summary_record(summary, limits=summary["mcmc"]["limits"]).mcmc
        return list(mcmc.frozen_accepting), mcmc.frozen_accepted_every_proposal

    rates = [1.0, 1.0, 0.9, 0.001]
    assert verdict(rates, [0, 1]) == ([0, 1], True)
    assert verdict(rates, [0, 2]) == ([0, 2], False)
    assert verdict(rates, [0, 3]) == ([0], True)  # chain 3 is stuck (it rejected), not frozen by rounding
    assert verdict(rates, [3]) == ([], False)
    assert verdict(rates, []) == ([], False)
    assert verdict([None, 1.0, 1.0, 1.0], [0]) == ([0], False)  # no known rate: nothing to say


@pytest.mark.parametrize("every", [True, False])
def test_the_report_words_the_frozen_chains_verdict_of_the_record(eight_analysis, every):
    """The warning says "accepting every proposal" from the record's flag alone, not from the acceptance rates
    (here 1.0 for every chain either way)."""
    from jaxschools.presentation import report

    summary = copy.deepcopy(eight_analysis.summary)
    mcmc = summary["mcmc"]
    mcmc["acceptance_rate"] = [1.0] * len(mcmc["acceptance_rate"])
    mcmc["flags"].update(frozen_chains=[0], stuck_chains=[0])
    mcmc.update(frozen_accepting=[0], frozen_accepted_every_proposal=every)
    warning = report.render_html(summary).split('id="warnings"')[1].split("</div>")[0]
    assert "Chain 1 did not move" in warning
    assert ("while accepting every proposal" in warning) is every
    assert ("below floating-point resolution" in warning) is every


def test_the_record_says_why_the_chains_are_not_shown_to_have_mixed():
    """_record.not_mixed_reasons is the one verdict behind flags.not_mixed and the report's words: one chain;
    an undefined ESS or R-hat; R-hat at or above its limit; an ESS below its limit; in that order."""
    from jaxschools.app import _record, results

    def reasons(num_chains, rhat, ess):
        return _record.not_mixed_reasons(num_chains, rhat, ess, rhat_limit=1.01, ess_limit=400.0)

    good_rhat, good_ess = [1.001, 1.004], [900.0, 800.0, 700.0, 650.0]
    assert reasons(4, good_rhat, good_ess) == []
    assert reasons(4, [1.0, 1.01], good_ess) == ["rhat"]  # at the limit is not below it
    assert reasons(4, good_rhat, [900.0, 399.0, 700.0, 650.0]) == ["ess"]
    assert reasons(1, good_rhat, good_ess) == ["one_chain"]
    assert reasons(4, [float("nan"), 1.2], [float("nan"), 50.0, 700.0, 650.0]) == ["undefined", "rhat", "ess"]
    assert reasons(1, [float("nan")] * 2, [float("nan")] * 4) == ["one_chain"]
    assert all(set(reasons(n, r, e)) <= set(results.NOT_MIXED_REASONS) for n, r, e in (
        (1, [1.2, 1.3], [10.0] * 4), (3, [float("inf"), 1.0], [10.0] * 4)))


def test_the_report_words_every_not_mixed_reason_of_the_record(eight_analysis):
    """Every reason has words, and the warning states the record's reasons, not its own reading of the numbers:
    a record that says one chain (of four) gets that sentence, and one that gives no reason the generic one."""
    from jaxschools.app import results
    from jaxschools.presentation import report

    assert set(report._NOT_MIXED_WORDS) == set(results.NOT_MIXED_REASONS)
    summary = copy.deepcopy(eight_analysis.summary)
    assert summary["mcmc"]["num_chains"] == 4
    summary["mcmc"]["flags"]["not_mixed"] = True
    limits = summary["mcmc"]["limits"]
    generic = f"not shown to have mixed: R-hat ≥ {limits['rhat']:g} or ESS < {limits['ess']:g}."
    for reasons, sentence in ((["one_chain"], "only one chain was run"), ([], generic)):
        summary["mcmc"]["not_mixed_reasons"] = reasons
        warning = report.render_html(summary).split('id="warnings"')[1].split("</div>")[0]
        assert sentence in html.unescape(warning)


# --- the Sensitivity section (issue 15, item 6) ----------------------------------------------------------------


def _floats(values):
    return np.asarray([[np.nan if v is None else v for v in row] if isinstance(row, (tuple, list))
                       else (np.nan if row is None else row) for row in values], float)


def test_sensitivity_record_agrees_with_the_library_and_with_finite_differences(eight_analysis):
    """The record's numbers (one batch of forward-mode directional derivatives, jaxschools.app.sensitivity_record)
    against jaxschools.core.sensitivity.influence (its own compiled jacfwd and vmapped leave-one-out), and the
    influence matrix d E[theta_i] / d y_j, d E[theta_i] / d sigma_j and the rows of E[mu] and E[tau] against
    central differences of exact.posterior's means: an independent path (no derivative code; the posterior
    compiled by the analysis itself), h = 1e-5 sigma_j (rounding ~eps |Q| / h ~ 1e-11 relative, truncation
    ~h^2 ~ 1e-10), each row to 1e-6 of its largest entry. Under the flat prior a common shift of every y_j shifts
    every theta_i by it, so each row of the influence matrix sums to 1."""
    from jaxschools.core import exact, sensitivity

    section = eight_analysis.record.summary.sensitivity
    data = eight_analysis.data
    assert section.query_school == "A" and section.threshold == 28.0 and section.note is None
    library = sensitivity.influence(data, "flat", query_school=0, threshold=section.threshold,
                                    num_nodes=section.num_nodes)
    assert set(section.influence) == set(sensitivity.Quantities._fields)
    for name, entry in section.influence.items():
        full = float(getattr(library.full, name))
        np.testing.assert_allclose(entry.full, full, rtol=1e-12)
        for part in ("derivative", "loo", "change", "linear", "linear_error"):
            expected = np.asarray(getattr(getattr(library, part), name), float)
            np.testing.assert_allclose(_floats(getattr(entry, part)), expected, rtol=1e-9,
                                       atol=1e-12 * max(1.0, abs(full)), err_msg=f"{name}.{part}")

    headline, theta = section.headline, section.theta
    # The Jacobian's case-weight columns are the influence's derivatives (the same rows of the batch).
    for name in ("mu_mean", "tau_mean", "p_exceeds"):
        np.testing.assert_array_equal(_floats(headline[name].case_weights),
                                      _floats(section.influence[name].derivative))
    np.testing.assert_array_equal(_floats(theta.case_weights)[0], _floats(section.influence["theta_mean"].derivative))

    def means(y, sigma):
        post = exact.posterior(data.replace(y=y, sigma=sigma), "flat", section.num_nodes)
        w = np.exp(np.asarray(post.log_weights, float))
        return np.concatenate([[w @ np.asarray(post.mu_hat, float), w @ np.exp(np.asarray(post.log_tau, float))],
                               w @ np.asarray(post.theta_mean, float)])

    y, sigma = np.asarray(data.y, float), np.asarray(data.sigma, float)
    for field, moved in (("y", y), ("sigma", sigma)):
        columns = []
        for j in range(y.size):
            h = 1e-5 * sigma[j]
            step = np.zeros_like(y)
            step[j] = h
            up = means(y + step, sigma) if field == "y" else means(y, sigma + step)
            down = means(y - step, sigma) if field == "y" else means(y, sigma - step)
            columns.append((up - down) / (2 * h))
        fd = np.stack(columns, axis=1)  # (2 + J, J): rows E[mu], E[tau], E[theta_i]
        got = np.vstack([_floats(getattr(headline["mu_mean"], field)), _floats(getattr(headline["tau_mean"], field)),
                         _floats(getattr(theta, field))])
        scale = np.max(np.abs(fd), axis=1, keepdims=True)
        assert np.all(np.abs(got - fd) <= 1e-6 * scale), f"d/d{field}: {np.max(np.abs(got - fd) / scale)}"
    np.testing.assert_allclose(_floats(theta.y).sum(axis=1), 1.0, rtol=1e-9)
    np.testing.assert_allclose(sum(headline["mu_mean"].y), 1.0, rtol=1e-9)


def test_power_scaling_rows_are_the_librarys(eight_analysis):
    """summary.json's power-scaling table is core.power_scaling.diagnose's (the compiled function the analysis
    used), theta's rows named after the schools; under the flat prior the prior column is null, never a 0, and
    every label "not applicable", while the likelihood's sensitivities are numbers."""
    from jaxschools.core import power_scaling

    table = eight_analysis.record.summary.sensitivity.power_scaling
    expected = power_scaling.diagnose(eight_analysis.data, "flat", quantiles=False).rows()
    assert [row.quantity for row in table.rows] == [quantity for quantity, *_ in expected]
    assert [row.quantity for row in table.rows][2:] == [f"theta[{name}]" for name in eight_analysis.data.names]
    np.testing.assert_allclose([row.likelihood for row in table.rows], [lik for _, _, lik, _ in expected],
                               rtol=1e-12)
    assert all(row.prior is None and row.diagnosis == power_scaling.NOT_APPLICABLE for row in table.rows)
    assert table.threshold == power_scaling.THRESHOLD and table.likelihood == "marginal"


def test_report_has_the_sensitivity_section_and_its_figures(eight_report):
    """Every report has the section: under the flat prior (the default) the influence matrix and the influence
    against exact leave-one-out are drawn and linked, the prior's scales and curves are "not applicable" (no
    curves figure), and the power-scaling table has its rows, labelled "not applicable" (no prior to scale)."""
    out, page = eight_report
    section = page.split('<section id="sensitivity">')[1].split("</section>")[0]
    text = html.unescape(section)
    for name in ("influence_matrix", "influence_loo"):
        assert f'href="#fig-{name}"' in section and (out / "figures" / f"{name}.png").is_file()
    assert not (out / "figures" / "prior_curves.png").exists()
    assert "Derivatives with respect to the prior's scales are not applicable: the flat prior" in text
    assert "Prior-sensitivity curves are not applicable: the flat prior" in text
    assert "<th>diagnosis</th>" in text and "<td>theta[A]</td>" in text and "<td>not applicable</td>" in text
    for header in ("∂E[μ]/∂y_j", "∂E[τ]/∂w_j", "E[μ]: linear", "E[μ]: exact", "P(θ_k > c): exact"):
        assert f"<th>{header}</th>" in text, header
    assert '<a href="#sensitivity">' in page


def test_a_run_without_the_section_says_so(eight_analysis):
    """sensitivity.enabled = false: summary.json's sensitivity is null, the report's section says it was turned
    off, and no sensitivity figure is built."""
    import dataclasses

    from jaxschools.presentation import report, sensitivity_plots

    record = eight_analysis.record
    off = dataclasses.replace(record, summary=dataclasses.replace(record.summary, sensitivity=None), sensitivity=None)
    page = report.render_html(off.summary)
    assert "Not computed for this run (sensitivity.enabled = false" in page.split('id="sensitivity"')[1]
    assert sensitivity_plots.make_figures(off) == []
    assert [spec.name for spec in sensitivity_plots.make_figures(record)] == ["influence_matrix", "influence_loo"]


def test_sensitivity_of_three_schools_under_the_flat_prior(hostile_analysis, hostile_report):
    """J = 3, flat prior: E[mu] and E[tau] do not exist (null, and so are their derivatives, never a 0), and
    leaving any school out leaves an improper posterior, so every leave-one-out value is null rather than a
    truncated quadrature's number; theta's derivatives exist. The figures are still drawn."""
    section = hostile_analysis.record.summary.sensitivity
    for name in ("mu_mean", "tau_mean"):
        entry = section.headline[name]
        assert entry.value is None and set(entry.y) == {None} and set(entry.case_weights) == {None}
    for entry in section.influence.values():
        assert set(entry.loo) == {None} and set(entry.change) == {None} and set(entry.linear_error) == {None}
    assert all(v is not None for row in section.theta.y for v in row)
    from jaxschools.presentation import sensitivity_plots

    specs = sensitivity_plots.make_figures(hostile_analysis.record)
    assert [spec.name for spec in specs] == SENSITIVITY_FIGURES
    for spec in specs:  # hostile names ('$x$', '<script>') on the axes: drawing would fail on mathtext
        assert spec.figure is not None, spec.not_drawn
        spec.figure.canvas.draw()
        spec.figure.clear()
    out, _ = hostile_report
    assert all((out / "figures" / f"{name}.png").is_file() for name in SENSITIVITY_FIGURES)


def test_beyond_fifty_schools_the_section_says_why_it_is_empty(eight_analysis):
    """More than sensitivity_record.MAX_SCHOOLS schools: nothing is computed (no JAX work), every part is null with
    the reason, the report says so and draws no sensitivity figure."""
    import dataclasses

    from jaxschools.app import sensitivity_record
    from jaxschools.core import models
    from jaxschools.presentation import report, sensitivity_plots

    num = sensitivity_record.MAX_SCHOOLS + 1
    data = data_module.Schools(y=np.linspace(-5.0, 5.0, num), sigma=np.full(num, 3.0),
                               names=tuple(f"s{j}" for j in range(num)))
    config = config_module.load_config(None, sets=["model.prior=half_normal"])
    section, figures = sensitivity_record.build(config, data, models.make_prior("half_normal"), 0, 1.0, "s0")
    assert figures is None and section.headline is None and section.theta is None and section.influence is None
    assert section.prior_curves is None and section.note.startswith(f"not computed for {num} schools")
    assert section.prior_curves_note == section.note == section.power_scaling_note
    assert section.power_scaling is None and section.prior_scales_note is None
    record = eight_analysis.record
    record = dataclasses.replace(record, summary=dataclasses.replace(record.summary, sensitivity=section),
                                 sensitivity=None)
    page = html.unescape(report.render_html(record.summary).split('id="sensitivity"')[1].split("</section>")[0])
    assert f"The exact derivatives and leave-one-out analyses are not computed for {num} schools" in page
    assert sensitivity_plots.make_figures(record) == []
