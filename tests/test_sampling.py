"""The driver and the random-walk kernel: protocol, keys, compile-once, safety, correctness on a known target."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import jaxschools as js

MEAN = jnp.array([1.0, -2.0])
COV = jnp.array([[2.0, 0.6], [0.6, 1.0]])


def gaussian_logdensity(x):
    return jax.scipy.stats.multivariate_normal.logpdf(x, MEAN, COV)


@pytest.fixture(scope="module")
def gaussian_run():
    algo = js.kernels.rwmh(gaussian_logdensity, COV, 2.4 / np.sqrt(2))
    return js.sampling.run(jax.random.key(3), algo, jnp.zeros(2), num_samples=4000, num_chains=4, burn_in=500)


def test_shapes_and_acceptance(gaussian_run):
    assert gaussian_run.positions.shape == (4, 4000, 2)
    assert gaussian_run.acceptance_rate.shape == (4,)
    assert gaussian_run.divergences is None
    assert np.all((gaussian_run.acceptance_rate > 0) & (gaussian_run.acceptance_rate < 1))


def test_gaussian_moments_within_mcse(gaussian_run):
    """Known target: means within 5 MCSE, and the variance via the draws of (x - mean)^2."""
    draws = gaussian_run.positions
    for d in range(2):
        x = draws[..., d]
        assert float(js.diagnostics.rhat(x)) < 1.01 and float(js.diagnostics.ess(x)) > 400
        mcse = float(js.diagnostics.mcse_mean(x))
        assert abs(float(jnp.mean(x)) - float(MEAN[d])) < 5 * mcse
        squared = (x - MEAN[d]) ** 2
        assert abs(float(jnp.mean(squared)) - float(COV[d, d])) < 5 * float(js.diagnostics.mcse_mean(squared))


def test_proposal_is_n_x_scale2_cov():
    """One step from a flat target accepts every proposal, so the increments are the proposal noise."""
    cov = jnp.array([[4.0, 1.0], [1.0, 2.0]])
    algo = js.kernels.rwmh(lambda x: jnp.zeros(()), cov, 2.0)
    state = algo.init(jnp.zeros(2))
    keys = jax.random.split(jax.random.key(0), 20000)
    increments = jax.vmap(lambda k: algo.step(k, state)[0].position)(keys)
    empirical = np.cov(np.asarray(increments).T)
    # Wishart-based tolerance: sd of a sample covariance entry is about sqrt((s_ij^2 + s_ii s_jj) / n).
    target = 4.0 * np.asarray(cov)
    sd = np.sqrt((target**2 + np.outer(np.diag(target), np.diag(target))) / 20000)
    assert np.all(np.abs(empirical - target) < 5 * sd)


def test_chain_draws_do_not_depend_on_the_number_of_chains():
    algo = js.kernels.rwmh(gaussian_logdensity, COV, 1.0)
    one = js.sampling.run(jax.random.key(7), algo, jnp.zeros(2), num_samples=200, num_chains=1, burn_in=50)
    many = js.sampling.run(jax.random.key(7), algo, jnp.zeros(2), num_samples=200, num_chains=5, burn_in=50)
    if jax.default_backend() == "cpu":
        np.testing.assert_array_equal(one.positions[0], many.positions[0])
    else:
        # A GPU may round a batched operation in the last bit differently for another batch size (the sampling
        # docstring). The chain is the same when every accept decision is: then the positions differ only by
        # rounding over 250 steps of O(1) increments (~1e-14), while another key or one flipped decision moves
        # them by O(0.1).
        np.testing.assert_allclose(one.positions[0], many.positions[0], rtol=0, atol=1e-10)


@pytest.mark.slow  # over 9 s of the default suite on the 2-core machine; CI runs it (-m slow)
def test_chains_run_in_groups_draw_what_they_draw_side_by_side():
    """Many chains run as sequential groups (sampling.CHAINS_PER_GROUP); here 7 chains in groups of at most 3,
    padded to 9, against all 7 at once, with per-chain starting points."""
    algo = js.kernels.rwmh(gaussian_logdensity, COV, 1.0)
    starts = jnp.arange(14.0).reshape(7, 2) / 7.0
    together = js.sampling._run(jax.random.key(3), algo, starts, 130, 7, 20, None, None, 10**6)
    grouped = js.sampling._run(jax.random.key(3), algo, starts, 130, 7, 20, None, None, 3)
    assert grouped.positions.shape == (7, 130, 2)
    for field in ("positions", "logdensity", "acceptance_rate"):
        np.testing.assert_array_equal(getattr(grouped, field), getattr(together, field))


@pytest.mark.slow  # over 9 s of the default suite on the 2-core machine; CI runs it (-m slow)
def test_block_size_is_a_static_argument_of_the_key_scheme():
    """``block_size`` is an argument, not a module global read at trace time: a blocked kernel's draws follow it
    (block b's noise is keyed fold_in(phase_key, b), so other blocks are other draws), the chunked host loop
    draws the same as ``run`` for the same value, and a value that is not a positive int is refused."""
    algo = js.kernels.rwmh(gaussian_logdensity, COV, 1.0)
    kwargs = dict(num_samples=40, num_chains=2, burn_in=24)
    small = js.sampling.run(jax.random.key(5), algo, jnp.zeros(2), block_size=16, **kwargs)
    default = js.sampling.run(jax.random.key(5), algo, jnp.zeros(2), **kwargs)
    assert not np.array_equal(small.positions, default.positions)
    chunked = js.sampling.run_in_chunks(jax.random.key(5), algo, jnp.zeros(2), block_size=16, chunk_seconds=0,
                                        **kwargs)
    np.testing.assert_array_equal(chunked.positions, small.positions)
    for bad in (0, 2.0, True):
        with pytest.raises(ValueError, match="block_size"):
            js.sampling.run(jax.random.key(5), algo, jnp.zeros(2), block_size=bad, **kwargs)


def test_per_chain_initial_positions_and_bad_shapes():
    algo = js.kernels.rwmh(gaussian_logdensity, COV, 1.0)
    starts = jnp.array([[0.0, 0.0], [5.0, 5.0], [-5.0, 5.0]])
    out = js.sampling.run(jax.random.key(0), algo, starts, num_samples=10, num_chains=3)
    assert out.positions.shape == (3, 10, 2)
    with pytest.raises(ValueError, match="num_chains"):
        js.sampling.run(jax.random.key(0), algo, starts, num_samples=10, num_chains=4)
    with pytest.raises(ValueError, match="num_samples"):
        js.sampling.run(jax.random.key(0), algo, starts[0], num_samples=0, num_chains=4)


def test_non_finite_proposals_are_always_rejected():
    """Target: half-normal on x0 > 0 (-inf below), NaN where x1 > 3. No draw may leave the support."""

    def logdensity(x):
        value = jnp.where(x[0] > 0, -0.5 * jnp.sum(x**2), -jnp.inf)
        return jnp.where(x[1] > 3.0, jnp.nan, value)

    algo = js.kernels.rwmh(logdensity, jnp.eye(2), 3.0)
    out = js.sampling.run(jax.random.key(1), algo, jnp.array([1.0, 0.0]), num_samples=3000, num_chains=2)
    assert np.all(out.positions[..., 0] > 0) and np.all(out.positions[..., 1] <= 3.0)
    assert np.all(np.isfinite(out.logdensity))


def test_compiles_once_across_datasets_and_scales(eight):
    traces = []

    def counting_marginal(position, data, prior):
        traces.append(1)
        return js.models.marginal_loglik(position[0], position[1], data) + position[1]

    start = jnp.array([8.0, 1.8])
    for shift, scale in [(0.0, 2.0), (3.0, 1.5), (-2.0, 2.5)]:
        data = js.data.Schools(eight.y + shift, eight.sigma)
        density = js.models.LogDensity(counting_marginal, data, js.models.make_prior("flat"), "marginal")
        algo = js.kernels.rwmh(density, jnp.eye(2), scale)
        js.sampling.run(jax.random.key(0), algo, start, num_samples=20, num_chains=2, burn_in=5)
    first = len(traces)
    assert first > 0
    # The later calls reused the compiled code: the log-density was not traced again.
    assert len(traces) == first


@pytest.mark.slow  # over 9 s of the default suite on the 2-core machine; CI runs it (-m slow)
def test_jit_and_eager_agree_and_vmap_over_datasets(eight):
    def acceptance(y, key):
        data = js.data.Schools(y, eight.sigma)
        density = js.models.marginal_logdensity(data)
        algo = js.kernels.rwmh(density, jnp.diag(jnp.array([20.0, 0.5])), 2.0)
        return js.sampling.run(key, algo, jnp.array([8.0, 1.8]), num_samples=100, num_chains=2, burn_in=10).positions

    key = jax.random.key(5)
    eager = acceptance(eight.y, key)
    jitted = jax.jit(acceptance)(eight.y, key)
    np.testing.assert_allclose(eager, jitted, rtol=1e-12)
    ys = jnp.stack([eight.y, eight.y + 10.0])
    batched = jax.vmap(acceptance, in_axes=(0, None))(ys, key)
    np.testing.assert_allclose(batched[0], eager, rtol=1e-12)
    np.testing.assert_allclose(batched[1], acceptance(ys[1], key), rtol=1e-12)


def test_float32_draws_stay_float32():
    algo = js.kernels.rwmh(gaussian_logdensity, COV.astype(jnp.float32), 1.0)
    out = js.sampling.run(jax.random.key(0), algo, jnp.zeros(2, jnp.float32), num_samples=10, num_chains=2)
    assert out.positions.dtype == jnp.float32


def test_blackjax_kernel_runs_in_our_driver():
    blackjax = pytest.importorskip("blackjax")
    algo = blackjax.normal_random_walk(gaussian_logdensity, 2.4 / np.sqrt(2) * jnp.linalg.cholesky(COV))
    out = js.sampling.run(jax.random.key(11), algo, jnp.zeros(2), num_samples=4000, num_chains=4, burn_in=500)
    x = out.positions[..., 0]
    assert float(js.diagnostics.rhat(x)) < 1.01
    assert abs(float(jnp.mean(x)) - 1.0) < 5 * float(js.diagnostics.mcse_mean(x))


def test_our_kernel_runs_in_blackjax_loop():
    blackjax = pytest.importorskip("blackjax")
    algo = js.kernels.rwmh(gaussian_logdensity, COV, 1.7)
    state = algo.init(jnp.zeros(2))
    _, history = blackjax.util.run_inference_algorithm(
        rng_key=jax.random.key(2), inference_algorithm=algo, num_steps=8000, initial_state=state
    )
    states, infos = history
    x = states.position[1000:, 0][None]
    assert np.asarray(infos.acceptance_rate).mean() > 0.1
    assert abs(float(jnp.mean(x)) - 1.0) < 5 * float(js.diagnostics.mcse_mean(x))
    # Marginal distribution check against the exact normal (indicator MCSE at the quartiles).
    for q in (0.25, 0.5, 0.75):
        cut = stats.norm.ppf(q, 1.0, np.sqrt(2.0))
        indicator = (x < cut).astype(jnp.float64)
        assert abs(float(jnp.mean(indicator)) - q) < 5 * float(js.diagnostics.mcse_mean(indicator))
