r"""Posterior sensitivities from any sampler's draws, by the covariance identity.

For a posterior p(x | y, phi) proportional to p(y, x | phi), with x the sampled parameters and phi any
input that the log-density reads (the data y_j and sigma_j, per-school case weights w_j, prior
hyperparameters), and a quantity g(x, phi) whose expectation exists,

.. math::
    \frac{d}{d\phi} E[g(x, \phi) \mid y, \phi]
      = \mathrm{Cov}\Big(g(x, \phi),\; \frac{\partial}{\partial\phi} \log p(y, x \mid \phi)\Big)
      + E\Big[\frac{\partial g(x, \phi)}{\partial \phi}\Big]

(Giordano, Broderick & Jordan 2018, "Covariances, robustness, and variational Bayes", JMLR 19(51), section
2; differentiate E[g] = int g p(y, x | phi) dx / int p(y, x | phi) dx under the integral sign). The second
term is zero for a g that does not read phi (mu, tau, a sampled theta); it is not for a Rao-Blackwellised
quantity, e.g. E[theta_j | mu, tau, y] = (1 - B_j) y_j + B_j mu, which moves with y_j and sigma_j itself.

**What phi is.** Every floating-point leaf of the log-density pytree (for a
:class:`jaxschools.core.models.LogDensity`: ``data.y``, ``data.sigma``, ``case_weights``, and the prior's
``mu_loc``, ``mu_scale``, ``tau_scale``), or the leaves a ``wrt`` tree selects. The score
s(x) = d/dphi log p(y, x | phi) is ``jax.grad`` of the log-density with respect to those leaves, vmapped over
the draws, so any model written as such a pytree (a :class:`~jax.tree_util.Partial` over its inputs will do)
gets its sensitivities the same way. Only terms that depend on both phi and x matter: a term constant in x
(a likelihood's normalising constant in sigma) shifts every score alike and cancels in the covariance, so an
unnormalised density, an improper prior included, gives the same answer as long as the posterior is proper.
The density must be the one the draws come from, with x on the same coordinates (here (mu, log tau) and
theta or eta), Jacobian included; a Jacobian term does not depend on phi and adds nothing to the score.

**The estimator.** From N draws x_t (all chains), with g_t = g(x_t, phi) and s_t = s(x_t),

.. math:: \widehat{D} = \frac1N \sum_t (g_t - \bar g)(s_t - \bar s)^\top + \frac1N \sum_t \partial g_t / \partial\phi ,

the mean of h_t = (g_t - gbar)(s_t - sbar)^T + dg_t/dphi (centring at the sample means changes it only by
O(1/N)). **Monte Carlo standard error by batch means** (Flegal & Jones 2010, "Batch means and spectral
variance estimators in Markov chain Monte Carlo", Ann. Statist. 38(2)): every chain is cut into
``num_batches`` consecutive batches of L draws (the first N mod num_batches draws of each chain, those nearest
the burn-in, are left out), the batch estimates D_b (the mean of h_t over the batch, centred at the global
means) average to the estimate, and MCSE = sd_b(D_b) / sqrt(B) over the B batches of all chains, with B - 1
degrees of freedom. It holds when L is long against the autocorrelation time of h_t (an underestimate of
relative size about tau_int / L otherwise), so it needs chains that mixed: the MCSEs of mu and log tau
(:mod:`jaxschools.core.diagnostics`) tell how long a batch must be. Batch means need only B x G x P numbers
(G quantities, P inputs), never the N x G x P per-draw products, so the 60 schools' 63 x 183 Jacobian over
160,000 draws costs a few seconds and little memory.

**The schools model** (:func:`model_sensitivity`): mu, tau, theta_j and P(theta_k > c). On the marginal target
(position (mu, log tau)) theta_j is Rao-Blackwellised, E[theta_j | mu, tau, y]; on a joint target it is the
sampled theta (mu + tau eta_j on the non-centered one). P(theta_k > c) is Rao-Blackwellised on every target,
Phi((theta_hat_k - c) / sqrt(V_k)). Case weights are those of :mod:`jaxschools.core.models` and
:mod:`jaxschools.core.exact`: the marginal term p(y_j | mu, tau) raised to w_j, and theta_j | mu, tau, y the
tempered conditional of y_j | theta_j ~ N(theta_j, sigma_j^2 / w_j) (:func:`jaxschools.core.models.tempered_conditional`).
So on the marginal target d log p / d w_j at w = 1 is log N(y_j | mu, sigma_j^2 + tau^2), and the
Rao-Blackwellised theta_hat_j and V_j read w_j through B_j = sigma_j^2 / (sigma_j^2 + w_j tau^2), which
E[dg/dphi] carries; on a joint target the score also has d/dw_j log N(theta_j | theta_hat_j(w), V_j(w)).

Not here, deliberately: quantiles (a sampled quantile's derivative needs a density estimate at the quantile;
:mod:`jaxschools.core.exact` differentiates the exact ones) and P(theta_j is the largest) (a J-dimensional
indicator, piecewise constant in the draws; no Rao-Blackwellised closed form given (mu, tau) is used here).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
from jax.scipy.special import ndtr

from jaxschools.core import models, posterior
from jaxschools.core._jit import filter_jit

__all__ = [
    "NUM_BATCHES",
    "Sensitivity",
    "score",
    "sensitivity",
    "model_quantities",
    "model_sensitivity",
    "inputs",
]

# Batches per chain for the batch-means MCSE: with 4 chains, 100 batch estimates (99 degrees of freedom, an
# MCSE known to about 7%), each of a 25th of a chain, far longer than a mixed chain's autocorrelation time.
NUM_BATCHES = 25


class Sensitivity(NamedTuple):
    """What :func:`sensitivity` returns.

    estimate: d E[g] / d phi. For each leaf of g's output (shape q), a tree shaped like the log-density whose
      differentiated leaves (shape p) hold arrays of shape q + p, and None elsewhere (:func:`model_sensitivity`:
      a dict ``{input name: array}`` instead of the tree).
    mcse: the batch-means Monte Carlo standard error of each entry of ``estimate``, the same structure.
    mean: E[g] from the draws (g's structure), and ``mean_mcse`` its batch-means MCSE.
    num_batches: B, the batch estimates in all chains; the MCSEs have B - 1 degrees of freedom.
    """

    estimate: Any
    mcse: Any
    mean: Any
    mean_mcse: Any
    num_batches: int


def _is_inexact(leaf) -> bool:
    if isinstance(leaf, bool):
        return False
    if isinstance(leaf, (float, complex)):
        return True
    return hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jnp.inexact)


def _flags(logdensity, wrt) -> tuple:
    """Which leaves of ``logdensity`` are phi: floating leaves, and among them those ``wrt`` marks True."""
    leaves, treedef = jax.tree_util.tree_flatten(logdensity)
    chosen = [True] * len(leaves) if wrt is None else treedef.flatten_up_to(wrt)
    return tuple(_is_inexact(leaf) and bool(pick) for leaf, pick in zip(leaves, chosen))


class _Split(NamedTuple):
    """The log-density as phi (one flat vector) and the rest, and the way back."""

    phi: jax.Array
    rebuild: Any  # flat phi -> the log-density
    leaves: list
    flags: tuple
    treedef: Any


def _split(logdensity, flags, dtype) -> _Split:
    leaves, treedef = jax.tree_util.tree_flatten(logdensity)
    phi, unravel = ravel_pytree([jnp.asarray(leaf, dtype) for leaf, flag in zip(leaves, flags) if flag])

    def rebuild(flat):
        chosen = iter(unravel(flat))
        return treedef.unflatten([next(chosen) if flag else leaf for leaf, flag in zip(leaves, flags)])

    return _Split(phi, rebuild, leaves, flags, treedef)


def _as_tree(row, split: _Split, prefix_shape=()):
    """A vector over phi (..., P) as the log-density's tree: each chosen leaf's block, None elsewhere."""
    out, start = [], 0
    for leaf, flag in zip(split.leaves, split.flags):
        if flag:
            shape = jnp.shape(leaf)
            size = math.prod(shape)
            out.append(row[..., start : start + size].reshape(prefix_shape + shape))
            start += size
        else:
            out.append(None)
    return split.treedef.unflatten(out)


@filter_jit
def score(logdensity, position, wrt=None):
    """d/dphi log p(y, x | phi) at one position x: ``jax.grad`` of ``logdensity(position)`` with respect to its
    floating leaves (those ``wrt``, a tree of booleans shaped like ``logdensity``, marks True; all by default).

    Returns a tree shaped like ``logdensity``: the gradient at the chosen leaves, None elsewhere. Vmappable
    over positions; compiled once per kind of log-density and shapes.
    """
    position = jnp.asarray(position)
    split = _split(logdensity, _flags(logdensity, wrt), position.dtype)
    return _as_tree(jax.grad(lambda phi: split.rebuild(phi)(position))(split.phi), split)


def _batches(positions, num_batches: int):
    """(chain, draw, ...) -> (chain x num_batches, L, ...), dropping each chain's first draw % num_batches."""
    num_chains, num_draws = positions.shape[:2]
    length = num_draws // num_batches
    kept = positions[:, num_draws - num_batches * length :]
    return kept.reshape((num_chains * num_batches, length) + positions.shape[2:])


@filter_jit
def _estimate(logdensity, positions, quantity, flags, num_batches):
    split = _split(logdensity, flags, positions.dtype)
    g_tree = jax.eval_shape(quantity, positions[0, 0], logdensity)
    g_leaves, g_def = jax.tree_util.tree_flatten(g_tree)

    def g(position, phi):
        return ravel_pytree(quantity(position, split.rebuild(phi)))[0]

    def s(position, phi):
        return jax.grad(lambda p: split.rebuild(p)(position))(phi)

    over_draws = jax.vmap(g, in_axes=(0, None))
    scores = jax.vmap(s, in_axes=(0, None))
    batches = _batches(positions, num_batches)
    length = batches.shape[1]

    # The batch mean of dg/dphi as one Jacobian of the batch mean of g: reverse mode when g has fewer entries.
    num_out, num_in = sum(math.prod(leaf.shape) for leaf in g_leaves), split.phi.shape[0]
    jacobian = jax.jacrev if num_out <= num_in else jax.jacfwd

    def batch_moments(batch):
        """One pass: the batch's means of g and s, its within-batch covariance and its mean of dg/dphi."""
        g_values, s_values = over_draws(batch, split.phi), scores(batch, split.phi)
        g_mean, s_mean = g_values.mean(0), s_values.mean(0)
        within = (g_values - g_mean).T @ (s_values - s_mean) / length
        return g_mean, s_mean, within + jacobian(lambda phi: over_draws(batch, phi).mean(0))(split.phi)

    g_means, s_means, within = jax.lax.map(batch_moments, batches)
    g_bar, s_bar = g_means.mean(0), s_means.mean(0)
    # Centred at the global means, batch b's estimate is its within-batch covariance plus the product of its
    # means' deviations (an exact identity), so each draw is visited once and no raw cross-product cancels.
    per_batch = within + (g_means - g_bar)[:, :, None] * (s_means - s_bar)[:, None, :]
    count = per_batch.shape[0]
    estimate, mcse = per_batch.mean(0), per_batch.std(0, ddof=1) / math.sqrt(count)
    mean_mcse = g_means.std(0, ddof=1) / math.sqrt(count)

    return (_by_quantity(estimate, g_leaves, g_def, split), _by_quantity(mcse, g_leaves, g_def, split),
            g_def.unflatten(_split_rows(g_bar, g_leaves)), g_def.unflatten(_split_rows(mean_mcse, g_leaves)))


def _split_rows(vector, g_leaves):
    """A vector (G, ...) cut into g's leaves, each reshaped to its shape (plus the trailing axes)."""
    out, start = [], 0
    for leaf in g_leaves:
        size = math.prod(leaf.shape)
        out.append(vector[start : start + size].reshape(leaf.shape + vector.shape[1:]))
        start += size
    return out


def _by_quantity(matrix, g_leaves, g_def, split: _Split):
    """(G, P) -> g's tree of log-density trees, each chosen leaf's block shaped q + p."""
    blocks = _split_rows(matrix, g_leaves)
    return g_def.unflatten([_as_tree(block, split, leaf.shape) for block, leaf in zip(blocks, g_leaves)])


def sensitivity(logdensity, positions, quantity, *, wrt=None, num_batches: int = NUM_BATCHES) -> Sensitivity:
    """d E[g] / d phi from draws ``positions`` (chain, draw, dim) of the posterior ``logdensity`` defines.

    Args:
      logdensity: the log-density the draws come from, a pytree callable ``logdensity(position) -> scalar``
        (a :class:`jaxschools.core.models.LogDensity`, or any pytree such as a ``jax.tree_util.Partial`` over
        the inputs); its floating leaves are phi.
      positions: (chain, draw, dim) draws, e.g. ``samples.positions``.
      quantity: ``g(position, logdensity) -> array or pytree of arrays``; it may read phi through
        ``logdensity``'s leaves (then E[dg/dphi] is added, by ``jax.jacrev``/``jacfwd`` of g). Pass a
        module-level function or a ``Partial`` of one so that repeated calls reuse the compiled code.
      wrt: optional tree of booleans shaped like ``logdensity``: only the leaves marked True are phi.
      num_batches: batches per chain for the batch-means MCSE (module docstring); each chain needs at least
        two draws per batch.

    Returns a :class:`Sensitivity`. Traceable; compiled once per kind of argument and shapes.
    """
    positions = jnp.asarray(positions)
    if positions.ndim < 2:
        raise ValueError(f"positions must be (chain, draw, ...); got shape {positions.shape}")
    num_chains, num_draws = positions.shape[:2]
    if num_batches < 1 or num_draws // num_batches < 2 or num_chains * num_batches < 2:
        raise ValueError(f"{num_chains} chain(s) of {num_draws} draws cannot make {num_batches} batches per chain "
                         "of at least two draws, and at least two batches in all")
    estimate, mcse, mean, mean_mcse = _estimate(logdensity, positions, quantity, _flags(logdensity, wrt),
                                                num_batches)
    return Sensitivity(estimate, mcse, mean, mean_mcse, num_chains * num_batches)


# ---------------------------------------------------------------------------------------------------------
# The schools model.


def _model_quantities(position, logdensity, parameterization: str, school: int, threshold):
    mu, log_tau = position[0], position[1]
    data = logdensity.data
    if logdensity.case_weights is None:
        theta_hat, variance = posterior.conditional_theta(mu, log_tau, data)
    else:  # the weights' conditional, which moves with w (at w = 1 the same numbers)
        theta_hat, variance = models.tempered_conditional(mu, log_tau, data, logdensity.case_weights)
    if parameterization == "marginal":
        theta = theta_hat  # Rao-Blackwellised: E[theta | mu, tau, y], which reads y and sigma
    elif parameterization == "noncentered":
        theta = mu + jnp.exp(log_tau) * position[2:]
    else:
        theta = position[2:]
    # The default threshold is y_k itself, as in exact.summary, so it moves with y_k.
    cut = data.y[school] if threshold is None else threshold
    p_exceeds = ndtr((theta_hat[school] - cut) / jnp.sqrt(variance[school]))
    return {"mu": mu, "tau": jnp.exp(log_tau), "theta": theta, "p_exceeds": p_exceeds}


def model_quantities(parameterization: str = "marginal", *, school: int = 0, threshold=None):
    """g for the schools model on a target's positions: ``g(position, logdensity) -> {"mu", "tau", "theta",
    "p_exceeds"}`` (module docstring: theta Rao-Blackwellised on the marginal, sampled on a joint target;
    P(theta_school > threshold) Rao-Blackwellised, the threshold y_school when None)."""
    if parameterization not in ("marginal", "centered", "noncentered"):
        raise ValueError(f"unknown parameterization {parameterization!r}")
    return jax.tree_util.Partial(_model_quantities, parameterization=parameterization, school=int(school),
                                 threshold=threshold)


def inputs(tree) -> dict:
    """A tree shaped like a :class:`~jaxschools.core.models.LogDensity` (a sensitivity's per-quantity entry) as
    ``{"y", "sigma", "case_weights", "mu_loc", "mu_scale", "tau_scale"}``, leaving out the inputs it does not
    hold (None)."""
    named = {
        "y": tree.data.y,
        "sigma": tree.data.sigma,
        "case_weights": tree.case_weights,
        "mu_loc": tree.prior.mu_loc,
        "mu_scale": tree.prior.mu_scale,
        "tau_scale": tree.prior.tau_scale,
    }
    return {name: value for name, value in named.items() if value is not None}


def _model_wrt(logdensity):
    """Every input but the flat prior's (unused) scales and the mask."""
    proper = logdensity.prior.proper
    flags = jax.tree_util.tree_map(lambda _: True, logdensity)
    prior = jax.tree_util.tree_map(lambda _: proper, logdensity.prior)
    return type(logdensity).tree_unflatten(
        (logdensity.fn, logdensity.parameterization), (flags.data, prior, flags.case_weights))


def model_sensitivity(logdensity, positions, *, school: int = 0, threshold=None,
                      num_batches: int = NUM_BATCHES) -> Sensitivity:
    """d E[g] / d phi for the schools model's quantities (:func:`model_quantities`) from draws of ``logdensity``
    (a :class:`~jaxschools.core.models.LogDensity`, any parameterization).

    phi: y, sigma, the case weights w (at w = 1 when the density has none: the data as given) and, for a proper
    prior, mu_loc, mu_scale and tau_scale. ``estimate`` and ``mcse`` are ``{quantity: {input: array}}``, e.g.
    ``estimate["theta"]["y"]`` is the J x J matrix d E[theta_i] / d y_j (:func:`inputs` names them).
    """
    if logdensity.case_weights is None:
        logdensity = logdensity.with_case_weights(jnp.ones_like(logdensity.data.y))
    quantity = model_quantities(logdensity.parameterization, school=school, threshold=threshold)
    out = sensitivity(logdensity, positions, quantity, wrt=_model_wrt(logdensity), num_batches=num_batches)
    named = {name: inputs(tree) for name, tree in out.estimate.items()}
    named_mcse = {name: inputs(tree) for name, tree in out.mcse.items()}
    return out._replace(estimate=named, mcse=named_mcse)


def __dir__():
    # The public names only, not the imports.
    return list(__all__)
