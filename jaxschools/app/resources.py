r"""The memory a run will need, estimated from the resolved config and J before anything is computed.

Pure Python (no JAX, no NumPy): the command line calls :func:`check` while it reads its inputs, so a run that
cannot fit is refused in a second, with one line naming the estimate, the limit and the key to change, rather
than killed by the kernel (or by XLA's ``RESOURCE_EXHAUSTED``) minutes later with nothing to show.

**The estimate** is a sum of terms, each the bytes of the arrays one stage of the run holds at once (float64,
``F = 8`` bytes a number), times a factor for the copies that stage makes (XLA temporaries, the host copy the
report and figures read, the quantile sorts). With C = ``sampler.num_chains``, S = ``sampler.num_samples``,
B = ``sampler.burn_in``, J schools, D the sampled dimension (2 on the marginal target, J + 2 on a joint one)
and N = 1,536 quadrature nodes (the exact posterior's 1,024-node rule and the 512-node rule that checks it):

* runtime: 1 GiB (the interpreter, JAX and XLA, the compiler, matplotlib), fixed;
* kept draws: C S (D + 2) F x 6 (positions and log density, device and host copies), shrunk by
  ``sampler.num_samples`` or ``sampler.num_chains``;
* theta draws and their summaries: C S J F x 24 (the draws, their conditional means and variances, shrinkage,
  quantile sorts, the FFTs of the ESS, replicated data), shrunk by the same keys;
* warm-up schedule: B x 24 bytes when adapting (a per-step schedule and index), B / 8 otherwise (one index per
  block of 64 steps), shrunk by ``sampler.burn_in``;
* exact quadrature: N J F x 16 (the conditional moments of theta at every node, the mixture quantiles);
* exact P(theta_i > theta_j): 1,024 J^2 F x 2, only for J <= 200 (beyond, the matrix is not computed);
* exact draws for P(best): 2^22 numbers x F x 4 (drawn in chunks of that size), fixed;
* contrast chains (``model.contrast``): kept draws and theta draws again, with the contrast's D;
* sweep: cells per chunk x C S (J F x 24 + D F x 6), shrunk by ``sweep.chunk_size`` (every cell runs the
  single analysis's kernel and target, :mod:`jaxschools.app.inference`); every cell's row
  (cells x J F x 24); a prior sweep's exact leave-one-out, J quadratures of J schools (J N J F x 16);
* simulation: datasets per batch x ((C' S' + ranks) (J + 2) F x 24 + C' S' D F x 6), with C', S' and ranks of
  ``[simulation]``,
  shrunk by ``simulation.batch_size``; all datasets and their ranks (datasets x (J + 2) F x 8);
* ArviZ file (``output.netcdf``): C S (D + J + 8) F x 4.

The factors are upper bounds of peaks measured on the CPU (VmHWM of whole runs with figures off): estimate /
measured peak was 2.1 for the default eight schools (0.60 GB), 2.3 for J = 200 (0.97 GB, the P(theta_i >
theta_j) matrix), 1.5 for J = 2,000 with the default 20,000 draws (6.1 GB, theta draws) and 1.45 for J = 20,000
with 100 draws (3.8 GB, the quadrature). ``tests/test_resources.py`` checks that the estimate bounds the measured
peak of two real runs, by at most a factor 5. Terms that cannot be alive together (the sweep's cells run after
the single analysis has returned its arrays) still add up: the estimate is meant to be safe, not tight.

So 10^5 schools (a 2.6 MB CSV, which the quadrature alone took to 18 GB before it was killed) are refused on a
machine of 25 GB with the default draws (theta draws, 384 GB) and with 20 draws per chain (the quadrature,
19.7 GB), and run where the limit allows.

**The limit** is ``run.max_memory_gb`` when set (bigger machines, GPUs, or a deliberate gamble), else
:data:`DEFAULT_FRACTION` of this machine's physical memory (``SC_PHYS_PAGES x SC_PAGE_SIZE``), or of the
cgroup's memory limit (``memory.max``, or ``memory.limit_in_bytes`` under cgroup v1) when that is lower.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

from jaxschools.app.config import adapts
from jaxschools.errors import InputError

__all__ = ["Term", "estimate", "total", "memory_limit", "check", "DEFAULT_FRACTION"]

GB = 1e9
FLOAT = 8  # bytes of a float64
# Share of the machine's (or cgroup's) memory a run may plan to use: the rest is the OS's and other processes'.
DEFAULT_FRACTION = 0.8

RUNTIME = 2**30
KEPT_COPIES = 6
THETA_COPIES = 24
SCHEDULE_BYTES_PER_STEP = 24
# The exact posterior's sizes. jaxschools.core.exact imports JAX, which this module must not, so they are repeated
# here; tests/test_resources.py checks that they equal exact._DEFAULT_NODES and exact.P_GREATER_MAX_SCHOOLS
# (and posterior.P_GREATER_MAX_SCHOOLS).
EXACT_RULE_NODES = 1024
P_GREATER_MAX_SCHOOLS = 200
EXACT_NODES = EXACT_RULE_NODES + EXACT_RULE_NODES // 2  # exact.posterior's rule and the half rule that checks it
EXACT_COPIES = 16
P_GREATER_NODES, P_GREATER_COPIES = EXACT_RULE_NODES, 2
P_BEST_NUMBERS = 2**22  # exact._p_best draws at most ~4M numbers per chunk
NETCDF_COPIES = 4


# The advice for a part of the estimate that no key shrinks (it is the same for every run).
RAISE_LIMIT = "it does not depend on the configuration, so raise the limit"
FEWER_SCHOOLS = "use fewer schools"
DRAWS = "lower sampler.num_samples or sampler.num_chains"


class Term(NamedTuple):
    """One part of the estimate: what it is (in words, with its sizes), its bytes, and what to change to shrink
    it (``advice``, said to the user as is: "lower sampler.burn_in", "set output.netcdf = false", ...)."""

    what: str
    bytes: int
    advice: str


def _count(n) -> str:
    return f"{n:,}"


def _draw_terms(label: str, chains: int, samples: int, dim: int, schools: int, advice: str) -> list[Term]:
    """Kept positions and the theta draws and summaries of one set of chains."""
    draws = chains * samples
    shape = f"{_count(chains)} chains x {_count(samples)} draws"
    return [
        Term(f"{label}kept draws ({shape} x {_count(dim)} coordinates)", draws * (dim + 2) * FLOAT * KEPT_COPIES,
             advice),
        Term(f"{label}theta draws and their summaries ({shape} x {_count(schools)} schools)",
             draws * schools * FLOAT * THETA_COPIES, advice),
    ]


def _exact_terms(schools: int) -> list[Term]:
    terms = [Term(f"exact quadrature ({_count(EXACT_NODES)} nodes x {_count(schools)} schools)",
                  EXACT_NODES * schools * FLOAT * EXACT_COPIES, FEWER_SCHOOLS)]
    if schools <= P_GREATER_MAX_SCHOOLS:
        terms.append(Term(f"exact P(theta_i > theta_j) ({_count(schools)} x {_count(schools)} schools at "
                          f"{_count(P_GREATER_NODES)} nodes)",
                          P_GREATER_NODES * schools * schools * FLOAT * P_GREATER_COPIES,
                          f"use fewer schools (beyond {P_GREATER_MAX_SCHOOLS} the matrix is not computed)"))
    return terms


def _num_cells(sweep: dict, schools: int) -> int:
    kind = sweep["kind"]
    if kind == "none":
        return 0
    if kind == "prior":
        return len(sweep["priors"])
    if kind == "leave_one_out":
        return schools
    return len(sweep["values"])


def estimate(config: dict, num_schools: int) -> list[Term]:
    """The terms of the memory estimate of a run of the resolved ``config`` on ``num_schools`` schools.

    See the module docstring for each term's formula. Exact integers, so absurd sizes (10^12 draws, 10^9
    chains) give absurd estimates rather than overflowing.
    """
    sampler, model = config["sampler"], config["model"]
    chains, samples, burn_in = sampler["num_chains"], sampler["num_samples"], sampler["burn_in"]
    schools = num_schools
    dim = 2 if model["parameterization"] == "marginal" else schools + 2
    terms = [Term("runtime (Python, JAX and XLA, the compiler, matplotlib)", int(RUNTIME), RAISE_LIMIT)]
    terms += _draw_terms("", chains, samples, dim, schools, DRAWS)
    adapt = adapts(sampler)
    # Without adaptation the burn-in only scans block indices (B / 64 of them); with it, a per-step schedule.
    schedule = burn_in * SCHEDULE_BYTES_PER_STEP if adapt else burn_in // 8
    terms.append(Term(f"warm-up schedule ({_count(burn_in)} burn-in steps)", schedule, "lower sampler.burn_in"))
    if model["contrast"] is not None:
        contrast_dim = 2 if model["contrast"] == "marginal" else schools + 2
        terms += _draw_terms("contrast chains' ", chains, samples, contrast_dim, schools,
                             f"leave model.contrast unset, or {DRAWS}")
    terms += _exact_terms(schools)
    terms.append(Term("exact draws for P(best)", P_BEST_NUMBERS * FLOAT * 4, RAISE_LIMIT))

    sweep = config["sweep"]
    cells = _num_cells(sweep, schools)
    if cells:
        cell_schools = schools + (sweep["kind"] == "add_school")
        # A prior sweep runs its cells one at a time (one compilation per prior): sweep.chunk_size does not apply.
        per_chunk = 1 if sweep["kind"] == "prior" else min(sweep["chunk_size"], cells)
        cell_dim = 2 if model["parameterization"] == "marginal" else cell_schools + 2
        per_cell = chains * samples * (cell_schools * THETA_COPIES + cell_dim * KEPT_COPIES) * FLOAT
        terms.append(Term(f"sweep ({_count(per_chunk)} cells per chunk x {_count(chains)} chains x "
                          f"{_count(samples)} draws x {_count(cell_schools)} schools)", per_chunk * per_cell,
                          DRAWS if sweep["kind"] == "prior" else f"a smaller sweep.chunk_size, or {DRAWS}"))
        fewer_cells = {"prior": "fewer sweep.priors", "leave_one_out": FEWER_SCHOOLS}.get(
            sweep["kind"], "fewer sweep.values")
        terms.append(Term(f"sweep results ({_count(cells)} cells x {_count(cell_schools)} schools)",
                          cells * cell_schools * FLOAT * 3 * 8, fewer_cells))
        if sweep["kind"] == "prior":
            terms.append(Term(f"exact leave-one-out ({_count(schools)} quadratures of {_count(schools)} schools)",
                              schools * EXACT_NODES * schools * FLOAT * EXACT_COPIES,
                              f"{FEWER_SCHOOLS}, or another sweep.kind than \"prior\" (only it computes the exact "
                              "leave-one-out)"))

    sim = config["simulation"]
    datasets = sim["num_datasets"]
    if datasets:
        batch = min(sim["batch_size"], datasets)
        params = schools + 2
        sim_draws = sim["num_chains"] * sim["num_samples"]
        terms.append(Term(f"simulation ({_count(batch)} datasets per batch x {_count(sim['num_chains'])} chains x "
                          f"{_count(sim['num_samples'])} draws x {_count(params)} parameters)",
                          batch * ((sim_draws + sim["num_ranks"]) * params * THETA_COPIES
                                   + sim_draws * dim * KEPT_COPIES) * FLOAT,
                          "lower simulation.batch_size, simulation.num_samples or simulation.num_chains"))
        terms.append(Term(f"simulated datasets and ranks ({_count(datasets)} x {_count(params)} parameters)",
                          datasets * params * FLOAT * 8, "lower simulation.num_datasets"))
    if config["output"]["netcdf"]:
        terms.append(Term(f"ArviZ file ({_count(chains)} chains x {_count(samples)} draws)",
                          chains * samples * (dim + schools + 8) * FLOAT * NETCDF_COPIES,
                          f"set output.netcdf = false, or {DRAWS}"))
    return terms


def total(terms) -> int:
    return sum(term.bytes for term in terms)


def _cgroup_limit() -> int | None:
    """The memory limit of this process's cgroup (v2 ``memory.max``, v1 ``memory.limit_in_bytes``), if any."""
    candidates = []
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        relative = path.lstrip("/")
        if controllers == "":
            candidates += [Path("/sys/fs/cgroup", relative, "memory.max"), Path("/sys/fs/cgroup/memory.max")]
        elif "memory" in controllers.split(","):
            candidates += [Path("/sys/fs/cgroup/memory", relative, "memory.limit_in_bytes"),
                           Path("/sys/fs/cgroup/memory/memory.limit_in_bytes")]
    limits = []
    for candidate in candidates:
        try:
            text = candidate.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 2**62:  # "max", or v1's "no limit" (about 2^63)
            limits.append(int(text))
    return min(limits) if limits else None


def physical_memory() -> int | None:
    """Bytes of physical memory (``SC_PHYS_PAGES x SC_PAGE_SIZE``), None where the OS does not say."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def memory_limit(config: dict) -> tuple[float | None, str]:
    """(bytes a run may use, where that number comes from): ``run.max_memory_gb``, else a share of the
    machine's or cgroup's memory (:data:`DEFAULT_FRACTION`); (None, ...) when neither is known."""
    explicit = config.get("run", {}).get("max_memory_gb")
    if explicit is not None:
        return explicit * GB, "run.max_memory_gb"
    physical, cgroup = physical_memory(), _cgroup_limit()
    if cgroup is not None and (physical is None or cgroup < physical):
        return DEFAULT_FRACTION * cgroup, (f"{DEFAULT_FRACTION:.0%} of this process's cgroup limit of "
                                           f"{cgroup / GB:.1f} GB")
    if physical is None:
        return None, "no memory size known"
    return DEFAULT_FRACTION * physical, f"{DEFAULT_FRACTION:.0%} of this machine's {physical / GB:.1f} GB"


def _size(nbytes: float) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if nbytes >= scale or unit == "MB":
            value = nbytes / scale
            return f"{value:,.1f} {unit}" if value < 1e6 else f"{value:.2g} {unit}"
    raise AssertionError


def check(config: dict, num_schools: int) -> list[Term]:
    """Raise InputError when the estimate of :func:`estimate` exceeds :func:`memory_limit`; return the terms.

    The message names the estimate, the limit and where it comes from, the largest term with its advice (the
    keys that shrink it), and ``run.max_memory_gb`` for a machine that has more memory than this one knows of.
    """
    terms = estimate(config, num_schools)
    needed = total(terms)
    limit, source = memory_limit(config)
    if limit is None or needed <= limit:
        return terms
    largest = max(terms, key=lambda term: term.bytes)
    change = largest.advice if largest.advice == RAISE_LIMIT else f"{largest.advice}, or raise the limit"
    raise InputError(
        f"this run needs an estimated {_size(needed)} of memory, more than the limit of {_size(limit)} ({source}); "
        f"the largest part is the {largest.what}, {_size(largest.bytes)}: {change} with "
        "--set run.max_memory_gb=... on a machine that has the memory"
    )


def __dir__():
    # The public names only, not the imports (``dir(js.diagnostics)`` lists no ``jax`` or ``jnp``).
    return list(__all__)
