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
