"""Shared helpers of the benchmarks: the machine description and a timer (best of several repeats)."""

from __future__ import annotations

import os
import platform
import subprocess
import time


def machine() -> str:
    """One line naming the machine, CPU and versions, for the results file."""
    import jax
    import jaxlib

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            names = [line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")]
        if names:
            cpu = names[0]
    except OSError:
        pass
    return (f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores ({cpu}); Python {platform.python_version()}, "
            f"jax {jax.__version__}, jaxlib {jaxlib.__version__}, backend {jax.default_backend()}")


def eight_schools_fit(dtype=None):
    """``(jaxschools, data, logdensity, fit)``: the eight schools' marginal posterior and its Laplace fit, the
    target every random-walk benchmark samples (``dtype``: the data's float type; default JAX's)."""
    import jaxschools as js

    data = js.data.eight_schools(dtype)
    logdensity = js.models.marginal_logdensity(data)
    fit = js.laplace.fit(logdensity, js.laplace.default_init(data))
    return js, data, logdensity, fit


def best_time(fn, repeats: int = 3) -> float:
    """Smallest wall time of ``repeats`` calls of ``fn`` (which must block until its result is ready)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def interleaved_best_times(runners: dict, repeats: int, compile_first: bool = True) -> dict:
    """Best wall time of each runner over ``repeats`` rounds, after one compiling call each (``compile_first``;
    False for runners compiled ahead of time, whose untimed first call would only cost a run). Each round times
    every runner once, starting one further along each time, so a slow spell of the shared machine costs all of them
    alike instead of one of them."""
    import jax

    for fn in runners.values() if compile_first else ():
        jax.block_until_ready(fn())  # compile
    best = dict.fromkeys(runners, float("inf"))
    names = list(runners)
    for round_ in range(repeats):
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:  # a new order each round
            best[name] = min(best[name], best_time(lambda: jax.block_until_ready(runners[name]()), 1))
    return best


def git_revision() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def numpyro_eight_schools():
    """NumPyro's eight-schools model (mu ~ N(0, 5), tau ~ HalfCauchy(5), theta non-centered), model(sigma, y).

    The peer every benchmark compares with; NumPyro is an optional benchmark dependency (ImportError without).
    """
    import numpyro
    import numpyro.distributions as dist
    from numpyro.infer.reparam import LocScaleReparam

    def model(sigma, y):
        mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
        tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
        with numpyro.plate("J", sigma.shape[0]):
            with numpyro.handlers.reparam(config={"theta": LocScaleReparam(centered=0)}):
                theta = numpyro.sample("theta", dist.Normal(mu, tau))
            numpyro.sample("y", dist.Normal(theta, sigma), obs=y)

    return model


def numpyro_nuts_chain(sigma, y_template, num_warmup: int, num_samples: int, target_accept_prob: float = 0.8):
    """``chain(key, y) -> (z, num_steps)``: one chain of NumPyro's own NUTS kernel (``numpyro.infer.hmc.hmc``)
    on :func:`numpyro_eight_schools`, jittable and vmappable, with the data ``y`` an argument so that one
    compiled function serves every dataset. ``z``: the kept draws on the unconstrained scale (``mu``, ``tau`` as
    log tau, ``theta_decentered``), each (num_samples, ...); ``num_steps``: leapfrog steps per kept draw.

    Set up as ``MCMC(NUTS(model))`` sets it up: a start uniform in (-2, 2) on the unconstrained scale
    (``init_to_uniform``), then Stan's windowed warm-up of the step size and a diagonal mass matrix through
    ``num_warmup`` steps. Calling it in a jitted loop avoids ``MCMC.run``, which in NumPyro 0.21-0.22 re-jits its
    sampling loop on every call when the progress bar is off (``jax_log_compiles`` shows
    ``_fori_collect_loop`` compiled per run; pyro-ppl/numpyro#2171).
    """
    import jax
    from numpyro.infer.hmc import hmc
    from numpyro.infer.util import initialize_model

    # NumPyro wants raw uint32 keys (jax.random.PRNGKey), not typed keys.
    model_info = initialize_model(jax.random.PRNGKey(0), numpyro_eight_schools(), model_args=(sigma, y_template),
                                  dynamic_args=True)
    init_kernel, sample_kernel = hmc(potential_fn_gen=model_info.potential_fn, algo="NUTS")
    leaves, tree = jax.tree_util.tree_flatten(model_info.param_info.z)

    def chain(key, y):
        key_init, key_run = jax.random.split(key)
        starts = [jax.random.uniform(k, leaf.shape, leaf.dtype, minval=-2.0, maxval=2.0)
                  for k, leaf in zip(jax.random.split(key_init, len(leaves)), leaves)]
        state = init_kernel(jax.tree_util.tree_unflatten(tree, starts), num_warmup,
                            target_accept_prob=target_accept_prob, model_args=(sigma, y), rng_key=key_run)

        def step(state, _):
            state = sample_kernel(state, model_args=(sigma, y))
            return state, (state.z, state.num_steps)

        _, (z, num_steps) = jax.lax.scan(step, state, None, length=num_warmup + num_samples)
        return jax.tree_util.tree_map(lambda x: x[num_warmup:], z), num_steps[num_warmup:]

    return chain
