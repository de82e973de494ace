"""The kernel protocol shared by every sampler, and the Metropolis-Hastings accept step.

A kernel is BlackJAX's ``SamplingAlgorithm(init, step)``: ``init(position) -> state`` and
``step(rng_key, state) -> (state, info)``, pure functions with NamedTuple states and the key passed
in, never stored. A BlackJAX algorithm therefore runs in :func:`jaxschools.sampling.run` unchanged,
and ours runs in BlackJAX's loops.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["SamplingAlgorithm", "BlockedSamplingAlgorithm", "metropolis_accept", "accept_given_uniform"]


class SamplingAlgorithm(NamedTuple):
    """``init(position) -> state``; ``step(rng_key, state) -> (state, info)`` (BlackJAX's protocol)."""

    init: Callable
    step: Callable


class BlockedSamplingAlgorithm(NamedTuple):
    """A ``SamplingAlgorithm`` whose randomness can also be drawn for many steps at once.

    ``init`` and ``step`` are BlackJAX's protocol (so BlackJAX's loops run it). In addition,
    ``draw(rng_key, num_steps, state) -> noise`` draws the random numbers of ``num_steps`` transitions in
    one vectorised call (a pytree with a leading ``num_steps`` axis), and ``apply(noise_t, state) ->
    (state, info)`` is one transition given its noise; ``step(key, s)`` is ``apply`` of a one-step draw.
    The driver (:func:`jaxschools.sampling.run`) uses ``draw``/``apply`` where present: drawing the
    random numbers per block instead of splitting a key inside every step is what makes the random walk
    run near the speed of evaluating its log-density.
    """

    init: Callable
    step: Callable
    draw: Callable
    apply: Callable


def metropolis_accept(rng_key, log_ratio, current, proposed):
    r"""Accept ``proposed`` with probability :math:`\min(1, e^{\log r})`, else keep ``current``.

    ``log_ratio`` is the log Metropolis-Hastings ratio (target ratio plus proposal correction).
    A NaN ratio (a proposal whose log-density is NaN) and a -inf one (log-density -inf, e.g. overflow far in
    a tail) are always rejected. Kernels map a proposal log-density of +inf (an overflow or a bug in the
    density, never a place a chain should jump to and stay in forever) to -inf before calling this; a
    +inf ratio from a current state of zero density still moves the chain out of it.

    Returns ``(state, is_accepted, acceptance_rate)`` where ``state`` is ``proposed`` or ``current``
    (any pytrees of the same structure) and ``acceptance_rate = min(1, exp(log_ratio))`` (0 when
    not finite), the Rao-Blackwellised acceptance that BlackJAX also reports.
    """
    log_uniform = jnp.log(jax.random.uniform(rng_key, dtype=jnp.result_type(log_ratio)))
    return accept_given_uniform(log_uniform, log_ratio, current, proposed)


def accept_given_uniform(log_uniform, log_ratio, current, proposed):
    """:func:`metropolis_accept` with its uniform draw given (as ``log u``): for kernels whose randomness is
    drawn a block of steps at a time. Same returns."""
    log_ratio = jnp.where(jnp.isnan(log_ratio), -jnp.inf, log_ratio)
    acceptance_rate = jnp.exp(jnp.minimum(log_ratio, 0.0))
    is_accepted = log_uniform < log_ratio
    state = jax.tree_util.tree_map(lambda new, old: jnp.where(is_accepted, new, old), proposed, current)
    return state, is_accepted, acceptance_rate
