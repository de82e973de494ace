"""The kernel protocol shared by every sampler, and the Metropolis-Hastings accept step.

A kernel is BlackJAX's ``SamplingAlgorithm(init, step)``: ``init(position, rng_key=None) -> state`` and
``step(rng_key, state) -> (state, info)``, pure functions with NamedTuple states and the key passed
in, never stored. A BlackJAX algorithm therefore runs in :func:`jaxschools.core.sampling.run` unchanged (which
calls ``init(position)``), and ours runs in BlackJAX's loops (``blackjax.util.run_inference_algorithm``
calls ``init(position, rng_key)`` when given ``initial_position=``).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

__all__ = [
    "SamplingAlgorithm", "BlockedSamplingAlgorithm", "BoundInit", "metropolis_accept", "accept_given_uniform"
]


class SamplingAlgorithm(NamedTuple):
    """``init(position, rng_key=None) -> state``; ``step(rng_key, state) -> (state, info)`` (BlackJAX's protocol)."""

    init: Callable
    step: Callable


@jax.tree_util.register_pytree_node_class
class BoundInit:
    """A kernel module's ``init(position, logdensity_fn)`` with its log-density bound: the ``init`` of a
    ``SamplingAlgorithm``, called as BlackJAX calls it, ``init(position, rng_key=None) -> state``.

    The key is accepted and unused: these states are a deterministic function of the position (BlackJAX's
    own HMC, NUTS and random walk ignore it too). ``init`` is fixed in the tree structure and ``logdensity_fn``
    is its one child, as in a ``jax.tree_util.Partial``: the log-density's data stay traced leaves, so
    :func:`jaxschools.core.sampling.run` compiles once for every dataset of the same shapes, provided ``init`` is a
    module-level function (the same object on every call).
    """

    __slots__ = ("init", "logdensity_fn", "__weakref__")  # jax.jit(algorithm.init) keeps a weak reference

    def __init__(self, init: Callable, logdensity_fn: Callable):
        self.init = init
        self.logdensity_fn = logdensity_fn

    def __call__(self, position, rng_key=None):
        del rng_key
        return self.init(position, self.logdensity_fn)

    def __repr__(self):
        return f"BoundInit({self.init.__module__}.{self.init.__qualname__}, {self.logdensity_fn!r})"

    def tree_flatten(self):
        return (self.logdensity_fn,), self.init

    @classmethod
    def tree_unflatten(cls, init, children):
        return cls(init, *children)


class BlockedSamplingAlgorithm(NamedTuple):
    """A ``SamplingAlgorithm`` whose randomness can also be drawn for many steps at once.

    ``init`` and ``step`` are BlackJAX's protocol (so BlackJAX's loops run it). In addition,
    ``draw(rng_key, num_steps, state) -> noise`` draws the random numbers of ``num_steps`` transitions in
    one vectorised call (a pytree with a leading ``num_steps`` axis), and ``apply(noise_t, state) ->
    (state, info)`` is one transition given its noise; ``step(key, s)`` is ``apply`` of a one-step draw.
    The driver (:func:`jaxschools.core.sampling.run`) uses ``draw``/``apply`` where present: drawing the
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


def __dir__():
    # The public names only, not the imports (``dir(js.diagnostics)`` lists no ``jax`` or ``jnp``).
    return list(__all__)
