r"""One jittable minimiser for the library's optimisation problems (empirical Bayes, design): optax's L-BFGS.

:func:`minimize` runs ``optax.lbfgs`` (memory 10, zoom line search with the strong Wolfe conditions; Nocedal &
Wright, *Numerical Optimization*, 2nd ed., algorithms 7.5 and 3.5-3.6) inside a ``lax.while_loop``, so it is
traceable: it composes with ``jit`` and ``vmap`` (a batch of problems runs until the last has stopped). The
objective is any scalar function of a flat parameter vector whose gradient ``jax.grad`` gives; callers pass
parameters in unconstrained, dimensionless coordinates (log scales, locations in units of a scale) so that one
gradient-norm tolerance means the same thing on every scale of the data.

The loop stops when the gradient norm is at most ``gtol`` (converged), when x_0 is below ``floor`` with the
gradient still pointing there (g_0 > 0: descent goes on towards x_0 -> -inf, the boundary of a log-scale
parameter, where the gradient fades without vanishing at any finite point), when the objective or its gradient is
not finite, or after ``max_iterations`` iterations.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
import optax.tree_utils as otu

__all__ = ["Minimum", "minimize"]


class Minimum(NamedTuple):
    """Where :func:`minimize` stopped: the last iterate and what made it stop."""

    x: jax.Array  # (d,) the last iterate
    value: jax.Array  # () the objective there
    grad: jax.Array  # (d,) its gradient
    grad_norm: jax.Array  # () the Euclidean norm of grad
    iterations: jax.Array  # () L-BFGS iterations taken (each one line search)
    converged: jax.Array  # () grad_norm <= gtol
    at_floor: jax.Array  # () x_0 < floor with g_0 > 0
    finite: jax.Array  # () objective and gradient finite at x

    @property
    def ended(self):
        """The search ended properly: converged, or the floor reached (not out of iterations, nothing infinite)."""
        return self.finite & (self.converged | self.at_floor)


def minimize(fun: Callable, x0, *, gtol, max_iterations: int, floor: float | None = None) -> Minimum:
    """Minimise ``fun`` from ``x0`` by L-BFGS (see the module docstring); traceable."""

    def stop(x, g):
        return jnp.zeros((), bool) if floor is None else (x[0] < floor) & (g[0] > 0.0)
    opt = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(fun)

    def status(x, state):
        g = otu.tree_get(state, "grad")
        value = otu.tree_get(state, "value")
        norm = jnp.sqrt(jnp.sum(g * g))
        finite = jnp.isfinite(value) & jnp.all(jnp.isfinite(g))
        return g, value, norm, finite

    def unfinished(carry):
        x, state = carry
        count = otu.tree_get(state, "count")
        g, _, norm, finite = status(x, state)
        # count == 0: the state's gradient is not yet evaluated (optax stores inf there).
        return (count == 0) | ((count < max_iterations) & finite & (norm > gtol) & ~stop(x, g))

    def step(carry):
        x, state = carry
        value, grad = value_and_grad(x, state=state)
        updates, state = opt.update(grad, state, x, value=value, grad=grad, value_fn=fun)
        return optax.apply_updates(x, updates), state

    x0 = jnp.asarray(x0)
    x, state = jax.lax.while_loop(unfinished, step, (x0, opt.init(x0)))
    g, value, norm, finite = status(x, state)
    return Minimum(
        x=x,
        value=value,
        grad=g,
        grad_norm=norm,
        iterations=otu.tree_get(state, "count"),
        converged=finite & (norm <= gtol),
        at_floor=stop(x, g),
        finite=finite,
    )


def __dir__():
    return list(__all__)
