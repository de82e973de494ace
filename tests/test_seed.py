"""The default run reproduces the seed analysis, checked against the exact posterior (scipy oracle).

Order of the checks: first the chains must have mixed (R-hat < 1.01, bulk and tail
ESS >= 400), otherwise a huge MCSE would let anything pass; then every estimate must lie within
5 Monte Carlo standard errors of the exact value.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.special import ndtr
from oracle import eight_schools_oracle

import jaxschools as js
from jaxschools.app import analysis

Z = 5.0


@pytest.fixture(scope="module")
def seed_run():
    config = js.config.load_config()
    return analysis.analyze(config, js.data.eight_schools())


@pytest.fixture(scope="module")
def oracle():
    return eight_schools_oracle("flat")


def test_default_config_is_the_seed_analysis():
    config = js.config.load_config()
    assert config["model"]["prior"] == "flat" and config["sampler"]["kernel"] == "rwmh"
    assert config["sampler"]["scale"] == 2.0 and config["sampler"]["num_chains"] == 4
    assert config["sampler"]["burn_in"] == 5000 and config["sampler"]["num_samples"] == 5000
    assert config["sampler"]["seed"] == 0


def test_chains_mixed(seed_run):
    mcmc = seed_run.summary["mcmc"]
    for name in ("mu", "log_tau"):
        assert mcmc["rhat"][name] < 1.01
        assert mcmc["ess"][name] >= 400 and mcmc["ess_tail"][name] >= 400
    assert not mcmc["flags"]["not_mixed"] and not mcmc["flags"]["stuck_chains"]


def test_acceptance_matches_the_stationary_expectation(seed_run):
    """E[min(1, p(x')/p(x))] at stationarity, from independent exact draws: an oracle for 'about 0.33'."""
    data = seed_run.data
    fit = seed_run.fit
    exact_draws = js.exact.sample(jax.random.key(123), data, 20000)
    x = jnp.stack([exact_draws["mu"], exact_draws["log_tau"]], -1)
    noise = jax.random.normal(jax.random.key(124), x.shape)
    proposal = x + 2.0 * noise @ jnp.linalg.cholesky(fit.cov).T
    density = jax.vmap(seed_run.logdensity)
    accept = jnp.exp(jnp.minimum(density(proposal) - density(x), 0.0))
    expected, expected_se = float(accept.mean()), float(accept.std() / np.sqrt(accept.size))
    rates = np.asarray(seed_run.samples.acceptance_rate)
    observed = rates.mean()
    # Chains are independent: their spread gives the standard error of the mean acceptance.
    observed_se = rates.std(ddof=1) / np.sqrt(rates.size)
    assert abs(observed - expected) < Z * np.hypot(observed_se, expected_se)
    assert 0.25 < observed < 0.40  # the seed's 0.3288, within any sane spread


def test_theta_means_and_shrinkage_within_mcse(seed_run, oracle):
    summary = seed_run.summary
    for j in range(8):
        exact_mean = oracle.theta_mean(j)
        assert abs(summary["theta"]["mean"][j] - exact_mean) < Z * summary["theta"]["mean_mcse"][j]
        exact_b = oracle.shrinkage(j)
        assert abs(summary["shrinkage"][j] - exact_b) < Z * summary["shrinkage_mcse"][j]
    np.testing.assert_allclose(oracle.theta_mean(0), 11.40, atol=0.005)  # the exact figure


def test_p_theta_a_above_28_within_mcse(seed_run, oracle):
    query = seed_run.summary["queries"]["p_exceeds"]
    assert query["school"] == "A" and query["threshold"] == 28.0
    exact_p = oracle.p_exceeds(0, 28.0)
    np.testing.assert_allclose(exact_p, 0.0435, atol=5e-5)
    assert abs(query["p"] - exact_p) < Z * query["mcse"]


def test_p_theta_a_above_each_school_within_mcse(seed_run, oracle):
    """P(theta_A > theta_j), with the MCSE of the Rao-Blackwellised per-draw values."""
    positions = seed_run.samples.positions
    theta_hat, variance = js.posterior.conditional_theta(positions[..., 0], positions[..., 1], seed_run.data)
    matrix = seed_run.summary["queries"]["p_greater"]
    for j in range(1, 8):
        per_draw = ndtr((theta_hat[..., 0] - theta_hat[..., j]) / jnp.sqrt(variance[..., 0] + variance[..., j]))
        mcse = float(js.diagnostics.mcse_mean(per_draw))
        assert abs(matrix[0][j] - oracle.p_greater(0, j)) < Z * mcse


def test_mu_and_log_tau_means_within_mcse(seed_run, oracle):
    posterior = seed_run.summary["posterior"]
    assert abs(posterior["mu"]["mean"] - oracle.mu_mean()) < Z * posterior["mu"]["mcse_mean"]
    exact_log_tau = oracle.expect(lambda l: l)
    assert abs(posterior["log_tau"]["mean"] - exact_log_tau) < Z * posterior["log_tau"]["mcse_mean"]
