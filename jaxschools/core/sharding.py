"""Chains and datasets spread over devices with ``jax.sharding``.

Chains are independent, and so are simulated datasets: the work splits along one leading axis with no
communication at all. A one-dimensional :class:`jax.sharding.Mesh` names that axis, a
``NamedSharding(mesh, PartitionSpec(axis))`` places the leading axis across the devices, and ``jit``'s SPMD
partitioner compiles one program per device from the same traced function (JAX's "automatic parallelism";
https://docs.jax.dev/en/latest/sharded-computation.html). Nothing here starts a process or a thread.

Because chain ``c`` draws from ``fold_in(key, c)`` (:mod:`jaxschools.core.sampling`), a sharded run gives the same
draws as a single-device run with the same key, whatever the number of devices; the leading axis is padded to
a multiple of the device count (extra chains or datasets, computed and dropped), never reshaped. (Up to
rounding: XLA may round a batched reduction differently for another per-device batch shape; random-walk
chains are unaffected, gradient kernels' trajectories amplify it over long runs; docs/distributed.md.)

Several hosts: call ``jax.distributed.initialize()`` first in every process; ``jax.devices()`` then lists the
devices of all processes and :func:`mesh` spans them (docs/distributed.md, examples/distributed_chains.py).
"""

from __future__ import annotations

import math

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = ["AXIS", "mesh", "padded_size", "leading", "pad_leading", "constrain_leading", "put_leading"]

AXIS = "batch"


def mesh(devices=None, axis_name: str = AXIS) -> Mesh:
    """A one-dimensional mesh over ``devices`` (default: every device of every process, ``jax.devices()``)."""
    devices = jax.devices() if devices is None else list(devices)
    if not devices:
        raise ValueError("a mesh needs at least one device")
    return Mesh(np.asarray(devices), (axis_name,))


def _check(mesh_: Mesh) -> str:
    if not isinstance(mesh_, Mesh) or len(mesh_.axis_names) != 1:
        raise ValueError(f"expected a one-dimensional jax.sharding.Mesh (see jaxschools.core.sharding.mesh); got {mesh_!r}")
    return mesh_.axis_names[0]


def leading(mesh_: Mesh) -> NamedSharding:
    """The sharding that splits an array's leading axis over the mesh (other axes whole on each device)."""
    return NamedSharding(mesh_, PartitionSpec(_check(mesh_)))


def padded_size(size: int, mesh_: Mesh) -> int:
    """``size`` rounded up to a multiple of the mesh's device count."""
    _check(mesh_)
    return math.ceil(size / mesh_.size) * mesh_.size


def pad_leading(tree, size: int):
    """Every leaf's leading axis extended to ``size`` by repeating its last row (work computed and dropped)."""

    def pad(x):
        extra = size - x.shape[0]
        if extra == 0:
            return x
        return jax.numpy.concatenate([x, jax.numpy.repeat(x[-1:], extra, axis=0)])

    return jax.tree_util.tree_map(pad, tree)


def constrain_leading(tree, mesh_: Mesh):
    """Inside ``jit``: ask the partitioner to split every leaf's leading axis over the mesh."""
    sharding = leading(mesh_)
    return jax.tree_util.tree_map(lambda x: jax.lax.with_sharding_constraint(x, sharding), tree)


def put_leading(tree, mesh_: Mesh):
    """Outside ``jit``: place every leaf with its leading axis split over the mesh (``jax.device_put``).

    The leading axis must already be a multiple of the device count (:func:`pad_leading`)."""
    sharding = leading(mesh_)
    return jax.tree_util.tree_map(lambda x: jax.device_put(x, sharding), tree)


def __dir__():
    # The public names only, not the imports (``dir(js.diagnostics)`` lists no ``jax`` or ``jnp``).
    return list(__all__)
