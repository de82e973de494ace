r"""The No-U-Turn Sampler with multinomial sampling along the trajectory, as in Stan.

Hoffman & Gelman (2014) grow a leapfrog trajectory by repeated doubling, forwards or backwards in
time at random, until it starts to turn back on itself, and then draw the next state from the points
of the trajectory. This module follows the form Stan uses (Betancourt 2017, appendix A):

* **Multinomial sampling.** Each point :math:`z_i` of the trajectory has weight
  :math:`w_i = \exp(-H(z_i))`. Within a new subtree the candidate is drawn with probability
  :math:`\propto w_i` (progressively: leaf i replaces the candidate with probability
  :math:`w_i / \sum_{k \le i} w_k`); when a subtree of total weight :math:`W_{new}` is joined to the
  old trajectory of weight :math:`W_{old}`, its candidate replaces the current one with probability
  :math:`\min(1, W_{new} / W_{old})` ("biased progressive sampling", which favours the later, farther
  points and keeps the transition reversible).
* **The generalised no-U-turn criterion** (Betancourt 2013, 2017 section A.4.2): with :math:`\rho` the
  integrated momentum of a (sub)trajectory, :math:`\int p\,dt / \epsilon`, and :math:`p^\sharp = M^{-1} p`
  at its two ends, the trajectory is turning when :math:`p^\sharp_- \cdot \rho \le 0` or
  :math:`p^\sharp_+ \cdot \rho \le 0`. It is checked on the whole trajectory after every doubling and
  on every balanced sub-subtree of a new subtree as it completes; a subtree that turns inside, or
  diverges (energy error > 1000), is discarded whole and the trajectory stops. :math:`\rho` is estimated
  by the trapezoid rule over the leapfrog points, :math:`\sum_i p_i - (p_- + p_+)/2`, rather than by the
  plain sum, which counts the end points twice as heavily as the continuous integral does; the rule is
  symmetric under time reversal, so the transition stays reversible. On the non-centered eight schools
  (10 seeds, Stan's warm-up) the plain sum gave 9.6 gradients per draw and 0.061 ESS per gradient for log
  tau, the trapezoid 8.9 and 0.065.
* **Acceptance statistic** for step-size adaptation: the mean over all leapfrog steps of the
  transition of :math:`\min(1, \exp(H_0 - H_i))` (Hoffman & Gelman 2014, section 3.2.1).

**Implementation.** The recursive tree of Hoffman & Gelman is built iteratively with two
``lax.while_loop`` s (Phan, Pradhan & Jankowiak 2019 describe the iterative form): the outer one
doubles the trajectory, the inner one grows the new subtree of :math:`2^d` leaves one leapfrog step at
a time, so nothing is recursive and memory is O(max_depth x d) per chain. The balanced sub-subtrees
that end at leaf n are those of sizes :math:`2^1 .. 2^t`, t the number of trailing one bits of n. Their
first leaves are all even, and at any moment the first leaves of the still-open sub-subtrees have
distinct numbers of one bits; so an even leaf s stores its velocity and the momentum sum before it (plus
half its own momentum, the trapezoid's end weight) in checkpoint slot popcount(s), and an odd leaf n
checks slots popcount(n >> 1) - t + 1 .. popcount(n >> 1).
The inner loop carries only what the next leaf needs, because under ``vmap`` over chains every
carried array is selected once per leapfrog step.

Stan also checks the criterion across the seam where two subtrees are merged (each subtree extended
by the first point of the other); that extra check is not made here.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from jaxschools.core.kernels.base import BoundInit, SamplingAlgorithm
from jaxschools.core.kernels.hmc import HMCState, init
from jaxschools.core.kernels.integrators import (
    check_step_size,
    DIVERGENCE_THRESHOLD,
    IntegratorState,
    kinetic_energy,
    leapfrog,
    sample_momentum,
    velocity,
)

__all__ = ["NUTSState", "NUTSInfo", "init", "build_kernel", "nuts", "is_turning"]


# A NUTS transition starts from what an HMC one does (the position, its log-density and gradient), so the state
# and its ``init`` are HMC's; the name is kept for readers of NUTS alone.
NUTSState = HMCState


class NUTSInfo(NamedTuple):
    """Per-transition facts.

    acceptance_rate: mean of min(1, exp(H0 - H)) over the trajectory's leapfrog steps.
    is_accepted: whether the chain moved (the state drawn is not the starting point).
    is_divergent: the last subtree diverged (energy error > 1000 or not finite).
    is_turning: the trajectory stopped on the no-U-turn criterion.
    energy: the Hamiltonian at the state drawn (for E-BFMI).
    num_integration_steps: leapfrog steps, i.e. gradient evaluations, of this transition.
    tree_depth: doublings kept (Stan's ``treedepth__``; max_depth means the trajectory was cut short).
    """

    acceptance_rate: jax.Array
    is_accepted: jax.Array
    is_divergent: jax.Array
    is_turning: jax.Array
    energy: jax.Array
    num_integration_steps: jax.Array
    tree_depth: jax.Array


class _Point(NamedTuple):
    """A trajectory end: what the next leapfrog step from it needs (the log-density is not)."""

    position: jax.Array
    momentum: jax.Array
    logdensity_grad: jax.Array


class _Candidate(NamedTuple):
    """A point the transition may move to: the new state and its energy."""

    state: HMCState
    energy: jax.Array


class _Subtree(NamedTuple):
    """Carry of the inner loop: a new subtree grown leaf by leaf from one end of the trajectory."""

    leaf: jax.Array  # leaves built so far
    tip: _Point  # the last of them
    candidate: _Candidate
    log_weight: jax.Array  # log of the sum of exp(H0 - H) over its leaves
    momentum_sum: jax.Array
    checkpoint_velocity: jax.Array  # (max_depth, d)
    checkpoint_momentum_sum: jax.Array  # (max_depth, d)
    sum_acceptance: jax.Array
    is_turning: jax.Array
    is_divergent: jax.Array


class _Trajectory(NamedTuple):
    """Carry of the outer loop: the trajectory so far, doubled once per iteration."""

    left: _Point  # earliest in time
    right: _Point  # latest
    candidate: _Candidate
    log_weight: jax.Array
    momentum_sum: jax.Array
    moved: jax.Array
    depth: jax.Array
    num_steps: jax.Array
    sum_acceptance: jax.Array
    is_turning: jax.Array
    is_divergent: jax.Array


def is_turning(velocity_left, velocity_right, integrated_momentum):
    r"""Generalised no-U-turn criterion: :math:`p^\sharp_- \cdot \rho \le 0` or :math:`p^\sharp_+ \cdot \rho \le 0`.

    ``integrated_momentum`` is :math:`\rho`, the trapezoid estimate :math:`\sum_i p_i - (p_- + p_+)/2`.
    """
    return (jnp.sum(velocity_left * integrated_momentum) <= 0) | (jnp.sum(velocity_right * integrated_momentum) <= 0)


def _where(condition, new, old):
    return jax.tree_util.tree_map(lambda a, b: jnp.where(condition, a, b), new, old)


def _step(rng_key, state: HMCState, logdensity_fn: Callable, step_size, inverse_mass_matrix, max_depth: int = 10):
    dtype = state.position.dtype
    inverse_mass_matrix = jnp.asarray(inverse_mass_matrix, dtype)
    step_size = jnp.asarray(step_size, dtype)
    key_momentum, key_direction, key_merge, key_leaf = jax.random.split(rng_key, 4)
    # One random bit per doubling for its direction and one uniform per merge, drawn up front; the
    # per-leaf uniforms are drawn in the loop because how many leaves a transition needs is unknown.
    direction_bits = jax.random.bits(key_direction, (), jnp.uint32)
    log_merge_uniforms = jnp.log(jax.random.uniform(key_merge, (max_depth,), dtype))
    momentum = sample_momentum(key_momentum, state.position, inverse_mass_matrix)
    energy0 = -state.logdensity + kinetic_energy(momentum, inverse_mass_matrix)
    slots = jnp.arange(max_depth, dtype=jnp.int32)
    false = jnp.asarray(False)

    def grow(tree: _Subtree, signed_step, first_step) -> _Subtree:
        """One leapfrog step past the subtree's tip: progressive sampling and the sub-subtree checks."""
        tip = tree.tip
        point = leapfrog(IntegratorState(tip.position, tip.momentum, jnp.zeros((), dtype), tip.logdensity_grad),
                         signed_step, logdensity_fn, inverse_mass_matrix)
        point_velocity = velocity(point.momentum, inverse_mass_matrix)
        energy = 0.5 * jnp.sum(point.momentum * point_velocity) - point.logdensity
        log_weight = energy0 - energy
        log_weight = jnp.where(jnp.isnan(log_weight), -jnp.inf, log_weight)
        # Uniform progressive sampling inside the subtree: the candidate is leaf i with prob w_i / W.
        subtree_log_weight = jnp.logaddexp(tree.log_weight, log_weight)
        log_u = jnp.log(jax.random.uniform(jax.random.fold_in(key_leaf, first_step + tree.leaf), (), dtype))
        take = log_u < log_weight - subtree_log_weight
        candidate = _Candidate(HMCState(point.position, point.logdensity, point.logdensity_grad), energy)
        candidate = _where(take, candidate, tree.candidate)
        momentum_sum = tree.momentum_sum + point.momentum

        # Balanced sub-subtrees: store at even leaves, check at odd ones (see the module docstring).
        n = tree.leaf
        even = (n & 1) == 0
        store = (even & (slots == jax.lax.population_count(n)))[:, None]
        checkpoint_velocity = jnp.where(store, point_velocity, tree.checkpoint_velocity)
        checkpoint_momentum_sum = jnp.where(
            store, tree.momentum_sum + 0.5 * point.momentum, tree.checkpoint_momentum_sum
        )
        trailing_ones = jax.lax.population_count(n ^ (n + 1)) - 1
        highest = jax.lax.population_count(jnp.right_shift(n, 1))
        check = ~even & (slots <= highest) & (slots > highest - trailing_ones)
        partial_sums = momentum_sum - 0.5 * point.momentum - checkpoint_momentum_sum  # trapezoid rho per slot
        turned = (jnp.sum(checkpoint_velocity * partial_sums, axis=-1) <= 0) | (
            jnp.sum(partial_sums * point_velocity, axis=-1) <= 0
        )
        return _Subtree(
            leaf=n + 1,
            tip=_Point(point.position, point.momentum, point.logdensity_grad),
            candidate=candidate,
            log_weight=subtree_log_weight,
            momentum_sum=momentum_sum,
            checkpoint_velocity=checkpoint_velocity,
            checkpoint_momentum_sum=checkpoint_momentum_sum,
            sum_acceptance=tree.sum_acceptance + jnp.exp(jnp.minimum(log_weight, 0.0)),
            is_turning=jnp.any(check & turned),
            is_divergent=-log_weight > DIVERGENCE_THRESHOLD,
        )

    def double(t: _Trajectory) -> _Trajectory:
        """Grow a subtree as long as the trajectory, forwards or backwards, and merge it if it is valid."""
        forward = (jnp.right_shift(direction_bits, t.depth.astype(jnp.uint32)) & 1) == 1
        signed_step = jnp.where(forward, step_size, -step_size)
        size = jnp.left_shift(1, t.depth)
        zeros = jnp.zeros((max_depth,) + state.position.shape, dtype)
        subtree = _Subtree(
            leaf=jnp.asarray(0, jnp.int32),
            tip=_where(forward, t.right, t.left),
            candidate=t.candidate,
            log_weight=jnp.asarray(-jnp.inf, dtype),
            momentum_sum=jnp.zeros_like(momentum),
            checkpoint_velocity=zeros,
            checkpoint_momentum_sum=zeros,
            sum_acceptance=jnp.zeros((), dtype),
            is_turning=false,
            is_divergent=false,
        )
        subtree = jax.lax.while_loop(
            lambda s: (s.leaf < size) & ~s.is_turning & ~s.is_divergent,
            lambda s: grow(s, signed_step, t.num_steps),
            subtree,
        )
        valid = ~subtree.is_turning & ~subtree.is_divergent
        # Biased progressive sampling between the old trajectory and the new subtree.
        accept = valid & (log_merge_uniforms[t.depth] < subtree.log_weight - t.log_weight)
        left = _where(valid & ~forward, subtree.tip, t.left)
        right = _where(valid & forward, subtree.tip, t.right)
        momentum_sum = t.momentum_sum + subtree.momentum_sum
        turning = is_turning(
            velocity(left.momentum, inverse_mass_matrix), velocity(right.momentum, inverse_mass_matrix),
            momentum_sum - 0.5 * (left.momentum + right.momentum)
        )
        return _Trajectory(
            left=left,
            right=right,
            candidate=_where(accept, subtree.candidate, t.candidate),
            log_weight=jnp.logaddexp(t.log_weight, subtree.log_weight),
            momentum_sum=momentum_sum,
            moved=t.moved | accept,
            depth=jnp.where(valid, t.depth + 1, t.depth),
            num_steps=t.num_steps + subtree.leaf,
            sum_acceptance=t.sum_acceptance + subtree.sum_acceptance,
            is_turning=subtree.is_turning | (valid & turning),
            is_divergent=subtree.is_divergent,
        )

    end = _Point(state.position, momentum, state.logdensity_grad)
    trajectory = _Trajectory(
        left=end,
        right=end,
        candidate=_Candidate(state, energy0),
        log_weight=jnp.zeros((), dtype),
        momentum_sum=momentum,
        moved=false,
        depth=jnp.asarray(0, jnp.int32),
        num_steps=jnp.asarray(0, jnp.int32),
        sum_acceptance=jnp.zeros((), dtype),
        is_turning=false,
        is_divergent=false,
    )
    out = jax.lax.while_loop(
        lambda t: (t.depth < max_depth) & ~t.is_turning & ~t.is_divergent, double, trajectory
    )
    info = NUTSInfo(
        acceptance_rate=out.sum_acceptance / out.num_steps,
        is_accepted=out.moved,
        is_divergent=out.is_divergent,
        is_turning=out.is_turning,
        energy=out.candidate.energy,
        num_integration_steps=out.num_steps,
        tree_depth=out.depth,
    )
    return out.candidate.state, info


def build_kernel():
    """The transition ``kernel(rng_key, state, logdensity_fn, step_size, inverse_mass_matrix, max_depth=10)``."""
    return _step


def nuts(logdensity_fn: Callable, step_size, inverse_mass_matrix, max_depth: int = 10) -> SamplingAlgorithm:
    """The No-U-Turn Sampler (multinomial, generalised criterion; Stan's variant) as a ``SamplingAlgorithm``.

    Args:
      logdensity_fn: position (d,) -> scalar log-density, differentiable with ``jax.grad``.
      step_size: leapfrog step size epsilon.
      inverse_mass_matrix: (d,) diagonal or (d, d) dense M^-1, ideally the posterior covariance.
      max_depth: at most 2^max_depth - 1 leapfrog steps per transition (Stan's default 10).

    ``step`` also accepts ``step_size=`` and ``inverse_mass_matrix=`` as keyword arguments overriding
    these (how :func:`jaxschools.core.sampling.run` applies warm-up adaptation).
    """
    if int(max_depth) < 1:
        raise ValueError(f"max_depth must be >= 1; got {max_depth}")
    check_step_size(step_size)
    return SamplingAlgorithm(
        BoundInit(init, logdensity_fn),
        jax.tree_util.Partial(
            build_kernel(),
            logdensity_fn=logdensity_fn,
            step_size=jnp.asarray(step_size),
            inverse_mass_matrix=jnp.asarray(inverse_mass_matrix),
            max_depth=int(max_depth),
        ),
    )


def __dir__():
    # The public names only, not the imports (``dir(js.diagnostics)`` lists no ``jax`` or ``jnp``).
    return list(__all__)
