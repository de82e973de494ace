r"""Hamiltonian Monte Carlo with a fixed or jittered number of leapfrog steps (Neal 2011).

One transition from :math:`x`:

1. draw a momentum :math:`p \sim N(0, M)`;
2. integrate Hamilton's equations for :math:`H(x, p) = -\log\pi(x) + \tfrac12 p^T M^{-1} p` with
   L leapfrog steps of size :math:`\epsilon` to :math:`(x', p')`
   (:mod:`jaxschools.core.kernels.integrators`);
3. accept :math:`x'` with probability :math:`\min(1, \exp(H(x, p) - H(x', p')))`.

The leapfrog map is volume-preserving and, composed with a momentum flip, an involution, so step 3
is an exact Metropolis-Hastings correction (Neal 2011, section 5.3.2; Duane et al. 1987); the flip is
not carried out because the kinetic energy is symmetric and the momentum is redrawn every transition.
The accept step is the one in :func:`jaxschools.core.kernels.base.metropolis_accept`.

A fixed trajectory length :math:`L\epsilon` can resonate with the target's periods (on a Gaussian,
an orbit that returns to its start gives a chain that does not move); drawing L afresh at each
transition removes the resonance (Neal 2011, section 5.4.2.2; Mackenzie 1989). With ``jitter = j``,
L is uniform on the integers in :math:`[\lceil (1-j) L_0 \rceil, \lfloor (1+j) L_0 \rfloor]` (at
least 1), whose mean is :math:`L_0`; ``jitter = 0`` is the fixed-length kernel.

A transition is *divergent* when the energy error :math:`H(x', p') - H(x, p)` exceeds
:data:`~jaxschools.core.kernels.integrators.DIVERGENCE_THRESHOLD` or is not finite: the trajectory met
curvature the step size cannot resolve, and the region it started from is under-explored
(Betancourt 2017, section 6.2).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from jaxschools.core.kernels.base import BoundInit, SamplingAlgorithm, metropolis_accept
from jaxschools.core.kernels.integrators import (
    check_step_size,
    DIVERGENCE_THRESHOLD,
    IntegratorState,
    kinetic_energy,
    leapfrog,
    sample_momentum,
)

__all__ = ["HMCState", "HMCInfo", "init", "build_kernel", "hmc", "trajectory_bounds"]


class HMCState(NamedTuple):
    """position (d,) with its cached log-density and gradient (reused by the next trajectory).

    Also the state of NUTS (:mod:`jaxschools.core.kernels.nuts`), which imports it and :func:`init` from here.
    """

    position: jax.Array
    logdensity: jax.Array
    logdensity_grad: jax.Array


class HMCInfo(NamedTuple):
    """Per-transition facts.

    acceptance_rate: min(1, exp(-energy error)), what step-size adaptation targets.
    is_accepted: the accept decision. is_divergent: energy error > 1000 or not finite.
    energy: the Hamiltonian at the state kept (for E-BFMI). num_integration_steps: L this transition
    (= gradient evaluations).
    """

    acceptance_rate: jax.Array
    is_accepted: jax.Array
    is_divergent: jax.Array
    energy: jax.Array
    num_integration_steps: jax.Array


def init(position, logdensity_fn: Callable) -> HMCState:
    """The state at ``position`` (BlackJAX's module-level ``init``; the algorithm's is :class:`BoundInit` of it)."""
    position = jnp.asarray(position)
    logdensity, grad = jax.value_and_grad(logdensity_fn)(position)
    return HMCState(position, logdensity, grad)


def trajectory_bounds(num_integration_steps, jitter):
    """Smallest and largest L when L is jittered around ``num_integration_steps`` by the fraction ``jitter``."""
    low = jnp.maximum(jnp.ceil((1.0 - jitter) * num_integration_steps), 1.0)
    high = jnp.maximum(jnp.floor((1.0 + jitter) * num_integration_steps), low)
    return low.astype(jnp.int32), high.astype(jnp.int32)


def _step(
    rng_key,
    state: HMCState,
    logdensity_fn: Callable,
    step_size,
    inverse_mass_matrix,
    num_integration_steps,
    jitter=0.0,
) -> tuple[HMCState, HMCInfo]:
    key_momentum, key_length, key_accept = jax.random.split(rng_key, 3)
    inverse_mass_matrix = jnp.asarray(inverse_mass_matrix, state.position.dtype)
    step_size = jnp.asarray(step_size, state.position.dtype)
    momentum = sample_momentum(key_momentum, state.position, inverse_mass_matrix)
    start = IntegratorState(state.position, momentum, state.logdensity, state.logdensity_grad)
    low, high = trajectory_bounds(num_integration_steps, jitter)
    length = jax.random.randint(key_length, (), low, high + 1)

    # A dynamic trip count (jitter, or a length traced from adaptation) is a while loop in XLA, and
    # vmapped chains with different L simply run to the longest one with the finished ones masked.
    end = jax.lax.fori_loop(
        0, length, lambda _, point: leapfrog(point, step_size, logdensity_fn, inverse_mass_matrix), start
    )

    energy_start = -state.logdensity + kinetic_energy(momentum, inverse_mass_matrix)
    energy_end = -end.logdensity + kinetic_energy(end.momentum, inverse_mass_matrix)
    energy_error = energy_end - energy_start
    is_divergent = ~(energy_error <= DIVERGENCE_THRESHOLD)  # NaN counts as divergent
    proposal = HMCState(end.position, end.logdensity, end.logdensity_grad)
    new_state, is_accepted, acceptance_rate = metropolis_accept(key_accept, -energy_error, state, proposal)
    energy = jnp.where(is_accepted, energy_end, energy_start)
    return new_state, HMCInfo(acceptance_rate, is_accepted, is_divergent, energy, length)


def build_kernel():
    """The transition ``kernel(rng_key, state, logdensity_fn, step_size, inverse_mass_matrix,
    num_integration_steps, jitter=0.0) -> (state, info)`` (BlackJAX's argument order)."""
    return _step


def hmc(
    logdensity_fn: Callable,
    step_size,
    inverse_mass_matrix,
    num_integration_steps: int = 16,
    jitter: float = 0.0,
) -> SamplingAlgorithm:
    """Hamiltonian Monte Carlo as a ``SamplingAlgorithm`` (Neal 2011).

    Args:
      logdensity_fn: position (d,) -> scalar log-density, differentiable with ``jax.grad``.
      step_size: leapfrog step size epsilon.
      inverse_mass_matrix: (d,) diagonal or (d, d) dense M^-1, ideally the posterior covariance.
      num_integration_steps: leapfrog steps per transition (the mean number when jittered).
      jitter: fraction in [0, 1] by which the number of steps is drawn around its mean (0: fixed).

    ``step`` also accepts ``step_size=`` and ``inverse_mass_matrix=`` as keyword arguments, which
    override the values given here: that is how :func:`jaxschools.core.sampling.run` feeds warm-up
    adaptation (:mod:`jaxschools.core.adaptation`) into the kernel.
    """
    if not 0.0 <= float(jitter) <= 1.0:
        raise ValueError(f"jitter must be in [0, 1]; got {jitter}")
    if int(num_integration_steps) < 1:
        raise ValueError(f"num_integration_steps must be >= 1; got {num_integration_steps}")
    check_step_size(step_size)
    return SamplingAlgorithm(
        BoundInit(init, logdensity_fn),
        jax.tree_util.Partial(
            build_kernel(),
            logdensity_fn=logdensity_fn,
            step_size=jnp.asarray(step_size),
            inverse_mass_matrix=jnp.asarray(inverse_mass_matrix),
            num_integration_steps=int(num_integration_steps),
            jitter=float(jitter),
        ),
    )


def __dir__():
    # The public names only, not the imports (``dir(js.diagnostics)`` lists no ``jax`` or ``jnp``).
    return list(__all__)
