"""Warm-up adaptation: Stan's schedule, dual averaging, Welford, per-chain vmapped tuning frozen after burn-in."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from test_hmc import DATASETS, adapted_chains, check_statistical_layer

import jaxschools as js
from jaxschools.core import adaptation
from jaxschools.core.kernels.base import SamplingAlgorithm


def window_bounds(num_steps, **buffers):
    schedule = adaptation.window_schedule(num_steps, **buffers)
    slow, ends = schedule["slow"], np.flatnonzero(schedule["window_end"]) + 1
    first = int(np.argmax(slow)) if slow.any() else None
    return first, [int(e) for e in ends]


def test_schedule_is_stans():
    # 1000 steps: 75 fast, slow windows of 25, 50, 100, 200 and 500 (the last stretched), 50 fast.
    assert window_bounds(1000) == (75, [100, 150, 250, 450, 950])
    schedule = adaptation.window_schedule(1000)
    assert schedule["slow"][75:950].all() and not schedule["slow"][:75].any() and not schedule["slow"][950:].any()
    # Random-walk Metropolis averages its scale over a final interval of 200.
    assert window_bounds(1000, final_buffer=200) == (75, [100, 150, 250, 800])
    # Short warm-ups: 15% / 75% / 10%, and no windows at all below 20 steps.
    assert window_bounds(100) == (15, [90])
    assert window_bounds(10) == (None, [])
    assert adaptation.window_schedule(0)["slow"].shape == (0,)


def test_dual_averaging_finds_the_target_step_size():
    """A known acceptance curve alpha(eps) = exp(-eps) with noise: target 0.8 means eps = -log 0.8."""
    target = 0.8

    def update(state, key):
        eps = jnp.exp(state.log_step_size)
        noisy = jnp.clip(jnp.exp(-eps) + 0.1 * jax.random.normal(key), 0.0, 1.0)
        return adaptation.dual_averaging_update(state, noisy, target), None

    state, _ = jax.lax.scan(update, adaptation.dual_averaging_init(1.0), jax.random.split(jax.random.key(0), 4000))
    np.testing.assert_allclose(float(jnp.exp(state.log_step_size_avg)), -np.log(target), rtol=0.05)
    # A NaN acceptance (a blown-up trajectory) counts as a rejection: the step shrinks.
    start = adaptation.dual_averaging_init(1.0)
    assert float(adaptation.dual_averaging_update(start, jnp.nan, target).log_step_size) < float(start.mu)


def test_welford_and_the_regularised_estimate():
    x = np.asarray(jax.random.normal(jax.random.key(1), (300, 3))) * np.array([0.01, 1.0, 100.0]) + 5.0
    for dense in (False, True):
        state = adaptation.welford_init(3, dense, jnp.float64)
        state, _ = jax.lax.scan(lambda s, row: (adaptation.welford_update(s, row), None), state, jnp.asarray(x))
        covariance = np.cov(x.T) if dense else np.var(x, axis=0, ddof=1)
        np.testing.assert_allclose(state.mean, x.mean(axis=0), rtol=1e-12)
        np.testing.assert_allclose(state.m2 / 299, covariance, rtol=1e-10, atol=1e-12 * np.abs(covariance).max())
        previous = jnp.array([2.0, 3.0, 4.0])
        previous = jnp.diag(previous) if dense else previous
        expected = 300 / 305 * covariance + 5 / 305 * 1e-3 * np.asarray(previous)
        np.testing.assert_allclose(adaptation.welford_covariance(state, previous), expected, rtol=1e-10)
    # Too few draws: keep the previous metric.
    few = adaptation.welford_update(adaptation.welford_init(3, False, jnp.float64), jnp.ones(3))
    np.testing.assert_array_equal(adaptation.welford_covariance(few, jnp.ones(3)), jnp.ones(3))


class Probe(NamedTuple):
    position: jax.Array


class ProbeInfo(NamedTuple):
    acceptance_rate: jax.Array


def _probe_init(position):
    return Probe(position)


def _probe_step(rng_key, state, step_size, inverse_mass_matrix):
    """A fake kernel for watching the tuning: its draw is (x1, x2, step size, first metric entry).

    x1, x2 are independent N(0, 1) and N(0, 16) draws, whose variances the windows should learn; the
    "acceptance" is uniform below step size 0.5 and 0 above, so dual averaging settles near 0.5.
    """
    key_draw, key_accept = jax.random.split(rng_key)
    draw = jax.random.normal(key_draw, (2,)) * jnp.array([1.0, 4.0])
    position = jnp.concatenate([draw, jnp.stack([step_size, inverse_mass_matrix[0]])])
    return Probe(position), ProbeInfo(jnp.where(step_size < 0.5, 1.0, 0.0) * jax.random.uniform(key_accept))


PROBE = SamplingAlgorithm(jax.tree_util.Partial(_probe_init),
                          jax.tree_util.Partial(_probe_step, step_size=1.0, inverse_mass_matrix=jnp.ones(4)))


def test_the_kept_draws_use_the_frozen_parameters():
    warmup = adaptation.window_adaptation(1.0, jnp.ones(4), target_accept=0.3)
    out = js.sampling.run(jax.random.key(0), PROBE, jnp.zeros(4), num_samples=50, num_chains=3, burn_in=300,
                          adaptation=warmup)
    step = np.asarray(out.parameters["step_size"])
    metric = np.asarray(out.parameters["inverse_mass_matrix"])
    # Every kept step ran with exactly the frozen (averaged) step size and metric of its own chain.
    np.testing.assert_array_equal(out.positions[..., 2], np.broadcast_to(step[:, None], (3, 50)))
    np.testing.assert_array_equal(out.positions[..., 3], np.broadcast_to(metric[:, None, 0], (3, 50)))
    assert np.all((step > 0.05) & (step < 0.9)) and len(set(step.tolist())) == 3  # tuned, per chain
    # The windows learnt the variances (1, 16) of the first two coordinates.
    np.testing.assert_allclose(metric[:, :2].mean(0), [1.0, 16.0], rtol=0.3)
    # Without adaptation the built parameters are used throughout.
    plain = js.sampling.run(jax.random.key(0), PROBE, jnp.zeros(4), num_samples=5, num_chains=2, burn_in=10)
    assert plain.parameters is None and np.all(np.asarray(plain.positions[..., 2:]) == 1.0)
    # burn_in = 0: nothing to learn from, the initial values are frozen.
    none = js.sampling.run(jax.random.key(0), PROBE, jnp.zeros(4), num_samples=3, num_chains=2, adaptation=warmup)
    np.testing.assert_array_equal(none.parameters["step_size"], [1.0, 1.0])


def test_each_chain_adapts_on_its_own_draws_under_vmap():
    """Chain c's warm-up and draws depend only on fold_in(key, c): the same with 1 chain or 3 beside it."""
    warmup = adaptation.window_adaptation(1.0, jnp.ones(4), target_accept=0.3)
    one, three = (
        js.sampling.run(jax.random.key(9), PROBE, jnp.zeros(4), num_samples=20, num_chains=n, burn_in=300,
                        adaptation=warmup)
        for n in (1, 3)
    )
    np.testing.assert_array_equal(one.positions[0], three.positions[0])
    for name in ("step_size", "inverse_mass_matrix"):
        np.testing.assert_array_equal(one.parameters[name][0], three.parameters[name][0])

    # The whole adapted run also vmaps over a batch of settings (a sweep), with the chains inside.
    def tuned(step_size):
        warm = adaptation.window_adaptation(step_size, jnp.ones(4), target_accept=0.3)
        return js.sampling.run(jax.random.key(9), PROBE, jnp.zeros(4), num_samples=5, num_chains=3, burn_in=300,
                               adaptation=warm).parameters["step_size"]

    batched = jax.vmap(tuned)(jnp.array([1.0, 0.2]))
    assert batched.shape == (2, 3)
    np.testing.assert_allclose(batched[0], three.parameters["step_size"], rtol=1e-12)


def test_adapted_rwmh_targets_its_acceptance_and_matches_the_exact_posterior():
    samples, theta = adapted_chains("rwmh", "marginal", num_samples=4000, burn_in=1000, adapt=True)
    check_statistical_layer(samples, theta, "marginal")
    # Dual averaging aims at 0.35 during warm-up; the averaged final scale accepts a little less or more.
    rates = np.asarray(samples.acceptance_rate)
    assert rates.shape == (len(DATASETS), 4) and np.all((rates > 0.2) & (rates < 0.5))
