r"""The Euclidean-Gaussian kinetic energy and the leapfrog integrator shared by HMC and NUTS.

Hamiltonian Monte Carlo augments a position :math:`x` with a momentum :math:`p \sim N(0, M)` and
simulates the dynamics of

.. math:: H(x, p) = -\log \pi(x) + K(p), \qquad K(p) = \tfrac12 p^T M^{-1} p

(Neal 2011, section 5.2; Betancourt 2017, section 4). Everything here is written in terms of the
*inverse* mass matrix :math:`M^{-1}`, because that is what warm-up estimates (the posterior covariance,
Stan reference manual, "HMC algorithm parameters") and what the dynamics need: the velocity is
:math:`\dot x = M^{-1} p`. ``inverse_mass_matrix`` is either a (d,) vector (a diagonal metric) or a
(d, d) matrix (a dense one); the choice is made on the array's rank, i.e. at trace time.

The leapfrog (velocity Verlet) step of size :math:`\epsilon` is

.. math:: p_{1/2} = p + \tfrac{\epsilon}{2} \nabla \log \pi(x), \quad
          x' = x + \epsilon M^{-1} p_{1/2}, \quad
          p' = p_{1/2} + \tfrac{\epsilon}{2} \nabla \log \pi(x'),

volume-preserving and time-reversible (a negative :math:`\epsilon` integrates backwards in time), with
an energy error that stays bounded, :math:`O(\epsilon^2)`, on stable trajectories (Neal 2011, 5.2.3;
Leimkuhler & Reich 2004). Each step costs one evaluation of the log-density and its gradient; the value
at the new point is cached, so a trajectory of L steps costs L gradient evaluations.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

__all__ = [
    "IntegratorState",
    "kinetic_energy",
    "velocity",
    "sample_momentum",
    "leapfrog",
    "integrator_state",
    "DIVERGENCE_THRESHOLD",
    "check_step_size",
]

# An energy error H(end) - H(start) above this many nats is a divergence: the integrator has left the
# stable region (Betancourt 2017, section 6.2). Stan uses the same 1000.
DIVERGENCE_THRESHOLD = 1000.0


def check_step_size(step_size) -> None:
    """Refuse a concrete step size that is not a finite number > 0 (traced ones are the caller's)."""
    if isinstance(step_size, (int, float)) and not (math.isfinite(step_size) and step_size > 0):
        raise ValueError(f"step_size must be a finite number > 0; got {step_size}")


class IntegratorState(NamedTuple):
    """A point of phase space with its cached log-density and gradient."""

    position: jax.Array
    momentum: jax.Array
    logdensity: jax.Array
    logdensity_grad: jax.Array


def velocity(momentum, inverse_mass_matrix):
    r""":math:`M^{-1} p` for a diagonal (d,) or dense (d, d) inverse mass matrix."""
    if inverse_mass_matrix.ndim == 1:
        return inverse_mass_matrix * momentum
    return inverse_mass_matrix @ momentum


def kinetic_energy(momentum, inverse_mass_matrix):
    r""":math:`K(p) = \tfrac12 p^T M^{-1} p` (the Gaussian kinetic energy, constants dropped)."""
    return 0.5 * jnp.sum(momentum * velocity(momentum, inverse_mass_matrix))


def sample_momentum(rng_key, position, inverse_mass_matrix):
    r"""A draw :math:`p \sim N(0, M)` with :math:`M = (M^{-1})^{-1}`.

    Diagonal: :math:`p_i = z_i / \sqrt{M^{-1}_{ii}}`. Dense: with :math:`M^{-1} = L L^T`,
    :math:`p = L^{-T} z` has covariance :math:`L^{-T} L^{-1} = M`, so M itself is never formed.
    """
    z = jax.random.normal(rng_key, position.shape, dtype=position.dtype)
    if inverse_mass_matrix.ndim == 1:
        return z / jnp.sqrt(inverse_mass_matrix)
    factor = jnp.linalg.cholesky(inverse_mass_matrix)
    return jax.scipy.linalg.solve_triangular(factor.T, z, lower=False)


def integrator_state(position, momentum, logdensity_fn: Callable) -> IntegratorState:
    """Phase-space point at (position, momentum), evaluating the log-density and its gradient once."""
    logdensity, grad = jax.value_and_grad(logdensity_fn)(position)
    return IntegratorState(position, momentum, logdensity, grad)


def leapfrog(state: IntegratorState, step_size, logdensity_fn: Callable, inverse_mass_matrix) -> IntegratorState:
    """One leapfrog step of size ``step_size`` (negative: backwards in time). One gradient evaluation."""
    half = 0.5 * step_size
    momentum = state.momentum + half * state.logdensity_grad
    position = state.position + step_size * velocity(momentum, inverse_mass_matrix)
    logdensity, grad = jax.value_and_grad(logdensity_fn)(position)
    momentum = momentum + half * grad
    return IntegratorState(position, momentum, logdensity, grad)


def __dir__():
    # The public names only, not the imports (``dir(js.diagnostics)`` lists no ``jax`` or ``jnp``).
    return list(__all__)
