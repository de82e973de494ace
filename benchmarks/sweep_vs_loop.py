"""A vmapped sweep against a Python loop over the same cells (issue: experiments).

The cells are the shipped proposal-scale sweep (experiments/proposal_scales.toml: the seed's whole inference,
4 chains x (5,000 + 5,000) steps, at 14 proposal scales). Both sides call the same traced cell function
(``jaxschools.app.experiments._sweep_cell``) with the same key and compile once before timing:

* vmapped: all cells stacked on a leading axis, one compiled call;
* loop: one compiled single-cell function called once per cell from Python.

Reported: seconds (best of 3, compilation excluded) and the ratio loop / vmapped.
"""

from __future__ import annotations

import jax

from benchmarks.common import best_time


def run(smoke: bool = False) -> dict:
    import jaxschools as js
    from jaxschools.app import experiments
    from jaxschools.core._jit import filter_jit

    sets = ["sweep.kind='config'", "sweep.key='sampler.scale'"]
    if smoke:
        sets += ["sampler.num_samples=50", "sampler.burn_in=10", "sweep.values=[1.0, 2.0]"]
        config = js.config.load_config(None, sets=sets)
    else:
        config = js.config.load_config("experiments/proposal_scales.toml")
    data = js.data.eight_schools()
    column, values, batch, prior, knobs, _ = experiments._sweep_cells(config, data)
    vmapped = experiments._cell_function(config, 0, 28.0)
    sampler = config["sampler"]
    key = jax.random.fold_in(jax.random.key(sampler["seed"]), 1)
    plan = js.inference.plan(config)

    @filter_jit
    def single(data, prior, knobs):
        return experiments._sweep_cell(key, data, prior, knobs, 0, 28.0, plan=plan)

    cells = len(values)
    cell = lambda i: jax.tree_util.tree_map(lambda x: x[i], (batch, prior, knobs))  # noqa: E731

    def run_vmapped():
        jax.block_until_ready(vmapped((batch, prior, knobs)))

    def run_loop():
        for i in range(cells):
            jax.block_until_ready(single(*cell(i)))

    run_vmapped()
    jax.block_until_ready(single(*cell(0)))  # compile both before timing
    repeats = 1 if smoke else 3
    t_vmapped = best_time(run_vmapped, repeats)
    t_loop = best_time(run_loop, repeats)
    steps = cells * sampler["num_chains"] * (sampler["num_samples"] + sampler["burn_in"])
    return {"cells": cells, "chain_steps": steps, "vmapped_s": t_vmapped, "loop_s": t_loop,
            "speedup": t_loop / t_vmapped}


def markdown(result: dict) -> str:
    return "\n".join([
        "## Sweep: vmapped cells against a Python loop",
        "",
        f"The shipped proposal-scale sweep: {result['cells']} cells, {result['chain_steps']:,} chain steps in all, "
        "each cell the seed's whole inference. Same traced cell function and key on both sides; compilation "
        "excluded; best of 3.",
        "",
        "| vmapped (s) | Python loop (s) | loop / vmapped |",
        "|---|---|---|",
        f"| {result['vmapped_s']:.3f} | {result['loop_s']:.3f} | {result['speedup']:.2f}x |",
        "",
    ])
