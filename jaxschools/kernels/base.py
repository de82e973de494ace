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

__all__ = ["SamplingAlgorithm", "metropolis_accept"]


class SamplingAlgorithm(NamedTuple):
    """``init(position) -> state``; ``step(rng_key, state) -> (state, info)`` (BlackJAX's protocol)."""

    init: Callable
    step: Callable


def metropolis_accept(rng_key, log_ratio, current, proposed):
    r"""Accept ``proposed`` with probability :math:`\min(1, e^{\log r})`, else keep ``current``.

    ``log_ratio`` is the log Metropolis-Hastings ratio (target ratio plus proposal correction).
    A non-finite ratio (a proposal whose log-density is NaN or -inf, e.g. overflow far in a tail)
    is always rejected: NaN compares false, and -inf gives probability 0.

    Returns ``(state, is_accepted, acceptance_rate)`` where ``state`` is ``proposed`` or ``current``
    (any pytrees of the same structure) and ``acceptance_rate = min(1, exp(log_ratio))`` (0 when
    not finite), the Rao-Blackwellised acceptance that BlackJAX also reports.
    """
    log_ratio = jnp.where(jnp.isnan(log_ratio), -jnp.inf, log_ratio)
    acceptance_rate = jnp.exp(jnp.minimum(log_ratio, 0.0))
    log_uniform = jnp.log(jax.random.uniform(rng_key, dtype=jnp.result_type(log_ratio)))
    is_accepted = log_uniform < log_ratio
    state = jax.tree_util.tree_map(lambda new, old: jnp.where(is_accepted, new, old), proposed, current)
    return state, is_accepted, acceptance_rate
