"""``filter_jit``: jit a function whose arguments mix arrays with functions and other static values.

A BlackJAX ``SamplingAlgorithm`` is a NamedTuple of closures; ours hold pytrees (the data and
prior are leaves). To compile once per *kind* of argument and shapes, and not once per dataset,
arrays (and Python floats, which carry values such as a proposal scale) are traced while every
other leaf (functions, strings, ints such as ``num_samples``) is a static, hashed part of the
compilation key. Under an outer ``jit``/``vmap`` the leaves are tracers and are traced too, so a
``filter_jit`` function stays traceable.
"""

from __future__ import annotations

import functools

import jax
import numpy as np

__all__ = ["filter_jit"]

_DYNAMIC_SCALARS = (float, complex)


def _is_dynamic(leaf) -> bool:
    return isinstance(leaf, (jax.Array, np.ndarray, np.generic, jax.core.Tracer) + _DYNAMIC_SCALARS) and not isinstance(
        leaf, bool
    )


class _Static:
    """Hashable holder for the static leaves and the tree structure."""

    __slots__ = ("treedef", "leaves", "_hash")

    def __init__(self, treedef, leaves):
        self.treedef = treedef
        self.leaves = leaves
        self._hash = hash((treedef, leaves))

    def __hash__(self):
        return self._hash

    def __eq__(self, other):
        return isinstance(other, _Static) and self.treedef == other.treedef and self.leaves == other.leaves


def _partition(tree):
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    dynamic = [leaf if _is_dynamic(leaf) else None for leaf in leaves]
    static = tuple(None if _is_dynamic(leaf) else leaf for leaf in leaves)
    return dynamic, _Static(treedef, static)


def _combine(dynamic, static: _Static):
    leaves = [d if s is None else s for d, s in zip(dynamic, static.leaves)]
    return jax.tree_util.tree_unflatten(static.treedef, leaves)


def filter_jit(fun):
    """``jax.jit(fun)`` with array leaves traced and all other leaves static (see module doc)."""

    @functools.partial(jax.jit, static_argnums=(0,))
    def compiled(static, dynamic):
        args, kwargs = _combine(dynamic, static)
        return fun(*args, **kwargs)

    @functools.wraps(fun)
    def wrapper(*args, **kwargs):
        dynamic, static = _partition((args, kwargs))
        return compiled(static, dynamic)

    wrapper.clear_cache = compiled.clear_cache  # type: ignore[attr-defined]
    wrapper.compiled = compiled  # type: ignore[attr-defined]
    return wrapper
