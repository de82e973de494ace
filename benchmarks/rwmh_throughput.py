"""Random-walk Metropolis throughput on the eight schools (float64, every draw kept).

Chain-steps per second of ``jaxschools.sampling.run`` at 1, 64, 1,024 and 16,384 chains, against, in the same
process and on the same proposal N(x, scale^2 cov) (scale 2, the Laplace covariance):

* BlackJAX's ``normal_random_walk`` in its faster idiom: a ``lax.scan`` over steps of a ``vmap``-ped step,
  given ``scale * chol(cov)`` (it multiplies the noise by the matrix it is given);
* a NumPy implementation vectorised over chains (a Python loop over steps);
* the floor: the log-density and the random numbers for the same number of points in one fused, vectorised
  call (no chain dependence, no loop): what no sampler of this target can beat on this machine.

Each figure is the best of 3 timed runs after a compiling run.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import best_time

CHAINS = (1, 64, 1024, 16384)
# Steps per chain at each chain count: about the same total work where it stays quick.
STEPS = {1: 20000, 64: 5000, 1024: 1000, 16384: 200}
SMOKE_STEPS = 20


def _setup():
    import jaxschools as js

    data = js.data.eight_schools()
    logdensity = js.models.marginal_logdensity(data)
    fit = js.laplace.fit(logdensity, js.laplace.default_init(data))
    return js, data, logdensity, fit


def _numpy_rwmh(y, sigma, mode, factor, chains, steps, seed=0):
    rng = np.random.default_rng(seed)

    def logpost(x):
        v = sigma**2 + np.exp(2 * x[:, 1:2])
        return np.sum(-0.5 * np.log(2 * np.pi * v) - 0.5 * (y - x[:, :1]) ** 2 / v, axis=1) + x[:, 1]

    x = np.tile(mode, (chains, 1))
    lp = logpost(x)
    out = np.empty((chains, steps, 2))
    for t in range(steps):
        proposal = x + rng.standard_normal((chains, 2)) @ factor.T
        lp_new = logpost(proposal)
        accept = np.log(rng.random(chains)) < lp_new - lp
        x = np.where(accept[:, None], proposal, x)
        lp = np.where(accept, lp_new, lp)
        out[:, t] = x
    return out


def run(smoke: bool = False) -> dict:
    import blackjax

    js, data, logdensity, fit = _setup()
    factor = 2.0 * jnp.linalg.cholesky(fit.cov)
    ours = js.kernels.rwmh(logdensity, fit.cov, 2.0)
    theirs = blackjax.normal_random_walk(logdensity, factor)
    key = jax.random.key(0)
    rows = []
    for chains in (64,) if smoke else CHAINS:
        steps = SMOKE_STEPS if smoke else STEPS[chains]
        points = chains * steps

        def run_ours():
            out = js.sampling.run(key, ours, fit.mode, num_samples=steps, num_chains=chains)
            jax.block_until_ready(out.positions)

        @jax.jit
        def blackjax_scan(key):
            states = jax.vmap(theirs.init)(jnp.broadcast_to(fit.mode, (chains, 2)))

            def one_step(states, step_key):
                keys = jax.random.split(step_key, chains)
                states, _ = jax.vmap(theirs.step)(keys, states)
                return states, states.position

            _, positions = jax.lax.scan(one_step, states, jax.random.split(key, steps))
            return positions

        @jax.jit
        def floor(key):
            key_noise, key_uniform = jax.random.split(key)
            noise = jax.random.normal(key_noise, (points, 2))
            uniform = jax.random.uniform(key_uniform, (points,))
            values = jax.vmap(logdensity)(fit.mode + noise @ factor.T)
            return jnp.sum(values) + jnp.sum(jnp.log(uniform))

        run_blackjax = lambda: jax.block_until_ready(blackjax_scan(key))  # noqa: E731
        run_floor = lambda: jax.block_until_ready(floor(key))  # noqa: E731
        for fn in (run_ours, run_blackjax, run_floor):
            fn()  # compile
        repeats = 1 if smoke else 3
        t_ours, t_blackjax, t_floor = (best_time(fn, repeats) for fn in (run_ours, run_blackjax, run_floor))
        numpy_steps = max(1, min(steps, 200 if not smoke else 5))
        t_numpy = best_time(lambda: _numpy_rwmh(np.asarray(data.y), np.asarray(data.sigma), np.asarray(fit.mode),
                                                np.asarray(factor), chains, numpy_steps), 1)
        rows.append({
            "chains": chains, "steps": steps,
            "ours": points / t_ours, "blackjax": points / t_blackjax, "floor": points / t_floor,
            "numpy": chains * numpy_steps / t_numpy,
        })
    return {"rows": rows}


def markdown(result: dict) -> str:
    lines = [
        "## Random-walk Metropolis throughput (eight schools, float64, draws kept)",
        "",
        "Chain-steps per second (best of 3 after compiling). `ours / BlackJAX` is the speed-up over BlackJAX's "
        "`normal_random_walk` in a scan of a vmapped step; `ours / floor` the share of the fused "
        "log-density-plus-random-numbers floor. NumPy: vectorised over chains, a Python loop over steps.",
        "",
        "| chains | steps | jaxschools | BlackJAX | NumPy | floor | ours / BlackJAX | ours / floor |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['chains']:,} | {row['steps']:,} | {row['ours']:.3g} | {row['blackjax']:.3g} | {row['numpy']:.3g} "
            f"| {row['floor']:.3g} | {row['ours'] / row['blackjax']:.2f}x | {row['ours'] / row['floor']:.2f} |"
        )
    lines.append("")
    return "\n".join(lines)
