"""The dataset: J schools, each with an estimated effect y_j and its known standard error sigma_j.

``Schools`` is a JAX pytree. ``y``, ``sigma`` and ``mask`` are its array leaves, so a ``Schools``
passes through ``jit`` and ``vmap`` (e.g. a batch of simulated datasets is one ``Schools`` whose
leaves have a leading batch axis). ``names`` is static metadata, never traced.

``mask`` marks which schools enter the likelihood. It lets a leave-one-out or padded dataset keep
the same shape J, so one compiled function serves all of them (a masked school contributes nothing).

Concrete values are validated on construction by :mod:`jaxschools.core.validation` (pure Python), so a bad
dataset is refused where its values are known, never inside traced code.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxschools.core import datasets, validation

__all__ = ["Schools", "eight_schools", "load", "from_table"]

@jax.tree_util.register_pytree_node_class
class Schools:
    """J independent estimates y_j ~ N(theta_j, sigma_j^2) with known sigma_j.

    Args:
      y: estimated effects, shape (J,) (or (..., J) for a batch).
      sigma: their standard errors, same shape, all > 0.
      names: one label per school (default A, B, ... or 1, 2, ...); metadata, not a leaf.
      mask: boolean, True where the school is in the likelihood (default: all).

    Concrete inputs are validated (finite, sigma > 0, equal lengths, unique names) and
    raise :class:`jaxschools.errors.InputError` naming the problem. Inputs that are
    tracers (inside jit/vmap) or batched arrays are taken as they are.
    """

    __slots__ = ("y", "sigma", "mask", "names")

    def __init__(self, y, sigma, names=None, mask=None):
        if _concrete_1d(y) and _concrete_1d(sigma):
            names, y_np, sigma_np = validation.check_schools(y, sigma, names)
            dtype = _float_dtype(y)
            y, sigma = jnp.asarray(y_np, dtype), jnp.asarray(sigma_np, dtype)
        elif names is None:
            names = validation.default_names(jnp.shape(y)[-1])
        if mask is None:
            mask = jnp.ones(jnp.shape(y), dtype=bool)
        self.y = y
        self.sigma = sigma
        self.mask = mask
        self.names = tuple(names)

    @property
    def num_schools(self) -> int:
        """J, the number of schools in the arrays (masked ones included)."""
        return int(jnp.shape(self.y)[-1])

    def tree_flatten(self):
        return (self.y, self.sigma, self.mask), self.names

    @classmethod
    def tree_unflatten(cls, names, leaves):
        obj = object.__new__(cls)
        obj.y, obj.sigma, obj.mask = leaves
        obj.names = names
        return obj

    def without_names(self) -> "Schools":
        """The same leaves with no names (``names == ()``).

        The names are static metadata, part of the pytree's structure, so a jitted function compiles once per
        tuple of names; computations that do not need them run on this, and datasets that differ only in their
        names then share one compilation per shape.
        """
        return Schools.tree_unflatten((), self.tree_flatten()[0])

    def replace(self, **changes) -> "Schools":
        """A copy with some leaves replaced (no validation: for perturbation sweeps)."""
        leaves = {"y": self.y, "sigma": self.sigma, "mask": self.mask, **changes}
        return jax.tree_util.tree_unflatten(
            jax.tree_util.tree_structure(self), (leaves["y"], leaves["sigma"], leaves["mask"])
        )

    def __repr__(self) -> str:
        return f"Schools(J={len(self.names)}, names={self.names!r}, y={self.y!r}, sigma={self.sigma!r})"


def _concrete_1d(value) -> bool:
    if isinstance(value, jax.core.Tracer):
        return False
    return np.ndim(value) == 1


def _float_dtype(value):
    """Follow the input's float dtype; anything else takes JAX's default float."""
    dtype = getattr(value, "dtype", None)
    if dtype is not None and jnp.issubdtype(dtype, jnp.floating):
        return dtype
    return jnp.result_type(float)


def eight_schools(dtype=None) -> Schools:
    """The eight schools of BDA3 section 5.5 (Rubin 1981), names A to H."""
    return from_table(datasets.EIGHT_SCHOOLS, dtype)


def from_table(table: dict, dtype=None) -> Schools:
    """A ``Schools`` from the dict that :func:`jaxschools.core.validation.read_table` returns."""
    dtype = dtype or jnp.result_type(float)
    return Schools(
        y=jnp.asarray(table["y"], dtype),
        sigma=jnp.asarray(table["sigma"], dtype),
        names=tuple(table["names"]),
    )


def load(path, dtype=None) -> Schools:
    """Read a CSV (header ``name,y,sigma``) or JSON (``{"name": [...], "y": [...], "sigma": [...]}``)."""
    return from_table(validation.read_table(path), dtype)


def __dir__():
    # The public names only, not the imports (``dir(js.diagnostics)`` lists no ``jax`` or ``jnp``).
    return list(__all__)
