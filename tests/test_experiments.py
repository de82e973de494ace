"""Sweeps and simulation studies: vmapped cells equal single runs, one compilation, resume, calibration bands."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxschools as js
from jaxschools.core import calibration
from jaxschools.app import experiments
from sizes import SAMPLER_SETS

SMALL = SAMPLER_SETS + ["sweep.chunk_size=3"]


@pytest.fixture(scope="module")
def scale_sweep():
    """A config sweep of four proposal scales in two chunks (3 + 1 padded), run once for the module; how many
    times the cell was traced while it ran is kept for test_sweep_compiles_once_for_all_cells."""
    config = js.config.load_config(
        None, sets=SMALL + ["sweep.kind='config'", "sweep.key='sampler.scale'", "sweep.values=[0.5, 1.0, 2.0, 3.0]"]
    )
    traces = []
    original = experiments._sweep_cell

    def counting(*args, **kwargs):
        traces.append(1)
        return original(*args, **kwargs)

    experiments._sweep_cell = counting
    try:
        result = experiments.run(config)
    finally:
        experiments._sweep_cell = original
    return config, result, len(traces)


def test_sweep_rows_hold_the_contract_keys(scale_sweep):
    _, result, _ = scale_sweep
    rows = result.summary["sweep"]
    assert [row["value"] for row in rows] == [0.5, 1.0, 2.0, 3.0]
    for row in rows:
        assert {"acceptance_rate", "ess", "posterior"} <= set(row)
        assert set(row["ess"]) == {"mu", "log_tau"}
        assert {"mu", "log_tau"} <= set(row["posterior"]) and "mean" in row["posterior"]["mu"]
        assert row["divergences"] is None  # the random walk has no divergent transitions to count
    # Larger random-walk steps are accepted less often (same random numbers in every cell).
    acceptance = [row["acceptance_rate"] for row in rows]
    assert acceptance == sorted(acceptance, reverse=True)
    assert result.timings["sweep"]["chunks_computed"] == 2


def test_a_sweeps_summary_json_is_the_typed_record(scale_sweep):
    """The summary of a sweep, as summary.json holds it, reads back strictly into the typed record (docs/summary.md),
    and every row says which kernel and parameterization ran it."""
    from jaxschools.app import results

    config, result, _ = scale_sweep
    summary = json.loads(json.dumps(result.summary, allow_nan=False))
    record = results.Summary.from_json(summary)
    assert record.to_json() == summary and len(record.sweep) == 4 and record.simulation is None
    assert {(row.kernel, row.parameterization) for row in record.sweep} == {
        (config["sampler"]["kernel"], config["model"]["parameterization"])}


def test_a_vmapped_cell_equals_the_same_inference_run_alone(scale_sweep):
    """Cell 2 (scale 2.0) against _sweep_cell called directly, unbatched, with the same key."""
    config, result, _ = scale_sweep
    data = js.data.eight_schools()
    key = jax.random.fold_in(jax.random.key(config["sampler"]["seed"]), 1)
    knobs = js.inference.Knobs(scale=jnp.asarray(2.0), step_size=jnp.asarray(1.0), init_spread=jnp.asarray(2.0))
    single = experiments._sweep_cell(key, data, js.models.make_prior("flat"), knobs, 0, 28.0,
                                     plan=js.inference.plan(config))
    row = result.summary["sweep"][2]
    np.testing.assert_allclose(row["posterior"]["mu"]["mean"], single["posterior"]["mu"]["mean"], rtol=1e-9)
    np.testing.assert_allclose(row["acceptance_rate"], single["acceptance_rate"], rtol=1e-9)
    np.testing.assert_allclose(row["theta"]["mean"], single["theta"]["mean"], rtol=1e-9)


def test_leave_one_out_cell_equals_the_dataset_without_that_school():
    """A masked school is out of the likelihood: same Laplace fit and same chain as dropping it."""
    data = js.data.eight_schools()
    masked = js.data.Schools(data.y, data.sigma, data.names, mask=jnp.arange(8) != 3)
    dropped = js.data.Schools(jnp.delete(data.y, 3), jnp.delete(data.sigma, 3))
    prior = js.models.make_prior("half_cauchy")
    kwargs = dict(num_chains=2, num_samples=200, burn_in=50, max_iterations=100)
    key = jax.random.key(9)
    fit_a, samples_a = experiments.infer_marginal(key, masked, prior, 2.0, 1.0, **kwargs)
    fit_b, samples_b = experiments.infer_marginal(key, dropped, prior, 2.0, 1.0, **kwargs)
    np.testing.assert_allclose(fit_a.mode, fit_b.mode, rtol=1e-10)
    np.testing.assert_allclose(samples_a.positions, samples_b.positions, rtol=1e-8, atol=1e-10)


def test_sweep_compiles_once_for_all_cells(scale_sweep):
    _, result, traces = scale_sweep
    assert len(result.summary["sweep"]) == 4 and result.timings["sweep"]["chunks_computed"] == 2
    assert 1 <= traces <= 2  # traced for eval_shape (structure) and once for the compilation shared by all chunks


def test_interrupted_chunks_resume_without_recomputing(tmp_path):
    calls = []
    interrupt_at = 3  # the third chunk computed

    @jax.jit
    def double(x):
        return {"twice": 2 * x}

    def fn(x):
        if isinstance(x, jax.core.Tracer):  # the structure probe (eval_shape), not a computation
            return double(x)
        calls.append(1)
        if interrupt_at and len(calls) == interrupt_at:
            raise KeyboardInterrupt
        return double(x)

    inputs = jnp.arange(10.0)
    store = experiments.ChunkStore(tmp_path / "store")
    with pytest.raises(KeyboardInterrupt):
        experiments.run_chunked(fn, inputs, 10, 3, store=store, label="t")
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == ["t-00000.npz", "t-00001.npz"]
    calls.clear()
    interrupt_at = None
    out, timing = experiments.run_chunked(fn, inputs, 10, 3, store=store, label="t")
    np.testing.assert_array_equal(out["twice"], 2 * np.arange(10.0))
    assert timing["chunks_loaded"] == 2 and timing["chunks_computed"] == 2 and len(calls) == 2


def test_exact_loo_is_the_ratio_of_marginal_likelihoods(eight):
    """log p(y_j | y_-j) = log p(y) - log p(y_-j), checked against the scipy oracle's evidences."""
    from oracle import Oracle

    loo = experiments.exact_loo(eight, js.models.make_prior("half_normal"))
    y, s = np.asarray(eight.y), np.asarray(eight.sigma)
    full = Oracle(y, s, "half_normal").log_evidence()
    for j in (0, 4):
        without = Oracle(np.delete(y, j), np.delete(s, j), "half_normal").log_evidence()
        np.testing.assert_allclose(loo["pointwise"][j], full - without, atol=1e-8)


def test_ecdf_band_holds_its_level():
    """Uniform ranks must fall outside the (1 - alpha) band about alpha of the time (binomial error)."""
    rng = np.random.default_rng(0)
    alpha, trials = 0.2, 300
    outside = sum(not calibration.ranks_within_band(rng.integers(0, 20, 200), 19, alpha)[0] for _ in range(trials))
    sd = np.sqrt(alpha * (1 - alpha) / trials)
    assert abs(outside / trials - alpha) < 5 * sd


def test_ecdf_band_rejects_miscalibrated_ranks():
    rng = np.random.default_rng(1)
    too_narrow = np.clip(np.round(rng.normal(10, 3, 500)), 0, 20)  # overdispersed posterior: ranks bunch in the middle
    assert not calibration.ranks_within_band(too_narrow, 20, 0.01)[0]


@pytest.mark.slow  # over 9 s of the default suite on the 2-core machine; CI runs it (-m slow)
def test_small_simulation_study_reports_coverage_and_failures(eight):
    config = js.config.load_config(None, sets=[
        "simulation.num_datasets=40", "simulation.num_samples=300", "simulation.burn_in=150",
        "simulation.batch_size=40", "simulation.priors=['half_normal', 'flat']", "simulation.num_ranks=19",
    ])
    studies, arrays, timing = experiments._run_simulation(config, eight, experiments.ChunkStore(None), None)
    # Each study, as summary.json holds it, reads back strictly into the typed record (docs/summary.md).
    from jaxschools.app import analysis, results

    for study in studies:
        text = json.dumps(analysis.to_json(study), allow_nan=False)
        assert results.Study.from_json(json.loads(text)).to_json() == json.loads(text)
    proper, flat = studies
    assert proper["num_datasets"] == 40 and proper["sbc"] is not None
    assert set(proper["coverage"]) == {"0.5", "0.8", "0.95"}
    assert flat["sbc"] is None and "need not" in flat["note"]
    assert set(proper["failures"]) == {"laplace_not_converged", "not_mixed"}
    ranks = arrays["arrays"]["half_normal"]["rank"]
    assert ranks.shape == (40, 10) and ranks.min() >= 0 and ranks.max() <= 19


@pytest.mark.slow
def test_the_meta_analysis_experiment_puts_priors_and_classical_fits_in_one_table(tmp_path):
    """experiments/meta_analysis.toml on the BCG trials: each prior's cell holds the exact posterior and the Bayes
    factors (equal to computing them directly; undefined for the improper priors, and said so), and the report's
    table has a row per prior and per classical estimator."""
    import html
    import pathlib

    from jaxschools.cli import main
    from jaxschools.core import bayes_factors, exact, models

    config = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "meta_analysis.toml"
    out = tmp_path / "out"
    sets = [a for item in SAMPLER_SETS + ["output.figures=false"] for a in ("--set", item)]
    assert main(["run", str(config), "--out", str(out), "--quiet"] + sets) == 0
    summary = json.loads((out / "summary.json").read_text())
    rows = summary["sweep"]
    model = summary["config"]["model"]
    for row in rows:
        prior = models.make_prior(row["value"], mu_loc=model["mu_loc"], mu_scale=model["mu_scale"],
                                  tau_scale=model["tau_scale"])
        got = row["exact"]["bayes_factors"]
        if prior.proper:
            schools = js.data.Schools(jnp.asarray(summary["data"]["y"]), jnp.asarray(summary["data"]["sigma"]))
            expected = bayes_factors.bayes_factors(schools, prior)
            assert got["tau0"] == pytest.approx(float(expected["tau0"]), rel=1e-10)
            assert got["log_mu0"] == pytest.approx(float(expected["log_mu0"]), rel=1e-10)
            assert row["exact"]["mu_median"] == pytest.approx(float(exact.summary(schools, prior)["mu"]["q50"]),
                                                              rel=1e-10)
        else:
            assert got["tau0"] is None and got["undefined"]["tau0"]
    page = html.unescape((out / "report.html").read_text())
    assert "The priors side by side" in page
    for row in rows:
        assert f"Bayes, prior {row['value']}" in page
    for name in ("REML", "DerSimonian-Laird", "Paule-Mandel"):
        assert f"classical, {name}" in page
