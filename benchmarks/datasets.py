"""Inference over many simulated datasets: one vmapped computation against Python loops.

Each dataset: the eight schools' sigmas, (mu, tau) from the half-Cauchy prior, theta and y simulated; then the
whole inference, i.e. a Laplace fit and 4 random-walk chains x (1,000 burn-in + 2,000 kept) draws on the
marginal, plus summaries. Compared, in the same process:

* jaxschools vmapped over all datasets (in batches, as the simulation studies run it);
* a Python loop calling the same jitted single-dataset inference once per dataset;
* a Python loop over NumPyro's NUTS (4 chains x (1,000 warm-up + 2,000) draws, non-centered model), when NumPyro
  is installed (an optional benchmark dependency), in two forms:

  - ``MCMC.run`` per dataset, as NumPyro documents it (``jit_model_args=True``, vectorized chains). NumPyro
    0.21-0.22 re-jits its sampling loop on every run when the progress bar is off (pyro-ppl/numpyro#2171), so
    this row includes compilation; the seconds JAX spends compiling in it are measured and shown;
  - NumPyro's own NUTS kernel (:func:`benchmarks.common.numpyro_nuts_chain`) in one function jitted over
    (key, y), compiled once and called per dataset: NumPyro's sampler without the recompilation, the fair
    per-dataset cost.

Our rows run random-walk Metropolis on the 2-dimensional marginal (theta integrated out); NumPyro's run NUTS on
the 10-dimensional non-centered joint, NumPyro's usual way to fit this model: the comparison is of whole
inferences per dataset, not of samplers on one target (benchmarks/gradient_kernels.py compares those).

The loops are timed on a subset of datasets and extrapolated to the full count, labelled as such.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
from benchmarks.common import numpyro_eight_schools, numpyro_nuts_chain

NUM_DATASETS = 10_000
LOOP_DATASETS = 100
# ``MCMC.run`` is timed on 10 datasets, not 100: each run re-jits (see above) and leaves the new code mapped in
# the process, and 100 runs exhaust Linux's 65,530 memory mappings (LLVM: "Cannot allocate memory"). The jitted
# NumPyro kernel compiles once and is timed on LOOP_DATASETS like our own loop (10 on a GPU, where it is slow).
NUMPYRO_RUN_DATASETS = 10
BATCH = 1000


def _datasets(num):
    import jaxschools as js

    data = js.data.eight_schools()
    prior = js.models.make_prior("half_cauchy")
    mu, tau = js.models.sample_prior(jax.random.key(1), prior, (num,))
    theta = mu[:, None] + tau[:, None] * jax.random.normal(jax.random.key(2), (num, 8))
    y = theta + data.sigma * jax.random.normal(jax.random.key(3), (num, 8))
    return data, prior, y


def run(smoke: bool = False) -> dict:
    import jaxschools as js
    from jaxschools.app import experiments

    num, loop_num, batch = (40, 4, 20) if smoke else (NUM_DATASETS, LOOP_DATASETS, BATCH)
    num_samples, burn_in = (50, 20) if smoke else (2000, 1000)
    data, prior, ys = _datasets(num)

    def one(key, y):
        d = js.data.Schools(y, data.sigma, mask=jnp.ones(8, bool))
        fit, samples = experiments.infer_marginal(key, d, prior, 2.0, 1.0, num_chains=4, num_samples=num_samples,
                                                  burn_in=burn_in, max_iterations=100)
        positions = samples.positions
        return {"mu": jnp.mean(positions[..., 0]), "log_tau": jnp.mean(positions[..., 1]),
                "converged": fit.converged}

    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(jax.random.key(0), jnp.arange(num))
    batched = jax.jit(jax.vmap(one))
    single = jax.jit(one)
    jax.block_until_ready(batched(keys[:batch], ys[:batch]))
    jax.block_until_ready(single(keys[0], ys[0]))
    start = time.perf_counter()
    for lo in range(0, num, batch):
        jax.block_until_ready(batched(keys[lo:lo + batch], ys[lo:lo + batch]))
    t_vmapped = time.perf_counter() - start
    t_sharded = None
    devices = jax.local_devices()
    if len(devices) > 1 and batch % len(devices) == 0:  # the same batches, split over the devices
        mesh = js.sharding.mesh(devices)
        jax.block_until_ready(batched(*js.sharding.put_leading((keys[:batch], ys[:batch]), mesh)))
        start = time.perf_counter()
        for lo in range(0, num, batch):
            jax.block_until_ready(batched(*js.sharding.put_leading((keys[lo:lo + batch], ys[lo:lo + batch]), mesh)))
        t_sharded = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(loop_num):
        jax.block_until_ready(single(keys[i], ys[i]))
    t_loop = (time.perf_counter() - start) * num / loop_num
    result = {"datasets": num, "vmapped_s": t_vmapped, "sharded_s": t_sharded, "devices": len(devices), "loop_s_extrapolated": t_loop, "loop_measured_on": loop_num,
              "numpyro_s_extrapolated": None, "numpyro_missing": "not run in the smoke run" if smoke else None}
    if not smoke:  # NumPyro is an optional benchmark dependency, too slow for the smoke run
        try:
            # On a GPU every NUTS step of NumPyro's kernel is a few kernel launches: fewer datasets keep it in time.
            measured = loop_num if jax.default_backend() == "cpu" else 10
            result.update(_numpyro_kernel_loop(ys, data, num, measured, num_samples, burn_in))
            result.update(_numpyro_mcmc_run_loop(ys, data, num, NUMPYRO_RUN_DATASETS, num_samples, burn_in))
        except ImportError:
            result["numpyro_missing"] = "not installed"
    return result


def _numpyro_kernel_loop(ys, data, num, measured, num_samples, burn_in):
    """NumPyro's NUTS kernel (:func:`benchmarks.common.numpyro_nuts_chain`), 4 vmapped chains, in one function
    jitted over (key, y): compiled once, then called once per dataset."""
    chain = numpyro_nuts_chain(data.sigma, ys[0], burn_in, num_samples)
    one_dataset = jax.jit(lambda key, y: jax.vmap(lambda k: chain(k, y)[0]["mu"])(jax.random.split(key, 4)))
    jax.block_until_ready(one_dataset(jax.random.PRNGKey(0), ys[0]))  # compile
    start = time.perf_counter()
    for i in range(measured):
        jax.block_until_ready(one_dataset(jax.random.PRNGKey(i), ys[i]))
    return {"numpyro_kernel_s_extrapolated": (time.perf_counter() - start) * num / measured,
            "numpyro_kernel_measured_on": measured}


def _numpyro_mcmc_run_loop(ys, data, num, measured, num_samples, burn_in):
    """``MCMC.run`` once per dataset, timed with the seconds JAX spends tracing, lowering and compiling in it
    (``jax.monitoring`` compile events)."""
    import numpyro
    from numpyro.infer import MCMC, NUTS

    mcmc = MCMC(NUTS(numpyro_eight_schools()), num_warmup=burn_in, num_samples=num_samples, num_chains=4,
                chain_method="vectorized", progress_bar=False, jit_model_args=True)
    mcmc.run(jax.random.PRNGKey(0), data.sigma, ys[0])  # first run: imports and one-time setup
    compile_events = {"/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
                      "/jax/core/compile/backend_compile_duration"}
    compiling = [0.0]

    def listener(event, duration, **_):
        if event in compile_events:
            compiling[0] += duration

    jax.monitoring.register_event_duration_secs_listener(listener)
    start = time.perf_counter()
    try:
        for i in range(measured):
            mcmc.run(jax.random.PRNGKey(i), data.sigma, ys[i])
            jax.block_until_ready(mcmc.get_samples()["mu"])
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    elapsed = time.perf_counter() - start
    return {"numpyro_s_extrapolated": elapsed * num / measured, "numpyro_measured_on": measured,
            "numpyro_compile_fraction": compiling[0] / elapsed, "numpyro_version": numpyro.__version__}


def markdown(result: dict) -> str:
    n = result["datasets"]
    lines = [
        "## Inference over simulated datasets",
        "",
        f"{n:,} datasets (half-Cauchy prior, the eight schools' sigmas); per dataset a Laplace fit and 4 random-walk "
        "chains of 1,000 + 2,000 draws on the marginal; NumPyro's rows run NUTS on the 10-dimensional non-centered "
        "joint (4 chains of 1,000 + 2,000), a whole inference per dataset either way. Loops are timed on a subset and "
        "extrapolated (labelled).",
        "",
        "| method | seconds | datasets / s | vs vmapped |",
        "|---|---|---|---|",
        f"| jaxschools, vmapped in batches | {result['vmapped_s']:.1f} | {n / result['vmapped_s']:.0f} | 1x |",
    ]
    if result.get("sharded_s"):
        t = result["sharded_s"]
        lines.append(f"| jaxschools, vmapped in batches, sharded over {result['devices']} devices | {t:.1f} | {n / t:.0f} "
                     f"| {result['vmapped_s'] / t:.2f}x faster |")
    lines += [
        f"| jaxschools, Python loop (extrapolated from {result['loop_measured_on']}) | {result['loop_s_extrapolated']:.1f} "
        f"| {n / result['loop_s_extrapolated']:.1f} | {result['loop_s_extrapolated'] / result['vmapped_s']:.1f}x slower |",
    ]
    if result.get("numpyro_kernel_s_extrapolated"):
        t = result["numpyro_kernel_s_extrapolated"]
        lines.append(f"| NumPyro NUTS kernel, jitted once, called per dataset in a Python loop (extrapolated from "
                     f"{result['numpyro_kernel_measured_on']}) | {t:.0f} | {n / t:.2f} | "
                     f"{t / result['vmapped_s']:.0f}x slower |")
    if result.get("numpyro_s_extrapolated"):
        t = result["numpyro_s_extrapolated"]
        lines.append(f"| NumPyro `MCMC.run`, Python loop (extrapolated from {result['numpyro_measured_on']}; "
                     f"{100 * result['numpyro_compile_fraction']:.0f}% of it compiling"
                     + (f": NumPyro {result['numpyro_version']} re-jits per run"
                        if result['numpyro_compile_fraction'] > 0.05 else "") + ") "
                     f"| {t:.0f} | {n / t:.2f} | {t / result['vmapped_s']:.0f}x slower |")
    if not result.get("numpyro_kernel_s_extrapolated") and not result.get("numpyro_s_extrapolated"):
        lines.append(f"| NumPyro NUTS | {result['numpyro_missing']} | | |")
    lines.append("")
    return "\n".join(lines)
