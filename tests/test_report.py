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
from sizes import SAMPLER_SETS  # noqa: E402

MALICIOUS = "<script>alert(1)</script>"
HOSTILE_NAMES = (MALICIOUS, 'a $x$ & "b"', "School with a rather long name indeed")
FIGURE_NAMES = ["contour", "trace", "autocorrelation", "marginals", "shrinkage", "forest", "ppc", "p_greater"]
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
    return _analyze(SHORT_RUN + ["sampler.num_chains=1"], dataset)


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
    assert named == FIGURE_NAMES
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
    sections = ("data", "pooled", "laplace", "mcmc", "posterior", "schools", "query", "exact", "ppc", "figures",
                "provenance")
    for anchor in sections:
        assert f'id="{anchor}"' in page
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
    assert sorted(p.stem for p in (out / "figures").glob("*.png")) == sorted(FIGURE_NAMES)


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
    from jaxschools.presentation import plots

    specs = plots.make_figures(hostile_analysis.record)
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
