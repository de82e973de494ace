"""Posterior predictive draws and checks against closed forms (scipy/numpy), never against the module itself.

The draws here are independent (fixed or independently drawn (mu, tau, theta)), so a Kolmogorov-Smirnov test
of standardised draws against N(0, 1) is valid (unlike on MCMC output, see tests/statistical.py): each such
test fails a correct implementation with probability ALPHA. Probabilities estimated from n independent
indicators are compared within 5 binomial standard errors.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import jaxschools as js
from jaxschools.core import predictive

ALPHA = 1e-4
N = 100_000


def _ks_standard_normal(z):
    return stats.kstest(np.asarray(z, float).ravel(), "norm").pvalue


def test_new_school_given_mu_tau_is_normal_with_both_variances():
    """Given (mu, tau): theta_new ~ N(mu, tau^2), y_new - theta_new ~ N(0, sigma_new^2) independent of it,
    so y_new ~ N(mu, tau^2 + sigma_new^2)."""
    mu, tau, sigma_new = 3.0, 2.0, 1.5
    positions = jnp.broadcast_to(jnp.array([mu, np.log(tau)]), (4, N // 4, 2))
    draws = predictive.new_school(jax.random.key(0), positions, sigma_new)
    assert draws.theta.shape == draws.y.shape == (4, N // 4)
    theta, y = np.asarray(draws.theta).ravel(), np.asarray(draws.y).ravel()
    assert _ks_standard_normal((theta - mu) / tau) > ALPHA
    assert _ks_standard_normal((y - mu) / np.hypot(tau, sigma_new)) > ALPHA
    noise = (y - theta) / sigma_new
    assert _ks_standard_normal(noise) > ALPHA
    # Independent: the sample correlation of theta and the measurement noise is N(0, 1/n) under the null.
    assert abs(np.corrcoef(theta, noise)[0, 1]) < 5 / np.sqrt(N)


def test_new_school_over_varying_mu_tau():
    """With (mu, log tau) varying per draw, (y_new - mu) / sqrt(tau^2 + sigma^2) is still exactly N(0, 1)."""
    key_mu, key_tau, key_draw = jax.random.split(jax.random.key(1), 3)
    mu = 10.0 * jax.random.normal(key_mu, (2, N // 2))
    log_tau = jax.random.uniform(key_tau, (2, N // 2), minval=-6.0, maxval=4.0)
    draws = predictive.new_school(key_draw, jnp.stack([mu, log_tau], -1), 7.0)
    z = (draws.y - mu) / jnp.sqrt(jnp.exp(2 * log_tau) + 49.0)
    assert _ks_standard_normal(z) > ALPHA


def test_replicated_y_given_theta(eight):
    theta = 30.0 * jax.random.normal(jax.random.key(2), (4, N // 32, 8))
    y_rep = predictive.replicate(jax.random.key(3), theta, eight)
    assert y_rep.shape == theta.shape
    assert _ks_standard_normal((y_rep - theta) / eight.sigma) > ALPHA
    # Each school with its own sigma: the per-school sd of the standardised noise is 1 within 5 se.
    per_school = np.std(np.asarray((y_rep - theta) / eight.sigma).reshape(-1, 8), axis=0, ddof=1)
    assert np.all(np.abs(per_school - 1) < 5 / np.sqrt(2 * (N // 8)))


def test_statistics_match_numpy():
    y = np.random.default_rng(0).normal(size=(3, 5, 11)) * 1e3 + 1e6  # an offset that punishes cancellation
    values = np.asarray(predictive.statistics(jnp.asarray(y)))
    assert values.shape == (3, 5, len(predictive.STATISTICS))
    expected = np.stack([y.max(-1), y.min(-1), y.mean(-1), y.std(-1, ddof=1), np.ptp(y, -1)], -1)
    np.testing.assert_allclose(values, expected, rtol=1e-12)
    mask = np.arange(11) % 3 != 0
    masked = np.asarray(predictive.statistics(jnp.asarray(y), jnp.asarray(mask)))
    kept = y[..., mask]
    expected = np.stack([kept.max(-1), kept.min(-1), kept.mean(-1), kept.std(-1, ddof=1), np.ptp(kept, -1)], -1)
    np.testing.assert_allclose(masked, expected, rtol=1e-12)


def test_statistics_vmap_over_datasets_equals_a_loop():
    y = jax.random.normal(jax.random.key(4), (3, 9))
    batched = jax.jit(jax.vmap(predictive.statistics))(y)
    looped = jnp.stack([jax.jit(predictive.statistics)(row) for row in y])
    np.testing.assert_allclose(batched, looped, rtol=1e-14)


def test_p_values_are_shares_of_replicates_at_or_above():
    replicated = np.random.default_rng(1).normal(size=(4, 250, 5))
    observed = np.array([0.3, -2.0, 0.0, 5.0, -np.inf])
    p = np.asarray(predictive.p_values(jnp.asarray(replicated), jnp.asarray(observed)))
    np.testing.assert_allclose(p, np.mean(replicated.reshape(-1, 5) >= observed, axis=0), rtol=1e-14)
    assert p[3] == 0.0 and p[4] == 1.0 and np.all((0 <= p) & (p <= 1))


@pytest.fixture(scope="module")
def point_mass_check(eight):
    """A posterior that is a point mass at theta: then T(y_rep) has closed forms for max, min and mean."""
    theta = jnp.asarray([20.0, 5.0, -3.0, 9.0, 0.0, 2.0, 14.0, 10.0])
    draws = jnp.broadcast_to(theta, (4, N // 4, 8))
    y_rep = predictive.replicate(jax.random.key(5), draws, eight)
    return np.asarray(theta), predictive.check(y_rep, eight)


def test_p_values_match_closed_forms(eight, point_mass_check):
    """With y_rep_j ~ N(theta_j, sigma_j^2) independent: P(max >= c) = 1 - prod Phi((c - theta_j) / sigma_j),
    P(min >= c) = prod (1 - Phi((c - theta_j) / sigma_j)), mean ~ N(mean theta, sum sigma_j^2 / J^2)."""
    theta, check = point_mass_check
    y, sigma = np.asarray(eight.y), np.asarray(eight.sigma)
    observed = np.asarray(check.observed)
    np.testing.assert_allclose(observed, [28.0, -3.0, 8.75, np.std(y, ddof=1), 31.0])
    c_max, c_min, c_mean = observed[:3]
    exact = {
        "max": 1 - np.prod(stats.norm.cdf(c_max, theta, sigma)),
        "min": np.prod(stats.norm.sf(c_min, theta, sigma)),
        "mean": stats.norm.sf(c_mean, theta.mean(), np.sqrt(np.sum(sigma**2)) / 8),
    }
    for name, truth in exact.items():
        p = float(check.p_value[predictive.STATISTICS.index(name)])
        assert abs(p - truth) < 5 * np.sqrt(truth * (1 - truth) / N), (name, p, truth)


def test_p_value_mcse_of_independent_draws_is_binomial(point_mass_check):
    """Independent replicates: ESS ~ n, so the MCSE is about sqrt(p (1 - p) / n) (the ESS estimate's own
    noise is a few percent at this n)."""
    _, check = point_mass_check
    p, mcse = np.asarray(check.p_value), np.asarray(check.mcse)
    binomial = np.sqrt(p * (1 - p) / N)
    np.testing.assert_allclose(mcse, binomial, rtol=0.15)


def test_posterior_predictive_and_its_summary(eight):
    """The whole stage on independent draws of (mu, log tau, theta): the default sigma_new is the median
    sigma; E[theta_new - mu] = 0 with sd sqrt(E[tau^2] / n); the summary's numbers are numpy's."""
    key_mu, key_tau, key_theta = jax.random.split(jax.random.key(6), 3)
    shape = (4, 5_000)
    mu = 8.0 + 5.0 * jax.random.normal(key_mu, shape)
    log_tau = jax.random.uniform(key_tau, shape, minval=-2.0, maxval=3.0)
    positions = jnp.stack([mu, log_tau], -1)
    theta = js.posterior.theta_draws(key_theta, positions, eight)
    result = predictive.posterior_predictive(jax.random.key(7), positions, theta, eight)
    assert float(result.sigma_new) == np.median(np.asarray(eight.sigma))
    n = mu.size
    theta_new = np.asarray(result.new_school.theta).ravel()
    assert abs(theta_new.mean() - float(mu.mean())) < 5 * np.sqrt(float(jnp.mean(jnp.exp(2 * log_tau))) / n)
    summary = predictive.summarize(result)
    assert set(summary["ppc"]) == set(predictive.STATISTICS)
    new = summary["new_school"]["theta"]
    np.testing.assert_allclose([new["mean"], new["sd"], new["q025"], new["q975"]],
                               [theta_new.mean(), theta_new.std(ddof=1), *np.quantile(theta_new, [0.025, 0.975])],
                               rtol=1e-10)
    replicated = np.asarray(result.check.replicated).reshape(-1, len(predictive.STATISTICS))
    observed = np.asarray(result.check.observed)
    for index, name in enumerate(predictive.STATISTICS):
        entry = summary["ppc"][name]
        assert 0 <= float(entry["p_value"]) <= 1
        np.testing.assert_allclose(entry["p_value"], np.mean(replicated[:, index] >= observed[index]), rtol=1e-12)
        np.testing.assert_allclose(entry["replicated_q975"], np.quantile(replicated[:, index], 0.975), rtol=1e-10)
