"""Streaming summaries (``sampling.run(..., stream=...)``) against the same draws kept, summarised by numpy.

The oracle is the kept-draws run with the same key (the streaming run summarises exactly those draws) and an
independent numpy implementation of each documented estimator; the batch-means ESS is also held against
ArviZ's ESS of the mean, and the memory bound is read from XLA's own memory analysis of the compiled program.
"""

from __future__ import annotations

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxschools as js
from jaxschools.core import adaptation, sampling, streaming

EDGES = np.stack([np.linspace(-20.0, 30.0, 26), np.linspace(-4.0, 5.0, 26)])
NUM_CHAINS, NUM_SAMPLES, BURN_IN, NUM_BATCHES = 5, 3000, 100, 6  # 3000 = 46 blocks of 64 + 56: a partial block


def _statistics(x):
    return {"tau": jnp.exp(x[1]), "mu_above_10": (x[0] > 10.0).astype(x.dtype)}


STREAM = streaming.Stream(num_batches=NUM_BATCHES, histogram_edges=EDGES, statistics=_statistics)


@pytest.fixture(scope="module")
def target():
    data = js.data.eight_schools()
    logdensity = js.models.marginal_logdensity(data)
    fit = js.laplace.fit(logdensity, js.laplace.default_init(data))
    return logdensity, fit


@pytest.fixture(scope="module")
def pair(target):
    logdensity, fit = target
    algo = js.kernels.rwmh(logdensity, fit.cov, 2.0)
    key = jax.random.key(5)
    kwargs = dict(num_samples=NUM_SAMPLES, num_chains=NUM_CHAINS, burn_in=BURN_IN)
    kept = sampling.run(key, algo, fit.mode, **kwargs)
    summary = sampling.run(key, algo, fit.mode, stream=STREAM, **kwargs)
    return kept, summary


def _quantities(positions):
    """Numpy: position coordinates, then the statistics in their pytree (sorted-key) order."""
    return np.concatenate([positions, (positions[..., :1] > 10.0).astype(float), np.exp(positions[..., 1:2])], axis=-1)


def test_moments_histogram_and_statistics_are_those_of_the_kept_draws(pair):
    kept, summary = pair
    x = _quantities(np.asarray(kept.positions))
    flat = x.reshape(-1, x.shape[-1])
    np.testing.assert_allclose(summary.mean, flat.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(summary.variance, flat.var(axis=0, ddof=1), rtol=1e-10)
    np.testing.assert_allclose(summary.chain_mean, x.mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(summary.chain_variance, x.var(axis=1, ddof=1), rtol=1e-10)
    np.testing.assert_allclose(summary.statistics_mean["tau"], flat[:, 3].mean(), rtol=1e-12)
    np.testing.assert_allclose(summary.statistics_mean["mu_above_10"], flat[:, 2].mean(), rtol=1e-12)
    np.testing.assert_allclose(summary.acceptance_rate, kept.acceptance_rate, rtol=1e-12)
    for d in range(2):
        bins = np.concatenate([[-np.inf], EDGES[d], [np.inf]])
        expected = np.histogram(np.asarray(kept.positions)[..., d].ravel(), bins)[0]
        np.testing.assert_array_equal(np.asarray(summary.histogram[d]), expected)
    assert summary.histogram.sum() == 2 * NUM_CHAINS * NUM_SAMPLES


def test_batch_means_and_split_rhat_follow_their_definitions(pair):
    kept, summary = pair
    x = _quantities(np.asarray(kept.positions))
    blocks_per_batch = (NUM_SAMPLES // sampling.BLOCK_SIZE) // NUM_BATCHES
    length = blocks_per_batch * sampling.BLOCK_SIZE
    assert summary.batch_size == length
    batch_means = x[:, : NUM_BATCHES * length].reshape(NUM_CHAINS, NUM_BATCHES, length, -1).mean(axis=2)
    sigma2 = (length * batch_means.var(axis=1, ddof=1)).mean(axis=0)
    flat = x.reshape(-1, x.shape[-1])
    total = flat.shape[0]
    np.testing.assert_allclose(summary.asymptotic_variance, sigma2, rtol=1e-9)
    np.testing.assert_allclose(summary.ess, total * flat.var(axis=0, ddof=1) / sigma2, rtol=1e-9)
    np.testing.assert_allclose(summary.mcse, np.sqrt(sigma2 / total), rtol=1e-9)
    np.testing.assert_allclose(summary.statistics_mcse["tau"], np.sqrt(sigma2[3] / total), rtol=1e-9)
    # Classical split R-hat (BDA3 11.4): 2 * chains halves of n = NUM_SAMPLES / 2 draws.
    n = NUM_SAMPLES // 2
    halves = np.concatenate([x[:, :n], x[:, n:]], axis=0)
    within = halves.var(axis=1, ddof=1).mean(axis=0)
    between_over_n = halves.mean(axis=1).var(axis=0, ddof=1)
    np.testing.assert_allclose(summary.rhat, np.sqrt(((n - 1) / n * within + between_over_n) / within), rtol=1e-9)


@pytest.mark.slow  # over 9 s of the default suite on the 2-core machine; CI runs it (-m slow)
def test_batch_means_ess_agrees_with_arviz_on_a_long_run(target):
    """64 chains x 6,400 draws, 20 batches of 320 steps. The batch-means sigma^2 pools 64 x 19 degrees of
    freedom (relative standard error sqrt(2 / 1216) = 4%) and ArviZ's estimate carries a similar error, so
    their ratio is within 15% (about three standard errors of the difference) when both are right; batches
    30 times longer than log tau's autocorrelation time keep the batch-means bias near 3%."""
    logdensity, fit = target
    algo = js.kernels.rwmh(logdensity, fit.cov, 2.0)
    key = jax.random.key(17)
    kwargs = dict(num_samples=6400, num_chains=64, burn_in=500)
    kept = sampling.run(key, algo, fit.mode, **kwargs)
    summary = sampling.run(key, algo, fit.mode, stream=streaming.Stream(num_batches=20), **kwargs)
    for d in range(2):
        reference = float(az.ess(np.asarray(kept.positions)[..., d], method="mean"))
        assert abs(float(summary.ess[d]) / reference - 1.0) < 0.15, (d, float(summary.ess[d]), reference)
        assert abs(float(summary.rhat[d]) - 1.0) < 0.01


@pytest.mark.slow  # over 9 s of the default suite on the 2-core machine; CI runs it (-m slow)
def test_memory_does_not_grow_with_the_number_of_draws(target):
    """XLA's memory analysis of the compiled program: streaming 100 chains uses the same temporary and output
    memory for 2,000 and 200,000 draws each, where keeping the draws needs 100 x 200,000 x 2 doubles."""
    logdensity, fit = target
    algo = js.kernels.rwmh(logdensity, fit.cov, 2.0)

    def footprint(num_samples, stream):
        fn = jax.jit(lambda key: sampling.run(key, algo, fit.mode, num_samples=num_samples, num_chains=100,
                                              stream=stream))
        analysis = fn.lower(jax.random.key(0)).compile().memory_analysis()
        return analysis.temp_size_in_bytes + analysis.output_size_in_bytes

    short, long = footprint(2_000, STREAM), footprint(200_000, STREAM)
    assert long <= 1.1 * short, (short, long)
    assert footprint(200_000, None) > 100 * long  # the kept draws: 320 MB


@pytest.mark.slow  # over 9 s of the default suite on the 2-core machine; CI runs it (-m slow)
def test_streaming_with_adaptation_and_divergences(target):
    logdensity, fit = target
    nuts = js.kernels.nuts(logdensity, 0.5, jnp.diag(fit.cov))
    key = jax.random.key(2)
    kwargs = dict(num_samples=200, num_chains=3, burn_in=150,
                  adaptation=adaptation.window_adaptation(1.0, jnp.diag(fit.cov)))
    kept = sampling.run(key, nuts, fit.mode, **kwargs)
    summary = sampling.run(key, nuts, fit.mode, stream=streaming.Stream(num_batches=2), **kwargs)
    np.testing.assert_array_equal(summary.divergences, kept.divergences)
    np.testing.assert_allclose(summary.chain_mean, np.asarray(kept.positions).mean(axis=1), rtol=1e-10)
    assert summary.histogram is None and summary.statistics_mean is None
    assert summary.batch_size == 64 and np.all(np.isfinite(summary.ess))  # 3 whole blocks: 2 batches of one


def test_too_few_draws_for_batches_and_bad_streams(target):
    logdensity, fit = target
    algo = js.kernels.rwmh(logdensity, fit.cov, 2.0)
    key = jax.random.key(0)
    summary = sampling.run(key, algo, fit.mode, num_samples=100, num_chains=2, stream=streaming.Stream(num_batches=2))
    assert summary.batch_size == 0 and np.all(np.isnan(summary.ess)) and np.all(np.isfinite(summary.mean))
    with pytest.raises(ValueError, match="num_batches"):
        sampling.run(key, algo, fit.mode, num_samples=100, stream=streaming.Stream(num_batches=1))
    with pytest.raises(ValueError, match="Stream"):
        sampling.run(key, algo, fit.mode, num_samples=100, stream={"num_batches": 5})
