"""A million chains of 10,000 steps in bounded memory: ``sampling.run(..., stream=Stream(...))``.

Random-walk Metropolis on the eight schools' marginal (scale 2, the Laplace covariance), 1,000,000 chains x
10,000 kept steps (10^10 draws; keeping them would take 160 GB), summarised on the fly: moments, batch-means
ESS and MCSE, split R-hat, a 50-bin histogram of each coordinate, and the Rao-Blackwellised P(theta_A > 28).
The chains are split over every local device (a ``jax.sharding`` mesh). The run happens in a child process so
that its peak resident memory (``getrusage``'s ``ru_maxrss``, which includes JAX, XLA and the compiled
program) is the run's alone; the time includes compilation.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time

CHAINS, STEPS = 1_000_000, 10_000
SMOKE_CHAINS, SMOKE_STEPS = 1_000, 200
THRESHOLD, SCHOOL = 28.0, 0  # the seed's question: P(theta_A > 28)


def _p_exceeds(position, data):
    """P(theta_A > 28 | mu, tau, y): the conditional normal's upper tail (jaxschools.core.posterior)."""
    import jax.numpy as jnp
    from jax.scipy.special import ndtr

    from jaxschools.core import posterior

    mean, variance = posterior.conditional_theta(position[0], position[1], data)
    return ndtr((mean[SCHOOL] - THRESHOLD) / jnp.sqrt(variance[SCHOOL]))


def _child(chains: int, steps: int) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    jax.config.update("jax_enable_x64", True)
    from benchmarks.common import eight_schools_fit

    js, data, logdensity, fit = eight_schools_fit()
    sd = np.sqrt(np.diag(np.asarray(fit.cov)))
    edges = np.stack([np.linspace(m - 6 * s, m + 6 * s, 51) for m, s in zip(np.asarray(fit.mode), sd)])
    stream = js.streaming.Stream(num_batches=20, histogram_edges=edges,
                                 statistics=jax.tree_util.Partial(_p_exceeds, data=data))
    devices = jax.local_devices()
    mesh = js.sharding.mesh(devices) if len(devices) > 1 else None
    start = time.perf_counter()
    summary = js.sampling.run(jax.random.key(0), js.kernels.rwmh(logdensity, fit.cov, 2.0), fit.mode,
                              num_samples=steps, num_chains=chains, burn_in=500, stream=stream, mesh=mesh)
    jax.block_until_ready(summary.mean)
    seconds = time.perf_counter() - start
    return {
        "chains": chains, "steps": steps, "seconds": seconds, "devices": len(devices),
        "platform": devices[0].platform,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "mean": np.asarray(summary.mean[:2]).tolist(), "ess": np.asarray(summary.ess[:2]).tolist(),
        "rhat": np.asarray(summary.rhat[:2]).tolist(), "p_exceeds": float(summary.statistics_mean),
        "p_exceeds_mcse": float(summary.statistics_mcse), "acceptance": float(jnp.mean(summary.acceptance_rate)),
        "histogram_total": float(jnp.sum(summary.histogram[0])),
    }


def run(smoke: bool = False) -> dict:
    chains, steps = (SMOKE_CHAINS, SMOKE_STEPS) if smoke else (CHAINS, STEPS)
    done = subprocess.run([sys.executable, "-m", "benchmarks.streaming_memory", str(chains), str(steps)],
                          capture_output=True, text=True, env=dict(os.environ))
    if done.returncode != 0:
        raise RuntimeError(f"the streaming child failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def markdown(result: dict) -> str:
    draws = result["chains"] * result["steps"]
    return "\n".join([
        "## Streaming summaries: memory O(chains)",
        "",
        f"`sampling.run(..., stream=Stream(...))`, random-walk Metropolis, {result['chains']:,} chains x "
        f"{result['steps']:,} kept steps ({draws:.3g} draws, which would take {draws * 16 / 1e9:,.0f} GB kept), "
        f"on {result['devices']} {result['platform']} device(s); child process, time including compilation.",
        "",
        "| chains | steps | seconds | chain-steps / s | peak RSS | mean mu, log tau | batch-means ESS mu, log tau "
        "| split R-hat | P(theta_A > 28) (RB) |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| {result['chains']:,} | {result['steps']:,} | {result['seconds']:.0f} | {draws / result['seconds']:.3g} "
        f"| {result['peak_rss_bytes'] / 2**30:.2f} GiB | {result['mean'][0]:.4f}, {result['mean'][1]:.4f} "
        f"| {result['ess'][0]:.3g}, {result['ess'][1]:.3g} | {result['rhat'][0]:.4f}, {result['rhat'][1]:.4f} "
        f"| {result['p_exceeds']:.5f} +- {result['p_exceeds_mcse']:.1e} |",
        "",
    ])


if __name__ == "__main__":
    print(json.dumps(_child(int(sys.argv[1]), int(sys.argv[2]))))
