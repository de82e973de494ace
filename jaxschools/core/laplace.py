r"""The Laplace (normal) approximation at the posterior mode, with exact derivatives.

For a log-density :math:`f` with mode :math:`\hat x` and Hessian :math:`H = \nabla^2 f(\hat x)`,

.. math:: p(x \mid y) \approx N(x \mid \hat x, (-H)^{-1}), \qquad
          \log p(y) \approx f(\hat x) + \tfrac{d}{2}\log 2\pi - \tfrac12 \log\det(-H)

(BDA3 section 4.1 and eq. 13.5 (with the Laplace evidence); LearnBayes' ``laplace()$int``).
The seed analysis found the mode with Nelder-Mead and the Hessian by finite differences;
here the gradient and Hessian are exact (``jax.grad``, ``jax.hessian``).

The mode is found by damped Newton: the direction is :math:`|H|^{-1} g` with :math:`|H|` the
Hessian with its eigenvalues replaced by their absolute values (floored), so away from the mode,
where the Hessian is indefinite, the step still goes uphill (saddle-free Newton, Dauphin et al.
2014); a backtracking line search over a fixed ladder of step lengths, evaluated in one vectorised
call, enforces the Armijo condition. The loop is a ``lax.while_loop`` with a fixed iteration budget,
so :func:`fit` is jittable and vmappable over datasets.

**Derivatives** (issue 15). The fit differentiates in both modes (``jax.grad``, ``jacrev``, ``jacfwd``,
under ``vmap``) with respect to the leaves phi of the log-density pytree (a
:class:`~jaxschools.core.models.LogDensity`'s data y, sigma, case weights and prior scales). The mode is
never differentiated through the Newton iterations (a ``while_loop``, which reverse mode cannot
transpose): the loop runs on the leaves with their gradients stopped, and the mode's derivative comes from
the implicit function theorem at the converged mode, where :math:`\nabla_x f(\hat x(\phi); \phi) = 0`:

.. math:: \frac{d\hat x}{d\phi} = -H^{-1} \frac{\partial \nabla_x f}{\partial \phi}\Big|_{\hat x},

a ``jax.custom_jvp`` whose tangent (a linear solve with the Hessian) JAX transposes for reverse mode. The
covariance :math:`(-H(\hat x(\phi); \phi))^{-1}`, ``logdensity`` and ``log_evidence`` then follow by
ordinary differentiation of the Hessian (third derivatives of f) and of f at that mode. The derivative is
that of the exact mode only when ``converged``; a plain Python function has no leaves, so its mode carries no
derivative (wrap what you differentiate as leaves of a pytree callable, as ``LogDensity`` does).
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxschools.core._jit import filter_jit
from jaxschools.core.data import Schools

__all__ = ["LaplaceFit", "default_init", "fit"]

_NUM_STEP_LENGTHS = 40  # step lengths 1, 1/2, ..., 2^-39
_ARMIJO_C = 1e-4


class LaplaceFit(NamedTuple):
    """Result of :func:`fit`.

    mode: (d,) the posterior mode (the last iterate if not converged).
    cov: (d, d) inverse of the negative Hessian at the mode.
    converged: True only if the gradient is negligible for the dtype (Newton decrement below
      ``10 eps (1 + |f|)``) and the Hessian is negative definite.
    log_evidence: Laplace estimate of log p(y); NaN for an improper prior.
    logdensity: f at the mode.
    newton_decrement: g^T (-H)^{-1} g at the mode (about twice the log-density still to gain).
    num_iterations: Newton iterations taken.
    """

    mode: jax.Array
    cov: jax.Array
    converged: jax.Array
    log_evidence: jax.Array
    logdensity: jax.Array
    newton_decrement: jax.Array
    num_iterations: jax.Array


def default_init(data: Schools) -> jax.Array:
    r"""A start ``[mu, log tau]`` derived from the data, valid on any scale.

    mu: the precision-weighted (complete-pooling) mean. tau^2: the excess of the sample variance of
    y over the mean sigma^2 (a method-of-moments estimate, BDA3 section 5.5), floored at
    (mean sigma / 4)^2 so that all-equal y (tau -> 0) still gives a finite start on the data's scale.
    """
    mask = data.mask
    weights = jnp.where(mask, 1.0 / data.sigma**2, 0.0)
    mu = jnp.sum(weights * data.y, axis=-1) / jnp.sum(weights, axis=-1)
    count = jnp.sum(mask, axis=-1)
    mean_y = jnp.sum(jnp.where(mask, data.y, 0.0), axis=-1) / count
    var_y = jnp.sum(jnp.where(mask, (data.y - mean_y[..., None]) ** 2, 0.0), axis=-1) / jnp.maximum(count - 1, 1)
    mean_sigma2 = jnp.sum(jnp.where(mask, data.sigma**2, 0.0), axis=-1) / count
    mean_sigma = jnp.sum(jnp.where(mask, data.sigma, 0.0), axis=-1) / count
    tau2 = jnp.maximum(var_y - mean_sigma2, (0.25 * mean_sigma) ** 2)
    return jnp.stack([mu, 0.5 * jnp.log(tau2)], axis=-1)


def _equilibrate(matrix):
    """``(D^-1 A D^-1, d)`` with ``D = diag(d)``, ``d_i = sqrt|A_ii|`` (1 where A_ii is 0 or not finite).

    The coordinates carry their own units (mu on the data's scale, log tau on a unit scale), so the
    curvatures along them differ by the data's scale squared: 1e6 for data scaled by 1e3, more than float32
    resolves beside its unit-scale partner, and by 1e9 more than float64 does. Eigenvalues, the floor below
    and the definiteness checks are taken on the scaled matrix (Jacobi scaling; near the mode, where -A is
    definite, its diagonal is 1 and the rest of its entries are correlations), which makes the fit invariant
    to the units of each coordinate.
    """
    magnitude = jnp.abs(jnp.diagonal(matrix))
    usable = jnp.isfinite(magnitude) & (magnitude >= jnp.finfo(matrix.dtype).tiny)
    d = jnp.sqrt(jnp.where(usable, magnitude, 1.0))
    return matrix / d[:, None] / d[None, :], d


def _abs_inverse(hessian):
    """(|H|)^{-1} with eigenvalues (of the equilibrated H) floored relative to the largest, and whether -H is
    definite."""
    scaled, d = _equilibrate(hessian)
    eigvals, eigvecs = jnp.linalg.eigh(scaled)
    magnitude = jnp.abs(eigvals)
    floor = jnp.finfo(hessian.dtype).eps * jnp.max(magnitude) + jnp.finfo(hessian.dtype).tiny
    inverse = (eigvecs / jnp.maximum(magnitude, floor)) @ eigvecs.T / d[:, None] / d[None, :]
    negative_definite = jnp.all(eigvals < 0)
    return inverse, negative_definite


def _tolerance(value):
    return 10.0 * jnp.finfo(value.dtype).eps * (1.0 + jnp.abs(value))


def _array_leaves(tree):
    """The array leaves of ``tree`` (tracers included) and a function rebuilding ``tree`` from new ones."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    dynamic = [i for i, leaf in enumerate(leaves) if isinstance(leaf, jax.Array)]
    static = [None if i in dynamic else leaf for i, leaf in enumerate(leaves)]

    def rebuild(arrays):
        full = list(static)
        for i, array in zip(dynamic, arrays):
            full[i] = array
        return jax.tree_util.tree_unflatten(treedef, full)

    return [leaves[i] for i in dynamic], rebuild


def _at_mode(logdensity, mode):
    """``mode``, a converged root of grad f, with its derivative in the leaves phi of ``logdensity`` by the
    implicit function theorem: d mode = (-H)^-1 (d/dphi grad_x f)(mode) dphi (module docstring)."""
    arrays, rebuild = _array_leaves(logdensity)
    if not arrays:  # a plain function: nothing to differentiate with respect to
        return mode

    @jax.custom_jvp
    def implicit(mode, arrays):
        return mode

    @implicit.defjvp
    def implicit_jvp(primals, tangents):
        mode, arrays = primals
        _, darrays = tangents  # the mode's own tangent is 0: it comes from the loop on stopped leaves
        grad_at_mode = lambda arrays: jax.grad(rebuild(arrays))(mode)
        _, dgrad = jax.jvp(grad_at_mode, (arrays,), (darrays,))
        # (-H)^-1 dgrad through the equilibrated -H (the covariance's scaling, units-invariant).
        scaled, d = _equilibrate(-jax.hessian(rebuild(arrays))(mode))
        return mode, jnp.linalg.solve(scaled, dgrad / d) / d

    return implicit(mode, arrays)


@filter_jit
def _fit(logdensity, init, max_iterations: int, proper: bool):
    differentiable = logdensity
    arrays, rebuild = _array_leaves(logdensity)
    # The Newton loop runs on the leaves with their gradients stopped (reverse mode cannot transpose a
    # while_loop, and the mode's derivative comes from _at_mode instead); a plain function is left as it is.
    logdensity = rebuild(jax.lax.stop_gradient(arrays)) if arrays else logdensity
    init = jax.lax.stop_gradient(jnp.asarray(init))
    value_and_grad = jax.value_and_grad(logdensity)
    hessian = jax.hessian(logdensity)
    step_lengths = 0.5 ** jnp.arange(_NUM_STEP_LENGTHS, dtype=init.dtype)

    def newton_decrement(x, value, grad):
        inverse, negdef = _abs_inverse(hessian(x))
        return grad @ inverse @ grad, inverse, negdef

    def cond(carry):
        _, value, grad, iteration, done = carry
        return (iteration < max_iterations) & ~done

    def body(carry):
        x, value, grad, iteration, _ = carry
        decrement, inverse, negdef = newton_decrement(x, value, grad)
        direction = inverse @ grad
        candidates = x + step_lengths[:, None] * direction
        trial_values = jax.vmap(logdensity)(candidates)
        # Armijo: f(x + a d) >= f(x) + c a g.d ; the first (longest) acceptable step wins.
        acceptable = jnp.isfinite(trial_values) & (trial_values >= value + _ARMIJO_C * step_lengths * decrement)
        any_acceptable = jnp.any(acceptable)
        best = jnp.argmax(acceptable)
        new_x = jnp.where(any_acceptable, candidates[best], x)
        new_value, new_grad = value_and_grad(new_x)
        small = negdef & (decrement <= _tolerance(value))
        # Stop when converged, or when no step improves f (the line search has stalled).
        done = small | ~any_acceptable
        return new_x, new_value, new_grad, iteration + 1, done

    value0, grad0 = value_and_grad(init)
    carry0 = (init, value0, grad0, jnp.asarray(0), ~jnp.isfinite(value0))
    mode, value, grad, iterations, _ = jax.lax.while_loop(cond, body, carry0)

    if arrays:
        # The mode with its implicit derivative; f, its gradient and Hessian there with their ordinary ones.
        mode = _at_mode(differentiable, mode)
        value, grad = jax.value_and_grad(differentiable)(mode)
        hessian = jax.hessian(differentiable)
    scaled, d = _equilibrate(-hessian(mode))
    eigvals = jnp.linalg.eigvalsh(scaled)
    positive_definite = jnp.all(eigvals > 0)
    cov = jnp.linalg.inv(scaled) / d[:, None] / d[None, :]
    decrement = grad @ cov @ grad
    finite = jnp.isfinite(value) & jnp.all(jnp.isfinite(grad)) & jnp.all(jnp.isfinite(cov))
    converged = finite & positive_definite & (decrement <= _tolerance(value))
    dim = mode.shape[-1]
    log_det = jnp.sum(jnp.log(eigvals)) + 2.0 * jnp.sum(jnp.log(d))  # log det(-H) = log det(D S D)
    log_evidence = value + 0.5 * dim * math.log(2.0 * math.pi) - 0.5 * log_det
    if not proper:
        log_evidence = jnp.full_like(value, jnp.nan)
    return LaplaceFit(mode, cov, converged, log_evidence, value, decrement, iterations)


def fit(logdensity, init, *, max_iterations: int = 100, proper: bool | None = None) -> LaplaceFit:
    """Mode and Laplace covariance of ``logdensity`` (damped Newton from ``init``; see module doc).

    Args:
      logdensity: position (d,) -> scalar; a :class:`jaxschools.core.models.LogDensity` or any
        JAX-traceable callable.
      init: (d,) starting position, e.g. :func:`default_init`.
      max_iterations: fixed Newton budget (no data-dependent Python control flow, so ``fit`` vmaps).
      proper: whether the density integrates to p(y); by default read from ``logdensity.proper``
        and assumed True for a plain callable. Improper densities get ``log_evidence = NaN``.

    Jittable and vmappable; called eagerly it compiles once per kind of log-density and shape.
    """
    if proper is None:
        proper = bool(getattr(logdensity, "proper", True))
    return _fit(logdensity, init, int(max_iterations), bool(proper))


def __dir__():
    # The public names only, not the imports (``dir(js.diagnostics)`` lists no ``jax`` or ``jnp``).
    return list(__all__)
