"""ESS per second and per gradient evaluation: our RWMH, HMC and NUTS against BlackJAX's and NumPyro's NUTS.

``python -m benchmarks.gradient_kernels [--seeds N] [--smoke]`` runs every sampler on the eight schools
under the half-Cauchy prior (mu ~ N(0, 5), tau ~ HalfCauchy(0, 5): posteriordb, Stan, NumPyro), prints a
table and rewrites ``benchmarks/RESULTS_gradient_kernels.md`` (``--smoke``: tiny sizes, nothing written).
Benchmarks are never timed tests; ``tests/test_nuts.py`` only runs the smoke size.

Samplers (each 4 chains vmapped, 1,000 warm-up and 2,000 kept draws per chain, Stan's windowed warm-up
with target acceptance 0.8 and a diagonal metric, every chain adapting on its own):

* jaxschools NUTS and HMC (8 leapfrog steps on average, jittered by +-50%) on the non-centered joint
  density of (mu, log tau, eta_1..8), through ``jaxschools.core.sampling.run`` with ``adaptation.window_adaptation``;
* jaxschools random-walk Metropolis on the marginal (mu, log tau) density, its scale and covariance tuned
  by ``adaptation.rwmh_adaptation`` from the Laplace fit (theta integrated out, so one density evaluation
  per draw and no gradient);
* BlackJAX's NUTS on the same non-centered density (the same ``LogDensity`` object), warmed up by its own
  ``window_adaptation``, then its kernel in a ``lax.scan``; warm-up and sampling jitted and vmapped over chains;
* NumPyro's NUTS on the same model written in NumPyro (``LocScaleReparam(centered=0)``, i.e. non-centered):
  its kernel set up as ``MCMC`` sets it up, chains vmapped as ``chain_method="vectorized"``, jitted once
  (``benchmarks.common.numpyro_nuts_chain``; ``MCMC.run`` itself re-jits on every call in NumPyro 0.21-0.22).
  NumPyro is an optional benchmark dependency; it is skipped when missing.

Measures, per sampler and seed (the same seeds for all): wall time of warm-up plus sampling with
compilation excluded (each sampler is run once before timing; seeds are interleaved across samplers so
that load on the machine falls on all of them alike; each seed is timed as the fastest of three identical
runs, since on a shared machine the slower ones measure the neighbours); bulk ESS (rank-normalised,
Vehtari et al. 2021, as ArviZ) of mu and of log tau, whose minimum is the headline figure (every sampler
has both, whatever its target); for the joint samplers also the minimum over all ten coordinates; gradient
evaluations of the kept draws (the sum of leapfrog steps; RWMH: density evaluations). Reported: the median
over seeds and the range (min to max).
"""

from __future__ import annotations

import argparse
import datetime
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import numpyro_nuts_chain

jax.config.update("jax_enable_x64", True)

RESULTS = pathlib.Path(__file__).with_name("RESULTS_gradient_kernels.md")
NUM_CHAINS, BURN_IN, NUM_SAMPLES, NUM_SEEDS, REPEATS = 4, 1000, 2000, 7, 3
TARGET_ACCEPT = 0.8


def _model():
    import jaxschools as js

    data = js.data.eight_schools()
    prior = js.models.make_prior("half_cauchy")
    return data, prior


def _starts(rng_key, data, prior, num_chains):
    """Overdispersed Laplace starts of (mu, log tau) with eta = 0 (the joint density's centre)."""
    import jaxschools as js

    marginal = js.models.marginal_logdensity(data, prior)
    fit = js.laplace.fit(marginal, js.laplace.default_init(data))
    starts = js.sampling.overdispersed_positions(rng_key, fit.mode, fit.cov, num_chains)
    return fit, starts, jnp.concatenate([starts, jnp.zeros((num_chains, data.num_schools))], axis=-1)


# ----------------------------------------------------------------------------- the samplers


def _ours(kind, sizes):
    """A function key -> (positions (chain, draw, d), steps (chain, draw)) running our sampler, compiled once."""
    import jaxschools as js

    data, prior = _model()
    dim = 2 + data.num_schools
    if kind == "rwmh":
        logdensity = js.models.marginal_logdensity(data, prior)
    else:
        logdensity = js.models.joint_logdensity(data, prior, "noncentered")
    metric = jnp.ones(dim)

    def sample(rng_key):
        init_key, sample_key = jax.random.split(rng_key)
        fit, marginal_starts, joint_starts = _starts(init_key, data, prior, sizes["chains"])
        if kind == "rwmh":
            algorithm = js.kernels.rwmh(logdensity, fit.cov, 2.4 / np.sqrt(2.0))
            warmup = js.adaptation.rwmh_adaptation(fit.cov, 2.4 / np.sqrt(2.0))
            starts = marginal_starts
        else:
            if kind == "nuts":
                algorithm = js.kernels.nuts(logdensity, 1.0, metric)
            else:
                algorithm = js.kernels.hmc(logdensity, 1.0, metric, num_integration_steps=8, jitter=0.5)
            warmup = js.adaptation.window_adaptation(1.0, metric, target_accept=TARGET_ACCEPT)
            starts = joint_starts
        samples = js.sampling.run(sample_key, algorithm, starts, num_samples=sizes["samples"],
                                  num_chains=sizes["chains"], burn_in=sizes["burn_in"], adaptation=warmup)
        steps = samples.num_integration_steps
        if steps is None:  # RWMH: one density evaluation per draw
            steps = jnp.ones(samples.positions.shape[:2], jnp.int32)
        return samples.positions, steps

    return jax.jit(sample)


def _blackjax(sizes):
    import blackjax

    import jaxschools as js

    data, prior = _model()
    logdensity = js.models.joint_logdensity(data, prior, "noncentered")

    def chain(rng_key, position):
        warmup_key, sample_key = jax.random.split(rng_key)
        warmup = blackjax.window_adaptation(blackjax.nuts, logdensity, target_acceptance_rate=TARGET_ACCEPT,
                                            adaptation_info_fn=blackjax.adaptation.base.get_filter_adapt_info_fn())
        (state, parameters), _ = warmup.run(warmup_key, position, num_steps=sizes["burn_in"])
        kernel = blackjax.nuts(logdensity, **parameters)

        def step(state, key):
            state, info = kernel.step(key, state)
            return state, (state.position, info.num_integration_steps)

        _, (positions, steps) = jax.lax.scan(step, state, jax.random.split(sample_key, sizes["samples"]))
        return positions, steps

    def sample(rng_key):
        init_key, chain_key = jax.random.split(rng_key)
        _, _, starts = _starts(init_key, data, prior, sizes["chains"])
        return jax.vmap(chain)(jax.random.split(chain_key, sizes["chains"]), starts)

    return jax.jit(sample)


def _numpyro(sizes):
    """NumPyro's NUTS kernel set up as ``MCMC`` would (:func:`benchmarks.common.numpyro_nuts_chain`), the chains
    vmapped as ``chain_method="vectorized"``, in one jitted function: compiled once like every other sampler
    here (``MCMC.run`` would re-jit on every seed)."""
    data, _ = _model()
    chain = numpyro_nuts_chain(data.sigma, data.y, sizes["burn_in"], sizes["samples"], TARGET_ACCEPT)

    @jax.jit
    def run(key):
        z, steps = jax.vmap(lambda k: chain(k, data.y))(jax.random.split(key, sizes["chains"]))
        # z is on the unconstrained scale: tau's is log tau.
        positions = jnp.concatenate([z["mu"][..., None], z["tau"][..., None], z["theta_decentered"]], axis=-1)
        return positions, steps

    def sample(seed):
        # NumPyro wants raw uint32 keys (jax.random.PRNGKey), not typed keys.
        return jax.block_until_ready(run(jax.random.PRNGKey(seed)))

    return sample


# ----------------------------------------------------------------------------- measuring


def _measure(sample, seed_arg, repeats: int):
    """One seed: the draws are the same on every repeat, so the fastest repeat is the least disturbed timing."""
    import jaxschools as js

    seconds = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        positions, steps = jax.block_until_ready(sample(seed_arg))
        seconds = min(seconds, time.perf_counter() - start)
    ess = np.asarray(jax.vmap(js.diagnostics.ess, in_axes=-1)(positions))
    return {"seconds": seconds, "ess_mu": float(ess[0]), "ess_log_tau": float(ess[1]),
            "ess": float(min(ess[0], ess[1])), "ess_all": float(ess.min()),
            "gradients": float(np.sum(np.asarray(steps))), "steps_per_draw": float(np.mean(np.asarray(steps)))}


def run(smoke: bool = False, num_seeds: int = NUM_SEEDS, numpyro: bool = True, repeats: int = REPEATS) -> dict:
    sizes = {"chains": NUM_CHAINS, "burn_in": BURN_IN, "samples": NUM_SAMPLES}
    if smoke:
        sizes, num_seeds, repeats = {"chains": 2, "burn_in": 30, "samples": 20}, 1, 1
    samplers = {"jaxschools NUTS": (_ours("nuts", sizes), "key")}
    if not smoke:  # the smoke run exercises every code path but HMC's constructor, which NUTS shares
        samplers["jaxschools HMC"] = (_ours("hmc", sizes), "key")
    samplers["jaxschools RWMH (marginal)"] = (_ours("rwmh", sizes), "key")
    samplers["BlackJAX NUTS"] = (_blackjax(sizes), "key")
    if numpyro and not smoke:
        try:
            samplers["NumPyro NUTS"] = (_numpyro(sizes), "int")
        except ImportError:
            pass
    seed_args = lambda seed, kind: jax.random.key(seed) if kind == "key" else seed  # noqa: E731
    for name, (sample, kind) in samplers.items():  # compile (and warm every cache) before timing
        jax.block_until_ready(sample(seed_args(10_000, kind)))
    records = {name: [] for name in samplers}
    for seed in range(num_seeds):
        for name, (sample, kind) in samplers.items():
            records[name].append(_measure(sample, seed_args(seed, kind), repeats))
    return {"sizes": sizes, "num_seeds": num_seeds, "repeats": repeats, "records": records}


def _summary(values):
    values = np.asarray(values, float)
    return float(np.median(values)), float(values.min()), float(values.max())


def table(result: dict) -> list[dict]:
    rows = []
    for name, records in result["records"].items():
        row = {"sampler": name}
        for key, fn in {
            "ess_per_s": lambda r: r["ess"] / r["seconds"],
            "ess_per_gradient": lambda r: r["ess"] / r["gradients"],
            "ess_all_per_s": lambda r: r["ess_all"] / r["seconds"],
            "ess": lambda r: r["ess"],
            "seconds": lambda r: r["seconds"],
            "steps_per_draw": lambda r: r["steps_per_draw"],
        }.items():
            row[key] = _summary([fn(r) for r in records])
        row["joint"] = "RWMH" not in name
        rows.append(row)
    return rows


def markdown(result: dict) -> str:
    sizes = result["sizes"]
    fmt = lambda s, spec: f"{s[0]:{spec}} ({s[1]:{spec}} to {s[2]:{spec}})"  # noqa: E731
    lines = [
        "## ESS per second and per gradient: RWMH, HMC and NUTS against BlackJAX and NumPyro",
        "",
        f"Eight schools, half-Cauchy prior; {sizes['chains']} chains x ({sizes['burn_in']:,} warm-up + "
        f"{sizes['samples']:,} kept draws); median over {result['num_seeds']} seeds (range in brackets); "
        f"time = warm-up + sampling, compilation excluded, the fastest of {result['repeats']} identical runs per "
        "seed. ESS = min(bulk ESS of mu, bulk ESS of log tau). "
        "Gradients = leapfrog steps of the kept draws (RWMH: density evaluations). ESS(all) = the minimum over "
        "all ten coordinates of the joint samplers.",
        "",
        "| sampler | ESS / s | ESS / gradient | ESS(all) / s | ESS | seconds | gradients / draw |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in table(result):
        all_per_s = fmt(row["ess_all_per_s"], ",.0f") if row["joint"] else "n/a (marginal)"
        lines.append(f"| {row['sampler']} | {fmt(row['ess_per_s'], ',.0f')} | {fmt(row['ess_per_gradient'], '.3f')} | "
                     f"{all_per_s} | {fmt(row['ess'], ',.0f')} | {fmt(row['seconds'], '.2f')} | "
                     f"{fmt(row['steps_per_draw'], '.1f')} |")
    ours = {row["sampler"]: row for row in table(result)}
    if "jaxschools NUTS" in ours and "BlackJAX NUTS" in ours:
        a, b = ours["jaxschools NUTS"]["ess_per_s"][0], ours["BlackJAX NUTS"]["ess_per_s"][0]
        lines += ["", f"jaxschools NUTS / BlackJAX NUTS, median ESS per second: {a:,.0f} / {b:,.0f} = {a / b:.2f}."]
    lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    from benchmarks import common

    parser = argparse.ArgumentParser(prog="python -m benchmarks.gradient_kernels")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, nothing written")
    parser.add_argument("--seeds", type=int, default=NUM_SEEDS, help=f"seeds per sampler (default {NUM_SEEDS})")
    parser.add_argument("--no-numpyro", action="store_true", help="leave NumPyro out")
    args = parser.parse_args(argv)
    section = markdown(run(smoke=args.smoke, num_seeds=args.seeds, numpyro=not args.no_numpyro))
    print(section)
    if args.smoke:
        return 0
    header = [
        "# Gradient kernels: benchmark results",
        "",
        f"Written by `python -m benchmarks.gradient_kernels --seeds {args.seeds}` on "
        f"{datetime.date.today().isoformat()} at revision {common.git_revision()}.",
        "",
        f"Machine: {common.machine()}.",
        "",
    ]
    RESULTS.write_text("\n".join(header + [section]))
    print(f"wrote {RESULTS}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
