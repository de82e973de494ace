"""Exact sensitivities at speed: gradients and Jacobians of the exact posterior (issue 15, "Speed").

The inputs phi, n = 3J + 3 of them: the estimates y_j, the standard errors sigma_j, the case weights w_j (all 1:
the data as given; :mod:`jaxschools.core.exact`) and the prior's hyperparameters mu_loc = 0, mu_scale = 5,
tau_scale = 5 of the half-Cauchy prior (mu ~ N(0, 5^2), tau ~ HalfCauchy(5): proper, so every hyperparameter acts
and log p(y) exists). Data: J = 8, the eight schools; J = 100 and 1,000 simulated (sigma_j the eight schools'
standard errors in turn, theta_j ~ N(8, 6^2), y_j ~ N(theta_j, sigma_j^2), fixed keys). Float64, the default
rule (1,024 nodes). Every figure is after compiling, the best of several runs with ``block_until_ready``, the
runs of the compared methods interleaved (:func:`benchmarks.common.interleaved_best_times`).

1. **Cheap gradient.** The whole exact summary (``exact.summary`` without ``rng_key``: every entry but the Monte
   Carlo P(best)) against ``jax.grad`` (reverse mode) of one scalar of it with respect to every input: E[mu],
   the 97.5% quantile of mu and of tau (implicit differentiation), P(theta_1 > c), log p(y), and a fixed random
   linear combination of every differentiable entry (means, sds and quantiles of mu, log tau, tau and each
   theta_j; shrinkage; P(theta_1 > c); P(theta_i > theta_j); log p(y)): one vector-Jacobian product of the
   whole summary. The target is the cheap-gradient principle, gradient <= 5 x summary (reverse mode costs a
   small constant times the function: Baur & Strassen 1983; Griewank & Walther, *Evaluating Derivatives*, 2nd
   ed. 2008, ch. 4). Also shown: the scalar computed alone (jitted, XLA drops what it does not need), against
   which the ratio is the textbook one.

2. **Jacobian against finite differences.** The headline quantities, m = J + 9 of them: E[mu], sd(mu), the
   2.5% and 97.5% quantiles of mu, E[tau], the 2.5% and 97.5% quantiles of tau, E[theta_j] for each j,
   P(theta_1 > c) (c = y_1 of the base data, held fixed) and log p(y): ``sensitivity.headline``, the function
   ``sensitivity.jacobian`` differentiates (``exact.posterior`` and ``exact.quantiles(..., theta=False)``: the
   summary's formulas without the J quantile solves of theta, which would make every refit dearer). Their m x n
   Jacobian by

   * forward mode: ``jax.linearize`` once, then the n unit tangents through the linear map;
   * reverse mode: ``jax.vjp`` once, then the m unit cotangents;
   * central finite differences with refits, the peer: (Q(phi + h_i e_i) - Q(phi - h_i e_i)) / 2 h_i, i.e. 2n
     whole refits (integration range, rule, quantile solves) of the same headline function, the perturbed inputs
     stacked and run as one jitted call.

   Each method is one jitted ``lax.map`` over its n, m or 2n cases, compiled ahead of time, timed both with
   ``batch_size`` B (vmapped within a batch: B = all cases at J = 8, which is what ``jax.jacfwd``/``jacrev`` and
   so ``sensitivity.jacobian`` do; B bounds the memory at J = 1,000, whose cases each carry (1,024 x 1,000)
   arrays) and sequentially (no batching); each method's faster form is its figure, so the peer is batched as
   fairly as the Jacobians. At J = 1,000 only batches of B are timed (a case is large enough that the form
   matters little, and each run of the forward Jacobian takes minutes), and the 2n = 6,006 refits are timed on
   the refits of a subset of the inputs and scaled to all of them (every refit is the same computation on other
   numbers, so their time is linear in their count), labelled.

   Steps: h_i = 3e-4 x the input's scale (sigma_j for y_j and for sigma_j, 1 for w_j, mu_scale for mu_loc, the
   value itself for the scales). Central differences err by about h^2 |f'''| / 6 + delta |f| / h, delta the
   relative rounding noise of a refit, which here is not float64's 1e-16 but about 1e-13 at J = 1,000 (sums over
   1,024 nodes x J schools). Measured on these data, the largest row-relative error against the Jacobian grows
   like 1/h below 3e-4 (rounding: 9e-6 at J = 1,000 with h = 1e-5 x scale, 9e-7 with 1e-4) and like h^2 above
   it (truncation: 1e-6 to 3e-6 at 1e-3 for every J); 3e-4 sits between (2.7e-7 at J = 1,000). **Agreement**:
   every entry of the finite differences within 1e-6 of the Jacobian's, relative to the largest |entry| of its
   row (output); the largest such error is reported for each J, and forward against reverse mode too.

3. **vmap(jacfwd) over datasets.** ``sensitivity.jacobian(..., mode="forward")`` (``jax.jacfwd`` of the
   headline over its 27 inputs) vmapped over 10,000 simulated datasets (J = 8, the eight schools' sigmas, (mu,
   tau) from the half-Cauchy prior, theta and y simulated), in batches of 50 by one jitted
   ``lax.map(batch_size=50)`` so that memory stays bounded (on 2,000 datasets, batches of 10 to 100 ran at about
   the same rate with 0.7 to 1.8 GiB peak; 500 ran slower with 6.6 GiB); datasets per second, with the headline
   values alone vmapped the same way for scale. Measured first in its process, so the peak resident memory
   (``getrusage``) shown is that of this part (JAX, XLA and the compiled programs included).
"""

from __future__ import annotations

import os
import resource

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import interleaved_best_times

SIZES = (8, 100, 1000)
# Batch size of each lax.map at each J (the same for the Jacobians and the refits): all at once at J = 8 (at most
# 2n = 54 cases: one vmap, as jax.jacfwd and jax.jacrev, hence sensitivity.jacobian, do); at J = 1,000 each case
# carries several (1,024 x 1,000) float64 arrays (8 MB each), and one vmap of all of them would not fit in memory.
BATCH = {8: 64, 100: 64, 1000: 8}
# At J = 1,000 the finite differences are timed on the refits of every SUBSET_STRIDE-th y, sigma and w (and all
# the hyperparameters), then scaled to all 2n refits.
SUBSET_STRIDE = 20
STEP = 3e-4  # relative to each input's scale; why: the module docstring
TOLERANCE = 1e-6
REPEATS = 5
NUM_DATASETS, DATASET_BATCH = 10_000, 50
SMOKE_DATASETS, SMOKE_DATASET_BATCH = 40, 20
HYPER = {"mu_loc": 0.0, "mu_scale": 5.0, "tau_scale": 5.0}


# ----------------------------------------------------------------------------- inputs and quantities


def _base(num_schools: int):
    """The base data: the eight schools, or J simulated schools (module docstring); (y, sigma) as numpy."""
    import jaxschools as js

    eight = js.data.eight_schools()
    if num_schools == 8:
        return np.asarray(eight.y), np.asarray(eight.sigma)
    sigma = np.resize(np.asarray(eight.sigma), num_schools)
    k_theta, k_y = jax.random.split(jax.random.key(num_schools))
    theta = 8.0 + 6.0 * np.asarray(jax.random.normal(k_theta, (num_schools,), jnp.float64))
    return theta + sigma * np.asarray(jax.random.normal(k_y, (num_schools,), jnp.float64)), sigma


def _inputs(y, sigma):
    """phi as one vector (n = 3J + 3): y, sigma, w = 1, mu_loc, mu_scale, tau_scale."""
    return jnp.concatenate([jnp.asarray(y), jnp.asarray(sigma), jnp.ones(len(y)), jnp.asarray(list(HYPER.values()))])


def _unpack(x, num_schools: int):
    """x as ``sensitivity.Inputs``."""
    from jaxschools.core import sensitivity

    j = num_schools
    return sensitivity.Inputs(x[:j], x[j:2 * j], x[2 * j:3 * j], x[3 * j], x[3 * j + 1], x[3 * j + 2])


def _headline_fn(num_schools: int, threshold: float):
    """x (n,) -> the m = J + 9 headline quantities as one vector: ``sensitivity.headline`` (E[mu], sd(mu), mu's
    2.5% and 97.5% quantiles, E[tau], tau's, E[theta_j] for each j, P(theta_1 > c), log p(y), in that order)."""
    from jaxschools.core import sensitivity

    mask = jnp.ones(num_schools, bool)

    def headline(x):
        h = sensitivity.headline(_unpack(x, num_schools), mask, "half_cauchy", 0, threshold)
        return jnp.concatenate([jnp.atleast_1d(v) for v in h])

    return headline


def _steps(x, num_schools: int):
    """h_i = STEP x the input's scale (module docstring)."""
    j = num_schools
    sigma = x[j:2 * j]
    return STEP * jnp.concatenate([sigma, sigma, jnp.ones(j), jnp.stack([x[3 * j + 1], x[3 * j + 1], x[3 * j + 2]])])


# ----------------------------------------------------------------------------- 1. cheap gradient


def _summary_fn(num_schools: int, threshold: float):
    from jaxschools.core import exact

    import jaxschools as js

    def summary(x):
        phi = _unpack(x, num_schools)
        data = js.data.Schools(phi.y, phi.sigma, mask=jnp.ones(num_schools, bool))
        prior = js.models.Prior("half_cauchy", phi.mu_loc, phi.mu_scale, phi.tau_scale)
        out = exact.summary(data, prior, threshold=threshold, case_weights=phi.case_weights)
        # p_best (NaN without rng_key), the echoed threshold and the error estimate have no derivative.
        return {k: v for k, v in out.items() if k not in ("p_best", "threshold", "quadrature_error") and v is not None}

    return summary


def _cheap_gradient(num_schools: int, repeats: int, smoke: bool = False) -> dict:
    y, sigma = _base(num_schools)
    x = _inputs(y, sigma)
    summary = _summary_fn(num_schools, float(y[0]))
    # The random linear combination: a fixed normal weight on every finite (defined) entry of the summary.
    leaves, tree = jax.tree_util.tree_flatten(summary(x))
    finite = [np.isfinite(np.asarray(leaf)) for leaf in leaves]
    rng = np.random.default_rng(0)
    coefficients = [np.where(f, rng.standard_normal(f.shape), 0.0) for f in finite]

    def everything(out):
        return sum(jnp.sum(jnp.where(f, leaf, 0.0) * c)
                   for f, leaf, c in zip(finite, jax.tree_util.tree_leaves(out), coefficients))

    scalars = {
        "E[mu]": lambda out: out["mu"]["mean"],
        "mu q975": lambda out: out["mu"]["q975"],
        "tau q975": lambda out: out["tau"]["q975"],
        "P(theta_1 > c)": lambda out: out["p_exceeds"],
        "log p(y)": lambda out: out["log_evidence"],
        "random combination of every entry": everything,
    }
    if smoke:  # two of them: each scalar compiles twice
        scalars = {name: scalars[name] for name in ("mu q975", "random combination of every entry")}
    runners = {"summary": jax.jit(summary)}
    for name, pick in scalars.items():
        runners[("grad", name)] = jax.jit(jax.grad(lambda x, pick=pick: pick(summary(x))))
        runners[("alone", name)] = jax.jit(lambda x, pick=pick: pick(summary(x)))
    finite_gradients = all(bool(jnp.all(jnp.isfinite(runners[("grad", name)](x)))) for name in scalars)
    best = interleaved_best_times({k: (lambda fn=fn: fn(x)) for k, fn in runners.items()}, repeats)
    return {"J": num_schools, "n": int(x.size), "summary_s": best["summary"], "finite_gradients": finite_gradients,
            "repeats": repeats,
            "rows": [{"scalar": name, "grad_s": best[("grad", name)], "alone_s": best[("alone", name)]}
                     for name in scalars]}


# ----------------------------------------------------------------------------- 2. Jacobian vs finite differences


def _jacobian_fns(headline, n: int, m: int, batch, subset):
    """The three methods as functions of (x, h), for a lax.map batch size ``batch`` (None: sequential)."""

    def forward(x, h):
        _, linear = jax.linearize(headline, x)
        return jax.lax.map(linear, jnp.eye(n, dtype=x.dtype), batch_size=batch).T

    def reverse(x, h):
        _, pullback = jax.vjp(headline, x)
        return jax.lax.map(lambda c: pullback(c)[0], jnp.eye(m, dtype=x.dtype), batch_size=batch)

    def differences(x, h):
        shift = jnp.diag(h)[subset]
        values = jax.lax.map(headline, jnp.concatenate([x + shift, x - shift]), batch_size=batch)
        k = len(subset)
        return ((values[:k] - values[k:]) / (2.0 * h[subset])[:, None]).T

    return {"forward": forward, "reverse": reverse, "differences": differences}


def _jacobian_row(num_schools: int, repeats: int, smoke: bool) -> dict:
    y, sigma = _base(num_schools)
    x = _inputs(y, sigma)
    threshold = float(y[0])
    headline = _headline_fn(num_schools, threshold)
    n, m, j = int(x.size), 9 + num_schools, num_schools
    if num_schools >= 1000:  # every SUBSET_STRIDE-th y, sigma and w, and the three hyperparameters
        subset = np.concatenate([np.arange(0, 3 * j, SUBSET_STRIDE), np.arange(3 * j, n)])
    else:
        subset = np.arange(n)
    h = _steps(x, num_schools)
    # None: sequential. At J = 1,000 a case is big enough that batching changes little, and each form of each
    # method takes minutes: batched only.
    batches = [BATCH[num_schools]] if smoke or num_schools >= 1000 else [None, BATCH[num_schools]]
    runners, results = {}, {}
    for batch in batches:
        for method, fn in _jacobian_fns(headline, n, m, batch, subset).items():
            compiled = jax.jit(fn).lower(x, h).compile()  # ahead of time: no untimed run needed

            def runner(compiled=compiled, key=(method, batch)):
                results[key] = compiled(x, h)
                return results[key]

            runners[(method, batch)] = runner
    best = interleaved_best_times(runners, repeats, compile_first=False)
    values = {method: np.asarray(results[(method, batches[-1])]) for method in ("forward", "reverse", "differences")}
    scale = np.maximum(np.max(np.abs(values["differences"]), axis=1, keepdims=True), np.finfo(float).tiny)
    error_fd = float(np.max(np.abs(values["reverse"][:, subset] - values["differences"]) / scale))
    error_modes = float(np.max(np.abs(values["reverse"] - values["forward"]) / scale))
    cases = {"forward": n, "reverse": m, "differences": 2 * len(subset)}
    timed = {}
    for method in cases:
        batch = min(batches, key=lambda b: best[(method, b)])
        timed[method] = (best[(method, batch)], _batch_label(batch, cases[method]))
    fd_s = timed["differences"][0] * n / len(subset)
    jac_s = min(timed["forward"][0], timed["reverse"][0])
    return {
        "J": num_schools, "n": n, "m": m, "forward_s": timed["forward"][0], "forward_batch": timed["forward"][1],
        "reverse_s": timed["reverse"][0], "reverse_batch": timed["reverse"][1], "differences_s": fd_s,
        "differences_batch": timed["differences"][1], "refits": 2 * n, "refits_timed": 2 * len(subset),
        "factor": fd_s / jac_s, "error_vs_differences": error_fd, "error_forward_vs_reverse": error_modes,
        "agree": error_fd <= TOLERANCE, "finite": bool(np.all(np.isfinite(values["reverse"]))), "repeats": repeats,
    }


# ----------------------------------------------------------------------------- 3. vmap(jacfwd) over datasets


def _datasets_row(num: int, batch: int, repeats: int) -> dict:
    import jaxschools as js
    from jaxschools.core import sensitivity

    eight = js.data.eight_schools()
    prior = js.models.make_prior("half_cauchy", **HYPER)
    mu, tau = js.models.sample_prior(jax.random.key(1), prior, (num,))
    theta = mu[:, None] + tau[:, None] * jax.random.normal(jax.random.key(2), (num, 8))
    y = theta + eight.sigma * jax.random.normal(jax.random.key(3), (num, 8))
    mask = jnp.ones(8, bool)
    # P(theta_1 > c) at c = the eight schools' y_1 = 28 for every dataset (the seed's question).
    threshold = float(eight.y[0])

    def jacobian(y):  # the public API: forward mode is jax.jacfwd over the 27 inputs
        data = js.data.Schools(y, eight.sigma, mask=mask)
        return sensitivity.jacobian(data, prior, threshold=threshold, mode="forward").jacobian

    def headline(y):
        data = js.data.Schools(y, eight.sigma, mask=mask)
        return sensitivity.headline(sensitivity.inputs_of(data, prior), mask, prior.kind, 0, threshold)

    # Compiled ahead of time, so that no untimed run of all the datasets is needed.
    jacobians = jax.jit(lambda ys: jax.lax.map(jacobian, ys, batch_size=batch)).lower(y).compile()
    values = jax.jit(lambda ys: jax.lax.map(headline, ys, batch_size=batch)).lower(y).compile()
    results = {}

    def timed(name, fn):
        def runner():
            results[name] = fn(y)
            return results[name]
        return runner

    best = interleaved_best_times({"jacobians": timed("jacobians", jacobians), "values": timed("values", values)},
                                  repeats, compile_first=False)
    entries = [np.asarray(leaf).reshape(num, -1) for leaf in jax.tree_util.tree_leaves(results["jacobians"])]
    entries = np.concatenate(entries, axis=1)  # (datasets, m x n)
    return {"datasets": num, "batch": batch, "jacobians_s": best["jacobians"], "values_s": best["values"],
            "repeats": repeats, "entries": entries.shape[1],
            "nonfinite_datasets": int(np.sum(~np.all(np.isfinite(entries), axis=1))),
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


# ----------------------------------------------------------------------------- the benchmark


def run(smoke: bool = False) -> dict:
    load = os.getloadavg()[0]
    if smoke:
        datasets = _datasets_row(SMOKE_DATASETS, SMOKE_DATASET_BATCH, 1)
        gradients = [_cheap_gradient(8, 1, smoke=True)]
        jacobians = [_jacobian_row(8, 1, smoke=True)]
    else:
        # First, so that the process's peak memory is this part's. Each run of it takes minutes on 2 cores.
        datasets = _datasets_row(NUM_DATASETS, DATASET_BATCH, 2)
        gradients = [_cheap_gradient(j, REPEATS if j < 1000 else 3) for j in SIZES]
        # At J = 1,000 one run of the forward Jacobian takes minutes: one run each.
        jacobians = [_jacobian_row(j, REPEATS if j < 1000 else 1, smoke=False) for j in SIZES]
    return {"gradients": gradients, "jacobians": jacobians, "datasets": datasets, "devices": len(jax.devices()),
            "platform": jax.devices()[0].platform, "load_before": load, "load_after": os.getloadavg()[0]}


def _batch_label(batch, cases: int) -> str:
    """How a lax.map with ``batch_size=batch`` ran ``cases`` cases."""
    return "sequential" if batch is None else ("one vmap" if batch >= cases else f"batches of {batch}")


def markdown(result: dict) -> str:
    lines = [
        "## Exact sensitivities: gradient against the summary, Jacobian against finite differences",
        "",
        "The exact posterior (`exact`, float64, 1,024 nodes) differentiated with respect to every input: y_j, "
        "sigma_j, the case weights w_j (at 1) and the half-Cauchy prior's mu_loc, mu_scale, tau_scale (n = 3J + 3). "
        "J = 8: the eight schools; J = 100 and 1,000: simulated. Compiled before timing; the best of R runs "
        "(R in each table) interleaved across the methods compared, `block_until_ready`; one "
        f"{result['platform']} device. Load average (1 min) before and after: "
        f"{result['load_before']:.1f} and {result['load_after']:.1f} "
        "(on a 2-core machine shared with other engineers' test runs, absolute times are inflated; the ratios, "
        "measured within one run and interleaved, are the figures).",
        "",
        "**Cheap gradient.** `jax.grad` (reverse mode) of one scalar of the summary with respect to all n inputs, "
        "against the whole `exact.summary` (every entry but the Monte Carlo P(best)); *alone*: the scalar jitted by "
        "itself. Target: gradient <= 5x the summary.",
        "",
        "| J | R | summary (s) | scalar | gradient (s) | gradient / summary | scalar alone (s) "
        "| gradient / scalar alone |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for block in result["gradients"]:
        for row in block["rows"]:
            lines.append(f"| {block['J']:,} | {block['repeats']} | {block['summary_s']:.3g} | {row['scalar']} "
                         f"| {row['grad_s']:.3g} "
                         f"| {row['grad_s'] / block['summary_s']:.2f}x | {row['alone_s']:.3g} "
                         f"| {row['grad_s'] / row['alone_s']:.2f}x |")
    worst = max(row["grad_s"] / block["summary_s"] for block in result["gradients"] for row in block["rows"])
    lines += [
        "",
        f"Largest gradient / summary: {worst:.2f}x ({'within' if worst <= 5 else 'above'} the 5x target). Every "
        "gradient finite: " + ("yes" if all(b["finite_gradients"] for b in result["gradients"]) else "**no**") + ".",
        "",
        "**Jacobian against finite differences.** The m = J + 9 headline quantities of `sensitivity.headline` "
        "(E[mu], sd(mu), mu's and tau's 2.5% and 97.5% quantiles, E[tau], E[theta_j] for every j, P(theta_1 > c) "
        "at a fixed c, log p(y)) with respect to all n inputs. Forward: `jax.linearize` once and n tangents; "
        "reverse: `jax.vjp` once and m cotangents; finite differences (the peer): central, 2n whole refits of the "
        "same headline function. Each is one jitted `lax.map`, compiled ahead of time, timed sequentially and in "
        "vmapped batches (at J = 8 one vmap of every case, as `jax.jacfwd`/`jacrev` and `sensitivity.jacobian` "
        "do; at J = 1,000 batches only); each method's faster form is shown. Agreement: every finite-difference "
        f"entry within {TOLERANCE:g} of the Jacobian's, relative to the largest |entry| of its output's row. "
        f"Steps {STEP:.0e} x each input's scale: a refit's rounding noise is about 1e-13 relative at J = 1,000, so "
        "1e-5 would measure the noise (error 9e-6 there), 1e-3 the truncation (1e-6 to 3e-6); the module "
        "docstring gives the measurements.",
        "",
        "| J | R | n | m | forward (s) | reverse (s) | finite differences (s) | refits | FD / best Jacobian "
        "| max error vs FD | forward vs reverse | agree |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["jacobians"]:
        refits = f"{row['refits']:,}"
        if row["refits_timed"] < row["refits"]:
            refits += f" (timed on {row['refits_timed']:,}, scaled)"
        lines.append(
            f"| {row['J']:,} | {row['repeats']} | {row['n']:,} | {row['m']:,} "
            f"| {row['forward_s']:.3g} ({row['forward_batch']}) "
            f"| {row['reverse_s']:.3g} ({row['reverse_batch']}) "
            f"| {row['differences_s']:.3g} ({row['differences_batch']}) | {refits} | {row['factor']:.1f}x "
            f"| {row['error_vs_differences']:.1e} | {row['error_forward_vs_reverse']:.1e} "
            f"| {'yes' if row['agree'] and row['finite'] else '**no**'} |")
    d = result["datasets"]
    lines += [
        "",
        f"**`vmap(jacfwd)` over datasets.** The headline Jacobian (17 x 27 = {d['entries']} entries, J = 8) of "
        f"{d['datasets']:,} simulated datasets (the eight schools' sigmas, (mu, tau) from the half-Cauchy prior), "
        f"by `sensitivity.jacobian(..., mode=\"forward\")` (`jax.jacfwd`) in one jitted `lax.map` over batches of "
        f"{d['batch']} (vmapped within a batch, so memory "
        "stays bounded); the headline values alone the same way, for scale. Peak RSS: the process's, measured "
        "before anything else ran in it (JAX, XLA and the compiled programs included).",
        "",
        "| datasets | R | Jacobians (s) | datasets / s | values alone (s) | Jacobian / values | peak RSS "
        "| datasets with a non-finite entry |",
        "|---|---|---|---|---|---|---|---|",
        f"| {d['datasets']:,} | {d['repeats']} | {d['jacobians_s']:.3g} | {d['datasets'] / d['jacobians_s']:,.0f} "
        f"| {d['values_s']:.3g} | {d['jacobians_s'] / d['values_s']:.1f}x | {d['peak_rss_bytes'] / 2**30:.2f} GiB "
        f"| {d['nonfinite_datasets']} |",
        "",
    ]
    return "\n".join(lines)
