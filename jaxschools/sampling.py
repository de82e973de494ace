"""The sampling driver: the one place with ``lax.scan`` over steps and ``vmap`` over chains.

:func:`run` takes any BlackJAX-style ``SamplingAlgorithm`` (ours or BlackJAX's), runs ``burn_in``
discarded steps then ``num_samples`` kept steps in every chain, and returns draws shaped
``(chain, draw, dim)``. Randomness: chain ``c`` uses ``fold_in(rng_key, c)`` and step ``t`` of that
chain ``fold_in(chain_key, t)``, so a chain's draws depend neither on how many chains run beside it
nor on how the steps are chunked, and no (chains x steps) array of keys is ever stored.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxschools._jit import filter_jit

__all__ = ["Samples", "run", "chain_keys", "overdispersed_positions"]


class Samples(NamedTuple):
    """Output of :func:`run`.

    positions: (num_chains, num_samples, dim) kept draws.
    acceptance_rate: (num_chains,) mean over kept draws of ``info.acceptance_rate`` (or
      ``info.is_accepted`` for kernels that report only the decision).
    logdensity: (num_chains, num_samples) log-density at each kept draw, where the state caches it
      (NaN otherwise).
    divergences: (num_chains,) count of divergent kept transitions (``info.is_divergent``), or None
      for kernels without trajectories.
    """

    positions: jax.Array
    acceptance_rate: jax.Array
    logdensity: jax.Array
    divergences: Any


def chain_keys(rng_key, num_chains: int):
    """Per-chain keys ``fold_in(rng_key, c)`` for c = 0..num_chains-1."""
    return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(rng_key, jnp.arange(num_chains))


def overdispersed_positions(rng_key, mode, cov, num_chains: int, spread=2.0):
    """Starting points ``mode + spread * chol(cov) z`` per chain (chain c uses ``fold_in(key, c)``).

    Overdispersed relative to the Laplace approximation (spread > 1), as R-hat needs
    (Gelman & Rubin 1992; BDA3 section 11.4).
    """
    mode = jnp.asarray(mode)
    factor = spread * jnp.linalg.cholesky(jnp.asarray(cov, mode.dtype))

    def one(key):
        return mode + factor @ jax.random.normal(key, mode.shape, dtype=mode.dtype)

    return jax.vmap(one)(chain_keys(rng_key, num_chains))


def _acceptance(info):
    if hasattr(info, "acceptance_rate"):
        return jnp.asarray(info.acceptance_rate)
    return jnp.asarray(info.is_accepted)


def _divergence(info):
    if hasattr(info, "is_divergent"):
        return jnp.asarray(info.is_divergent)
    return None


def _cached_logdensity(state, dtype):
    value = getattr(state, "logdensity", None)
    return jnp.asarray(value, dtype) if value is not None else jnp.full((), jnp.nan, dtype)


def _one_chain(algorithm, rng_key, position, num_samples: int, burn_in: int):
    state = algorithm.init(position)
    dtype = jnp.result_type(position)

    def advance(state, step_index):
        return algorithm.step(jax.random.fold_in(rng_key, step_index), state)

    def burn(state, step_index):
        state, _ = advance(state, step_index)
        return state, None

    def keep(state, step_index):
        state, info = advance(state, step_index)
        divergent = _divergence(info)
        record = (state.position, _acceptance(info).astype(dtype), _cached_logdensity(state, dtype), divergent)
        return state, record

    state, _ = jax.lax.scan(burn, state, jnp.arange(burn_in))
    _, (positions, acceptance, logdensity, divergent) = jax.lax.scan(
        keep, state, jnp.arange(burn_in, burn_in + num_samples)
    )
    divergences = None if divergent is None else jnp.sum(divergent)
    return Samples(positions, jnp.mean(acceptance), logdensity, divergences)


@filter_jit
def _run(rng_key, algorithm, initial_position, num_samples: int, num_chains: int, burn_in: int):
    initial_position = jnp.asarray(initial_position)
    if initial_position.ndim == 1:
        initial_position = jnp.broadcast_to(initial_position, (num_chains,) + initial_position.shape)
    keys = chain_keys(rng_key, num_chains)
    one_chain = lambda key, position: _one_chain(algorithm, key, position, num_samples, burn_in)  # noqa: E731
    return jax.vmap(one_chain)(keys, initial_position)


def run(
    rng_key,
    algorithm,
    initial_position,
    *,
    num_samples: int,
    num_chains: int = 4,
    burn_in: int = 0,
) -> Samples:
    """Run ``num_chains`` chains of ``algorithm``: ``burn_in`` discarded steps, then ``num_samples`` kept.

    Args:
      rng_key: a JAX PRNG key (explicit; the library never makes a root key).
      algorithm: any object with BlackJAX's ``init(position)`` / ``step(rng_key, state)``.
      initial_position: (dim,) shared by every chain, or (num_chains, dim).
      num_samples: draws kept per chain. num_chains: chains, vmapped. burn_in: extra steps run first.

    Returns :class:`Samples` with positions shaped (num_chains, num_samples, dim).

    Traceable (callable inside ``jit``/``vmap``, e.g. over datasets); called eagerly it compiles
    once per kind of algorithm and shapes and reuses that code on later calls.
    """
    num_samples, num_chains, burn_in = int(num_samples), int(num_chains), int(burn_in)
    if num_samples < 1 or num_chains < 1 or burn_in < 0:
        raise ValueError(
            f"need num_samples >= 1, num_chains >= 1 and burn_in >= 0; got {num_samples}, {num_chains}, {burn_in}"
        )
    initial_position = jnp.asarray(initial_position)
    if initial_position.ndim == 2 and initial_position.shape[0] != num_chains:
        raise ValueError(
            f"initial_position has {initial_position.shape[0]} rows but num_chains is {num_chains}"
        )
    return _run(rng_key, algorithm, initial_position, num_samples, num_chains, burn_in)
