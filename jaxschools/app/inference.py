"""The one inference path: what the config names (kernel, parameterization, warm-up), from a Laplace fit.

The single analysis (:mod:`jaxschools.app.analysis`), every sweep cell and every simulated dataset
(:mod:`jaxschools.app.experiments`) sample through :func:`sample`, so a sweep or a simulation study runs exactly
the inference the single analysis runs:

* ``sampler.kernel``: ``"rwmh"`` (proposal N(x, scale^2 cov), cov the Laplace covariance on the marginal target),
  ``"hmc"``, ``"nuts"``, or a user's kernel named ``"module:function"``: a constructor
  ``function(logdensity_fn, step_size, inverse_mass_matrix) -> SamplingAlgorithm`` (docs/extending.md), imported
  when the run starts (:func:`check`);
* ``model.parameterization``: the marginal (mu, log tau) target, theta drawn afterwards (BDA3 section 5.4), or a
  joint target, centered or non-centered, whose theta come from the chains;
* ``sampler.adapt``: Stan-style warm-up during burn-in (:mod:`jaxschools.core.adaptation`): the random walk's
  scale and proposal covariance, or the step size and metric of HMC, NUTS and a user's kernel.

What a config fixes is a :class:`Plan` (static: part of the compilation key); the numbers a sweep may vary per
cell (the random walk's scale, the step size, the spread of the starts) are :class:`Knobs`, array leaves, so every
cell of a sweep shares one compilation. :func:`sample` and :func:`infer` are traceable and vmap over cells and
datasets; with ``between`` (the command line's interrupt check) :func:`sample` runs as a host loop over chunks.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from jaxschools.app import config as config_module
from jaxschools.core import adaptation, laplace, models, posterior, sampling
from jaxschools.core.data import Schools
from jaxschools.core.kernels import hmc, nuts, rwmh
from jaxschools.errors import InputError

__all__ = ["Plan", "Knobs", "Chains", "plan", "knobs", "label", "check", "build", "sample", "infer"]

# The built-in kernels by their config names (config.KERNELS) and how the report and progress lines name them.
LABELS = {"rwmh": "random-walk Metropolis", "hmc": "Hamiltonian Monte Carlo", "nuts": "NUTS"}


class Plan(NamedTuple):
    """What a config fixes about one inference: hashable, so it is part of the compilation key.

    ``kernel``, ``parameterization``, ``adapt`` (warm-up on or off), ``target_accept`` (the acceptance statistic
    warm-up aims for), ``dense_mass``, ``num_steps``, ``jitter``, ``max_depth`` (HMC and NUTS) as in
    ``[sampler]``; ``num_chains``, ``num_samples``, ``burn_in`` from ``[sampler]`` or ``[simulation]``;
    ``max_iterations`` of the Laplace fit.
    """

    kernel: str
    parameterization: str
    adapt: bool
    target_accept: float | None
    dense_mass: bool
    num_steps: int
    jitter: float
    max_depth: int
    num_chains: int
    num_samples: int
    burn_in: int
    max_iterations: int


class Knobs(NamedTuple):
    """The numbers a sweep may vary from cell to cell (array leaves: one compilation for every value).

    ``scale``: the random walk's proposal scale; ``step_size``: the step size of HMC, NUTS and a user's kernel
    (both the initial values when warm-up adapts them); ``init_spread``: how many Laplace standard deviations
    the chains start from the mode.
    """

    scale: Any
    step_size: Any
    init_spread: Any


class Chains(NamedTuple):
    """One sampling stage's draws in the marginal coordinates, whatever target the kernel explored.

    ``samples.positions`` is (chain, draw, 2) = (mu, log tau); the per-draw divergence flags and the
    adapted parameters stay in ``samples``. ``theta`` is (chain, draw, J) from the chain itself for the
    joint targets and None for the marginal one (whose theta are drawn afterwards).
    """

    parameterization: str
    samples: sampling.Samples
    theta: Any


def plan(config: dict, sizes: str = "sampler") -> Plan:
    """The :class:`Plan` of a resolved config; ``sizes`` names the section whose ``num_chains``, ``num_samples``
    and ``burn_in`` apply (``"simulation"`` for a simulation study's datasets).

    A combination that cannot run is refused here too (:func:`jaxschools.app.config.check_sampler`), for callers
    that bypass the command line's checks.
    """
    config_module.check_sampler(config)
    sampler = config["sampler"]
    kernel, adapt = sampler["kernel"], config_module.adapts(sampler)
    target_accept = sampler["target_accept"] or adaptation.DEFAULT_TARGET_ACCEPT.get(kernel)
    counts = config[sizes]
    return Plan(kernel=kernel, parameterization=config["model"]["parameterization"], adapt=adapt,
                target_accept=target_accept, dense_mass=sampler["dense_mass"], num_steps=sampler["num_steps"],
                jitter=sampler["jitter"], max_depth=sampler["max_depth"], num_chains=counts["num_chains"],
                num_samples=counts["num_samples"], burn_in=counts["burn_in"],
                max_iterations=config["laplace"]["max_iterations"])


def knobs(config: dict, dtype) -> Knobs:
    """The config's :class:`Knobs` as scalars of ``dtype`` (a sweep stacks one per cell)."""
    sampler = config["sampler"]
    return Knobs(*(jnp.asarray(sampler[key], dtype) for key in ("scale", "step_size", "init_spread")))


def label(kernel: str) -> str:
    """How progress lines name a kernel: the built-in's name, or the user's ``module:function``."""
    return LABELS.get(kernel, f"the user kernel {kernel}")


def _constructor(name: str) -> Callable:
    """The user kernel ``"module:function"``, imported (Python's import path, then the current directory);
    InputError naming ``sampler.kernel`` when it cannot be."""
    module_name, _, function_name = name.partition(":")
    where = f"sampler.kernel = {name!r}"
    try:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            # `python -m jaxschools` searches the current directory, the console script does not: the same
            # config must find the same module either way. Last, so an installed module of that name wins.
            if error.name != module_name.partition(".")[0] or os.getcwd() in sys.path:
                raise
            sys.path.append(os.getcwd())
            try:
                module = importlib.import_module(module_name)
            finally:
                sys.path.remove(os.getcwd())
    except Exception as error:  # noqa: BLE001 - whatever the user's module raises, it is bad input
        raise InputError(f"{where}: cannot import {module_name!r}: {_one_line(error)}") from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise InputError(f"{where}: module {module_name!r} has no function {function_name!r}")
    return function


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


def build(plan: Plan, knobs: Knobs, target, cov):
    """The planned kernel on ``target`` and its warm-up adaptation (None when not adapting).

    ``cov`` seeds the metric: the Laplace covariance on the marginal target, the identity on a joint one (which
    has no mode to fit). Random-walk Metropolis keeps the full covariance as its proposal, as the seed does; HMC,
    NUTS and a user's kernel get its diagonal as ``inverse_mass_matrix`` unless ``sampler.dense_mass``.
    """
    dtype = cov.dtype
    if plan.kernel == "rwmh":
        scale = jnp.asarray(knobs.scale, dtype)
        warmup = adaptation.rwmh_adaptation(cov, scale, target_accept=plan.target_accept) if plan.adapt else None
        return rwmh(target, cov, scale), warmup
    metric = cov if plan.dense_mass else jnp.diag(cov)
    step_size = jnp.asarray(knobs.step_size, dtype)
    if plan.kernel == "hmc":
        algorithm = hmc(target, step_size, metric, plan.num_steps, plan.jitter)
    elif plan.kernel == "nuts":
        algorithm = nuts(target, step_size, metric, plan.max_depth)
    else:
        algorithm = _constructor(plan.kernel)(target, step_size, metric)
    warmup = adaptation.window_adaptation(step_size, metric, target_accept=plan.target_accept) if plan.adapt else None
    return algorithm, warmup


def check(plan: Plan, knobs: Knobs, data: Schools, prior) -> None:
    """Refuse a user's kernel that cannot run, before any work: one InputError naming ``sampler.kernel``.

    The module is imported and the function called; then one chain of one warm-up step (when adapting) and one
    kept step is traced (``jax.eval_shape``: nothing compiles or runs) on the planned target, so a constructor
    that does not return a ``SamplingAlgorithm``, a step that does not take the adapted ``step_size=`` and
    ``inverse_mass_matrix=``, an info without ``acceptance_rate`` or ``is_accepted``, or a position whose shape
    changes is refused with what went wrong. The built-in kernels need no check.
    """
    if plan.kernel in LABELS:
        return
    _constructor(plan.kernel)  # an import error is reported as such, not as a failed trace
    dim = 2 if plan.parameterization == "marginal" else 2 + data.num_schools
    start = jnp.concatenate([laplace.default_init(data), jnp.zeros(dim - 2, data.y.dtype)])

    def one_chain():
        target = models.logdensity_for(data, prior, plan.parameterization)
        algorithm, warmup = build(plan, knobs, target, jnp.eye(dim, dtype=data.y.dtype))
        if not (callable(getattr(algorithm, "init", None)) and callable(getattr(algorithm, "step", None))):
            raise TypeError(f"it returned {type(algorithm).__name__}, not a SamplingAlgorithm(init, step)")
        return sampling.run(jax.random.key(0), algorithm, start, num_samples=1, num_chains=1,
                            burn_in=1 if plan.adapt else 0, adaptation=warmup).positions

    try:
        shape = jax.eval_shape(one_chain)
    except Exception as error:  # noqa: BLE001 - the user's code: whatever it raises is reported, in one line
        raise InputError(f"sampler.kernel = {plan.kernel!r} cannot run here: {_one_line(error)}") from None
    if shape.shape != (1, 1, dim) or shape.dtype != data.y.dtype:
        raise InputError(f"sampler.kernel = {plan.kernel!r} cannot run here: a {dim}-coordinate position of "
                         f"{data.y.dtype} became {shape.dtype}{list(shape.shape[2:])}")


def sample(plan: Plan, knobs: Knobs, data: Schools, prior, fit: laplace.LaplaceFit, init_key, sample_key, *,
           between: Callable | None = None) -> Chains:
    """The sampling stage: the planned kernel on the planned target, started from the Laplace fit.

    Chains start at the Laplace mode (``laplace.default_init`` if the mode is not finite) plus
    ``knobs.init_spread`` standard deviations of the Laplace covariance (the identity if the fit failed: never
    NaN, so a failed fit still yields chains, flagged by ``fit.converged``), in directions drawn from
    ``init_key``. On a joint target, theta is added to each start by a draw from theta | mu, tau, y (BDA3 eq.
    5.17; key ``fold_in(init_key, 1)``), as eta = (theta - mu) / tau for the non-centered form, and the joint
    draws are mapped back to (mu, log tau) and theta = theta (centered) or mu + tau eta (non-centered).

    Traceable (vmapped over sweep cells and simulated datasets). With ``between``, the chains run as a host loop
    over short chunks (:func:`jaxschools.core.sampling.run_in_chunks`: the same draws, not traceable) and
    ``between("sampling-chunk:K")`` is called after each.
    """
    dtype = data.y.dtype
    parameterization = plan.parameterization
    cov = jnp.where(jnp.all(jnp.isfinite(fit.cov)) & fit.converged, fit.cov, jnp.eye(2, dtype=dtype))
    mode = jnp.where(jnp.all(jnp.isfinite(fit.mode)), fit.mode, laplace.default_init(data))
    starts = sampling.overdispersed_positions(init_key, mode, cov, plan.num_chains, knobs.init_spread)
    target = models.logdensity_for(data, prior, parameterization)
    if parameterization != "marginal":
        theta = posterior.theta_draws(jax.random.fold_in(init_key, 1), starts[:, None, :], data)[:, 0, :]
        if parameterization == "noncentered":
            theta = (theta - starts[:, :1]) * jnp.exp(-starts[:, 1:2])
        starts = jnp.concatenate([starts, theta], axis=-1)
        cov = jnp.eye(starts.shape[-1], dtype=dtype)
    algorithm, warmup = build(plan, knobs, target, cov)
    sizes = dict(num_samples=plan.num_samples, num_chains=plan.num_chains, burn_in=plan.burn_in, adaptation=warmup)
    if between is None:
        samples = sampling.run(sample_key, algorithm, starts, **sizes)
    else:
        samples = sampling.run_in_chunks(sample_key, algorithm, starts, between=between, **sizes)
    if parameterization == "marginal":
        return Chains(parameterization, samples, None)
    positions = samples.positions
    mu, log_tau, block = positions[..., :1], positions[..., 1:2], positions[..., 2:]
    theta = block if parameterization == "centered" else mu + jnp.exp(log_tau) * block
    return Chains(parameterization, samples._replace(positions=positions[..., :2]), theta)


def infer(rng_key, data: Schools, prior, plan: Plan, knobs: Knobs):
    """One dataset's whole inference, traceable: the Laplace fit of the marginal density, then :func:`sample`
    (keys ``split(rng_key)``: the starts', the chains'). Returns ``(fit, chains)``; theta, for a joint
    target, is ``chains.theta`` and otherwise is the caller's to draw."""
    init_key, sample_key = jax.random.split(rng_key)
    logdensity = models.marginal_logdensity(data, prior)
    fit = laplace.fit(logdensity, laplace.default_init(data), max_iterations=plan.max_iterations)
    return fit, sample(plan, knobs, data, prior, fit, init_key, sample_key)


def __dir__():
    # The public names only, not the imports (``dir(js.diagnostics)`` lists no ``jax`` or ``jnp``).
    return list(__all__)

