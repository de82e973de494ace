"""NUTS: the iterative U-turn bookkeeping, known moments, divergences, BlackJAX interop, the statistical layer."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_hmc import adapted_chains, assert_mean, check_statistical_layer

import jaxschools as js
from jaxschools.core.kernels.base import SamplingAlgorithm
from jaxschools.core.kernels.hmc import HMCState
from jaxschools.core.kernels.hmc import init as hmc_init
from jaxschools.core.kernels.nuts import NUTSState
from jaxschools.core.kernels.nuts import init as nuts_init

SCALES = jnp.array([0.1, 0.5, 1.0, 3.0, 10.0])


def ill_conditioned(x):
    """N(0, diag(SCALES^2)): a condition number of 10^4 against the identity metric."""
    return -0.5 * jnp.sum((x / SCALES) ** 2)


def test_checkpoint_slots_hold_the_first_leaf_of_every_open_subtree():
    """The slot arithmetic of the iterative tree (module docstring), replayed for every leaf of a depth-8 tree.

    Leaf s (even) writes slot popcount(s); leaf n (odd, t trailing ones) checks slots popcount(n >> 1) - t + 1
    .. popcount(n >> 1). At each check those slots must hold the first leaves n + 1 - 2^k of the balanced
    subtrees of sizes 2^k, k = 1..t, ending at n: exactly the sub-subtrees Hoffman & Gelman's recursion checks.
    """
    slots = {}
    for n in range(2**8):
        if n % 2 == 0:
            slots[bin(n).count("1")] = n
            continue
        trailing = bin(n ^ (n + 1)).count("1") - 1
        highest = bin(n >> 1).count("1")
        checked = sorted(slots[slot] for slot in range(highest - trailing + 1, highest + 1))
        assert checked == sorted(n + 1 - 2**k for k in range(1, trailing + 1)), n


@pytest.fixture(scope="module")
def gaussian_run():
    """Our NUTS in BlackJAX's own loop (``run_inference_algorithm`` from ``initial_position=``, which calls
    ``init(position, rng_key)``), four chains vmapped over keys."""
    blackjax = pytest.importorskip("blackjax")
    algo = js.kernels.nuts(ill_conditioned, 0.08, jnp.ones(5))

    def chain(key):
        _, (states, infos) = blackjax.util.run_inference_algorithm(
            rng_key=key, inference_algorithm=algo, num_steps=1100, initial_position=jnp.ones(5)
        )
        return jax.tree_util.tree_map(lambda x: x[100:], (states, infos))

    return jax.jit(jax.vmap(chain))(jax.random.split(jax.random.key(0), 4))


def test_known_means_and_variances(gaussian_run):
    """Biases in the multinomial sampling or the U-turn checks show up first in the variances."""
    x = gaussian_run[0].position
    for d in range(5):
        draws = x[..., d]
        assert_mean(draws, 0.0, f"x_{d}")
        assert_mean(draws**2, float(SCALES[d]) ** 2, f"x_{d}^2")


def test_state_info_and_trajectory_cost(gaussian_run):
    states, infos = gaussian_run
    assert isinstance(states, NUTSState)
    assert NUTSState is HMCState and nuts_init is hmc_init  # NUTS reuses HMC's state and init, not copies
    assert set(infos._fields) >= {"acceptance_rate", "is_accepted", "is_divergent", "energy", "num_integration_steps"}
    # The cached log-density and gradient are those of the position.
    last = jax.tree_util.tree_map(lambda x: x[:, -1], states)
    np.testing.assert_allclose(last.logdensity, jax.vmap(ill_conditioned)(last.position), rtol=1e-12)
    np.testing.assert_allclose(last.logdensity_grad, jax.vmap(jax.grad(ill_conditioned))(last.position), rtol=1e-12)
    steps, depth = np.asarray(infos.num_integration_steps), np.asarray(infos.tree_depth)
    # A trajectory of depth d has 2^d - 1 steps, plus those of a last subtree that was rejected.
    assert np.all((steps >= 2**depth - 1) & (steps < 2 ** (depth + 1))) and depth.max() <= 10
    # The slow direction (scale 10 at step 0.08) needs long trajectories: deep trees, but not the maximum.
    assert 50 < steps.mean() < 1023
    assert not np.any(np.asarray(infos.is_divergent))
    rates = np.asarray(infos.acceptance_rate)
    assert np.all((rates >= 0) & (rates <= 1)) and rates.mean() > 0.8


def test_unstable_step_diverges_and_stays():
    algo = js.kernels.nuts(ill_conditioned, 5.0, jnp.ones(5))
    state = algo.init(jnp.ones(5))
    new, info = algo.step(jax.random.key(1), state)
    assert bool(info.is_divergent) and not bool(info.is_accepted)
    np.testing.assert_array_equal(new.position, state.position)


# ----------------------------------------------------------------------------- BlackJAX interop


@pytest.mark.slow  # over 9 s of the default suite on the 2-core machine; CI runs it (-m slow)
def test_blackjax_nuts_runs_in_our_driver_with_our_adaptation():
    blackjax = pytest.importorskip("blackjax")
    kernel = blackjax.mcmc.nuts.build_kernel()
    algo = SamplingAlgorithm(
        jax.tree_util.Partial(blackjax.mcmc.nuts.init, logdensity_fn=ill_conditioned),
        jax.tree_util.Partial(kernel, logdensity_fn=ill_conditioned, step_size=1.0, inverse_mass_matrix=jnp.ones(5)),
    )
    out = js.sampling.run(jax.random.key(4), algo, jnp.ones(5), num_samples=500, num_chains=4, burn_in=500,
                          adaptation=js.adaptation.window_adaptation(1.0, jnp.ones(5)))
    metric = np.asarray(out.parameters["inverse_mass_matrix"]).mean(axis=0)
    np.testing.assert_allclose(metric, np.asarray(SCALES) ** 2, rtol=0.35)
    x = out.positions[..., 4]
    assert_mean(x**2, 100.0, "x_5^2")


# ----------------------------------------------------------------------------- the statistical layer


# NUTS through the analysis's sampling stage on the non-centered joint (theta recovered from eta); the kernel
# itself, marginal and non-centered on three targets, is test_statistical_layer.py's
# (test_kernel_matches_exact[nuts-*]), and the analysis's marginal path is test_hmc.py's and
# test_adaptation.py's.
@pytest.mark.slow  # over 9 s of the default suite on the 2-core machine; CI runs it (-m slow)
def test_nuts_matches_the_exact_posterior():
    parameterization = "noncentered"
    samples, theta = adapted_chains("nuts", parameterization, num_samples=1500, burn_in=500)
    check_statistical_layer(samples, theta, parameterization)
    assert np.mean(np.asarray(samples.is_divergent)) < 0.001


@pytest.mark.slow  # every sampler of the benchmark compiled once (~20 s); a smoke run, not a correctness check
def test_benchmark_runs_at_smoke_size():
    """benchmarks/gradient_kernels.py end to end at a tiny size; its figures come only from running it by hand."""
    pytest.importorskip("blackjax")
    from benchmarks import gradient_kernels

    text = gradient_kernels.markdown(gradient_kernels.run(smoke=True))
    assert "jaxschools NUTS / BlackJAX NUTS, median ESS per second" in text
    assert "| jaxschools RWMH (marginal) |" in text
