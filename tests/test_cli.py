"""`jaxschools run`, in-process through main(argv). (The real process a user starts is test_determinism.py's.)"""

import json

import numpy as np
import pytest

from jaxschools.app import output_folder
from jaxschools.cli import main
from sizes import cli_sets

SMALL = cli_sets() + ["--quiet"]

CONTRACT_KEYS = {
    "data": {"names", "y", "sigma"},
    "separate": {"lower", "upper"},
    "pooled": {"mean", "var", "chi2", "df", "p_value"},
    "laplace": {"mode", "cov", "converged", "log_evidence"},
    "mcmc": {"kernel", "num_chains", "num_samples", "burn_in", "acceptance_rate", "ess", "rhat", "divergences"},
    "posterior": {"mu", "log_tau", "tau"},
    "theta": {"mean", "sd", "q025", "q975"},
    "queries": {"p_exceeds", "p_greater", "p_best"},
}


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "seed"
    assert main(["run", "--out", str(out)] + SMALL) == 0
    return out


def test_outputs_exist(default_run):
    assert (default_run / "summary.json").is_file()
    assert (default_run / "timings.json").is_file()
    report = (default_run / "report.html").read_text()
    assert "<html" in report.lower()
    pngs = list((default_run / "figures").glob("*.png"))
    assert pngs and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    leftovers = [p for p in default_run.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_summary_has_the_contract_keys(default_run):
    summary = json.loads((default_run / "summary.json").read_text())
    assert summary["schema_version"] == 6  # CHANGELOG.md: typed keys since 3, sensitivity since 4, classical since 5,
    # the exact section's Bayes factors, heterogeneity, prediction, shortest intervals and predictive check since 6
    for section, keys in CONTRACT_KEYS.items():
        assert keys <= set(summary[section]), section
    for name in ("mu", "log_tau", "tau"):
        assert {"mean", "sd"} <= set(summary["posterior"][name])
    assert set(summary["mcmc"]["ess"]) == {"mu", "log_tau"} == set(summary["mcmc"]["rhat"])
    assert len(summary["shrinkage"]) == 8 and len(summary["queries"]["p_best"]) == 8
    assert {"school", "threshold", "p"} <= set(summary["queries"]["p_exceeds"])
    assert summary["queries"]["p_exceeds"]["school"] == "A" and summary["queries"]["p_exceeds"]["threshold"] == 28
    matrix = summary["queries"]["p_greater"]
    assert len(matrix) == 8 and all(matrix[i][i] is None for i in range(8))
    assert summary["mcmc"]["divergences"] is None and summary["mcmc"]["kernel"] == "rwmh"
    assert summary["laplace"]["log_evidence"] is None  # flat prior
    assert summary["config"]["sampler"]["seed"] == 0 and summary["config"]["sampler"]["num_samples"] == 400
    assert {"jax", "jaxlib", "platform", "x64"} <= set(summary["provenance"])


def test_the_classical_section_is_metafors(default_run):
    """summary.json's classical section for the eight schools (default: REML and DerSimonian-Laird) equals
    metafor 3.8's rma.uni on the same data (tests/fixtures/metafor_reference.R), every field, to 1e-6."""
    import pathlib

    fixtures = json.loads((pathlib.Path(__file__).parent / "fixtures" / "metafor_reference.json").read_text())
    summary = json.loads((default_run / "summary.json").read_text())
    section = summary["classical"]
    assert section["level"] == 0.95 and section["num_studies"] == 8 and list(section["fits"]) == ["REML", "DL"]
    for method, fit in section["fits"].items():
        ref = fixtures["fits"]["eight_schools"][method]
        pairs = {
            "tau2": ref["tau2"], "mu": ref["mu"], "se": ref["se"], "se_knha": ref["knha_se"], "q": ref["Q"],
            "q_p_value": ref["Q_p"], "i2": ref["I2"], "h2": ref["H2"],
            "ci": [ref["ci_lb"], ref["ci_ub"]], "pi": [ref["pi_lb"], ref["pi_ub"]],
            "ci_knha": [ref["knha_ci_lb"], ref["knha_ci_ub"]], "pi_knha": [ref["knha_pi_lb"], ref["knha_pi_ub"]],
            "tau2_ci": ref["tau2_ci"], "i2_ci": ref["I2_ci"], "h2_ci": ref["H2_ci"],
        }
        for key, expected in pairs.items():
            got = [fit[key]["lower"], fit[key]["upper"]] if isinstance(fit[key], dict) else fit[key]
            np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-9, err_msg=f"{method} {key}")
        assert fit["q_df"] == 7 and fit["tau"] == pytest.approx(fit["tau2"] ** 0.5)
        loo = fit["leave_one_out"]
        for key, name in (("mu", "loo_mu"), ("tau2", "loo_tau2"), ("i2", "loo_I2"), ("q", "loo_Q")):
            np.testing.assert_allclose(loo[key], ref[name], rtol=1e-6, atol=1e-9, err_msg=f"{method} loo {key}")


def test_summary_json_is_the_typed_record_and_every_key_is_documented(default_run):
    """summary.json of a real run reads back strictly into the typed record (jaxschools.app.results: every key
    present, none unknown, each of its JSON type) and writes back to the same JSON; docs/summary.md lists every
    key of the record. A missing or an unknown key is refused."""
    import pathlib

    from jaxschools.app import results

    summary = json.loads((default_run / "summary.json").read_text())
    record = results.Summary.from_json(summary)
    assert record.to_json() == summary and record.sweep is None and record.simulation is None
    import re

    docs = (pathlib.Path(__file__).parent.parent / "docs" / "summary.md").read_text()
    # Both ways: every key of the record is a row of the page's table, and every row is a key of the record.
    documented = re.findall(r"^\| `([^`]+)` \|", docs, flags=re.MULTILINE)
    assert len(documented) == len(set(documented))
    assert sorted(set(results.key_paths()) - set(documented)) == []
    assert sorted(set(documented) - set(results.key_paths())) == []
    missing = json.loads(json.dumps(summary))
    del missing["mcmc"]["flags"]["frozen_chains"]
    with pytest.raises(results.SchemaError, match=r"mcmc\.flags: missing \['frozen_chains'\]"):
        results.Summary.from_json(missing)
    unknown = json.loads(json.dumps(summary))
    unknown["pooled"]["median"] = 1.0
    with pytest.raises(results.SchemaError, match=r"pooled: unknown \['median'\]"):
        results.Summary.from_json(unknown)
    wrong = json.loads(json.dumps(summary))
    wrong["mcmc"]["num_chains"] = "4"
    with pytest.raises(results.SchemaError, match=r"mcmc\.num_chains: '4' is not an integer"):
        results.Summary.from_json(wrong)


def test_same_inputs_give_byte_identical_summary(default_run):
    before = (default_run / "summary.json").read_bytes()
    assert main(["run", "--out", str(default_run)] + SMALL) == 0
    assert (default_run / "summary.json").read_bytes() == before


def test_rerun_replaces_previous_results_whole(tmp_path):
    # An earlier result that holds a file this run does not write: it goes. (A folder with a file no run
    # wrote is refused instead: tests/test_output_safety.py.)
    out = tmp_path / "r"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    output_folder.write_marker(out)
    assert main(["run", "--out", str(out), "--set", "output.figures=false"] + SMALL) == 0
    assert not (out / "stale.txt").exists() and (out / "summary.json").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["r"]


def test_other_dataset_on_another_scale(tmp_path, capsys):
    data = tmp_path / "rr.csv"
    rows = ["name,y,sigma"] + [f"trial{i},{y},{s}" for i, (y, s) in enumerate(
        [(-0.21, 0.06), (0.12, 0.1), (0.05, 0.21), (-0.33, 0.3), (0.02, 0.08), (-0.11, 0.12), (0.17, 0.15), (0.31, 0.19)]
    )]
    data.write_text("\n".join(rows) + "\n")
    out = tmp_path / "rr"
    assert main(["run", "--data", str(data), "--out", str(out), "--set", "output.figures=false"] + SMALL) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["data"]["names"][0] == "trial0" and summary["laplace"]["converged"]
    assert summary["queries"]["p_exceeds"]["threshold"] == -0.21


def test_other_names_reuse_the_compiled_analysis(default_run, tmp_path, monkeypatch):
    """Names are static pytree metadata: the analysis runs on the unnamed data, so the eight schools under
    other names (same shapes and config as ``default_run``) trace no log-density again, and the names reach
    the summary."""
    from jaxschools.core import models

    traced = []
    original = models.marginal_loglik
    monkeypatch.setattr(models, "marginal_loglik", lambda *args: traced.append(1) or original(*args))
    summary = json.loads((default_run / "summary.json").read_text())
    data = tmp_path / "renamed.csv"
    names = [f"school {name}" for name in summary["data"]["names"]]
    data.write_text("name,y,sigma\n" + "".join(
        f"{name},{y!r},{s!r}\n" for name, y, s in zip(names, summary["data"]["y"], summary["data"]["sigma"])))
    out = tmp_path / "renamed"
    assert main(["run", "--data", str(data), "--out", str(out), "--set", "output.figures=false"] + SMALL) == 0
    assert traced == []
    assert json.loads((out / "summary.json").read_text())["data"]["names"] == names


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["run", "--set", "sampler.sclae=2"], "sampler.sclae"),
        (["run", "--set", "sampler.scale=0"], "sampler.scale"),
        (["run", "--set", "sampler.num_samples=0"], "sampler.num_samples"),
        (["run", "--set", "sampler.burn_in=-1"], "sampler.burn_in"),
        (["run", "--set", "sampler.kernel=gibbs"], "sampler.kernel"),
        (["run", "--set", "model.prior=uniform"], "model.prior"),
        (["run", "--set", "sampler.num_chains=two"], "sampler.num_chains"),
        (["run", "--data", "/nonexistent/file.csv"], "file.csv"),
        (["run", "/nonexistent/config.toml"], "config.toml"),
        (["run", "--set", "queries.school=Z"], "Z"),
        (["run", "--set", "sensitivity.tau_scale_points=1"], "sensitivity.tau_scale_points"),
        (["run", "--set", "model.prior=half_normal", "--set", "model.tau_scale=1e150"], "sensitivity.tau_scale_factor"),
        (["run", "--bogus"], "bogus"),
        (["frobnicate"], "frobnicate"),
    ],
)
def test_bad_input_exits_2_with_one_error_line_and_writes_nothing(tmp_path, capsys, args, fragment):
    out = tmp_path / "out"
    assert main(args + ["--out", str(out)] if args[0] == "run" else args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and fragment in err[0]
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_bad_data_file_rows_are_named(tmp_path, capsys):
    data = tmp_path / "bad.csv"
    data.write_text("name,y,sigma\nA,1,2\nB,3,0\nC,4,1\n")
    out = tmp_path / "out"
    assert main(["run", "--data", str(data), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "line 3" in err and "sigma" in err
    assert not out.exists()


def test_too_few_schools_for_the_flat_prior(tmp_path, capsys):
    data = tmp_path / "two.csv"
    data.write_text("name,y,sigma\nA,1,2\nB,3,1\n")
    assert main(["run", "--data", str(data), "--out", str(tmp_path / "o")]) == 2
    assert "flat" in capsys.readouterr().err


def test_unwritable_output_is_an_input_error(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["run", "--out", str(blocker / "sub" / "out")] + SMALL) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")


# --- no silent stuck chains (issue #13, finding 4) -------------------------------------------------------------


def test_a_sampler_that_cannot_move_is_flagged_not_reported_as_converged(default_run, tmp_path):
    """A proposal scale of 1e-300 moves nothing (every step rounds to the current point, so every proposal
    is "accepted"): flagged as frozen and stuck, ESS and R-hat undefined (null), no z-score of 1e26, and
    the report says so at the top. After ``default_run``, with its sizes: everything is compiled (~1.5 s)."""
    out = tmp_path / "stuck"
    sets = ["--set", "sampler.scale=1e-300", "--set", "sampler.init_spread=0", "--set", "output.figures=false"]
    assert main(["run", "--out", str(out)] + SMALL + sets) == 0
    summary = json.loads((out / "summary.json").read_text())
    mcmc = summary["mcmc"]
    assert mcmc["acceptance_rate"] == [1.0] * 4
    assert mcmc["flags"]["frozen_chains"] == [0, 1, 2, 3] == mcmc["flags"]["stuck_chains"]
    assert mcmc["frozen_accepting"] == [0, 1, 2, 3] and mcmc["frozen_accepted_every_proposal"] is True
    assert mcmc["flags"]["not_mixed"] and mcmc["not_mixed_reasons"] == ["undefined"]
    for group in ("ess", "ess_tail", "rhat"):
        assert mcmc[group] == {"mu": None, "log_tau": None}, group
    for name in ("mu", "log_tau", "tau"):
        assert summary["posterior"][name]["mcse_mean"] is None and summary["posterior"][name]["ess_bulk"] is None
    check = summary["exact_check"]
    assert check["num_compared"] == 0 and check["num_undefined"] == 23 and not check["flagged"]
    assert check["undefined"] == {"moment_does_not_exist": 0, "mcse_needs_higher_moment": 0,
                                  "draws_do_not_vary": 23, "missing": 0}
    page = (out / "report.html").read_text()
    top = page[: page.index('<section id="data"')]
    assert "23 sampler estimates have no Monte Carlo standard error: their draws do not vary" in top
    assert "No convergence warnings" not in page
    assert 'id="warnings"' in top and "did not move" in top and "below floating-point resolution" in top
    assert "Its ESS and R-hat are undefined" in top
    assert "e+25" not in page and "e+26" not in page
    row = page[page.index("<td>mean of μ</td>"):]
    assert row[: row.index("</tr>")].endswith("<td>undefined</td>")


def test_healthy_run_has_no_stuck_or_exact_flags(default_run):
    summary = json.loads((default_run / "summary.json").read_text())
    flags = summary["mcmc"]["flags"]
    assert flags["frozen_chains"] == [] and flags["stuck_chains"] == [] and flags["exact_mismatch"] == 0
    assert summary["mcmc"]["frozen_accepting"] == [] and summary["mcmc"]["frozen_accepted_every_proposal"] is False
    assert bool(summary["mcmc"]["not_mixed_reasons"]) == summary["mcmc"]["flags"]["not_mixed"]
    assert "undefined" not in summary["mcmc"]["not_mixed_reasons"]
    check = summary["exact_check"]
    assert check["num_compared"] == 23 and check["num_undefined"] == 0 and not check["flagged"]
    assert set(check["undefined"].values()) == {0}
    assert check["max_abs_z"] < check["threshold"]
    page = (default_run / "report.html").read_text()
    assert "did not move" not in page and "differ from the exact posterior" not in page


def test_a_sampler_far_from_the_exact_posterior_is_warned_about(default_run):
    """The seed run's exact mean of mu moved 10 MCSEs away: summary check and report warning agree."""
    import copy
    import re

    from scipy import stats

    from jaxschools.app import exact_check
    from jaxschools.presentation import report

    summary = json.loads((default_run / "summary.json").read_text())
    shifted = copy.deepcopy(summary)
    post = shifted["posterior"]["mu"]
    shifted["exact"]["mu"]["mean"] = post["mean"] - 10 * post["mcse_mean"]
    verdict = exact_check.check(shifted)
    assert verdict["flagged"] and "mean of μ" in verdict["beyond"]
    shifted["exact_check"] = verdict  # the application's verdict on the moved exact value, which the page renders
    assert verdict["threshold"] == pytest.approx(stats.norm.isf(0.001 / (2 * verdict["num_compared"])))
    page = report.render_html(shifted)
    top = page[: page.index('<section id="data"')]
    assert "differ from the exact posterior" in top and "Bonferroni" in top
    row = re.search(r"<tr><td>mean of μ</td>.*?</tr>", page).group(0)
    assert '<td class="bad">10.00</td>' in row


@pytest.mark.slow  # a whole half-Cauchy analysis of its own: 36 s on the loaded 2-core machine; CI runs it (-m slow)
def test_the_sensitivity_experiment_writes_the_section_with_every_figure(tmp_path):
    """`jaxschools run experiments/sensitivity.toml` (the half-Cauchy prior): summary.json's sensitivity section
    has the prior's derivatives and its curves over the configured grid, and the report the section with the
    three figures. The prior derivatives against central differences of exact.posterior's E[mu] and E[tau] in each
    hyperparameter (the posterior this run compiled; h = 1e-5 of the value, or of 1 for mu_loc = 0: truncation
    and rounding ~1e-10), to 1e-6; the curve at the configured tau_scale (the grid's middle point) against the
    headline's value and d/d tau_scale."""
    import pathlib

    import numpy as np

    from jaxschools.app import results
    from jaxschools.core import data as data_module
    from jaxschools.core import exact, models

    config = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "sensitivity.toml"
    out = tmp_path / "sensitivity"
    assert main(["run", str(config), "--out", str(out)] + SMALL) == 0
    summary = json.loads((out / "summary.json").read_text())
    section = results.Summary.from_json(summary).sensitivity
    assert summary["config"]["model"]["prior"] == "half_cauchy"
    assert section.prior_scales_note is None and section.prior_curves_note is None
    curves = section.prior_curves
    grid = np.asarray(curves.tau_scale)
    assert grid.size == 33 and curves.configured == 5.0
    np.testing.assert_allclose(grid[[0, 16, -1]], [0.25, 5.0, 100.0], rtol=1e-12)
    for name, curve in curves.curves.items():
        entry = section.headline[name]
        np.testing.assert_allclose(curve.value[16], entry.value, rtol=1e-10, err_msg=name)
        np.testing.assert_allclose(curve.derivative[16], entry.prior.tau_scale, rtol=1e-8, err_msg=name)

    data = data_module.eight_schools()
    base = {"mu_loc": 0.0, "mu_scale": 5.0, "tau_scale": 5.0}

    def means(**prior):
        post = exact.posterior(data, models.Prior("half_cauchy", **prior), section.num_nodes)
        w = np.exp(np.asarray(post.log_weights, float))
        return np.asarray([w @ np.asarray(post.mu_hat, float), w @ np.exp(np.asarray(post.log_tau, float))])

    for leaf, value in base.items():
        h = 1e-5 * max(abs(value), 1.0)
        fd = (means(**{**base, leaf: value + h}) - means(**{**base, leaf: value - h})) / (2 * h)
        got = [getattr(section.headline[name].prior, leaf) for name in ("mu_mean", "tau_mean")]
        np.testing.assert_allclose(got, fd, rtol=1e-6, err_msg=leaf)

    page = (out / "report.html").read_text()
    text = page.split('<section id="sensitivity">')[1].split("</section>")[0]
    for name in ("influence_matrix", "influence_loo", "prior_curves"):
        assert f'href="#fig-{name}"' in text and (out / "figures" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    assert "∂/∂tau_scale" in text and "not applicable" not in text
    # A proper prior: both power-scaling columns are numbers, each label priorsense's rule applied to them.
    from jaxschools.core import power_scaling

    for row in section.power_scaling.rows:
        assert row.prior is not None and row.likelihood is not None, row.quantity
        assert row.diagnosis == power_scaling.label(row.prior, row.likelihood), row.quantity


def test_a_file_of_2x2_counts_is_analysed_on_its_measure(tmp_path):
    """Eight trials given as 2x2 counts (the BCG trials' last seven and a made-up one with a zero cell, the
    fixtures' rows 6-13): summary.json holds escalc's log risk ratios (1e-10), says which study was corrected and
    keeps the covariate; the report names the measure and the correction. (Eight studies: the default run's
    compilations serve it.)"""
    import pathlib

    fixtures = json.loads((pathlib.Path(__file__).parent / "fixtures" / "metafor_reference.json").read_text())
    raw, rows = fixtures["raw"], range(6, 14)
    lines = ["trial,AI,bi,ci,di,ablat"] + [
        f"t{i},{raw['ai'][i]},{raw['bi'][i]},{raw['ci'][i]},{raw['di'][i]},{10 + i}" for i in rows]
    path = tmp_path / "counts.csv"
    path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    assert main(["run", "--out", str(out), "--data", str(path), "--set", "data.measure='RR'"] + SMALL) == 0
    summary = json.loads((out / "summary.json").read_text())
    data = summary["data"]
    np.testing.assert_allclose(data["y"], [fixtures["escalc"]["RR"]["yi"][i] for i in rows], rtol=1e-10)
    np.testing.assert_allclose(np.square(data["sigma"]), [fixtures["escalc"]["RR"]["vi"][i] for i in rows],
                               rtol=1e-10)
    assert (data["layout"], data["measure"], data["source"]) == ("counts", "RR", "file")
    assert data["zero_cell_corrected"] == [False] * 7 + [True]
    assert data["covariates"] == {"trial": [f"t{i}" for i in rows], "ablat": [10.0 + i for i in rows]}
    report = (out / "report.html").read_text()
    assert "log risk ratios (RR)" in report and "1/2 was added to every cell of the 1 study with a zero cell (H)" in report
    # What a meta-analyst expects of a dataset of counts (issue 16): the figures, each with its caption, the
    # Bayes factors (undefined under the default flat prior, and said so), the classical table, the ratio scale.
    import html

    report = html.unescape(report)
    for name, words in (("meta_forest", "prediction for a new study"), ("funnel", "Egger's regression line"),
                        ("leave_one_out", "left out in turn"), ("tau_posterior", "p(τ | y)"),
                        ("i2_posterior", "posterior of I²")):
        assert (out / "figures" / f"{name}.png").stat().st_size > 0, name
        assert words in report, name
    assert "The prior is improper (it does not integrate to one), so it is not drawn." in report
    assert "undefined: the flat prior on mu is improper" in report
    assert "Classical random-effects meta-analysis" in report and "Egger's regression test" in report
    assert "exp(μ), the average risk ratio" in report
    exact = summary["exact"]
    assert exact["bayes_factors"]["tau0"] is None and exact["bayes_factors"]["undefined"]["tau0"]
    assert summary["classical"]["egger"]["df"] == 6


def test_data_names_a_built_in_dataset(tmp_path, monkeypatch):
    """--data NAME with no file of that name: the built-in dataset, recorded with its citation (without figures
    or sampling worth the name: the BCG trials are 13 studies, a shape of their own)."""
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    sets = ["--set", "output.figures=false", "--set", "sensitivity.enabled=false"]
    assert main(["run", "--out", str(out), "--data", "normand1999"] + SMALL + sets) == 0
    data = json.loads((out / "summary.json").read_text())["data"]
    assert (data["source"], data["dataset"], data["measure"], data["layout"]) == ("dataset", "normand1999", "MD", "means")
    assert data["citation"].startswith("Normand (1999)") and data["y"][0] == -20.0
    assert "Normand" in (out / "report.html").read_text()


def test_a_prior_in_two_parts_runs_end_to_end(tmp_path):
    """model.mu_prior / tau_prior / tau_shape through the whole run (sampling, exact, sensitivity, report): the
    resolved kind is recorded, and the exact posterior is the independent quadrature of test_prior_families."""
    from test_prior_families import EIGHT_SIGMA, EIGHT_Y, oracle, oracle_log_prior

    out = tmp_path / "out"
    sets = ["--set", "model.mu_prior='normal'", "--set", "model.tau_prior='lomax'", "--set", "model.tau_shape=1.5",
            "--set", "model.mu_loc=2.0", "--set", "model.mu_scale=20.0", "--set", "output.figures=false"]
    assert main(["run", "--out", str(out)] + SMALL + sets) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["model"]["prior"] == "normal+lomax:1.5"
    expected = oracle(EIGHT_Y, EIGHT_SIGMA, "normal", oracle_log_prior("lomax", 5.0, 1.5, EIGHT_SIGMA))
    exact = summary["exact"]
    for got, key in ((exact["mu"]["mean"], "mu_mean"), (exact["mu"]["sd"], "mu_sd"), (exact["tau"]["mean"], "tau_mean"),
                     (exact["tau"]["sd"], "tau_sd")):
        assert got == pytest.approx(expected[key], rel=1e-8), key
    assert summary["sensitivity"]["prior_scales_note"] is None  # a normal mu and a scaled tau family: it has them
    assert "normal+lomax:1.5" in (out / "report.html").read_text()
