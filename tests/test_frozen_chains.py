"""Every kernel whose step is below floating-point resolution is caught as frozen (issue #13, finding 4).

With a step of 1e-300 nothing moves: random-walk Metropolis proposes x + 1e-300 z == x, and a leapfrog step
of 1e-300 leaves (position, energy) unchanged, so every proposal is accepted and every chain is constant.
``diagnostics.frozen_chains`` (what ``analysis`` flags with) catches every chain of every kernel, and they
are constant, so their ESS and R-hat are undefined (tests/test_diagnostics.py). A two-dimensional standard normal target and tiny sizes keep compilation short:
this tests the flag on each kernel's output, not the kernels; the whole command line is tested on such a run
in tests/test_cli.py.

Constant chains are caught by the rounding test alone, whatever the scale. The relative test (within-chain sd
<= rtol x the posterior sd) is checked on chains that do move: random-walk Metropolis with proposals 1e-12
of the target's sd (exactly 1) moves every chain by ~1e-11, frozen; at the optimal scale, not frozen.
"""

import functools

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

from jaxschools.core import diagnostics  # noqa: E402
from jaxschools.core.kernels import hmc, nuts, rwmh  # noqa: E402


def _standard_normal(x):
    return -0.5 * jnp.sum(x**2)


_target = jax.tree_util.Partial(_standard_normal)  # a pytree (no leaves), so a step can be a jit argument

KERNELS = {
    "rwmh": lambda step: rwmh(_target, jnp.eye(2), jnp.asarray(step)),
    "hmc": lambda step: hmc(_target, jnp.asarray(step), jnp.ones(2), 2, 0.0),
    "nuts": lambda step: nuts(_target, jnp.asarray(step), jnp.ones(2), 2),
}


@pytest.mark.parametrize("kernel", list(KERNELS))
def test_a_kernel_that_cannot_move_is_frozen(kernel):
    algorithm = KERNELS[kernel](1e-300)
    step = jax.jit(algorithm.step)  # one step compiled, run eight times: cheaper than a whole sampling.run
    state = algorithm.init(jnp.asarray([0.3, -1.2]))
    draws, accepted = [], []
    for key in jax.random.split(jax.random.key(0), 8):
        state, info = step(key, state)
        draws.append(np.asarray(state.position))
        accepted.append(bool(info.is_accepted))
    draws = np.stack(draws)[None]  # (chain, draw, 2)
    assert all(accepted)  # every proposal "accepted"...
    assert np.all(draws == [0.3, -1.2])  # ...and not one draw moved
    for d in range(2):
        np.testing.assert_array_equal(diagnostics.frozen_chains(draws[..., d], 1.0), [True])
        np.testing.assert_array_equal(diagnostics.constant_chains(draws[..., d]), [True])


# --- chains that move, but far below the posterior's scale: the rtol path --------------------------------------

STARTS = [[0.3, -1.2], [-1.0, 0.5], [1.5, 1.0], [0.0, 0.0]]  # the target's sd is 1 in both coordinates


@jax.jit
@functools.partial(jax.vmap, in_axes=(None, 0, 0))
def _run_chains(algorithm, keys, starts):
    """One chain per start, one step per key: (draws, accepted). The algorithm (a pytree: the proposal's scale
    is a leaf) is an argument, so both scales below share one compilation."""

    def one(state, key):
        state, info = algorithm.step(key, state)
        return state, (state.position, info.is_accepted)

    return jax.lax.scan(one, algorithm.init(starts), keys)[1]


def _rwmh_chains(scale, num_steps=200):
    """Four chains of random-walk Metropolis, proposal N(x, scale^2 I), on the standard normal target."""
    keys = jax.random.split(jax.random.key(0), (len(STARTS), num_steps))
    draws, accepted = _run_chains(KERNELS["rwmh"](scale), keys, jnp.asarray(STARTS))
    return np.asarray(draws), np.asarray(accepted).mean(axis=1)


def test_a_chain_that_moves_only_far_below_the_posterior_scale_is_frozen():
    """Proposals 1e-12 posterior sds wide (the target's sd is exactly 1): nearly every proposal is accepted and
    every chain moves, by ~1e-11 over 200 steps, tens of thousands of ulps, so no chain is constant to rounding;
    yet none explored anything. Only the rtol comparison (within-chain sd <= 1e-3 x the posterior sd) can
    catch them; with rtol = 1e-14, below the ~1e-11 they did move, the same chains are not frozen."""
    draws, acceptance = _rwmh_chains(1e-12)
    assert np.all(acceptance > 0.9), acceptance
    for d in range(2):
        spread = draws[..., d].std(axis=1)
        assert np.all(spread > 1e-13) and np.all(spread < 1e-9), spread
        np.testing.assert_array_equal(diagnostics.constant_chains(draws[..., d]), [False] * 4)
        np.testing.assert_array_equal(diagnostics.frozen_chains(draws[..., d], 1.0), [True] * 4)
        np.testing.assert_array_equal(diagnostics.frozen_chains(draws[..., d], 1.0, rtol=1e-14), [False] * 4)


def test_a_chain_at_a_healthy_scale_is_not_frozen():
    """The same chains with proposals 2.4 / sqrt(2) sds wide (the optimal random walk's scale in two
    dimensions, Gelman, Roberts and Gilks 1996) explore the target: none is frozen."""
    draws, acceptance = _rwmh_chains(2.4 / np.sqrt(2))
    assert np.all((acceptance > 0.2) & (acceptance < 0.8)), acceptance
    for d in range(2):
        assert np.all(draws[..., d].std(axis=1) > 0.3), draws[..., d].std(axis=1)
        np.testing.assert_array_equal(diagnostics.frozen_chains(draws[..., d], 1.0), [False] * 4)
