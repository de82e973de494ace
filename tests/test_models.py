"""Log-densities against scipy.stats, written independently of the package."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import jaxschools as js

Y = np.array([28.0, 8, -3, 7, -1, 1, 18, 12])
SIGMA = np.array([15.0, 10, 16, 11, 9, 11, 10, 18])
POINTS = [(7.9, 1.84), (0.0, -3.0), (-20.0, 4.0), (50.0, 0.5)]


def scipy_prior(prior, mu, tau):
    if prior == "flat":
        return 0.0
    log_mu = stats.norm.logpdf(mu, 0.0, 5.0)
    if prior == "half_cauchy":
        return log_mu + stats.halfcauchy.logpdf(tau, scale=5.0)
    return log_mu + stats.halfnorm.logpdf(tau, scale=5.0)


@pytest.mark.parametrize("prior", js.models.PRIORS)
@pytest.mark.parametrize("mu, log_tau", POINTS)
def test_marginal_matches_scipy(eight, prior, mu, log_tau):
    tau = np.exp(log_tau)
    expected = (
        stats.norm.logpdf(Y, mu, np.sqrt(SIGMA**2 + tau**2)).sum() + scipy_prior(prior, mu, tau) + log_tau
    )
    got = js.models.marginal_logdensity(eight, prior)(jnp.array([mu, log_tau]))
    np.testing.assert_allclose(got, expected, rtol=1e-12)


@pytest.mark.parametrize("prior", js.models.PRIORS)
def test_joint_densities_match_scipy(eight, prior):
    rng = np.random.default_rng(1)
    mu, log_tau = 3.0, 1.2
    tau = np.exp(log_tau)
    theta = rng.normal(5, 6, size=8)
    centered = (
        stats.norm.logpdf(theta, mu, tau).sum()
        + stats.norm.logpdf(Y, theta, SIGMA).sum()
        + scipy_prior(prior, mu, tau)
        + log_tau
    )
    got = js.models.joint_logdensity(eight, prior, "centered")(jnp.concatenate([jnp.array([mu, log_tau]), theta]))
    np.testing.assert_allclose(got, centered, rtol=1e-12)
    eta = (theta - mu) / tau
    noncentered = (
        stats.norm.logpdf(eta).sum()
        + stats.norm.logpdf(Y, mu + tau * eta, SIGMA).sum()
        + scipy_prior(prior, mu, tau)
        + log_tau
    )
    got = js.models.joint_logdensity(eight, prior, "noncentered")(jnp.concatenate([jnp.array([mu, log_tau]), eta]))
    np.testing.assert_allclose(got, noncentered, rtol=1e-12)


def test_prior_scales_are_configurable(eight):
    position = jnp.array([2.0, 0.7])
    got = js.models.marginal_logdensity(eight, "half_normal", mu_loc=1.0, mu_scale=2.0, tau_scale=0.5)(position)
    tau = np.exp(0.7)
    expected = (
        stats.norm.logpdf(Y, 2.0, np.sqrt(SIGMA**2 + tau**2)).sum()
        + stats.norm.logpdf(2.0, 1.0, 2.0)
        + stats.halfnorm.logpdf(tau, scale=0.5)
        + 0.7
    )
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_marginal_is_the_joint_with_theta_integrated_out(eight):
    """Integrate the centered joint over theta_j numerically (scipy.quad, one school at a time)."""
    from scipy import integrate

    mu, log_tau = 6.0, 1.5
    tau = np.exp(log_tau)
    total = 0.0
    for y, s in zip(Y, SIGMA):
        value, _ = integrate.quad(lambda t: stats.norm.pdf(t, mu, tau) * stats.norm.pdf(y, t, s), -200, 200, points=[y, mu])
        total += np.log(value)
    got = js.models.marginal_logdensity(eight)(jnp.array([mu, log_tau]))
    np.testing.assert_allclose(got, total + log_tau, rtol=1e-10)


def test_extreme_log_tau_stays_finite(eight):
    density = js.models.marginal_logdensity(eight, "half_cauchy")
    for log_tau in (-300.0, 300.0):
        value = density(jnp.array([0.0, log_tau]))
        grad = jax.grad(density)(jnp.array([0.0, log_tau]))
        assert np.isfinite(value) and np.all(np.isfinite(grad))


def test_float32_in_float32_out():
    data = js.data.eight_schools(jnp.float32)
    density = js.models.marginal_logdensity(data, "half_cauchy")
    value = density(jnp.array([7.9, 1.8], jnp.float32))
    assert value.dtype == jnp.float32
    assert jax.grad(density)(jnp.array([7.9, 1.8], jnp.float32)).dtype == jnp.float32


def test_mask_equals_dropping_the_school(eight):
    position = jnp.array([5.0, 1.0])
    masked = js.data.Schools(eight.y, eight.sigma, eight.names, mask=jnp.arange(8) != 2)
    dropped = js.data.Schools(jnp.delete(eight.y, 2), jnp.delete(eight.sigma, 2))
    for prior in js.models.PRIORS:
        np.testing.assert_allclose(
            js.models.marginal_logdensity(masked, prior)(position),
            js.models.marginal_logdensity(dropped, prior)(position),
            rtol=1e-12,
        )


def test_one_compile_serves_every_dataset_of_a_size(eight):
    traces = []

    @jax.jit
    def value(density, position):
        traces.append(1)
        return density(position)

    position = jnp.array([1.0, 1.0])
    for shift in range(3):
        data = js.data.Schools(eight.y + shift, eight.sigma * (1 + shift))
        value(js.models.marginal_logdensity(data, "half_cauchy", tau_scale=1.0 + shift), position)
    assert len(traces) == 1


def test_vmap_over_datasets_and_positions(eight):
    batch = js.data.Schools(jnp.stack([eight.y, eight.y + 1.0]), jnp.stack([eight.sigma, eight.sigma]), eight.names)
    positions = jnp.array([[1.0, 0.5], [2.0, 1.5]])
    values = jax.vmap(lambda d, p: js.models.marginal_logdensity(d)(p))(batch, positions)
    for i in range(2):
        data = js.data.Schools(batch.y[i], batch.sigma[i])
        np.testing.assert_allclose(values[i], js.models.marginal_logdensity(data)(positions[i]), rtol=1e-12)
