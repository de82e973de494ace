"""Effective samples per second: jaxschools' random-walk Metropolis against LearnBayes' ``rwmetrop`` in R.

The seed analysis samples the eight-schools marginal posterior of (mu, log tau) (flat prior on mu and tau,
Jacobian log tau) with LearnBayes' ``rwmetrop(logpost, list(var = <Laplace covariance>, scale = 2), ...)``.
This benchmark runs that same sampler, on the same target and proposal, and compares it with jaxschools:

* LearnBayes: ``Rscript`` runs in a subprocess with the seed's ``logpost`` (written here in R), the data,
  Laplace mode and covariance passed in from Python (jaxschools' exact-derivative Laplace fit, so both sides
  start at the same point and propose N(x, 2^2 cov) with the same cov). One long chain of
  :data:`DRAWS` iterations starts at the mode; only the ``rwmetrop`` call is timed, inside R with
  ``system.time`` (R's start-up, package loading and the file transfer are excluded). The draws go to a
  temporary binary file of doubles and are read back here.
* jaxschools: ``js.sampling.run(key, js.kernels.rwmh(logdensity, fit.cov, 2.0), fit.mode, ...)``, from the
  mode with no burn-in (as the R chain), as one chain of the same length and as 4 chains of that length
  each; the best of 3 timed runs after a compiling run (:func:`benchmarks.common.best_time`).

Both sides' draws are kept whole (no burn-in is needed from the mode) and judged by the same yardstick: the
bulk effective sample size of mu and of log tau from ArviZ (``arviz.ess``, rank-normalised, over all chains
of a row), of which the smaller is divided by the row's seconds. Acceptance rates are reported side by side
as a check that both run the same proposal: LearnBayes' ``accept``, jaxschools' ``Samples.acceptance_rate``
(mean Metropolis probability min(1, ratio)), and, for both, the fraction of steps whose draw moved.

R is optional. Without ``Rscript`` on PATH, or without the LearnBayes package, the LearnBayes row is replaced
by a note; the smoke run (tiny sizes, one timing) never calls R.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import jax
import numpy as np

from benchmarks.common import best_time, eight_schools_fit

DRAWS = 200_000  # iterations of the one LearnBayes chain, and draws per jaxschools chain
CHAINS = (1, 4)  # jaxschools rows
SCALE = 2.0  # the seed's proposal scale
R_SEED = 1
R_TIMEOUT_S = 900
SMOKE_DRAWS = 200

# The seed's sampler, driven from the command line:
#   Rscript <this> OUT ITERS SEED Y SIGMA MODE COV
# with Y, SIGMA, MODE and COV (row-major) comma-separated. Writes the (ITERS, 2) draws row by row as
# little-endian doubles to OUT and prints one line "RESULT <elapsed s> <accept> <R version> <LearnBayes version>".
# Exits with status 3 when LearnBayes is not installed.
_R_SCRIPT = r"""
args <- commandArgs(trailingOnly = TRUE)
if (!suppressWarnings(requireNamespace("LearnBayes", quietly = TRUE))) {
  cat("LearnBayes is not installed\n")
  quit(save = "no", status = 3)
}
numbers <- function(text) as.numeric(strsplit(text, ",", fixed = TRUE)[[1]])
out_path <- args[1]
iters <- as.integer(args[2])
set.seed(as.integer(args[3]))
y <- numbers(args[4])
sigma <- numbers(args[5])
start <- numbers(args[6])
post_cov <- matrix(numbers(args[7]), nrow = 2, byrow = TRUE)
scale <- as.numeric(args[8])

# log p(lambda_1 = mu, lambda_2 = log tau | y) up to a constant: the seed's logpost.
logpost <- function(lambda, sigma, y) {
  v <- exp(2 * lambda[2]) + sigma^2
  sum(-0.5 * log(v) - (lambda[1] - y)^2 / (2 * v)) + lambda[2]
}

proposal <- list(var = post_cov, scale = scale)
timing <- system.time(fit <- LearnBayes::rwmetrop(logpost, proposal, start, iters, sigma, y))
writeBin(as.double(t(fit$par)), out_path, size = 8, endian = "little")
cat("RESULT", format(timing[["elapsed"]], digits = 10), format(fit$accept, digits = 10),
    paste(R.version$major, R.version$minor, sep = "."), as.character(utils::packageVersion("LearnBayes")), "\n")
"""


def _min_ess(draws: np.ndarray) -> tuple[float, dict]:
    """Smaller bulk ESS of mu and log tau over all chains of ``draws`` (chain, draw, 2), and both values."""
    import arviz

    dataset = arviz.convert_to_dataset({"mu": draws[..., 0], "log_tau": draws[..., 1]})
    ess = arviz.ess(dataset, method="bulk")
    values = {name: float(ess[name].values) for name in ("mu", "log_tau")}
    return min(values.values()), values


def _moved_fraction(start: np.ndarray, draws: np.ndarray) -> float:
    """Share of steps, over all chains of ``draws`` (chain, draw, 2) started at ``start``, whose draw moved."""
    previous = np.concatenate([np.broadcast_to(start, (draws.shape[0], 1, draws.shape[2])), draws[:, :-1]], axis=1)
    return float(np.mean(np.any(draws != previous, axis=-1)))


def _learnbayes(data, mode: np.ndarray, cov: np.ndarray, draws: int) -> dict:
    """Run the seed's ``rwmetrop`` in R; ``{"available": False, "reason": ...}`` when R or LearnBayes is missing."""
    rscript = shutil.which("Rscript")
    if rscript is None:
        return {"available": False, "reason": "R (`Rscript`) is not installed"}

    def joined(values) -> str:
        return ",".join(repr(float(v)) for v in np.ravel(values))

    with tempfile.TemporaryDirectory(prefix="jaxschools-learnbayes-") as tmp:
        script = Path(tmp, "rwmetrop.R")
        script.write_text(_R_SCRIPT)
        out_path = Path(tmp, "draws.bin")
        command = [rscript, "--vanilla", str(script), str(out_path), str(draws), str(R_SEED),
                   joined(data.y), joined(data.sigma), joined(mode), joined(cov), repr(SCALE)]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=R_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as error:
            return {"available": False, "reason": f"running Rscript failed ({type(error).__name__})"}
        if done.returncode == 3:
            return {"available": False, "reason": "the R package LearnBayes is not installed"}
        result_lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT")]
        if done.returncode != 0 or not result_lines:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            return {"available": False, "reason": f"Rscript failed (exit {done.returncode}: {tail[0]})"}
        _, elapsed, accept, r_version, learnbayes_version = result_lines[-1].split()
        chain = np.fromfile(out_path, dtype="<f8").reshape(draws, 2)[None]  # (1 chain, draws, 2)
    ess, per_parameter = _min_ess(chain)
    return {
        "available": True, "chains": 1, "draws": draws, "seconds": float(elapsed), "ess": ess,
        "ess_mu": per_parameter["mu"], "ess_log_tau": per_parameter["log_tau"],
        "accept": float(accept), "moved": _moved_fraction(mode, chain),
        "r_version": r_version, "learnbayes_version": learnbayes_version,
    }


def run(smoke: bool = False) -> dict:
    js, data, logdensity, fit = eight_schools_fit()
    mode, cov = np.asarray(fit.mode), np.asarray(fit.cov)
    draws = SMOKE_DRAWS if smoke else DRAWS
    repeats = 1 if smoke else 3
    kernel = js.kernels.rwmh(logdensity, fit.cov, SCALE)
    key = jax.random.key(0)

    rows = []
    for chains in CHAINS:
        def sample(chains=chains):
            samples = js.sampling.run(key, kernel, fit.mode, num_samples=draws, num_chains=chains)
            return jax.block_until_ready(samples)

        samples = sample()  # compiles; the timed calls draw the same numbers
        seconds = best_time(sample, repeats)
        positions = np.asarray(samples.positions)
        ess, per_parameter = _min_ess(positions)
        rows.append({
            "chains": chains, "draws": draws, "seconds": seconds, "ess": ess,
            "ess_mu": per_parameter["mu"], "ess_log_tau": per_parameter["log_tau"],
            "accept": float(np.mean(samples.acceptance_rate)), "moved": _moved_fraction(mode, positions),
        })

    if smoke:
        learnbayes = {"available": False, "reason": "skipped in smoke mode"}
    else:
        learnbayes = _learnbayes(data, mode, cov, draws)
    return {"learnbayes": learnbayes, "jaxschools": rows, "mode": mode.tolist(), "cov": cov.tolist()}


def markdown(result: dict) -> str:
    learnbayes = result["learnbayes"]
    lines = [
        "## Effective samples per second: jaxschools against LearnBayes' `rwmetrop` (the seed's sampler)",
        "",
        "Random-walk Metropolis on the eight-schools marginal posterior of (mu, log tau), proposal "
        "N(x, 2^2 cov) with the Laplace covariance, started at the Laplace mode, every draw kept. ESS: ArviZ "
        "bulk ESS over the row's chains, the smaller of mu's and log tau's. LearnBayes: one `rwmetrop` call in "
        "`Rscript`, timed inside R (start-up excluded). jaxschools: `js.sampling.run` with `js.kernels.rwmh`, "
        "best of 3 after compiling.",
        "",
    ]
    if learnbayes["available"]:
        lines += [f"R {learnbayes['r_version']}, LearnBayes {learnbayes['learnbayes_version']}.", ""]
    else:
        lines += [f"LearnBayes row not measured: {learnbayes['reason']}.", ""]
    base = learnbayes["ess"] / learnbayes["seconds"] if learnbayes["available"] else None
    lines += [
        "| method | chains x draws | seconds | min ESS | ESS / draw | ESS / s | ESS / s vs LearnBayes |",
        "|---|---|---|---|---|---|---|",
    ]
    named = [("LearnBayes `rwmetrop` (R)", learnbayes)] if learnbayes["available"] else []
    named += [("jaxschools `sampling.run`", row) for row in result["jaxschools"]]
    for name, row in named:
        rate = row["ess"] / row["seconds"]
        ratio = f"{rate / base:.3g}x" if base else "n/a"
        lines.append(
            f"| {name} | {row['chains']} x {row['draws']:,} | {row['seconds']:.3g} | {row['ess']:,.0f} "
            f"| {row['ess'] / (row['chains'] * row['draws']):.3f} | {rate:,.0f} | {ratio} |"
        )
    lines += [
        "",
        "Acceptance (same proposal, so both should accept about a third): LearnBayes' `accept` is the share "
        "of accepted proposals; jaxschools reports the mean Metropolis probability min(1, ratio); "
        "'moved' is, for both, the share of steps whose draw changed.",
        "",
        "| method | chains x draws | reported acceptance | moved |",
        "|---|---|---|---|",
    ]
    for name, row in named:
        lines.append(f"| {name} | {row['chains']} x {row['draws']:,} | {row['accept']:.4f} | {row['moved']:.4f} |")
    lines.append("")
    return "\n".join(lines)
