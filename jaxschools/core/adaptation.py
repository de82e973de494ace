r"""Warm-up adaptation: dual-averaging step size, windowed metric estimation, random-walk scale.

BlackJAX's ``SamplingAlgorithm(init, step)`` has no place for tuning, so tuning is a second small
protocol that :func:`jaxschools.core.sampling.run` drives during burn-in. An :class:`Adaptation` is a
NamedTuple of pure functions (``jax.tree_util.Partial`` objects over module-level functions, so the
driver compiles once per kind and shape):

* ``schedule(num_steps) -> dict of numpy arrays`` with leading axis ``num_steps``: what each warm-up
  step does (static, computed on the host once the burn-in length is known);
* ``init(state) -> adapt_state`` for one chain;
* ``update(adapt_state, stage, state, info) -> adapt_state`` after each warm-up transition, with
  ``stage`` that step's row of the schedule;
* ``parameters(adapt_state, final) -> dict`` of keyword arguments for ``algorithm.step``: the values
  to use at the next warm-up step (``final=False``) or frozen for sampling (``final=True``).

The driver runs ``update`` inside the burn-in ``lax.scan`` and vmaps it over chains with the kernel,
so every chain adapts on its own draws (as Stan's chains do); after burn-in the parameters are frozen,
so the kept draws come from one fixed, valid Markov kernel.

**Step size: dual averaging** (Nesterov 2009; Hoffman & Gelman 2014, section 3.2.1, algorithm 5).
With :math:`\alpha_t` the acceptance statistic of transition t (``info.acceptance_rate``) and
:math:`\delta` the target,

.. math::
    \bar h_t = (1 - \tfrac{1}{t + t_0}) \bar h_{t-1} + \tfrac{1}{t + t_0} (\delta - \alpha_t), \quad
    \log\epsilon_t = \mu - \tfrac{\sqrt t}{\gamma} \bar h_t, \quad
    \log\bar\epsilon_t = t^{-\kappa} \log\epsilon_t + (1 - t^{-\kappa}) \log\bar\epsilon_{t-1},

with :math:`\mu = \log(10 \epsilon_0)`, :math:`\gamma = 0.05`, :math:`t_0 = 10`, :math:`\kappa = 0.75`.
Warm-up uses :math:`\epsilon_t`; sampling the averaged :math:`\bar\epsilon`.

**Metric: windowed estimation** (Stan reference manual, "HMC algorithm parameters: automatic
parameter tuning"). Warm-up is split into an initial fast interval (75 steps: step size only, while
the chain finds the typical set), a series of slow windows of doubling length starting at 25 (the last
one stretched to the start of the final interval), and a final fast interval (50 steps). Over each slow
window the draws' variance (or covariance) is accumulated with Welford's algorithm; at its end the
inverse mass matrix becomes the regularised estimate

.. math:: M^{-1} = \frac{n}{n + 5} \hat\Sigma + \frac{5}{n + 5} \, 10^{-3} \, D

and dual averaging restarts from the current step size. Stan shrinks toward :math:`10^{-3} I`; here
:math:`D` is the diagonal of the previous :math:`M^{-1}`, the same rule when that is the identity but
unchanged when the data are rescaled (the project's datasets range from log risk ratios of order 0.1
to test scores of order 10). When warm-up is shorter than 150 steps the intervals are 15% / 75% / 10%.

**The final interval.** The frozen step size is the dual-averaging *average* over the final interval,
which after Stan's 50 steps is still pulled down by the restart's wide early swings: the kept acceptance
comes out above the target (0.88 for a target of 0.8 with NUTS on the non-centered eight schools). A
longer final interval gets closer (200 steps of 1,000: 0.85, and 22% fewer gradients per draw there), but
the larger steps are less forgiving where the geometry is hard: on the non-centered joint of eight precise
log risk ratios, with 100 steps of 500, one chain in 24 diverged 71 times and failed to mix, where with 50
none did. So HMC and NUTS keep Stan's 50. Random-walk Metropolis, which has no divergences and whose
acceptance signal (one Metropolis ratio per step) is much noisier than a trajectory's mean acceptance,
uses 200: after 50 steps its chains' final acceptance rates scatter from 0.2 to 0.5 around a target of
0.35, after 200 from 0.25 to 0.39.

**Random-walk scale.** The same two estimators tune random-walk Metropolis (proposal
:math:`N(x, s^2 \Sigma)`): dual averaging drives :math:`\log s` to a target acceptance (about 0.35 is
optimal in two dimensions, 0.234 as the dimension grows; Gelman, Roberts & Gilks 1996; Roberts &
Rosenthal 2001), and :math:`\Sigma` is the windowed covariance estimate, an adaptive Metropolis in
the manner of Haario, Saksman & Tamminen (2001) but frozen after warm-up so the kept chain is
Markov. The seed's fixed scale is the default; adaptation is opt-in for rwmh.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "Adaptation",
    "DualAveragingState",
    "WelfordState",
    "WindowState",
    "dual_averaging_init",
    "dual_averaging_update",
    "welford_init",
    "welford_update",
    "welford_covariance",
    "window_schedule",
    "window_adaptation",
    "rwmh_adaptation",
    "hmc_parameters",
    "rwmh_parameters",
    "DEFAULT_TARGET_ACCEPT",
]

# Target acceptance statistic per kernel: 0.8 for HMC/NUTS (Stan's adapt_delta), 0.35 for a random walk
# in the two dimensions of the marginal (mu, log tau) target.
DEFAULT_TARGET_ACCEPT = {"hmc": 0.8, "nuts": 0.8, "rwmh": 0.35}

_GAMMA, _T0, _KAPPA = 0.05, 10.0, 0.75
_SHRINKAGE_COUNT, _SHRINKAGE_TARGET = 5.0, 1e-3
_INITIAL_BUFFER, _FINAL_BUFFER, _BASE_WINDOW = 75, 50, 25


class Adaptation(NamedTuple):
    """Warm-up tuning protocol driven by :func:`jaxschools.core.sampling.run` (see the module docstring)."""

    schedule: Callable
    init: Callable
    update: Callable
    parameters: Callable


# ----------------------------------------------------------------------------- dual averaging


class DualAveragingState(NamedTuple):
    """log epsilon_t, its running average, the averaged gradient h_bar, the count t and the centre mu."""

    log_step_size: jax.Array
    log_step_size_avg: jax.Array
    gradient_avg: jax.Array
    step: jax.Array
    mu: jax.Array


def dual_averaging_init(step_size) -> DualAveragingState:
    """Start (or restart) dual averaging at ``step_size``, centred on log(10 step_size)."""
    log_step = jnp.log(step_size)
    zero = jnp.zeros_like(log_step)
    return DualAveragingState(log_step, log_step, zero, zero, jnp.log(10.0) + log_step)


def dual_averaging_update(state: DualAveragingState, acceptance, target) -> DualAveragingState:
    """One dual-averaging iteration toward ``target`` acceptance (Hoffman & Gelman 2014, algorithm 5).

    A non-finite acceptance statistic (a NaN trajectory) counts as 0, so the step size shrinks.
    """
    acceptance = jnp.where(jnp.isfinite(acceptance), acceptance, 0.0)
    t = state.step + 1.0
    weight = 1.0 / (t + _T0)
    gradient_avg = (1.0 - weight) * state.gradient_avg + weight * (target - acceptance)
    log_step = state.mu - jnp.sqrt(t) / _GAMMA * gradient_avg
    decay = t ** (-_KAPPA)
    log_step_avg = decay * log_step + (1.0 - decay) * state.log_step_size_avg
    return DualAveragingState(log_step, log_step_avg, gradient_avg, t, state.mu)


# ----------------------------------------------------------------------------- Welford


class WelfordState(NamedTuple):
    """Running count, mean (d,) and sum of squared deviations: (d,) diagonal or (d, d) dense."""

    count: jax.Array
    mean: jax.Array
    m2: jax.Array


def welford_init(dim: int, dense: bool, dtype) -> WelfordState:
    m2 = jnp.zeros((dim, dim) if dense else (dim,), dtype)
    return WelfordState(jnp.zeros((), dtype), jnp.zeros((dim,), dtype), m2)


def welford_update(state: WelfordState, x) -> WelfordState:
    """Welford's (1962) one-pass update, stable where the naive sum of squares cancels."""
    count = state.count + 1.0
    delta = x - state.mean
    mean = state.mean + delta / count
    if state.m2.ndim == 2:
        m2 = state.m2 + jnp.outer(x - mean, delta)
    else:
        m2 = state.m2 + (x - mean) * delta
    return WelfordState(count, mean, m2)


def welford_covariance(state: WelfordState, previous):
    r"""The regularised estimate :math:`\frac{n}{n+5}\hat\Sigma + \frac{5}{n+5} 10^{-3} D` (module docstring).

    ``previous`` is the inverse mass matrix being replaced; D is its diagonal. With fewer than three
    draws nothing is estimated and ``previous`` is returned.
    """
    n = state.count
    covariance = state.m2 / jnp.maximum(n - 1.0, 1.0)
    diagonal = previous if previous.ndim == 1 else jnp.diag(previous)
    shrink = _SHRINKAGE_TARGET * diagonal
    if state.m2.ndim == 2:
        shrink = jnp.diag(shrink)
    estimate = (n / (n + _SHRINKAGE_COUNT)) * covariance + (_SHRINKAGE_COUNT / (n + _SHRINKAGE_COUNT)) * shrink
    usable = (n >= 3) & jnp.all(jnp.isfinite(estimate))
    return jnp.where(usable, estimate, previous)


# ----------------------------------------------------------------------------- the schedule


def window_schedule(num_steps: int, initial_buffer=_INITIAL_BUFFER, final_buffer=_FINAL_BUFFER,
                    base_window=_BASE_WINDOW) -> dict:
    """Stan's warm-up schedule as per-step arrays: ``slow`` (inside a metric window) and ``window_end``.

    Fewer than 20 steps: no metric windows at all (step size only). Fewer than
    ``initial_buffer + final_buffer + base_window``: 15% / 75% / 10%. Each slow window doubles the last,
    and one that would leave less than twice its length before the final interval absorbs the rest.
    """
    num_steps = int(num_steps)
    slow = np.zeros(num_steps, bool)
    window_end = np.zeros(num_steps, bool)
    if num_steps >= 20:
        if initial_buffer + final_buffer + base_window > num_steps:
            initial_buffer = int(0.15 * num_steps)
            final_buffer = int(0.1 * num_steps)
            base_window = num_steps - initial_buffer - final_buffer
        stop = num_steps - final_buffer
        start, size = initial_buffer, base_window
        while start < stop:
            end = start + size
            if end + 2 * size > stop:
                end = stop
            slow[start:end] = True
            window_end[end - 1] = True
            start, size = end, 2 * size
    return {"slow": slow, "window_end": window_end}


# ----------------------------------------------------------------------------- windowed adaptation


class WindowState(NamedTuple):
    """Per-chain warm-up state: dual averaging, the window's Welford sums, and the current metric."""

    dual_averaging: DualAveragingState
    welford: WelfordState
    step_size: jax.Array
    inverse_mass_matrix: jax.Array


def hmc_parameters(step_size, inverse_mass_matrix) -> dict:
    """Keyword arguments of the HMC and NUTS steps (ours and BlackJAX's)."""
    return {"step_size": step_size, "inverse_mass_matrix": inverse_mass_matrix}


def rwmh_parameters(step_size, inverse_mass_matrix) -> dict:
    """Keyword argument of the random-walk step: ``scale_tril = s chol(Sigma)`` (a diagonal Sigma allowed)."""
    if inverse_mass_matrix.ndim == 1:
        return {"scale_tril": jnp.diag(step_size * jnp.sqrt(inverse_mass_matrix))}
    return {"scale_tril": step_size * jnp.linalg.cholesky(inverse_mass_matrix)}


def _init(state, step_size, inverse_mass_matrix) -> WindowState:
    position = state.position
    dtype = position.dtype
    inverse_mass_matrix = jnp.asarray(inverse_mass_matrix, dtype)
    step_size = jnp.asarray(step_size, dtype)
    return WindowState(
        dual_averaging_init(step_size),
        welford_init(position.shape[-1], inverse_mass_matrix.ndim == 2, dtype),
        step_size,
        inverse_mass_matrix,
    )


def _update(adapt_state: WindowState, stage, state, info, target_accept, adapt_step_size: bool,
            adapt_mass_matrix: bool) -> WindowState:
    dual_averaging, welford = adapt_state.dual_averaging, adapt_state.welford
    step_size, inverse_mass_matrix = adapt_state.step_size, adapt_state.inverse_mass_matrix
    if adapt_step_size:
        acceptance = jnp.asarray(info.acceptance_rate, step_size.dtype)
        dual_averaging = dual_averaging_update(dual_averaging, acceptance, target_accept)
        step_size = jnp.exp(dual_averaging.log_step_size)
    if adapt_mass_matrix:
        welford = jax.tree_util.tree_map(
            lambda new, old: jnp.where(stage["slow"], new, old), welford_update(welford, state.position), welford
        )
        end = stage["window_end"]
        inverse_mass_matrix = jnp.where(end, welford_covariance(welford, inverse_mass_matrix), inverse_mass_matrix)
        fresh = welford_init(welford.mean.shape[-1], welford.m2.ndim == 2, welford.mean.dtype)
        welford = jax.tree_util.tree_map(lambda a, b: jnp.where(end, a, b), fresh, welford)
        if adapt_step_size:
            # The old step size was tuned to the old metric; restart the averaging from it (Stan does too).
            dual_averaging = jax.tree_util.tree_map(
                lambda a, b: jnp.where(end, a, b), dual_averaging_init(step_size), dual_averaging
            )
    return WindowState(dual_averaging, welford, step_size, inverse_mass_matrix)


def _parameters(adapt_state: WindowState, final: bool, to_parameters: Callable, adapt_step_size: bool) -> dict:
    step_size = adapt_state.step_size
    if final and adapt_step_size:
        step_size = jnp.exp(adapt_state.dual_averaging.log_step_size_avg)
    return to_parameters(step_size, adapt_state.inverse_mass_matrix)


def window_adaptation(
    step_size,
    inverse_mass_matrix,
    *,
    target_accept: float = 0.8,
    adapt_step_size: bool = True,
    adapt_mass_matrix: bool = True,
    parameters: Callable = hmc_parameters,
    initial_buffer: int = _INITIAL_BUFFER,
    final_buffer: int = _FINAL_BUFFER,
    base_window: int = _BASE_WINDOW,
) -> Adaptation:
    """Stan-style warm-up: dual-averaging step size and windowed metric estimation (module docstring).

    Args:
      step_size: the initial step size (random walk: the initial scale s).
      inverse_mass_matrix: the initial metric, (d,) diagonal or (d, d) dense (its rank decides which
        one is estimated), e.g. the Laplace covariance on the marginal target or ones on a joint one.
      target_accept: the acceptance statistic dual averaging aims for (Stan's adapt_delta).
      adapt_step_size, adapt_mass_matrix: switch either estimator off.
      parameters: maps (step size, metric) to the step's keyword arguments: :func:`hmc_parameters` for
        HMC and NUTS, :func:`rwmh_parameters` for random-walk Metropolis.
      initial_buffer, final_buffer, base_window: the schedule (:func:`window_schedule`), Stan's by default.
    """
    if not 0.0 < float(target_accept) < 1.0:
        raise ValueError(f"target_accept must be in (0, 1); got {target_accept}")
    return Adaptation(
        schedule=jax.tree_util.Partial(window_schedule, initial_buffer=int(initial_buffer),
                                       final_buffer=int(final_buffer), base_window=int(base_window)),
        init=jax.tree_util.Partial(_init, step_size=jnp.asarray(step_size),
                                   inverse_mass_matrix=jnp.asarray(inverse_mass_matrix)),
        update=jax.tree_util.Partial(_update, target_accept=float(target_accept),
                                     adapt_step_size=bool(adapt_step_size), adapt_mass_matrix=bool(adapt_mass_matrix)),
        parameters=jax.tree_util.Partial(_parameters, to_parameters=parameters, adapt_step_size=bool(adapt_step_size)),
    )


def rwmh_adaptation(cov, scale=2.4 / math.sqrt(2.0), *, target_accept: float = DEFAULT_TARGET_ACCEPT["rwmh"],
                    adapt_scale: bool = True, adapt_cov: bool = True, final_buffer: int = 200) -> Adaptation:
    """Acceptance-targeting scale and windowed covariance for random-walk Metropolis (module docstring).

    The proposal is N(x, s^2 Sigma); ``cov`` seeds Sigma (e.g. the Laplace covariance), ``scale`` seeds s.
    Use with ``jaxschools.core.kernels.rwmh(logdensity, cov, scale)``, whose step takes ``scale_tril=``. The
    final interval, over which the frozen scale is averaged, is 200 steps rather than Stan's 50 (module
    docstring).
    """
    return window_adaptation(scale, cov, target_accept=target_accept, adapt_step_size=adapt_scale,
                             adapt_mass_matrix=adapt_cov, parameters=rwmh_parameters, final_buffer=final_buffer)


def __dir__():
    # The public names only, not the imports (``dir(js.diagnostics)`` lists no ``jax`` or ``jnp``).
    return list(__all__)
