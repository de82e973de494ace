"""theta | mu, tau, y and the Rao-Blackwellised queries, against the seed's formulas and raw indicators."""

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

import jaxschools as js

Y = np.array([28.0, 8, -3, 7, -1, 1, 18, 12])
SIGMA = np.array([15.0, 10, 16, 11, 9, 11, 10, 18])


def seed_conditional(mu, tau):
    """The seed's theta_hat and V (precision-weighted form, BDA3 eq. 5.17)."""
    precision = 1 / SIGMA**2 + 1 / tau**2
    return (Y / SIGMA**2 + mu / tau**2) / precision, 1 / precision


def test_conditional_matches_the_seed_formula(eight):
    for mu, tau in [(8.0, 6.0), (-3.0, 0.01), (20.0, 500.0)]:
        theta_hat, variance = js.posterior.conditional_theta(jnp.array(mu), jnp.log(tau), eight)
        expected_hat, expected_var = seed_conditional(mu, tau)
        np.testing.assert_allclose(theta_hat, expected_hat, rtol=1e-10)
        np.testing.assert_allclose(variance, expected_var, rtol=1e-10)
        np.testing.assert_allclose(
            js.posterior.shrinkage(jnp.log(tau), eight), (1 / tau**2) / (1 / tau**2 + 1 / SIGMA**2), rtol=1e-10
        )


def test_theta_draws_have_the_conditional_moments(eight):
    n = 40000
    positions = jnp.broadcast_to(jnp.array([8.0, np.log(6.0)]), (2, n // 2, 2))
    theta = js.posterior.theta_draws(jax.random.key(0), positions, eight)
    assert theta.shape == (2, n // 2, 8)
    expected_hat, expected_var = seed_conditional(8.0, 6.0)
    flat = np.asarray(theta).reshape(n, 8)
    # Independent draws: the mean's sd is sqrt(V / n); the variance's is V sqrt(2 / (n - 1)).
    assert np.all(np.abs(flat.mean(0) - expected_hat) < 5 * np.sqrt(expected_var / n))
    assert np.all(np.abs(flat.var(0, ddof=1) - expected_var) < 5 * expected_var * np.sqrt(2 / (n - 1)))


def test_masked_school_is_a_new_draw_from_the_population(eight):
    masked = js.data.Schools(eight.y, eight.sigma, eight.names, mask=jnp.arange(8) != 0)
    theta_hat, variance = js.posterior.conditional_theta(jnp.array(5.0), jnp.log(3.0), masked)
    np.testing.assert_allclose([theta_hat[0], variance[0]], [5.0, 9.0], rtol=1e-12)


def test_rao_blackwell_queries_agree_with_raw_indicators(eight):
    """Over draws of (mu, tau), the RB estimates and the indicator averages estimate the same numbers."""
    key_mu, key_tau, key_theta = jax.random.split(jax.random.key(4), 3)
    shape = (4, 5000)
    mu = 8.0 + 4.0 * jax.random.normal(key_mu, shape)
    log_tau = 1.4 + 0.8 * jax.random.normal(key_tau, shape)
    positions = jnp.stack([mu, log_tau], -1)
    theta = js.posterior.theta_draws(key_theta, positions, eight)
    out = js.posterior.queries(positions, theta, eight, school=0, threshold=28.0)

    raw_exceeds = np.asarray(theta[..., 0] > 28.0, float).ravel()
    se = np.sqrt(raw_exceeds.var() / raw_exceeds.size)
    assert abs(float(out["p_exceeds"]) - raw_exceeds.mean()) < 5 * se
    raw_greater = np.asarray(theta[..., 0] > theta[..., 2], float).ravel()
    se = np.sqrt(raw_greater.var() / raw_greater.size)
    assert abs(float(out["p_greater"][0, 2]) - raw_greater.mean()) < 5 * se
    raw_mean = np.asarray(theta).reshape(-1, 8).mean(0)
    raw_se = np.asarray(theta).reshape(-1, 8).std(0) / np.sqrt(raw_exceeds.size)
    assert np.all(np.abs(np.asarray(out["theta_mean"]) - raw_mean) < 5 * raw_se)
    # Structure: complementary pairs, undefined diagonal, P(best) sums to one.
    matrix = np.asarray(out["p_greater"])
    off = ~np.eye(8, dtype=bool)
    np.testing.assert_allclose((matrix + matrix.T)[off], 1.0, atol=1e-12)
    assert np.all(np.isnan(np.diag(matrix)))
    np.testing.assert_allclose(np.sum(out["p_best"]), 1.0, rtol=1e-12)


def test_p_exceeds_at_a_point_is_a_normal_tail(eight):
    """With every draw at the same (mu, tau), the RB estimate is exactly 1 - Phi((c - theta_hat)/sqrt(V))."""
    positions = jnp.broadcast_to(jnp.array([8.0, np.log(6.0)]), (1, 10, 2))
    theta = js.posterior.theta_draws(jax.random.key(0), positions, eight)
    out = js.posterior.queries(positions, theta, eight, school=0, threshold=28.0)
    expected_hat, expected_var = seed_conditional(8.0, 6.0)
    np.testing.assert_allclose(out["p_exceeds"], stats.norm.sf(28.0, expected_hat[0], np.sqrt(expected_var[0])), rtol=1e-10)
