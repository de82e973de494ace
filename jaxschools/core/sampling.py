"""The sampling driver: the one place with ``lax.scan`` over steps and ``vmap`` over chains.

:func:`run` takes any BlackJAX-style ``SamplingAlgorithm`` (ours or BlackJAX's), runs ``burn_in``
discarded steps then ``num_samples`` kept steps in every chain, and returns draws shaped
``(chain, draw, dim)``. With an ``adaptation`` (:mod:`jaxschools.core.adaptation`), the burn-in steps also
tune the kernel's parameters, per chain, and the tuned values are frozen for the kept steps.
Randomness: chain ``c`` uses ``fold_in(rng_key, c)``, split into a burn-in and a kept-phase key; step ``t``
of a phase uses ``fold_in(phase_key, t)``, or, for a kernel that draws its noise a block of steps at a
time (:class:`~jaxschools.core.kernels.base.BlockedSamplingAlgorithm`, e.g. random-walk Metropolis), block
``b`` of ``block_size`` steps (a static argument of :func:`run`, default :data:`BLOCK_SIZE`) uses
``fold_in(phase_key, b)``. So a chain's draws depend on its key
alone, never on how many chains run beside it, and no (chains x steps) array of keys is ever stored.
"Alone" up to rounding: XLA may round a batched operation in the last bit differently for another batch shape
(on the CPU the random walk's draws are identical; on a GPU, and for gradient kernels, whose trajectories
amplify such differences, they agree to rounding over short runs and statistically over long ones).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxschools.core import sharding, streaming
from jaxschools.core._jit import _combine as _jit_combine
from jaxschools.core._jit import _partition as _jit_partition
from jaxschools.core._jit import filter_jit

__all__ = ["Samples", "run", "run_in_chunks", "chain_keys", "overdispersed_positions"]


class Samples(NamedTuple):
    """Output of :func:`run`.

    positions: (num_chains, num_samples, dim) kept draws.
    acceptance_rate: (num_chains,) mean over kept draws of ``info.acceptance_rate`` (or
      ``info.is_accepted`` for kernels that report only the decision).
    logdensity: (num_chains, num_samples) log-density at each kept draw, where the state caches it
      (NaN otherwise).
    divergences: (num_chains,) count of divergent kept transitions (``info.is_divergent``), or None
      for kernels without trajectories.
    is_divergent: (num_chains, num_samples) flag of each kept transition, or None (as divergences).
    num_integration_steps: (num_chains, num_samples) gradient evaluations of each kept transition
      (``info.num_integration_steps``), or None for kernels that do not report them.
    parameters: with an adaptation, the frozen keyword parameters of the kept steps, each with a
      leading chain axis (e.g. ``{"step_size": (num_chains,), "inverse_mass_matrix": (num_chains, dim)}``);
      None without.
    """

    positions: jax.Array
    acceptance_rate: jax.Array
    logdensity: jax.Array
    divergences: Any
    is_divergent: Any = None
    num_integration_steps: Any = None
    parameters: Any = None


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


def _integration_steps(info):
    if hasattr(info, "num_integration_steps"):
        return jnp.asarray(info.num_integration_steps)
    return None


# The default ``block_size``: steps whose random numbers a blocked kernel draws in one call. The same on every
# machine and for any number of chains, so that a chain's draws depend on its key alone; it is part of the key
# scheme (another block size gives other draws), hence a static argument rather than a setting. 64 steps of
# 16,384 chains of the eight schools are 25 MB of noise (benchmarks/RESULTS.md has the measurements).
BLOCK_SIZE = 64


def _is_blocked(algorithm) -> bool:
    return callable(getattr(algorithm, "draw", None)) and callable(getattr(algorithm, "apply", None))


def _record(state, info, dtype):
    """What a kept step keeps: (position, log-density, divergence, gradient evaluations) per step, and its
    acceptance, which only enters a running sum (its mean is all ``Samples`` reports)."""
    kept = (state.position, _cached_logdensity(state, dtype), _divergence(info), _integration_steps(info))
    return kept, _acceptance(info).astype(dtype)


def _add(total, increment):
    return jax.tree_util.tree_map(jnp.add, total, increment)


def _block(algorithm, phase_key, carry, block_index, length: int, parameters, record, block_size: int):
    """Steps ``block_index * block_size`` to ``+ length`` of a phase.

    ``carry`` is ``(state, total)``; ``record(state, info) -> (kept, increment)``: ``kept`` is stacked per step,
    ``increment`` added into ``total`` (a running sum, so that what is only averaged is never stored per step).
    A blocked kernel draws the block's noise in one call keyed ``fold_in(phase_key, block_index)``; any other
    kernel's step ``t`` is keyed ``fold_in(phase_key, t)``.
    """
    if _is_blocked(algorithm):
        state = carry[0]
        noise = algorithm.draw(jax.random.fold_in(phase_key, block_index), length, state, **parameters)

        def one(carry, noise_t):
            state, info = algorithm.apply(noise_t, carry[0], **parameters)
            kept, increment = record(state, info)
            return (state, _add(carry[1], increment)), kept

        return jax.lax.scan(one, carry, noise)

    def step(carry, step_index):
        state, info = algorithm.step(jax.random.fold_in(phase_key, step_index), carry[0], **parameters)
        kept, increment = record(state, info)
        return (state, _add(carry[1], increment)), kept

    return jax.lax.scan(step, carry, block_index * block_size + jnp.arange(length))


def _advance(algorithm, phase_key, state, num_steps: int, parameters, record, block_size: int, total=None):
    """``num_steps`` transitions of a phase, block by block (:func:`_block`).

    Returns ``((state, total), kept)`` with the kept records stacked to (num_steps, ...). Each block's records
    are written into a buffer of all ``num_steps`` as the block ends, rather than stacked per block and
    reshaped: under ``vmap`` the buffer is chain-major, so the (chain, draw, ...) result needs no transpose
    of the whole run at the end.
    """
    num_blocks, remainder = divmod(num_steps, block_size)
    carry = (state, total)
    probe = jax.eval_shape(lambda: _block(algorithm, phase_key, carry, 0, 1, parameters, record, block_size)[1])
    kept = jax.tree_util.tree_map(lambda x: jnp.zeros((num_steps,) + x.shape[1:], x.dtype), probe)

    def write(kept, records, first_step):
        return jax.tree_util.tree_map(
            lambda buffer, block: jax.lax.dynamic_update_slice_in_dim(buffer, block, first_step, 0), kept, records)

    if num_blocks:
        def one_block(carry_and_kept, block_index):
            carry, kept = carry_and_kept
            carry, records = _block(algorithm, phase_key, carry, block_index, block_size, parameters, record,
                                    block_size)
            return (carry, write(kept, records, block_index * block_size)), None

        (carry, kept), _ = jax.lax.scan(one_block, (carry, kept), jnp.arange(num_blocks))
    if remainder:
        carry, records = _block(algorithm, phase_key, carry, num_blocks, remainder, parameters, record, block_size)
        kept = write(kept, records, num_blocks * block_size)
    return carry, kept


def _warm_up(algorithm, rng_key, position, burn_in: int, adaptation, block_size: int):
    """Initialise and run the burn-in (tuning with ``adaptation`` if given).

    Returns ``(state, parameters, keep_key)``: the state after burn-in, the frozen keyword parameters of the
    kept steps (``{}`` without adaptation) and the key of the kept phase.
    """
    state = algorithm.init(position)
    burn_key, keep_key = jax.random.split(rng_key)
    if adaptation is None:
        (state, _), _ = _advance(algorithm, burn_key, state, burn_in, {}, lambda state, info: (None, None),
                                 block_size)
        return state, {}, keep_key

    # Warm-up, one step at a time: the kernel runs with the current tuning, then the tuning learns from the
    # transition. The schedule is static (numpy, from the burn-in length), scanned with the step.
    def burn_and_adapt(carry, step):
        state, adapt_state = carry
        step_index, stage = step
        state, info = algorithm.step(jax.random.fold_in(burn_key, step_index), state,
                                     **adaptation.parameters(adapt_state, False))
        return (state, adaptation.update(adapt_state, stage, state, info)), None

    schedule = jax.tree_util.tree_map(jnp.asarray, adaptation.schedule(burn_in))
    (state, adapt_state), _ = jax.lax.scan(burn_and_adapt, (state, adaptation.init(state)),
                                           (jnp.arange(burn_in), schedule))
    return state, adaptation.parameters(adapt_state, True), keep_key  # frozen from here on


def _one_chain(algorithm, rng_key, position, num_samples: int, burn_in: int, adaptation, block_size: int):
    dtype = jnp.result_type(position)
    state, parameters, keep_key = _warm_up(algorithm, rng_key, position, burn_in, adaptation, block_size)
    (_, acceptance), (positions, logdensity, divergent, steps) = _advance(
        algorithm, keep_key, state, num_samples, parameters, lambda state, info: _record(state, info, dtype),
        block_size, jnp.zeros((), dtype))
    divergences = None if divergent is None else jnp.sum(divergent)
    return Samples(positions, acceptance / num_samples, logdensity, divergences, divergent, steps,
                   parameters if adaptation is not None else None)


# Chains each CPU device runs side by side at most: more run as several groups, one after another, each group a
# whole run, so that a group's block of noise and its per-step arrays stay in a core's cache (1,024 chains x 64
# steps of the eight schools' noise are 1.5 MB) instead of streaming through memory. Draws are unchanged: a
# chain's depend on its key alone. The measured gain, and where grouping does not pay, are in
# docs/architecture.md ("Faster sampling") and benchmarks/RESULTS.md.
CHAINS_PER_GROUP = 1024


def _chains_per_group(mesh) -> int:
    """:data:`CHAINS_PER_GROUP` on CPUs; no groups on accelerators, whose throughput needs every chain in one
    batch (an H200 runs 16,384 chains about ten times faster per chain-step than 1,024)."""
    platform = mesh.devices.flat[0].platform if mesh is not None else jax.default_backend()
    return CHAINS_PER_GROUP if platform == "cpu" else 2**62


def _layout(num_chains: int, mesh, chains_per_group: int) -> tuple[int, int, int]:
    """(devices, groups per device, chains per group): the fewest groups of at most ``chains_per_group`` chains
    that hold ``num_chains`` split evenly over the devices; the padding is fewer chains than groups."""
    devices = 1 if mesh is None else mesh.size
    per_device = -(-num_chains // devices)
    groups = -(-per_device // chains_per_group)
    return devices, groups, -(-per_device // groups)


def _chains(rng_key, initial_position, num_chains: int, mesh, total=None):
    """Per-chain keys and starting points, padded to ``total`` (default: a multiple of the mesh's devices) and
    split over the devices.

    Chain c's key is fold_in(rng_key, c) however the chains are placed, so a sharded run draws what an
    unsharded one does; padding only adds chains at the end.
    """
    initial_position = jnp.asarray(initial_position)
    if initial_position.ndim == 1:
        initial_position = jnp.broadcast_to(initial_position, (num_chains,) + initial_position.shape)
    if total is None:
        total = num_chains if mesh is None else sharding.padded_size(num_chains, mesh)
    keys = chain_keys(rng_key, total)
    initial_position = sharding.pad_leading(initial_position, total)
    if mesh is not None:
        keys, initial_position = sharding.constrain_leading((keys, initial_position), mesh)
    return keys, initial_position


@filter_jit
def _run(rng_key, algorithm, initial_position, num_samples: int, num_chains: int, burn_in: int, adaptation,
         mesh, chains_per_group: int, block_size: int = BLOCK_SIZE):
    devices, groups, group_size = _layout(num_chains, mesh, chains_per_group)
    keys, initial_position = _chains(rng_key, initial_position, num_chains, mesh, devices * groups * group_size)

    def one_chain(key, position):
        return _one_chain(algorithm, key, position, num_samples, burn_in, adaptation, block_size)

    if groups == 1:
        samples = jax.vmap(one_chain)(keys, initial_position)
    else:
        # (device, group, chain) -> a sequential map over groups, each a (device, chain) batch: every device runs
        # its own contiguous chains group by group, and the stacked result is back in chain order with no copy
        # (the group axis moves across a device axis of one local row).
        def by_group(x):
            x = x.reshape((devices, groups, group_size) + x.shape[1:]).swapaxes(0, 1)
            return x if mesh is None else jax.lax.with_sharding_constraint(
                x, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, mesh.axis_names[0])))

        samples = jax.lax.map(lambda group: jax.vmap(jax.vmap(one_chain))(*group),
                              (by_group(keys), by_group(initial_position)))
        samples = jax.tree_util.tree_map(
            lambda x: x.swapaxes(0, 1).reshape((devices * groups * group_size,) + x.shape[3:]), samples)
    if keys.shape[0] != num_chains:
        samples = jax.tree_util.tree_map(lambda x: x[:num_chains], samples)
    return samples


@filter_jit
def _run_streaming(rng_key, algorithm, initial_position, num_samples: int, num_chains: int, burn_in: int,
                   adaptation, mesh, stream, block_size: int):
    """As :func:`_run`, keeping :mod:`jaxschools.core.streaming` sums instead of draws: the block loop runs over all
    chains at once (a scan of vmapped blocks), so each block's draws are folded into the sums and dropped."""
    keys, initial_position = _chains(rng_key, initial_position, num_chains, mesh)
    total = keys.shape[0]
    dtype = initial_position.dtype
    states, parameters, keep_keys = jax.vmap(
        lambda key, position: _warm_up(algorithm, key, position, burn_in, adaptation, block_size)
    )(keys, initial_position)

    def record(state, info):
        return (state.position, _acceptance(info).astype(dtype), _divergence(info)), None

    first = jax.tree_util.tree_map(lambda x: x[0], (states, parameters))
    probe = jax.eval_shape(lambda: _block(algorithm, keep_keys[0], (first[0], None), 0, 1, first[1], record,
                                          block_size))
    has_divergences = probe[1][2] is not None
    sums = streaming.init(stream, total, initial_position[0], has_divergences)
    blocks_per_batch, num_batches = streaming.batch_schedule(num_samples, stream.num_batches, block_size)
    batch_length = blocks_per_batch * block_size
    chain_weight = (jnp.arange(total) < num_chains).astype(dtype)
    if mesh is not None:
        sums = sharding.constrain_leading(sums._replace(histogram=None), mesh)._replace(histogram=sums.histogram)

    def block(carry, block_index, length):
        states, sums = carry
        (states, _), (positions, acceptance, divergent) = jax.vmap(
            lambda key, state, params: _block(algorithm, key, (state, None), block_index, length, params, record,
                                              block_size)
        )(keep_keys, states, parameters)
        in_batch = (block_index < blocks_per_batch * num_batches) & (length == block_size)
        closes = in_batch & ((block_index + 1) % max(blocks_per_batch, 1) == 0)
        sums = streaming.update(sums, stream, positions, acceptance, divergent, first_step=block_index * block_size,
                                num_samples=num_samples, batch_length=batch_length, closes_batch=closes,
                                in_batch=in_batch, chain_weight=chain_weight)
        return (states, sums), None

    num_blocks, remainder = divmod(num_samples, block_size)
    carry = (states, sums)
    if num_blocks:
        carry, _ = jax.lax.scan(lambda c, b: block(c, b, block_size), carry, jnp.arange(num_blocks))
    if remainder:
        carry, _ = block(carry, num_blocks, remainder)
    return streaming.finalize(carry[1], stream, num_chains, num_samples, batch_length, initial_position[0])


def _checked_arguments(num_samples, num_chains, burn_in, initial_position, block_size):
    """The sizes as Python ints and the start as an array, refused with a ValueError when they cannot run."""
    num_samples, num_chains, burn_in = int(num_samples), int(num_chains), int(burn_in)
    if num_samples < 1 or num_chains < 1 or burn_in < 0:
        raise ValueError(
            f"need num_samples >= 1, num_chains >= 1 and burn_in >= 0; got {num_samples}, {num_chains}, {burn_in}"
        )
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be a positive Python int (a static argument); got {block_size!r}")
    initial_position = jnp.asarray(initial_position)
    if initial_position.ndim == 2 and initial_position.shape[0] != num_chains:
        raise ValueError(f"initial_position has {initial_position.shape[0]} rows but num_chains is {num_chains}")
    return num_samples, num_chains, burn_in, initial_position


def run(
    rng_key,
    algorithm,
    initial_position,
    *,
    num_samples: int,
    num_chains: int = 4,
    burn_in: int = 0,
    adaptation=None,
    mesh=None,
    stream=None,
    block_size: int = BLOCK_SIZE,
):
    """Run ``num_chains`` chains of ``algorithm``: ``burn_in`` discarded steps, then ``num_samples`` kept.

    Args:
      rng_key: a JAX PRNG key (explicit; the library never makes a root key).
      algorithm: any object with BlackJAX's ``init(position)`` / ``step(rng_key, state)``.
      initial_position: (dim,) shared by every chain, or (num_chains, dim).
      num_samples: draws kept per chain. num_chains: chains, vmapped. burn_in: extra steps run first.
      adaptation: optional :class:`jaxschools.core.adaptation.Adaptation`. Its ``parameters`` are passed to
        ``algorithm.step`` as keyword arguments (``step_size=``, ``inverse_mass_matrix=``, ``scale_tril=``),
        updated after every burn-in step inside the scan, each chain on its own draws, and frozen for the
        kept steps; ``Samples.parameters`` holds the frozen values. The step must accept them: ours do,
        and so does a BlackJAX ``build_kernel()`` function wrapped in a ``jax.tree_util.Partial``.
      mesh: optional one-dimensional ``jax.sharding.Mesh`` (:func:`jaxschools.core.sharding.mesh`): the chains are
        split over its devices (padded to a multiple of their number), with the same draws as without.

      stream: optional :class:`jaxschools.core.streaming.Stream`: keep running summaries instead of the draws
        (memory O(num_chains), whatever num_samples) and return a
        :class:`jaxschools.core.streaming.StreamingSummary` of exactly the draws the same call without ``stream``
        returns (moments, batch-means ESS and MCSE, split R-hat, histograms, statistics' means).
      block_size: steps per block (static): a blocked kernel draws a block's noise in one call keyed by the
        block's index, any other kernel's step ``t`` is keyed by ``t``. Part of the key scheme: the default
        (:data:`BLOCK_SIZE`) gives the draws of every other call with the default; another value other draws
        for a blocked kernel, and a different compiled program for any kernel.

    Returns :class:`Samples` with positions shaped (num_chains, num_samples, dim), or, with ``stream``, a
    :class:`~jaxschools.core.streaming.StreamingSummary`.

    Traceable (callable inside ``jit``/``vmap``, e.g. over datasets); called eagerly it compiles
    once per kind of algorithm and shapes and reuses that code on later calls.
    """
    num_samples, num_chains, burn_in, initial_position = _checked_arguments(
        num_samples, num_chains, burn_in, initial_position, block_size)
    if mesh is not None:
        sharding.leading(mesh)  # a clear error for anything but a one-dimensional Mesh
    if stream is not None:
        if not isinstance(stream, streaming.Stream):
            raise ValueError(f"stream must be a jaxschools.core.streaming.Stream; got {type(stream).__name__}")
        if stream.num_batches < 2:
            raise ValueError(f"stream.num_batches must be at least 2; got {stream.num_batches}")
        return _run_streaming(rng_key, algorithm, initial_position, num_samples, num_chains, burn_in, adaptation,
                              mesh, stream, block_size)
    return _run(rng_key, algorithm, initial_position, num_samples, num_chains, burn_in, adaptation, mesh,
                _chains_per_group(mesh), block_size)


# --------------------------------------------------------------------------------------------------
# The host loop: long runs as a sequence of short jitted chunks, for the command line (a signal is honoured
# between chunks; docs/architecture.md).

# What one chunk aims to last. The first chunk of each phase is one block (or one adaptation step); each later
# one is sized from the speed measured on the previous one, and at most doubles, so a chunk lasts about this
# long and never much longer: this is what bounds how long Ctrl-C or SIGTERM waits while chains run.
CHUNK_SECONDS = 0.25


def _donating_jit(fun):
    """As :func:`~jaxschools.core._jit.filter_jit`, with the buffers of the first argument donated to the output.

    The chunks of :func:`run_in_chunks` pass the chains' states and the kept draws from one to the next: donating
    them lets XLA update them in place, so a chunk costs its own steps, not a copy of every draw kept so far.
    """

    @functools.partial(jax.jit, static_argnums=(0,), donate_argnums=(1,))
    def compiled(static, donated, dynamic):
        args, kwargs = _jit_combine(dynamic, static)
        return fun(donated, *args, **kwargs)

    def wrapper(donated, *args, **kwargs):
        dynamic, static = _jit_partition((args, kwargs))
        return compiled(static, donated, dynamic)

    return wrapper


def _over_chains(fn, groups: int, *trees):
    """``fn`` per chain over leaves shaped (group, chain in group, ...), batched as :func:`_run` batches them
    (one vmap, or a sequential map over groups of a vmap of a vmap), so that XLA sees the same batch shapes."""
    if groups == 1:
        out = jax.vmap(fn)(*jax.tree_util.tree_map(lambda x: x[0], trees))
        return jax.tree_util.tree_map(lambda x: x[None], out)

    def group(args):
        return jax.vmap(jax.vmap(fn))(*jax.tree_util.tree_map(lambda x: x[None], args))

    return jax.tree_util.tree_map(lambda x: x[:, 0], jax.lax.map(group, trees))


def _index(first):
    """A block or step index as ``jnp.arange`` makes them in :func:`_advance` and :func:`_warm_up` (same dtype,
    so the same ``fold_in``)."""
    return jnp.asarray(first, jnp.arange(1).dtype)


@filter_jit
def _chunk_start(rng_key, algorithm, initial_position, num_chains: int, groups: int, group_size: int, adaptation,
                 burn_in: int, num_samples: int, block_size: int):
    """The chains before their first step, laid out (group, chain in group, ...) as :func:`_run` lays them out:
    (state, burn-in key, kept-phase key, parameters) per chain, and zeroed buffers for every kept record.

    With an ``adaptation``, this call also runs the whole adaptive burn-in (:func:`_warm_up`), which returns the
    state after it and the frozen parameters (the burn-in key is then unused). Tuning in chunks would pass its
    per-step schedule as data instead of the constants :func:`_warm_up` compiles in, and XLA then rounds the
    tuning differently in the last bits, so the draws would no longer be those of :func:`run`.
    """
    keys, initial_position = _chains(rng_key, initial_position, num_chains, None, groups * group_size)
    by_group = lambda x: x.reshape((groups, group_size) + x.shape[1:])  # noqa: E731
    keys, initial_position = by_group(keys), by_group(initial_position)
    dtype = initial_position.dtype

    def start(key, position):
        if adaptation is None:
            state, parameters = algorithm.init(position), {}
            burn_key, keep_key = jax.random.split(key)
        else:
            state, parameters, keep_key = _warm_up(algorithm, key, position, burn_in, adaptation, block_size)
            burn_key = keep_key
        record = lambda state, info: _record(state, info, dtype)  # noqa: E731
        probe = jax.eval_shape(lambda: _block(algorithm, keep_key, (state, jnp.zeros((), dtype)), 0, 1, parameters,
                                              record, block_size)[1])
        kept = jax.tree_util.tree_map(lambda x: jnp.zeros((num_samples,) + x.shape[1:], x.dtype), probe)
        return state, (burn_key, keep_key), parameters, (kept, jnp.zeros((), dtype))

    return _over_chains(start, groups, keys, initial_position)


@_donating_jit
def _chunk_burn(carry, algorithm, keys, first, count, length: int, groups: int, block_size: int):
    """Burn-in blocks ``first`` to ``first + count`` of every chain (``length`` steps each; the last, shorter
    block of a phase runs alone with ``count`` 1), exactly the blocks :func:`_advance` runs."""

    def chain(state, burn_key):
        def body(block_index, state):
            return _block(algorithm, burn_key, (state, None), block_index, length, {},
                          lambda state, info: (None, None), block_size)[0][0]

        return jax.lax.fori_loop(first, first + count, body, state)

    return _over_chains(chain, groups, carry, keys)


@_donating_jit
def _chunk_keep(carry, algorithm, keys, parameters, first, count, length: int, groups: int, block_size: int):
    """Kept blocks ``first`` to ``first + count``: each block's records written into the kept buffers at its
    steps, and its acceptance added to the running sum, as :func:`_advance` does."""
    states, (kept, total) = carry
    dtype = total.dtype

    def chain(state, kept, total, keep_key, parameters):
        def body(block_index, carry):
            (state, total), kept = carry
            (state, total), records = _block(algorithm, keep_key, (state, total), block_index, length, parameters,
                                             lambda state, info: _record(state, info, dtype), block_size)
            kept = jax.tree_util.tree_map(
                lambda buffer, block: jax.lax.dynamic_update_slice_in_dim(buffer, block, block_index * block_size, 0),
                kept, records)
            return (state, total), kept

        (state, total), kept = jax.lax.fori_loop(first, first + count, body, ((state, total), kept))
        return state, (kept, total)

    return _over_chains(chain, groups, states, kept, total, keys, parameters)


@filter_jit
def _chunk_finish(kept_and_total, parameters, num_chains: int, num_samples: int, groups: int, has_adaptation: bool):
    """:class:`Samples` of the first ``num_chains`` chains, from the kept buffers (as :func:`_one_chain` ends)."""

    def chain(kept, total, parameters):
        positions, logdensity, divergent, steps = kept
        divergences = None if divergent is None else jnp.sum(divergent)
        return Samples(positions, total / num_samples, logdensity, divergences, divergent, steps,
                       parameters if has_adaptation else None)

    samples = _over_chains(chain, groups, *kept_and_total, parameters)
    return jax.tree_util.tree_map(lambda x: x.reshape((-1,) + x.shape[2:])[:num_chains], samples)


def _chunks(total: int, seconds: float):
    """Yield (first, count) covering ``range(total)``; the caller ``send``s each chunk's measured duration.

    One unit first; then as many as ``seconds`` would take at the last chunk's speed, at most twice the last
    chunk (with ``seconds`` 0, one unit each time)."""
    first, count = 0, 1
    while first < total:
        count = min(count, total - first)
        elapsed = yield first, count
        first += count
        if elapsed is not None:
            count = max(1, min(2 * count, int(count * seconds / elapsed) if elapsed > 0 else 2 * count))


def run_in_chunks(rng_key, algorithm, initial_position, *, num_samples: int, num_chains: int = 4, burn_in: int = 0,
                  adaptation=None, between=None, chunk_seconds: float = CHUNK_SECONDS,
                  block_size: int = BLOCK_SIZE) -> Samples:
    """:func:`run`, as a host loop over short jitted chunks: the same draws, to the last bit.

    Every chain runs the same blocks of steps with the same keys (``fold_in(phase_key, block)``), laid out in
    the same groups of chains, only split over several calls: a chunk is a run of whole blocks of every chain,
    sized to last about ``chunk_seconds`` (:data:`CHUNK_SECONDS`; 0 for one block per chunk, each chunk at
    most twice the last). The chains' states and the kept draws are donated from chunk to chunk, so they are
    updated in place. With an ``adaptation``, the adaptive burn-in is one call (the first chunk; see
    :func:`_chunk_start` for why), and only the kept steps are chunked.

    ``between(stage)``, if given, is called after each chunk is dispatched, with ``stage`` ``"sampling-chunk:K"``
    (K = 1, 2, ... over the whole run), before waiting for the chunk: where the command line checks for
    Ctrl-C and SIGTERM, and where its tests send a signal at a named chunk: the run gets control back at
    fixed points whose work is bounded, on any backend, rather than only while it waits on one long call.

    ``block_size`` is :func:`run`'s (the same value gives the same draws).

    Not traceable (a Python loop that waits on the device) and without ``mesh`` or ``stream``; use
    :func:`run` for those.
    """
    import time

    num_samples, num_chains, burn_in, initial_position = _checked_arguments(
        num_samples, num_chains, burn_in, initial_position, block_size)
    _, groups, group_size = _layout(num_chains, None, _chains_per_group(None))
    chunk_number = 0

    def checkpoint(done):
        nonlocal chunk_number
        chunk_number += 1
        if between is not None:
            between(f"sampling-chunk:{chunk_number}")
        jax.block_until_ready(done)

    states, (burn_keys, keep_keys), parameters, kept = started = _chunk_start(
        rng_key, algorithm, initial_position, num_chains, groups, group_size, adaptation, burn_in, num_samples,
        block_size)
    if adaptation is not None:  # the adaptive burn-in ran in that call: one chunk
        checkpoint(started)

    def loop(total, run_chunk):
        """``run_chunk(first, count)`` over ``range(total)`` in timed chunks, with ``between`` after each."""
        chunks = _chunks(total, chunk_seconds)
        elapsed = None
        while True:
            try:
                first, count = chunks.send(elapsed)
            except StopIteration:
                return
            start = time.perf_counter()
            checkpoint(run_chunk(first, count))
            elapsed = time.perf_counter() - start

    def phase(carry, num_steps, run_blocks):
        """Every full block of a phase by chunks, then its last, shorter block."""
        num_blocks, remainder = divmod(num_steps, block_size)
        box = [carry]

        def blocks(first, count, length=block_size):
            box[0] = run_blocks(box[0], _index(first), _index(count), length)
            return box[0]

        loop(num_blocks, blocks)
        if remainder:
            loop(1, lambda first, count: blocks(num_blocks, 1, remainder))
        return box[0]

    if adaptation is None:
        states = phase(states, burn_in, lambda c, first, count, length: _chunk_burn(
            c, algorithm, burn_keys, first, count, length, groups, block_size))
    _, kept = phase((states, kept), num_samples, lambda c, first, count, length: _chunk_keep(
        c, algorithm, keep_keys, parameters, first, count, length, groups, block_size))
    return _chunk_finish(kept, parameters, num_chains, num_samples, groups, adaptation is not None)


def __dir__():
    # The public names only, not the imports (``dir(js.diagnostics)`` lists no ``jax`` or ``jnp``).
    return list(__all__)
