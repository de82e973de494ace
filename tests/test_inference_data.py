"""ArviZ interop: the container's structure, `arviz.loo` on it against the exact LOO, and the CLI's posterior.nc.

ArviZ is an optional extra; these tests need it (it is in the test extra) and check what happens without it
by making ``import arviz`` fail (``sys.modules["arviz"] = None``, which also makes
``importlib.util.find_spec("arviz")`` return None, as when it is not installed).
"""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import jax
import numpy as np
import pytest

import jaxschools as js
from jaxschools.app import experiments
from jaxschools.interop import inference_data
from jaxschools.core import laplace, models, sampling
from jaxschools.cli import main
from sizes import cli_sets

az = pytest.importorskip("arviz")

ROOT = Path(__file__).resolve().parents[1]
SMALL = cli_sets("output.figures=false") + ["--quiet"]


def _rwmh_samples(data, prior, num_samples=2_000):
    logdensity = models.marginal_logdensity(data, prior)
    fit = laplace.fit(logdensity, laplace.default_init(data))
    starts = sampling.overdispersed_positions(jax.random.key(1), fit.mode, fit.cov, 4, 2.0)
    return sampling.run(jax.random.key(2), js.kernels.rwmh(logdensity, fit.cov, 2.0), starts,
                        num_samples=num_samples, num_chains=4, burn_in=1_000)


@pytest.fixture(scope="module")
def runs(eight):
    """The eight schools under the flat and the half-Cauchy prior: (samples, theta, predictive, container)."""
    out = {}
    for prior in ("flat", "half_cauchy"):
        samples = _rwmh_samples(eight, prior)
        theta = js.posterior.theta_draws(jax.random.key(3), samples.positions, eight)
        drawn = js.predictive.posterior_predictive(jax.random.key(4), samples.positions, theta, eight)
        idata = js.posterior.to_inference_data(samples, eight, theta=theta, predictive_draws=drawn)
        out[prior] = (samples, theta, drawn, idata)
    return out


def test_groups_dims_and_coords(eight, runs):
    samples, theta, drawn, idata = runs["flat"]
    assert {"posterior", "sample_stats", "observed_data", "constant_data", "posterior_predictive",
            "log_likelihood"} <= set(idata.groups())
    post = idata.posterior
    assert list(post["school"].values) == list(eight.names)
    assert post["theta"].dims == ("chain", "draw", "school") and post["theta"].shape == (4, 2_000, 8)
    assert post["mu"].dims == ("chain", "draw")
    np.testing.assert_array_equal(post["mu"].values, np.asarray(samples.positions[..., 0]))
    np.testing.assert_allclose(post["tau"].values, np.exp(np.asarray(samples.positions[..., 1])), rtol=1e-15)
    np.testing.assert_array_equal(post["theta"].values, np.asarray(theta))
    np.testing.assert_array_equal(idata.posterior_predictive["y"].values, np.asarray(drawn.replicated_y))
    np.testing.assert_array_equal(idata.observed_data["y"].values, np.asarray(eight.y))
    np.testing.assert_array_equal(idata.constant_data["sigma"].values, np.asarray(eight.sigma))
    assert idata.posterior_predictive["y"].dims == ("chain", "draw", "school")
    assert idata.posterior_predictive["y_new"].dims == ("chain", "draw")
    np.testing.assert_array_equal(idata.sample_stats["acceptance_rate"].values, np.asarray(samples.acceptance_rate))
    np.testing.assert_array_equal(idata.sample_stats["lp"].values, np.asarray(samples.logdensity))
    assert "diverging" not in idata.sample_stats  # random-walk Metropolis has no trajectories


def test_log_likelihood_is_pointwise_normal(eight, runs):
    """log N(y_j | theta_j, sigma_j^2), against scipy."""
    from scipy import stats

    idata = runs["flat"][-1]
    theta = idata.posterior["theta"].values[:, :50]
    expected = stats.norm.logpdf(np.asarray(eight.y), theta, np.asarray(eight.sigma))
    np.testing.assert_allclose(idata.log_likelihood["y"].values[:, :50], expected, rtol=1e-12)


def test_arviz_summaries_run(runs):
    idata = runs["flat"][-1]
    table = az.summary(idata, var_names=["mu", "tau"])
    assert table.loc["mu", "r_hat"] < 1.05


def test_loo_agrees_with_the_exact_loo(eight, runs):
    """PSIS-LOO on the pointwise log-likelihood estimates log p(y_j | y_-j), which experiments.exact_loo
    computes by quadrature. Loosely: each elpd within half its own standard error (the data uncertainty LOO
    reports; the importance sampling error is far smaller), and the same order for the two priors."""
    psis, exact_elpd = {}, {}
    for prior, (*_, idata) in runs.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a Pareto k near 0.7 for school A is expected with these draws
            loo = az.loo(idata, pointwise=True)
        exact_elpd[prior] = float(experiments.exact_loo(eight, models.make_prior(prior))["elpd_loo"])
        psis[prior] = float(loo.elpd_loo)
        assert abs(psis[prior] - exact_elpd[prior]) < 0.5 * float(loo.se), (prior, psis[prior], exact_elpd[prior])
    assert np.sign(psis["half_cauchy"] - psis["flat"]) == np.sign(exact_elpd["half_cauchy"] - exact_elpd["flat"])
    comparison = az.compare({prior: run[-1] for prior, run in runs.items()})
    assert set(comparison.index) == {"flat", "half_cauchy"}


def test_theta_from_a_joint_parameterization(eight, runs):
    """Non-centered positions (mu, log tau, eta) give theta = mu + tau eta; centered ones theta itself."""
    samples, theta, drawn, _ = runs["flat"]
    mu, tau = samples.positions[..., :1], np.exp(samples.positions[..., 1:2])
    noncentered = np.concatenate([samples.positions, (theta - mu) / tau], axis=-1)
    idata = inference_data.to_inference_data(noncentered, eight, parameterization="noncentered",
                                             predictive_draws=drawn)
    np.testing.assert_allclose(idata.posterior["theta"].values, theta, rtol=1e-12, atol=1e-12)
    centered = np.concatenate([samples.positions, theta], axis=-1)
    idata = inference_data.to_inference_data(centered, eight, parameterization="centered", predictive_draws=drawn)
    np.testing.assert_array_equal(idata.posterior["theta"].values, theta)
    assert "sample_stats" not in idata.groups()  # bare positions carry no sampler statistics


def test_marginal_draws_without_theta_or_key_are_refused(eight):
    with pytest.raises(ValueError, match="rng_key"):
        inference_data.to_inference_data(np.zeros((2, 10, 2)), eight)


def test_arviz_1_gets_a_datatree(eight, runs, monkeypatch):
    """ArviZ 1.x keeps its data in xarray's DataTree: the same groups, as the tree's children."""
    import xarray as xr

    samples, theta, drawn, _ = runs["flat"]
    monkeypatch.setattr(az, "__version__", "1.0.0")
    tree = inference_data.to_inference_data(samples, eight, theta=theta, predictive_draws=drawn)
    assert isinstance(tree, xr.DataTree)
    assert {"posterior", "posterior_predictive", "log_likelihood", "observed_data", "sample_stats"} <= set(
        tree.children)
    assert tree["posterior"]["theta"].dims == ("chain", "draw", "school")
    assert list(tree["posterior"]["school"].values) == list(eight.names)


def test_missing_arviz_is_a_clear_import_error(eight, monkeypatch):
    monkeypatch.setitem(sys.modules, "arviz", None)
    with pytest.raises(ImportError, match=r"pip install 'jaxschools\[arviz\]'"):
        js.posterior.to_inference_data(np.zeros((2, 10, 2)), eight, rng_key=jax.random.key(0))


@pytest.fixture(scope="module")
def netcdf_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "nc"
    assert main(["run", "--out", str(out), "--set", "output.netcdf=true"] + SMALL) == 0
    return out


def test_cli_writes_posterior_nc(netcdf_run):
    path = netcdf_run / "posterior.nc"
    assert path.is_file()
    idata = az.from_netcdf(str(path))
    assert list(idata.posterior["school"].values) == list("ABCDEFGH")
    assert idata.posterior["theta"].shape == (4, 400, 8)
    assert idata.posterior.attrs["kernel"] == "rwmh"
    summary = json.loads((netcdf_run / "summary.json").read_text())
    np.testing.assert_allclose(idata.posterior["mu"].values.mean(), summary["posterior"]["mu"]["mean"], rtol=1e-12)
    # The file's replicated data are the ones the summary's predictive check used.
    y_rep = idata.posterior_predictive["y"].values
    observed_max = max(summary["data"]["y"])
    p_max = np.mean(y_rep.max(axis=-1) >= observed_max)
    np.testing.assert_allclose(summary["predictive"]["ppc"]["max"]["p_value"], p_max, rtol=1e-12)
    for entry in summary["predictive"]["ppc"].values():
        assert 0 <= entry["p_value"] <= 1 and entry["mcse"] >= 0
    assert summary["predictive"]["new_school"]["sigma"] == 11.0


def test_cli_without_netcdf_writes_no_file(tmp_path):
    out = tmp_path / "plain"
    assert main(["run", "--out", str(out)] + SMALL) == 0
    assert not (out / "posterior.nc").exists()


CHILD = """
import json, sys
sys.modules["arviz"] = None  # as if not installed: `import arviz` fails, importlib.util.find_spec gives None
from jaxschools.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "jax": sorted(m for m in sys.modules if m == "jax" or m.startswith("jax."))}))
"""


def test_cli_netcdf_without_arviz_is_refused_before_jax(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = tmp_path / "nc"
    proc = subprocess.run([sys.executable, "-c", CHILD, "run", "--out", str(out), "--set", "output.netcdf=true"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result == {"code": 2, "jax": []}
    assert proc.stderr.splitlines() == ["error: output.netcdf = true needs ArviZ: pip install 'jaxschools[arviz]'"]
    assert list(tmp_path.iterdir()) == []  # no output folder, no temporary folder
