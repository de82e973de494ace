"""Every kernel whose step is below floating-point resolution is caught as frozen (issue #13, finding 4).

With a step of 1e-300 nothing moves: random-walk Metropolis proposes x + 1e-300 z == x, and a leapfrog step
of 1e-300 leaves (position, energy) unchanged, so every proposal is accepted and every chain is constant.
``diagnostics.frozen_chains`` (what ``analysis`` flags with) catches every chain of every kernel, and they
are constant, so their ESS and R-hat are undefined (tests/test_diagnostics.py). A two-dimensional standard normal target and tiny sizes keep compilation short:
this tests the flag on each kernel's output, not the kernels; the whole command line is tested on such a run
in tests/test_cli.py.
"""

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

from jaxschools import diagnostics  # noqa: E402
from jaxschools.kernels import hmc, nuts, rwmh  # noqa: E402


def _target(x):
    return -0.5 * jnp.sum(x**2)


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
