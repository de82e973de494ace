"""Experiments: one run, a sweep over cells, a simulation study; each cell batch one vmapped computation.

:func:`run` is the Python entry point (``jaxschools.app.experiments.run(config) -> Result``) and what the
command line calls. It always runs the single analysis of the data (:mod:`jaxschools.app.analysis`), then

* a **sweep** (``[sweep] kind != "none"``): every cell is the whole inference the config names (Laplace
  fit, then the kernel, parameterization and warm-up of :mod:`jaxschools.app.inference`, the path the single
  analysis takes; summaries) under one variation of the config or the data. Cells are stacked
  along a leading axis (a config value, a prior scale, a batch of ``Schools`` with masks so J stays
  fixed) and vmapped, so all cells share one compilation. The exception is ``kind = "prior"``, whose
  cells differ in static structure: one compilation per prior.
* a **simulation study** (``[simulation] num_datasets > 0``): datasets are drawn from the model, and the
  same inference runs vmapped over them, batched by ``batch_size`` to bound memory; the calibration
  checks are in :mod:`jaxschools.core.calibration`.

Long work is a host loop over jitted chunks: between chunks Python shows progress with an
ETA, takes Ctrl-C, and stores each finished chunk (atomically, in a folder keyed by a hash of the
config and data), so a rerun after an interrupt skips what was done.

Cells in a sweep share one PRNG key (common random numbers), so the differences between cells are due
to what was swept, not to different draws; simulated datasets use ``fold_in(key, dataset index)``.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxschools.app import _record, analysis, inference, results
from jaxschools.core import calibration, diagnostics, exact, models, posterior, sharding
from jaxschools.core import bayes_factors, meta_quantities, moments
from jaxschools.core._jit import filter_jit
from jaxschools.core.data import Schools

__all__ = ["Result", "run", "infer_marginal", "ChunkStore", "CorruptChunk", "run_chunked"]


class Result(NamedTuple):
    """What :func:`run` returns: the single analysis's computation and ``record``, the typed result of the
    whole run that the report and figures render (:class:`jaxschools.app.results.RunRecord`: the summary
    with its ``sweep`` and ``simulation`` sections, and the figures' arrays)."""

    analysis: analysis.Analysis
    record: results.RunRecord

    @property
    def summary(self) -> dict:
        """The content of summary.json (``record.summary.to_json()``)."""
        return self.record.summary.to_json()

    @property
    def timings(self) -> dict:
        return self.analysis.timings


# --------------------------------------------------------------------------------------------------
# The traced core: one cell's inference, the config's (jaxschools.app.inference).


def infer_marginal(rng_key, data: Schools, prior: models.Prior, scale, init_spread, *, num_chains: int,
                   num_samples: int, burn_in: int, max_iterations: int):
    """Laplace fit, then random-walk Metropolis with a fixed ``scale`` on the marginal target: the seed's
    procedure, traceable; :func:`jaxschools.app.inference.infer` with that plan. Returns ``(fit, samples)``."""
    plan = inference.Plan(kernel="rwmh", parameterization="marginal", adapt=False, target_accept=None,
                          dense_mass=False, num_steps=1, jitter=0.0, max_depth=1,  # the random walk uses none
                          num_chains=num_chains, num_samples=num_samples, burn_in=burn_in,
                          max_iterations=max_iterations)
    fit, chains = inference.infer(rng_key, data, prior, plan, inference.Knobs(scale, scale, init_spread))
    return fit, chains.samples


def _mixing(positions):
    """Bulk ESS and R-hat of mu and log tau (R-hat is NaN for one chain)."""
    mu, log_tau = positions[..., 0], positions[..., 1]
    return {
        "ess": {"mu": diagnostics.ess(mu), "log_tau": diagnostics.ess(log_tau)},
        "rhat": {"mu": diagnostics.rhat(mu), "log_tau": diagnostics.rhat(log_tau)},
    }


def _sweep_cell(rng_key, data, prior, knobs, school, threshold, *, plan):
    """One sweep cell: the planned inference (:func:`jaxschools.app.inference.infer`) and the summaries a sweep
    row holds. theta comes from the chains on a joint target and is drawn given (mu, tau) on the marginal one."""
    infer_key, theta_key = jax.random.split(rng_key)
    fit, chains = inference.infer(infer_key, data, prior, plan, knobs)
    samples = chains.samples
    positions = samples.positions
    theta = chains.theta if chains.theta is not None else posterior.theta_draws(theta_key, positions, data)
    answers = posterior.queries(positions, theta, data, school, threshold, p_greater=False)
    flat_theta = theta.reshape((-1, theta.shape[-1]))
    # Means that do not exist for this prior and J (jaxschools.core.moments) are NaN, not a mean of draws that
    # never settles: J counts the cell's schools in the likelihood (traced), a masked school has tau's rule.
    num_schools = jnp.sum(data.mask.astype(jnp.int32))

    def mean(quantity, value, **observed):
        return moments.null_nonexistent({"mean": value}, prior, quantity, num_schools, jnp.where, **observed)

    return {
        "acceptance_rate": jnp.mean(samples.acceptance_rate),
        # Divergent transitions over the cell's chains: gradient kernels flag them, the random walk has none (null).
        "divergences": None if samples.is_divergent is None else jnp.sum(samples.is_divergent, dtype=jnp.int32),
        **_mixing(positions),
        "laplace_converged": fit.converged,
        "posterior": {
            "mu": mean("mu", jnp.mean(positions[..., 0])),
            "log_tau": mean("log_tau", jnp.mean(positions[..., 1])),
            "tau": mean("tau", jnp.mean(jnp.exp(positions[..., 1]))),
        },
        "theta": {
            **mean("theta", answers["theta_mean"], observed=data.mask),
            "q025": jnp.quantile(flat_theta, 0.025, axis=0),
            "q975": jnp.quantile(flat_theta, 0.975, axis=0),
        },
        "shrinkage": answers["shrinkage"],
        "queries": {"p_exceeds": answers["p_exceeds"], "p_best": answers["p_best"]},
    }


# --------------------------------------------------------------------------------------------------
# The host loop: chunks, progress, resume.


class CorruptChunk(Exception):
    """A stored chunk that cannot be trusted (unreadable, truncated, or not the arrays expected); its message
    says why. :func:`run_chunked` computes the chunk again."""


class ChunkStore:
    """Finished chunks of one computation, stored as ``<label>-<chunk>.npz`` in a folder keyed by a hash.

    Each file is written to a temporary name and renamed, so a file that exists was complete when written.
    It is still checked when loaded, since anything may have happened to it since (a disk error, another
    program, a person): the zip's CRC-32 of every array is verified by reading it whole, pickled objects are
    refused, and the arrays must be exactly the leaves expected, with their shapes and dtypes. A file that
    fails any check raises :class:`CorruptChunk` and is never used.
    """

    def __init__(self, folder: Path | None):
        self.folder = folder

    def _path(self, label: str, index: int) -> Path:
        return self.folder / f"{label}-{index:05d}.npz"

    def load(self, label: str, index: int, like):
        """The stored chunk as a pytree shaped like ``like`` (``jax.ShapeDtypeStruct`` leaves: the chunk's
        expected outputs), None when it was never stored; raises :class:`CorruptChunk` when it is unusable."""
        if self.folder is None or not self._path(label, index).exists():
            return None
        expected, treedef = jax.tree_util.tree_flatten(like)
        names = [f"leaf{i}" for i in range(len(expected))]
        try:
            with np.load(self._path(label, index), allow_pickle=False) as stored:
                if sorted(stored.files) != sorted(names):
                    raise CorruptChunk(f"it holds {len(stored.files)} arrays, not the {len(names)} expected")
                leaves = [np.array(stored[name]) for name in names]  # read whole: the CRC is checked at the end
        except CorruptChunk:
            raise
        except Exception as error:  # noqa: BLE001 - whatever the bytes are, the chunk is recomputed
            raise CorruptChunk(f"unreadable: {type(error).__name__}: {error}") from None
        for name, leaf, want in zip(names, leaves, expected):
            if leaf.shape != tuple(want.shape) or leaf.dtype != np.dtype(want.dtype):
                raise CorruptChunk(f"{name} is {leaf.dtype}{list(leaf.shape)}, expected "
                                   f"{np.dtype(want.dtype)}{list(want.shape)}")
        return jax.tree_util.tree_unflatten(treedef, leaves)

    def save(self, label: str, index: int, tree) -> None:
        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        leaves = jax.tree_util.tree_leaves(tree)
        handle, tmp = tempfile.mkstemp(dir=self.folder, suffix=".tmp")
        with os.fdopen(handle, "wb") as out:
            np.savez(out, **{f"leaf{i}": np.asarray(leaf) for i, leaf in enumerate(leaves)})
        os.replace(tmp, self._path(label, index))


class _Progress:
    """A one-line progress bar with ETA on stderr (a line per chunk when stderr is not a terminal)."""

    def __init__(self, label: str, total: int, report: Callable | None):
        self.label, self.total, self.report = label, total, report
        self.start = time.perf_counter()
        self.tty = sys.stderr.isatty()

    def update(self, done: int, computed_since_start: int):
        if self.report is None:
            return
        elapsed = time.perf_counter() - self.start
        rate = computed_since_start / elapsed if computed_since_start and elapsed > 0 else float("nan")
        eta = (self.total - done) / rate if rate == rate and rate > 0 else float("nan")
        eta_text = f"ETA {eta:5.0f} s" if eta == eta else "ETA  ..."
        width = 24
        filled = int(width * done / max(self.total, 1))
        line = f"{self.label}: [{'#' * filled}{'.' * (width - filled)}] {done}/{self.total} {eta_text}"
        if self.tty:
            print("\r[jaxschools] " + line, end="" if done < self.total else "\n", file=sys.stderr, flush=True)
        else:
            self.report(line)


def run_chunked(fn: Callable, inputs, num_cells: int, chunk_size: int, *, store: ChunkStore, label: str,
                progress: Callable | None = None, mesh=None):
    """Apply a jitted, cell-vmapped ``fn`` to ``inputs`` (leaves with leading axis ``num_cells``) by chunks.

    The last chunk is padded (by repeating the last cell) to ``chunk_size``, so every chunk reuses one
    compilation. Finished chunks are stored and, on a rerun, loaded instead of recomputed. Returns the
    outputs concatenated along the cell axis (numpy) and a timing dict: ``seconds_per_cell`` over the
    computed chunks after the first (whose time includes compilation; used only when it is the only
    one, and then ``includes_compile`` is True; NaN when every chunk came from the store),
    ``chunks_computed`` and ``chunks_loaded``.

    With a ``mesh`` (:func:`jaxschools.core.sharding.mesh`), each chunk's cells are split over its devices (the chunk
    size rounded up to a multiple of their number) and ``fn`` runs on all of them at once; every cell's result
    is what it is without.
    """
    chunk_size = min(chunk_size, num_cells)
    padded = chunk_size if mesh is None else sharding.padded_size(chunk_size, mesh)
    if padded != chunk_size:
        chunk_size, label = padded, f"{label}-by{padded}"  # stored chunks of another size are other cells
    first = jax.tree_util.tree_map(lambda x: x[:chunk_size], inputs)
    shapes = jax.eval_shape(fn, first)  # a chunk's outputs: leaves with leading axis chunk_size
    pieces, per_cell, computed_cells, loaded = [], [], 0, 0
    bar = _Progress(label, num_cells, progress)
    for index, start in enumerate(range(0, num_cells, chunk_size)):
        size = min(chunk_size, num_cells - start)
        like = jax.tree_util.tree_map(lambda leaf: jax.ShapeDtypeStruct((size, *leaf.shape[1:]), leaf.dtype), shapes)
        try:
            out = store.load(label, index, like)
        except CorruptChunk as why:  # never trusted: computed again, and the file replaced when it is
            out = None
            if progress is not None:
                progress(f"{label}: stored chunk {index} is unusable ({why}); computing it again")
        if out is None:
            cells = np.minimum(np.arange(start, start + chunk_size), num_cells - 1)
            chunk = jax.tree_util.tree_map(lambda x: x[cells], inputs)
            if mesh is not None:
                chunk = sharding.put_leading(chunk, mesh)
            t0 = time.perf_counter()
            out = jax.tree_util.tree_map(lambda x: np.asarray(x)[:size], fn(chunk))
            # A padded chunk costs as much as a full one: charge the time to the chunk, not the cells kept.
            per_cell.append((time.perf_counter() - t0) / chunk_size)
            computed_cells += size
            store.save(label, index, out)
        else:
            loaded += 1
        pieces.append(out)
        bar.update(start + size, computed_cells)
    stacked = jax.tree_util.tree_map(lambda *xs: np.concatenate(xs, axis=0), *pieces)
    warm = per_cell[1:] or per_cell
    timing = {
        "seconds_per_cell": float(np.median(warm)) if warm else float("nan"),
        "includes_compile": len(per_cell) == 1,
        "chunks_computed": len(per_cell),
        "chunks_loaded": loaded,
    }
    return stacked, timing


# --------------------------------------------------------------------------------------------------
# Sweeps.


def _prior_from(config: dict, kind: str | None = None) -> models.Prior:
    model = config["model"]
    return models.make_prior(kind or model["prior"], mu_loc=model["mu_loc"], mu_scale=model["mu_scale"],
                             tau_scale=model["tau_scale"])


def _sweep_cells(config: dict, data: Schools):
    """The cells of a sweep: (column label, per-cell values, batched data, batched prior, batched
    :class:`~jaxschools.app.inference.Knobs`, the swept school)."""
    sweep, sampler = config["sweep"], config["sampler"]
    kind = sweep["kind"]
    values = list(sweep["values"])
    num_schools = data.num_schools
    school = data.names.index(sweep["school"]) if sweep["school"] else 0
    y, sigma, mask, names = np.asarray(data.y), np.asarray(data.sigma), np.asarray(data.mask), data.names
    if kind == "leave_one_out":
        values = list(range(num_schools))
    count = len(values)
    ys, sigmas, masks = np.tile(y, (count, 1)), np.tile(sigma, (count, 1)), np.tile(mask, (count, 1))
    column = f"sweep.{kind}"
    if kind == "set_y":
        ys[:, school] = values
        column = f"y[{names[school]}]"
    elif kind == "shift_y":
        ys[:, school] += np.asarray(values)
        column = f"shift of y[{names[school]}]"
    elif kind == "scale_sigma":
        sigmas *= np.asarray(values)[:, None]
        column = "sigma factor"
    elif kind == "leave_one_out":
        masks[np.arange(count), np.arange(count)] = False
        column = "school left out"
        values = [names[j] for j in range(num_schools)]
    elif kind == "add_school":
        new_sigma = sweep["new_sigma"] or float(np.median(sigma))
        ys = np.concatenate([ys, np.asarray(values, float)[:, None]], axis=1)
        sigmas = np.concatenate([sigmas, np.full((count, 1), new_sigma)], axis=1)
        masks = np.concatenate([masks, np.ones((count, 1), bool)], axis=1)
        names = names + ("new",)
        column = f"y[new] (sigma {new_sigma:g})"
    elif kind == "config":
        column = sweep["key"]
    dtype = data.y.dtype
    batch = Schools(jnp.asarray(ys, dtype), jnp.asarray(sigmas, dtype), names, mask=jnp.asarray(masks))
    model = dict(config["model"])
    knobs = {key: np.full(count, sampler[key]) for key in inference.Knobs._fields}
    if kind == "config":
        section, key = sweep["key"].split(".")
        if section == "model":
            model[key] = np.asarray(values, float)
        else:
            knobs[key] = np.asarray(values, float)
    prior = models.make_prior(
        model["prior"],
        mu_loc=jnp.broadcast_to(jnp.asarray(model["mu_loc"], dtype), (count,)),
        mu_scale=jnp.broadcast_to(jnp.asarray(model["mu_scale"], dtype), (count,)),
        tau_scale=jnp.broadcast_to(jnp.asarray(model["tau_scale"], dtype), (count,)),
    )
    knobs = inference.Knobs(**{key: jnp.asarray(value, dtype) for key, value in knobs.items()})
    return column, values, batch, prior, knobs, school


def _cell_function(config: dict, school: int, threshold: float):
    """The jitted function of a chunk of cells ``(data, prior, knobs)``, each stacked along a leading axis."""
    plan = inference.plan(config)
    key = jax.random.fold_in(jax.random.key(config["sampler"]["seed"]), 1)  # common random numbers for every cell

    @filter_jit
    def cells(batch):
        one = lambda d, p, k: _sweep_cell(key, d, p, k, school, threshold, plan=plan)  # noqa: E731
        return jax.vmap(one)(*batch)

    return cells


def _rows(column, values, out, names, num_draws):
    """One JSON-ready row per cell: the swept value and the cell's summaries."""
    rows = []
    for i, value in enumerate(values):
        cell = jax.tree_util.tree_map(lambda x: x[i], out)
        row = {"cell": i, "swept": column, "value": value}
        row.update(analysis.to_json(cell))
        row["ess_per_1000_draws"] = {name: 1000.0 * float(cell["ess"][name]) / num_draws for name in ("mu", "log_tau")}
        row["theta"]["names"] = list(names)
        # An undefined R-hat (one chain, draws that do not vary) is left out; null when neither is defined.
        rhat = [value for value in row["rhat"].values() if value is not None]
        row["rhat_max"] = max(rhat) if rhat else None
        row["loo"] = None  # a prior sweep's cells: the exact leave-one-out comparison
        row["exact"] = None  # and the exact posterior with its Bayes factors
        rows.append(row)
    return rows


def _ess_per_second(rows, seconds):
    """Each row's ESS of mu and log tau per second of its cell; None for a row whose cell time is unknown
    (NaN) or whose ESS is undefined (null in the row: NaN draws, constant chains), never a TypeError."""
    keys = ("mu", "log_tau")
    return [
        {k: row["ess"][k] / seconds for k in keys}
        if seconds == seconds and all(row["ess"][k] is not None for k in keys) else None
        for row in rows
    ]


def _ran(config, records: list[dict]) -> list[dict]:
    """``records`` (sweep rows, simulation studies), each given the ``kernel`` and ``parameterization`` that ran
    it: the config's, which :mod:`jaxschools.app.inference` runs in every cell."""
    for record in records:
        record["kernel"] = config["sampler"]["kernel"]
        record["parameterization"] = config["model"]["parameterization"]
    return records


def _run_sweep(config, data, store, progress, school, threshold, mesh=None):
    sweep = config["sweep"]
    sampler = config["sampler"]
    num_draws = sampler["num_chains"] * sampler["num_samples"]
    if sweep["kind"] == "prior":
        return _run_prior_sweep(config, data, store, progress, school, threshold)
    column, values, batch, prior, knobs, _ = _sweep_cells(config, data)
    fn = _cell_function(config, school, threshold)
    out, timing = run_chunked(fn, (batch, prior, knobs), len(values), sweep["chunk_size"],
                              store=store, label="sweep", progress=progress, mesh=mesh)
    rows = _ran(config, _rows(column, values, out, batch.names, num_draws))
    timing["ess_per_second"] = _ess_per_second(rows, timing["seconds_per_cell"])
    return rows, {"kind": sweep["kind"], "column": column, "values": values, "names": batch.names}, timing


def _run_prior_sweep(config, data, store, progress, school, threshold):
    """One cell per prior (one compilation each), plus the exact LOO comparison."""
    sampler = config["sampler"]
    num_draws = sampler["num_chains"] * sampler["num_samples"]
    rows, timings = [], {}
    for index, kind in enumerate(config["sweep"]["priors"]):
        prior = _prior_from(config, kind)
        batch = jax.tree_util.tree_map(lambda x: x[None], data)
        priors = jax.tree_util.tree_map(lambda x: jnp.asarray(x, data.y.dtype)[None], prior)
        knobs = jax.tree_util.tree_map(lambda x: x[None], inference.knobs(config, data.y.dtype))
        fn = _cell_function(config, school, threshold)
        out, timings[kind] = run_chunked(fn, (batch, priors, knobs), 1, 1, store=store,
                                         label=f"prior-{kind}", progress=progress)
        row = _ran(config, _rows("model.prior", [kind], out, data.names, num_draws))[0]
        row["cell"] = index
        row["loo"] = analysis.to_json(exact_loo(data, prior))
        row["exact"] = analysis.to_json(exact_by_prior(data, prior))
        rows.append(row)
    timing = {"per_prior": timings}
    return rows, {"kind": "prior", "column": "model.prior", "values": list(config["sweep"]["priors"]),
                  "names": data.names}, timing


def exact_by_prior(data: Schools, prior: models.Prior) -> dict:
    """A prior sweep cell's exact summary: mu and tau (median, central 95%), the median of I^2 (I^2 increases
    with tau, so its median is that of tau mapped through it) and the Bayes factors
    (:mod:`jaxschools.core.bayes_factors`), for the report's table of priors beside the classical fits."""
    post = exact.posterior(data, prior)
    q = exact.quantiles(post, [0.025, 0.5, 0.975], theta=False)
    tau_median = float(q["tau"][1])
    s2 = float(meta_quantities.typical_variance(data))
    return {
        "mu_median": q["mu"][1], "mu_lower": q["mu"][0], "mu_upper": q["mu"][2],
        "tau_median": tau_median, "tau_lower": q["tau"][0], "tau_upper": q["tau"][2],
        "i2_median": tau_median**2 / (tau_median**2 + s2),
        "bayes_factors": {**bayes_factors.bayes_factors(data, prior, post=post),
                          "undefined": bayes_factors.undefined(prior)},
    }


def exact_loo(data: Schools, prior: models.Prior) -> dict:
    r"""Exact leave-one-out predictive densities by quadrature: log p(y_j | y_{-j}) = log Z - log Z_{-j}.

    Z is the integral of p(y | mu, tau) p(mu, tau) over (mu, tau) (:class:`jaxschools.core.exact.ExactPosterior`'s
    ``log_norm``; for the flat prior its arbitrary constant cancels in the ratio), and Z_{-j} the same with
    school j masked out. Returns ``{"pointwise": (J,), "elpd_loo": sum}`` (Vehtari, Gelman & Gabry 2017's
    elpd, here without importance-sampling error).
    """
    full = exact.posterior(data, prior).log_norm
    num_schools = data.num_schools
    masks = ~jnp.eye(num_schools, dtype=bool) & data.mask[None, :]
    batch = Schools(jnp.broadcast_to(data.y, masks.shape), jnp.broadcast_to(data.sigma, masks.shape), data.names,
                    mask=masks)
    left_out = jax.vmap(lambda d: exact.posterior(d, prior).log_norm)(batch)
    pointwise = full - left_out
    return {"pointwise": pointwise, "elpd_loo": jnp.sum(pointwise)}


# --------------------------------------------------------------------------------------------------
# Simulation studies.


def _simulate(rng_key, data: Schools, prior: models.Prior, num_datasets: int, fixed_mu, fixed_tau):
    """Datasets with the data's sigmas: (mu, tau) from a proper prior, or fixed (for the flat prior)."""
    key_params, key_theta, key_y = jax.random.split(rng_key, 3)
    dtype = data.y.dtype
    if prior.proper:
        mu, tau = models.sample_prior(key_params, prior, (num_datasets,), dtype, data=data)
    else:
        mu = jnp.full((num_datasets,), fixed_mu, dtype)
        tau = jnp.full((num_datasets,), fixed_tau, dtype)
    shape = (num_datasets, data.num_schools)
    theta = mu[:, None] + tau[:, None] * jax.random.normal(key_theta, shape, dtype)
    y = theta + data.sigma * jax.random.normal(key_y, shape, dtype)
    return y, mu, tau, theta


def _calibration_cell(rng_key, y, truth, sigma, prior, knobs, *, plan, num_ranks):
    """One simulated dataset: the planned inference (:func:`jaxschools.app.inference.infer`), then where the
    truth falls among the posterior draws (theta from the chains on a joint target, drawn on the marginal one).

    Parameters checked: mu, tau, theta_1..J. ``rank``: the number of the ``num_ranks`` evenly thinned draws
    below the truth (Talts et al. 2018); ``below``: the share of all draws below it (for interval coverage).
    """
    data = Schools(y, sigma, mask=jnp.ones(y.shape, bool))
    infer_key, theta_key = jax.random.split(rng_key)
    fit, chains = inference.infer(infer_key, data, prior, plan, knobs)
    positions = chains.samples.positions
    theta = chains.theta if chains.theta is not None else posterior.theta_draws(theta_key, positions, data)
    draws = jnp.concatenate([positions[..., :1], jnp.exp(positions[..., 1:2]), theta], axis=-1)
    flat = draws.reshape((-1, draws.shape[-1]))
    # Evenly spaced over all chains' draws: far enough apart (num_chains * num_samples / num_ranks steps)
    # to be close to independent, which rank uniformity needs.
    picks = jnp.round(jnp.linspace(0, flat.shape[0] - 1, num_ranks)).astype(int)
    rank = jnp.sum(flat[picks] < truth, axis=0)
    below = jnp.mean(flat < truth, axis=0)
    mixing = _mixing(positions)
    return {"rank": rank, "below": below, "laplace_converged": fit.converged,
            "rhat_max": jnp.maximum(mixing["rhat"]["mu"], mixing["rhat"]["log_tau"]),
            "ess_min": jnp.minimum(mixing["ess"]["mu"], mixing["ess"]["log_tau"])}


def _run_simulation(config, data, store, progress, mesh=None):
    sim, sampler = config["simulation"], config["sampler"]
    num = sim["num_datasets"]
    num_params = 2 + data.num_schools
    params = ["mu", "tau"] + [f"theta[{name}]" for name in data.names]
    # Bonferroni: each prior's study makes one band test per parameter.
    alpha = (1.0 - sim["band_level"]) / num_params
    root = jax.random.fold_in(jax.random.key(sampler["seed"]), 2)
    studies, arrays, timing = [], {}, {}
    # The single analysis's inference (kernel, parameterization, warm-up), with the study's chain sizes.
    static = dict(plan=inference.plan(config, "simulation"), num_ranks=sim["num_ranks"])
    knobs = inference.knobs(config, data.y.dtype)
    for kind in sim["priors"]:
        prior = _prior_from(config, kind)
        key = jax.random.fold_in(root, moments.PRIORS.index(kind))
        y, mu, tau, theta = _simulate(key, data, prior, num, sim["mu"], sim["tau"])
        truth = jnp.concatenate([mu[:, None], tau[:, None], theta], axis=1)
        keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(jax.random.fold_in(key, 7), jnp.arange(num))
        sigma = data.sigma

        @filter_jit
        def batch_fn(batch, prior=prior):
            k, yy, tt = batch
            one = lambda a, b, c: _calibration_cell(a, b, c, sigma, prior, knobs, **static)  # noqa: E731
            return jax.vmap(one)(k, yy, tt)

        out, timing[kind] = run_chunked(batch_fn, (keys, y, truth), num, sim["batch_size"], store=store,
                                        label=f"simulation-{kind}", progress=progress, mesh=mesh)
        study = _ran(config, [_study_summary(kind, prior.proper, out, params, sim, alpha)])[0]
        studies.append(study)
        arrays[kind] = {"rank": out["rank"], "below": out["below"]}
    return studies, {"params": params, "arrays": arrays, "num_ranks": sim["num_ranks"], "alpha": alpha}, timing


def _study_summary(kind, proper, out, params, sim, alpha):
    """Coverage per parameter and level, SBC verdicts, and the failure counts of one study."""
    num = out["rank"].shape[0]
    levels = sim["levels"]
    coverage = {}
    for level in levels:
        lo, hi = (1 - level) / 2, (1 + level) / 2
        covered = (out["below"] >= lo) & (out["below"] <= hi)
        share = covered.mean(axis=0)
        band = calibration.coverage_band(level, num, alpha / len(levels))
        coverage[f"{level:g}"] = {
            "share": {p: float(s) for p, s in zip(params, share)},
            "mean_share": float(np.mean(share)),
            "band": list(band) if proper else None,
            "inside": {p: bool(band[0] <= s <= band[1]) for p, s in zip(params, share)} if proper else None,
        }
    study = {
        "prior": kind,
        "draws_from": "prior" if proper else f"fixed mu = {sim['mu']:g}, tau = {sim['tau']:g}",
        "num_datasets": num,
        "failures": {
            "laplace_not_converged": int((~out["laplace_converged"]).sum()),
            "not_mixed": int(((out["rhat_max"] >= diagnostics.RHAT_THRESHOLD) | ~(out["ess_min"] >= 100)).sum()),
        },
        "coverage": coverage,
    }
    if proper:
        sbc = {}
        for i, p in enumerate(params):
            inside, _ = calibration.ranks_within_band(out["rank"][:, i], sim["num_ranks"], alpha)
            sbc[p] = inside
        study["sbc"] = {"band_level_per_parameter": 1 - alpha, "inside": sbc, "all_inside": all(sbc.values())}
        study["calibrated"] = bool(all(sbc.values()) and all(all(c["inside"].values()) for c in coverage.values()))
        study["note"] = None
    else:
        study["sbc"] = None
        study["calibrated"] = None
        study["note"] = ("The flat prior is improper, so nothing can be drawn from it: these are frequentist "
                         "coverages at fixed (mu, tau), which need not equal the nominal levels.")
    return study


# --------------------------------------------------------------------------------------------------
# Entry point.


def store_key(config: dict, data: Schools) -> str:
    """A hash of everything that determines the cells' results (not the output folder)."""
    relevant = copy.deepcopy(config)
    relevant.pop("output", None)
    relevant.pop("run", None)  # the memory limit decides whether a run starts, not what it computes
    # The store's format: 2 since sweeps and simulations run the config's kernel (they ran the random walk before,
    # whatever the config said), so an unfinished run of an older version is never resumed from its chunks.
    payload = json.dumps({"format": 2, "config": relevant, "y": np.asarray(data.y).tolist(), "sigma": np.asarray(data.sigma).tolist(),
                          "names": list(data.names), "dtype": str(data.y.dtype)}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def run(config: dict, data: Schools | None = None, *, table: dict | None = None, progress: Callable | None = None,
        store_dir: Path | None = None, mesh=None, between: Callable | None = None) -> Result:
    """Run what ``config`` describes (a resolved config: :func:`jaxschools.app.config.load_config`).

    ``data`` defaults to the data the config names (``data.path``, ``data.dataset``, ``data.measure``: read by
    :func:`jaxschools.core.validation.read_data`); ``table``, the table it was read from, gives summary.json's
    description of the data (layout, measure, zero-cell corrections, covariates; given effects when None). ``store_dir``: where
    finished chunks of a sweep or simulation are kept for resuming (None keeps nothing). ``mesh``: a
    :func:`jaxschools.core.sharding.mesh` over which the cells of sweeps and simulated datasets are split (same
    results, to rounding, as without). ``between``: the single analysis's sampling runs in chunks, with
    ``between`` called after each (:func:`jaxschools.app.analysis.analyze`). Returns a
    :class:`Result`; ``result.summary`` is the content of summary.json.
    """
    from jaxschools.core import data as data_module

    if data is None:
        from jaxschools.core import validation

        table = validation.read_data(config["data"]["path"], config["data"]["dataset"], config["data"]["measure"])
        data = data_module.from_table(table)
    base = analysis.analyze(config, data, table=table, progress=progress, between=between)
    store = ChunkStore(None if store_dir is None else Path(store_dir) / store_key(config, data))
    school_index, threshold = analysis._default_query(config, data)  # the single analysis's question
    summary = base.record.summary
    sweep_figures = simulation_figures = None
    if config["sweep"]["kind"] != "none":
        t0 = time.perf_counter()
        rows, sweep_arrays, timing = _run_sweep(config, data, store, progress, school_index, threshold, mesh)
        base.timings["sweep"] = dict(timing, total_s=time.perf_counter() - t0)
        typed_rows = tuple(results.SweepRow.build(row) for row in rows)
        summary = dataclasses.replace(summary, sweep=typed_rows)
        sweep_figures = _record.sweep_figures(config, data, typed_rows, sweep_arrays["kind"], sweep_arrays["column"],
                                              timing)
    if config["simulation"]["num_datasets"]:
        t0 = time.perf_counter()
        studies, simulation_arrays, timing = _run_simulation(config, data, store, progress, mesh)
        base.timings["simulation"] = dict(timing, total_s=time.perf_counter() - t0)
        typed_studies = tuple(results.Study.build(analysis.to_json(study)) for study in studies)
        summary = dataclasses.replace(summary, simulation=typed_studies)
        simulation_figures = _record.simulation_figures(simulation_arrays, typed_studies)
    record = dataclasses.replace(base.record, summary=summary, sweep=sweep_figures, simulation=simulation_figures)
    return Result(base, record)


def __dir__():
    # The public names only, not the imports (``dir(js.diagnostics)`` lists no ``jax`` or ``jnp``).
    return list(__all__)
