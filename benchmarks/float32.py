"""float32 against float64: what single precision buys in speed and costs in accuracy.

The same inference (Laplace fit, then random-walk Metropolis at scale 2 on the Laplace covariance) with the data,
the starting point and hence every array in float32 (the library follows the data's dtype) and in float64:

* speed: chain-steps per second of ``sampling.run`` at 1,024 and 16,384 chains (draws kept), best of 3;
* accuracy of the pieces: the Laplace mode, and the largest relative error of the float32 log-density over
  100,000 points from the float64 posterior draws;
* accuracy of the answers: posterior means of mu and log tau and the Rao-Blackwellised P(theta_A > 28) from
  64 chains x 20,000 draws in each precision, against the exact quadrature (float64), in units of each run's own
  Monte Carlo standard error. float32 is safe where its error stays well inside the Monte Carlo error.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtr

from benchmarks.common import best_time, eight_schools_fit

THROUGHPUT = {1024: 1000, 16384: 200}
ACCURACY_CHAINS, ACCURACY_DRAWS, BURN_IN = 64, 20_000, 1_000
THRESHOLD = 28.0


def _inference(dtype, smoke):
    from jaxschools.core import diagnostics, posterior

    js, data, logdensity, fit = eight_schools_fit(dtype)
    algo = js.kernels.rwmh(logdensity, fit.cov, 2.0)
    key = jax.random.key(0)
    speed = {}
    for chains, steps in ({64: 20}.items() if smoke else THROUGHPUT.items()):
        def fn(chains=chains, steps=steps):
            return jax.block_until_ready(
                js.sampling.run(key, algo, fit.mode, num_samples=steps, num_chains=chains).positions)
        fn()
        speed[chains] = chains * steps / best_time(fn, 1 if smoke else 3)
    chains, draws, burn_in = (64, 20, 0) if smoke else (ACCURACY_CHAINS, ACCURACY_DRAWS, BURN_IN)
    # (in smoke mode the throughput run's shapes, so nothing new compiles)
    samples = js.sampling.run(jax.random.key(1), algo, fit.mode, num_samples=draws, num_chains=chains,
                              burn_in=burn_in)
    positions = samples.positions
    mean, variance = posterior.conditional_theta(positions[..., 0], positions[..., 1], data)
    p = ndtr((mean[..., 0] - THRESHOLD) / jnp.sqrt(variance[..., 0]))
    estimates = {}
    for name, values in (("mu", positions[..., 0]), ("log_tau", positions[..., 1]), ("p_exceeds", p)):
        values = jnp.asarray(values, jnp.float64)
        estimates[name] = (float(jnp.mean(values)), float(diagnostics.mcse_mean(values)))
    return {"speed": speed, "mode": np.asarray(fit.mode, np.float64), "estimates": estimates,
            "positions": np.asarray(positions, np.float64), "logdensity": logdensity}


def run(smoke: bool = False) -> dict:
    import jaxschools as js

    double = _inference(jnp.float64, smoke)
    single = _inference(jnp.float32, smoke)
    data = js.data.eight_schools(jnp.float64)
    exact = js.exact.summary(data, "flat", query_school=0, threshold=THRESHOLD)
    truth = {"mu": float(exact["mu"]["mean"]), "log_tau": float(exact["log_tau"]["mean"]),
             "p_exceeds": float(exact["p_exceeds"])}
    points = double["positions"].reshape(-1, 2)[:100_000]
    reference = np.asarray(jax.vmap(double["logdensity"])(jnp.asarray(points)))
    approximate = np.asarray(jax.vmap(single["logdensity"])(jnp.asarray(points, jnp.float32)), np.float64)
    return {
        "speed": {str(k): {"float64": double["speed"][k], "float32": single["speed"][k]} for k in double["speed"]},
        "mode": {"float64": double["mode"].tolist(), "float32": single["mode"].tolist()},
        "logdensity_max_relative_error": float(np.max(np.abs(approximate - reference) / np.abs(reference))),
        "estimates": {"float64": double["estimates"], "float32": single["estimates"]},
        "exact": truth,
        "draws": "64 x 20" if smoke else f"{ACCURACY_CHAINS} x {ACCURACY_DRAWS:,}",
    }


def markdown(result: dict) -> str:
    lines = [
        "## float32 against float64",
        "",
        "The same inference with the data in float32 (every array follows) and in float64. Speed: random-walk "
        "chain-steps per second, draws kept, best of 3. Accuracy: estimates from "
        f"{result['draws']} draws against the exact quadrature, as error / the run's own MCSE.",
        "",
        "| chains | float64 | float32 | speed-up |",
        "|---|---|---|---|",
    ]
    for chains, speed in result["speed"].items():
        lines.append(f"| {int(chains):,} | {speed['float64']:.3g} | {speed['float32']:.3g} "
                     f"| {speed['float32'] / speed['float64']:.2f}x |")
    mode64, mode32 = result["mode"]["float64"], result["mode"]["float32"]
    lines += [
        "",
        f"Laplace mode: float64 ({mode64[0]:.6f}, {mode64[1]:.6f}), float32 ({mode32[0]:.6f}, {mode32[1]:.6f}). "
        f"Largest relative error of the float32 log-density over 100,000 posterior draws: "
        f"{result['logdensity_max_relative_error']:.1e}.",
        "",
        "| quantity | exact | float64 estimate (error / MCSE) | float32 estimate (error / MCSE) |",
        "|---|---|---|---|",
    ]
    for name, truth in result["exact"].items():
        cells = []
        for dtype in ("float64", "float32"):
            value, mcse = result["estimates"][dtype][name]
            cells.append(f"{value:.5f} ({(value - truth) / mcse:+.2f})")
        lines.append(f"| {name} | {truth:.5f} | {cells[0]} | {cells[1]} |")
    lines.append("")
    return "\n".join(lines)
