"""HMC: the leapfrog integrator, the kernel's protocol and info, BlackJAX interop, and the statistical layer.

The statistical layer (tests/statistical.py) runs the analysis's own sampling stage (``analysis.sample_chains``: Laplace
start, warm-up adaptation, frozen kernel) on two datasets of different scales at once (vmapped, one
compilation), checks that the chains mixed (R-hat < 1.01, bulk and tail ESS >= 400) and only then that each
posterior mean lies within 5 Monte Carlo standard errors of the exact value from the scipy quadrature
oracle (tests/oracle.py, independent of jaxschools.core.exact), with ArviZ's diagnostics. The helpers here are
shared with test_nuts.py, test_adaptation.py and test_extending.py.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from oracle import Oracle

import jaxschools as js
from jaxschools.app import analysis
from jaxschools.core import laplace, models
from jaxschools.core._jit import filter_jit
from jaxschools.core.kernels.hmc import HMCState
from jaxschools.core.kernels.integrators import integrator_state, kinetic_energy, leapfrog

Z = 5.0
# Two datasets with the same J (so they share one compilation) on scales 100 times apart: the eight
# schools (standard errors 9 to 18 points) and eight log risk ratios (standard errors 0.06 to 0.3).
DATASETS = {
    "eight schools": ([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0], [15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0]),
    "log risk ratios": (
        [-0.21, 0.12, 0.05, -0.33, 0.02, -0.11, 0.17, -0.05],
        [0.06, 0.10, 0.21, 0.30, 0.08, 0.12, 0.15, 0.25],
    ),
}
# The marginal target under the seed's flat prior; the joint under the half-Cauchy prior, where the
# centered form has its funnel.
PRIOR = {"marginal": "flat", "noncentered": "half_cauchy", "centered": "half_cauchy"}


@functools.lru_cache(maxsize=None)
def oracle(name: str, prior: str) -> Oracle:
    y, sigma = DATASETS[name]
    return Oracle(y, sigma, prior)


def stacked_datasets():
    datasets = [js.data.Schools(jnp.array(y), jnp.array(sigma)) for y, sigma in DATASETS.values()]
    return jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *datasets)


def adapted_chains(kernel: str, parameterization: str, *, num_samples: int, burn_in: int, seed: int = 0, **sampler):
    """The analysis's sampling stage on every dataset of :data:`DATASETS`, vmapped over them.

    Returns ``(samples, theta)`` with a leading dataset axis; positions are (mu, log tau).
    """
    config = js.config.load_config()
    config["sampler"].update(kernel=kernel, num_samples=num_samples, burn_in=burn_in, **sampler)
    prior = models.make_prior(PRIOR[parameterization])
    init_key, sample_key = jax.random.split(jax.random.key(seed))
    datasets = stacked_datasets()
    fits = jax.vmap(lambda data: laplace.fit(models.marginal_logdensity(data, prior), laplace.default_init(data)))(
        datasets
    )

    def one(data, fit):
        chains = analysis.sample_chains(config, data, prior, fit, parameterization, init_key, sample_key)
        return chains.samples, chains.theta

    return jax.jit(jax.vmap(one))(datasets, fits)


def assert_matches_exact(positions, theta, name: str, prior: str):
    """Mixed first (R-hat < 1.01, bulk and tail ESS >= 400), then every mean within 5 MCSE of the oracle.

    The diagnostics are ArviZ's (rank-normalised R-hat and ESS, Vehtari et al. 2021), so this layer
    shares no code with the package beyond the draws themselves.
    """
    import arviz

    exact = oracle(name, prior)
    quantities = {"mu": (positions[..., 0], exact.mu_mean()), "log_tau": (positions[..., 1], exact.expect(lambda l: l))}
    if theta is not None:
        for j in range(theta.shape[-1]):
            quantities[f"theta_{j + 1}"] = (theta[..., j], exact.theta_mean(j))
    for label, (draws, truth) in quantities.items():
        where, draws = f"{name}, {label}", np.asarray(draws)
        rhat = float(arviz.rhat(draws))
        bulk, tail = float(arviz.ess(draws, method="bulk")), float(arviz.ess(draws, method="tail"))
        assert rhat < 1.01, f"{where}: R-hat {rhat:.4f}"
        assert bulk >= 400 and tail >= 400, f"{where}: ESS bulk {bulk:.0f}, tail {tail:.0f}"
        error, mcse = float(draws.mean()) - truth, float(arviz.mcse(draws, method="mean"))
        assert abs(error) < Z * mcse, f"{where}: mean off by {error:.4g} = {error / mcse:.2f} MCSE"


def assert_mean(draws, truth, where=""):
    """|mean - truth| < 5 MCSE, after bulk ESS >= 400 and (with two chains or more) R-hat < 1.01 (ArviZ)."""
    import arviz

    draws = np.asarray(draws)
    if draws.shape[0] > 1:
        assert float(arviz.rhat(draws)) < 1.01, f"{where}: R-hat {float(arviz.rhat(draws)):.4f}"
    assert float(arviz.ess(draws)) >= 400, f"{where}: ESS {float(arviz.ess(draws)):.0f}"
    error, mcse = float(draws.mean()) - truth, float(arviz.mcse(draws, method="mean"))
    assert abs(error) < Z * mcse, f"{where}: mean off by {error:.4g} = {error / mcse:.2f} MCSE"


def check_statistical_layer(samples, theta, parameterization):
    for index, name in enumerate(DATASETS):
        chain_theta = None if theta is None else theta[index]
        assert_matches_exact(samples.positions[index], chain_theta, name, PRIOR[parameterization])


# ----------------------------------------------------------------------------- the integrator


def gaussian(x):
    return -0.5 * jnp.sum(x * x / jnp.array([4.0, 1.0, 0.25]))


def test_leapfrog_is_time_reversible_and_its_energy_error_is_second_order():
    start = integrator_state(jnp.array([1.0, -0.5, 0.3]), jnp.array([0.4, 1.2, -0.7]), gaussian)
    inverse_mass = jnp.array([2.0, 1.0, 0.5])

    def run(state, step_size, steps):
        return jax.lax.fori_loop(0, steps, lambda _, s: leapfrog(s, step_size, gaussian, inverse_mass), state)

    forward = run(start, 0.1, 25)
    back = run(forward, -0.1, 25)
    np.testing.assert_allclose(back.position, start.position, atol=1e-12)
    np.testing.assert_allclose(back.momentum, start.momentum, atol=1e-12)

    def energy_error(step_size):
        end = run(start, step_size, int(round(2.0 / step_size)))
        hamiltonian = lambda s: -s.logdensity + kinetic_energy(s.momentum, inverse_mass)  # noqa: E731
        return abs(float(hamiltonian(end) - hamiltonian(start)))

    ratio = energy_error(0.1) / energy_error(0.05)
    assert 3.0 < ratio < 5.5  # O(eps^2): halving the step quarters the error


# ----------------------------------------------------------------------------- the kernel


@filter_jit
def one_step_many_keys(algo, keys, state):
    """One transition from ``state`` per key; ``algo`` is an argument, so every HMC shares one compilation."""
    return jax.vmap(algo.step, in_axes=(0, None))(keys, state)


def test_info_fields_and_jittered_lengths():
    algo = js.kernels.hmc(gaussian, 0.3, jnp.ones(3), num_integration_steps=8, jitter=0.5)
    state = algo.init(jnp.ones(3))
    assert isinstance(state, HMCState)
    keys = jax.random.split(jax.random.key(0), 2000)
    _, info = one_step_many_keys(algo, keys, state)
    assert set(info._fields) >= {"acceptance_rate", "is_accepted", "is_divergent", "energy", "num_integration_steps"}
    lengths = np.asarray(info.num_integration_steps)
    assert set(np.unique(lengths)) == set(range(4, 13))  # uniform on ceil(8 * 0.5) .. floor(8 * 1.5)
    assert abs(lengths.mean() - 8.0) < 5 * lengths.std() / np.sqrt(lengths.size)
    # Rao-Blackwellised acceptance and the decision agree on average.
    assert abs(float(info.acceptance_rate.mean()) - float(info.is_accepted.mean())) < 0.05
    fixed = js.kernels.hmc(gaussian, 0.3, jnp.ones(3), num_integration_steps=8)
    _, info = one_step_many_keys(fixed, keys[:50], state)
    assert np.all(np.asarray(info.num_integration_steps) == 8)


def test_unstable_step_diverges_and_is_rejected():
    algo = js.kernels.hmc(gaussian, 3.0, jnp.ones(3), num_integration_steps=40)
    state = algo.init(jnp.ones(3))
    new_state, info = algo.step(jax.random.key(1), state)
    assert bool(info.is_divergent) and not bool(info.is_accepted)
    np.testing.assert_array_equal(new_state.position, state.position)


def test_step_takes_adapted_parameters_as_keywords():
    """What the driver relies on: step(key, state, step_size=, inverse_mass_matrix=) overrides the build."""
    algo = js.kernels.hmc(gaussian, 0.3, jnp.ones(3), num_integration_steps=5)
    other = js.kernels.hmc(gaussian, 0.1, jnp.array([4.0, 1.0, 0.25]), num_integration_steps=5)
    state = algo.init(jnp.ones(3))
    key = jax.random.key(2)
    overridden, _ = algo.step(key, state, step_size=0.1, inverse_mass_matrix=jnp.array([4.0, 1.0, 0.25]))
    np.testing.assert_allclose(overridden.position, other.step(key, state)[0].position, rtol=1e-12)


# ----------------------------------------------------------------------------- BlackJAX interop


def test_our_hmc_runs_in_blackjax_loop():
    """From ``initial_position=``: BlackJAX then calls ``init(position, rng_key)``."""
    blackjax = pytest.importorskip("blackjax")
    algo = js.kernels.hmc(gaussian, 0.5, jnp.array([4.0, 1.0, 0.25]), num_integration_steps=5, jitter=0.5)
    _, (states, infos) = blackjax.util.run_inference_algorithm(
        rng_key=jax.random.key(3), inference_algorithm=algo, num_steps=3000, initial_position=jnp.ones(3)
    )
    x = states.position[500:, 0][None]
    assert float(jnp.mean(infos.acceptance_rate)) > 0.5
    assert_mean(x, 0.0, "x_1")
    assert_mean(x**2, 4.0, "x_1^2")


@pytest.mark.slow  # over 9 s of the default suite on the 2-core machine; CI runs it (-m slow)
def test_blackjax_hmc_runs_in_our_driver():
    """BlackJAX's HMC, unchanged, in our vmapped driver (test_nuts.py also tunes BlackJAX's NUTS with our warm-up)."""
    blackjax = pytest.importorskip("blackjax")
    algo = blackjax.hmc(gaussian, 0.5, jnp.array([4.0, 1.0, 0.25]), 5)
    out = js.sampling.run(jax.random.key(4), algo, jnp.ones(3), num_samples=1000, num_chains=4, burn_in=100)
    assert out.divergences.shape == (4,) and out.num_integration_steps.shape == (4, 1000)
    x = out.positions[..., 2]
    assert_mean(x**2, 0.25, "x_3^2")


# ----------------------------------------------------------------------------- the statistical layer


# HMC through the analysis's sampling stage (config -> kernel, warm-up, frozen kernel) on the marginal; the kernel
# itself, marginal and non-centered, is test_statistical_layer.py's (test_kernel_matches_exact[hmc-*]), and the
# analysis's non-centered path (theta from eta) is test_nuts.py's.
@pytest.mark.slow  # over 9 s of the default suite on the 2-core machine; CI runs it (-m slow)
def test_hmc_matches_the_exact_posterior():
    parameterization = "marginal"
    samples, theta = adapted_chains("hmc", parameterization, num_samples=1000, burn_in=500)
    check_statistical_layer(samples, theta, parameterization)
    assert np.mean(np.asarray(samples.is_divergent)) < 0.001
