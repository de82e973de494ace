r"""Summaries of MCMC draws kept as running sums, so memory is O(chains), not O(chains x draws).

:func:`jaxschools.core.sampling.run` with ``stream=Stream(...)`` hands each block of kept draws (all chains,
:data:`jaxschools.core.sampling.BLOCK_SIZE` steps) to :func:`update` and then forgets it. What is kept, per chain
unless said otherwise, for every *quantity* (the position's coordinates, then the flattened values of the
optional ``statistics(position)``, e.g. Rao-Blackwellised conditional probabilities for queries):

* count, mean and sum of squared deviations of each half of the chain, merged block by block with the
  pairwise update of Chan, Golub & LeVeque (1979), which is exact (up to rounding) and stable;
* batch means (Flegal & Jones 2010): the kept steps are cut into ``num_batches`` batches of whole blocks per
  chain; each batch's mean enters a running mean and sum of squares of batch means (same update). Steps after
  the last whole batch (fewer than ``num_batches`` blocks, and a last partial block) count in the moments but
  not in the batch means;
* a histogram of each coordinate of the position on fixed edges, pooled over chains (with counts below the
  first and above the last edge), and the mean acceptance and divergences of each chain.

:func:`finalize` turns these into, per quantity: the mean and variance over all draws, the batch-means
estimate of the asymptotic variance :math:`\sigma^2 = b\,\mathrm{Var}(\text{batch means})` averaged over chains,
the effective sample size :math:`\mathrm{ESS} = N \hat{v} / \sigma^2` (N all draws, :math:`\hat v` the pooled
variance), the Monte Carlo standard error :math:`\sqrt{\sigma^2 / N}`, and the classical split-:math:`\hat R`
of Gelman et al. (BDA3 section 11.4) from the half-chain means and variances. These are *batch-means and
classical* estimates, not the rank-normalised ESS and R-hat of Vehtari et al. (2021) that
:mod:`jaxschools.core.diagnostics` computes from kept draws: they agree for well-mixed chains, and batch means
underestimate the variance when a batch is not much longer than the autocorrelation time.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["Stream", "StreamState", "StreamingSummary", "init", "update", "finalize", "batch_schedule"]


class Stream(NamedTuple):
    """What :func:`jaxschools.core.sampling.run` keeps instead of the draws.

    num_batches: batches per chain for the batch-means ESS and MCSE (at least 2).
    histogram_edges: optional (dim, bins + 1) increasing edges per coordinate of the position.
    statistics: optional ``position (d,) -> pytree of arrays`` whose running means are kept, with their
      MCSE, ESS and R-hat, e.g. ``lambda x: posterior.conditional_probability(...)`` for a Rao-Blackwellised
      query. Must be a hashable function (it is part of the compiled program).
    """

    num_batches: int = 20
    histogram_edges: Any = None
    statistics: Callable | None = None


class _Moments(NamedTuple):
    count: jax.Array  # (...,) draws merged so far
    mean: jax.Array  # (..., q)
    m2: jax.Array  # (..., q) sum of squared deviations from the mean


class StreamState(NamedTuple):
    """The running sums (leading axis: chains)."""

    halves: _Moments  # count (chains, 2), mean and m2 (chains, 2, q)
    batch_sum: jax.Array  # (chains, q): the current batch's running sum
    batches: _Moments  # over the finished batch means: count (chains,), mean and m2 (chains, q)
    acceptance_sum: jax.Array  # (chains,)
    divergences: Any  # (chains,) or None
    histogram: Any  # (dim, bins + 2) pooled counts, or None


class StreamingSummary(NamedTuple):
    """What a streaming run returns. Per-quantity arrays have a last axis of the q quantities: the d
    coordinates of the position, then the flattened statistics.

    num_chains, num_samples: the chains and kept steps per chain summarised; batch_size: steps per batch.
    mean, variance: over all chains' draws. chain_mean, chain_variance: (num_chains, q).
    asymptotic_variance: batch-means sigma^2, averaged over chains. ess, mcse, rhat: see the module doc.
    acceptance_rate, divergences: (num_chains,) (divergences None for kernels without trajectories).
    histogram, histogram_edges: (d, bins + 2) counts (first and last: outside the edges) and the edges, or None.
    statistics_mean, statistics_mcse: the statistics' pytree of means and MCSEs, or None.
    """

    num_chains: int
    num_samples: int
    batch_size: int
    mean: jax.Array
    variance: jax.Array
    chain_mean: jax.Array
    chain_variance: jax.Array
    asymptotic_variance: jax.Array
    ess: jax.Array
    mcse: jax.Array
    rhat: jax.Array
    acceptance_rate: jax.Array
    divergences: Any
    histogram: Any
    histogram_edges: Any
    statistics_mean: Any
    statistics_mcse: Any


def _merge(a: _Moments, b: _Moments) -> _Moments:
    """Chan, Golub & LeVeque's pairwise merge of two sets' count, mean and sum of squared deviations."""
    count = a.count + b.count
    weight = jnp.where(count > 0, b.count / jnp.maximum(count, 1), 0.0)[..., None]
    delta = b.mean - a.mean
    mean = a.mean + delta * weight
    m2 = a.m2 + b.m2 + delta**2 * (a.count[..., None] * weight)
    return _Moments(count, mean, m2)


def _masked_moments(values, mask) -> _Moments:
    """Moments of ``values`` (..., steps, q) over the steps where ``mask`` (steps,) holds."""
    weight = mask.astype(values.dtype)[:, None]
    count = jnp.sum(weight)
    mean = jnp.sum(values * weight, axis=-2) / jnp.maximum(count, 1)
    m2 = jnp.sum(((values - mean[..., None, :]) * weight) ** 2, axis=-2)
    return _Moments(jnp.broadcast_to(count, mean.shape[:-1]), mean, m2)


def batch_schedule(num_samples: int, num_batches: int, block_size: int) -> tuple[int, int]:
    """(blocks per batch, batches) for ``num_samples`` kept steps in blocks of ``block_size``.

    Batches are whole blocks; with fewer full blocks than ``num_batches``, there are no batch means (0, 0)."""
    blocks_per_batch = (num_samples // block_size) // num_batches
    return (blocks_per_batch, num_batches) if blocks_per_batch else (0, 0)


def _quantities(positions, statistics):
    """(chains, steps, q): the positions' coordinates, then each statistic flattened."""
    if statistics is None:
        return positions
    values = jax.vmap(jax.vmap(statistics))(positions)
    leaves = [jnp.reshape(leaf, positions.shape[:2] + (-1,)).astype(positions.dtype)
              for leaf in jax.tree_util.tree_leaves(values)]
    return jnp.concatenate([positions] + leaves, axis=-1)


def init(stream: Stream, num_chains: int, position, has_divergences: bool) -> StreamState:
    """Empty sums for ``num_chains`` chains whose position looks like ``position`` (d,)."""
    dtype = position.dtype
    example = _quantities(position[None, None], stream.statistics)
    q = example.shape[-1]
    zeros = jnp.zeros((num_chains, q), dtype)
    halves = _Moments(jnp.zeros((num_chains, 2), dtype), jnp.zeros((num_chains, 2, q), dtype),
                      jnp.zeros((num_chains, 2, q), dtype))
    histogram = None
    if stream.histogram_edges is not None:
        edges = jnp.asarray(stream.histogram_edges, dtype)
        histogram = jnp.zeros((edges.shape[0], edges.shape[1] + 1), dtype)
    return StreamState(halves, zeros, _Moments(jnp.zeros((num_chains,), dtype), zeros, zeros),
                       jnp.zeros((num_chains,), dtype),
                       jnp.zeros((num_chains,), jnp.int32) if has_divergences else None, histogram)


def update(state: StreamState, stream: Stream, positions, acceptance, divergent, *, first_step, num_samples: int,
           batch_length: int, closes_batch, in_batch, chain_weight) -> StreamState:
    """Fold one block of kept draws into the sums.

    positions: (chains, L, d); acceptance: (chains, L); divergent: (chains, L) or None. ``first_step``: the
    kept-step index of the block's first draw (halves split at ``num_samples // 2``). ``in_batch``: whether the
    block belongs to a batch (of ``batch_length`` steps); ``closes_batch``: whether it is the last block of its
    batch. ``chain_weight``: (chains,) 1 for real chains, 0 for padding (left out of the pooled histogram).
    """
    values = _quantities(positions, stream.statistics)
    steps = first_step + jnp.arange(positions.shape[1])
    first_half = steps < num_samples // 2
    block_halves = jax.tree_util.tree_map(
        lambda a, b: jnp.stack([a, b], axis=1),
        _masked_moments(values, first_half), _masked_moments(values, ~first_half))
    halves = _merge(state.halves, block_halves)

    batch_sum = state.batch_sum + jnp.where(in_batch, jnp.sum(values, axis=1), 0.0)
    # A batch closes: its mean joins the moments of the batch means, and the running sum restarts.
    finished = _Moments(jnp.ones_like(state.batches.count), batch_sum / max(batch_length, 1),
                        jnp.zeros_like(batch_sum))
    batches = jax.tree_util.tree_map(lambda new, old: jnp.where(closes_batch, new, old),
                                     _merge(state.batches, finished), state.batches)
    batch_sum = jnp.where(closes_batch, 0.0, batch_sum)

    histogram = state.histogram
    if histogram is not None:
        histogram = histogram + _histogram(positions, jnp.asarray(stream.histogram_edges, positions.dtype),
                                           chain_weight)
    divergences = state.divergences
    if divergences is not None:
        divergences = divergences + jnp.sum(divergent, axis=1, dtype=jnp.int32)
    return StreamState(halves, batch_sum, batches, state.acceptance_sum + jnp.sum(acceptance, axis=1),
                       divergences, histogram)


def _histogram(positions, edges, chain_weight):
    """(d, bins + 2) counts of the block's draws per coordinate, bin 0 below ``edges[0]``, the last above."""
    num_bins = edges.shape[1] + 1

    def one(values, coordinate_edges):
        index = jnp.searchsorted(coordinate_edges, values.ravel(), side="right")
        weights = jnp.broadcast_to(chain_weight[:, None], values.shape).ravel()
        return jnp.zeros((num_bins,), positions.dtype).at[index].add(weights)

    return jax.vmap(one, in_axes=(-1, 0))(positions, edges)


def finalize(state: StreamState, stream: Stream, num_chains: int, num_samples: int, batch_length: int,
             position) -> StreamingSummary:
    """The summaries of the first ``num_chains`` chains (the rest is padding) from the running sums."""
    per_chain = (state.halves, state.batches, state.acceptance_sum, state.divergences)
    halves, batches, acceptance_sum, divergences = jax.tree_util.tree_map(lambda x: x[:num_chains], per_chain)
    first = jax.tree_util.tree_map(lambda x: x[:, 0], halves)
    second = jax.tree_util.tree_map(lambda x: x[:, 1], halves)
    chains = _merge(first, second)  # whole chains: count (c,), mean and m2 (c, q)
    pooled = chains
    while pooled.mean.shape[0] > 1:  # pairwise merge over chains (exact, balanced)
        size = pooled.mean.shape[0]
        half = size // 2
        head = jax.tree_util.tree_map(lambda x: x[:half], pooled)
        tail = jax.tree_util.tree_map(lambda x: x[half:2 * half], pooled)
        merged = _merge(head, tail)
        if size % 2:
            merged = jax.tree_util.tree_map(lambda m, x: jnp.concatenate([m, x[-1:]]), merged, pooled)
        pooled = merged
    total = pooled.count[0]
    variance = pooled.m2[0] / jnp.maximum(total - 1, 1)

    # Batch means: sigma^2 = b * Var(batch means) per chain, averaged over chains.
    var_batch_means = batches.m2 / jnp.maximum(batches.count - 1, 1)[:, None]
    # batch_length is 0 when there are too few whole blocks for the batches (batch_schedule): no estimate.
    asymptotic = (jnp.mean(batch_length * var_batch_means, axis=0) if batch_length
                  else jnp.full_like(variance, jnp.nan))
    ess = total * variance / asymptotic
    mcse = jnp.sqrt(asymptotic / total)

    # Classical split R-hat (BDA3 11.4) over the 2 * chains half-chains.
    n = jnp.minimum(halves.count[:, 0], halves.count[:, 1])[:, None]  # (c, 1)
    half_var = halves.m2 / jnp.maximum(halves.count - 1, 1)[..., None]  # (c, 2, q)
    within = jnp.mean(half_var, axis=(0, 1))
    half_means = halves.mean.reshape((-1, halves.mean.shape[-1]))
    between_over_n = jnp.var(half_means, axis=0, ddof=1) if half_means.shape[0] > 1 else jnp.zeros_like(within)
    n = jnp.mean(n)
    rhat = jnp.sqrt(((n - 1) / n * within + between_over_n) / within)

    dim = position.shape[-1]
    statistics_mean = statistics_mcse = None
    if stream.statistics is not None:
        example = jax.eval_shape(stream.statistics, position)
        leaves, treedef = jax.tree_util.tree_flatten(example)
        sizes = [math.prod(leaf.shape) for leaf in leaves]
        offsets = [dim + sum(sizes[:i]) for i in range(len(sizes))]

        def unflatten(values):
            return jax.tree_util.tree_unflatten(treedef, [
                values[o:o + s].reshape(leaf.shape) for o, s, leaf in zip(offsets, sizes, leaves)])

        statistics_mean, statistics_mcse = unflatten(pooled.mean[0]), unflatten(mcse)
    return StreamingSummary(
        num_chains, num_samples, batch_length, pooled.mean[0], variance, chains.mean,
        chains.m2 / jnp.maximum(chains.count - 1, 1)[:, None], asymptotic, ess, mcse, rhat,
        acceptance_sum / num_samples, divergences, state.histogram,
        None if stream.histogram_edges is None else jnp.asarray(stream.histogram_edges), statistics_mean,
        statistics_mcse)


def __dir__():
    # The public names only, not the imports (``dir(js.diagnostics)`` lists no ``jax`` or ``jnp``).
    return list(__all__)
