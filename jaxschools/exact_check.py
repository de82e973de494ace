"""The sampler against the exact posterior: z-scores and one alarm adjusted for their number.

For every estimate q_hat that has an exact counterpart q (by quadrature, :mod:`jaxschools.exact`) and a
Monte Carlo standard error, z = (q_hat - q) / MCSE. If the chains sample the posterior and the MCSE is
right, each z is approximately N(0, 1) (the Markov chain central limit theorem; Vehtari et al. 2021,
section 3), so a large |z| means the draws are not from the posterior (a stuck or biased sampler), not
merely noisy.

With m such z-scores, flagging any |z| > 4 would raise false alarms more often the more schools there
are. The threshold is Bonferroni's: z* = Phi^-1(1 - ALPHA / (2 m)) with ALPHA = 0.001, so a sampler that
is right raises the alarm in at most 0.1% of runs whatever m (about 4.09 for the eight schools' m = 23,
3.29 for m = 1, 5.5 for m = 20,000). The quantities: mean and sd of mu, log tau and tau (the sd's MCSE
from ``posterior.<name>.mcse_sd``, or the ``sd_mcse`` argument), E[theta_j | y] and E[B_j | y] for every
school, and P(theta_k > c | y).

A z is undefined (None) when the estimate, the exact value or the MCSE is missing or not finite, or the
MCSE is not positive. An MCSE is undefined for draws that do not vary (``jaxschools.diagnostics``): such
a quantity cannot be checked here, and a frozen chain is flagged by the convergence checks instead. z
then stays undefined rather than becoming (q_hat - q) / 1e-17.

Pure Python on a summary.json dict, so a saved summary can be checked again without JAX.
"""

from __future__ import annotations

import math
from statistics import NormalDist

__all__ = ["ALPHA", "MAX_LISTED", "check", "rows", "threshold"]

# Family-wise false-alarm rate of the sampler-vs-exact check (Bonferroni over the m z-scores).
ALPHA = 0.001
# summary.json names at most this many of the quantities beyond the threshold.
MAX_LISTED = 20


def threshold(num_compared: int, alpha: float = ALPHA) -> float:
    """Bonferroni's two-sided threshold Phi^-1(1 - alpha / (2 m)) for m = ``num_compared`` z-scores."""
    # -Phi^-1(p) rather than Phi^-1(1 - p): 1 - p would round away the digits of a small p.
    return -NormalDist().inv_cdf(alpha / (2.0 * max(int(num_compared), 1)))


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _get(tree, *keys):
    for key in keys:
        try:
            tree = tree[key]
        except (KeyError, IndexError, TypeError):
            return None
        if tree is None:
            return None
    return tree


def _school(names, j) -> str:
    name = str(names[j]) if j < len(names) else f"#{j + 1}"
    return name if name.lower().startswith("school") else f"school {name}"


def _exact_p_exceeds(exact: dict):
    value = exact.get("p_exceeds")
    return value.get("p") if isinstance(value, dict) else value


def z_score(estimate, mcse, truth):
    """(estimate - truth) / mcse, or None where any is missing or not finite or mcse <= 0."""
    usable = _finite(estimate) and _finite(truth) and _finite(mcse) and mcse > 0
    return (estimate - truth) / mcse if usable else None


def rows(summary: dict, sd_mcse: dict | None = None, max_schools: int | None = None) -> list[tuple]:
    """(label, estimate, MCSE, exact, z) for every compared quantity (the first ``max_schools`` schools)."""
    exact = _get(summary, "exact") or {}
    if not exact:
        return []
    sd_mcse = sd_mcse or {}
    out = []

    def add(label, estimate, mcse, truth):
        out.append((label, estimate, mcse, truth, z_score(estimate, mcse, truth)))

    for key, label in (("mu", "μ"), ("log_tau", "log τ"), ("tau", "τ")):
        post = _get(summary, "posterior", key) or {}
        sd_error = post.get("mcse_sd") if "mcse_sd" in post else sd_mcse.get(key)
        add(f"mean of {label}", post.get("mean"), post.get("mcse_mean"), _get(exact, key, "mean"))
        add(f"sd of {label}", post.get("sd"), sd_error, _get(exact, key, "sd"))
    names = _get(summary, "data", "names") or []
    shown = len(names) if max_schools is None else min(len(names), max_schools)
    for j in range(shown):
        add(f"E[θ | y], {_school(names, j)}", _get(summary, "theta", "mean", j),
            _get(summary, "theta", "mean_mcse", j), _get(exact, "theta", "mean", j))
    for j in range(shown):
        add(f"shrinkage E[B], {_school(names, j)}", _get(summary, "shrinkage", j),
            _get(summary, "shrinkage_mcse", j), _get(exact, "shrinkage", j))
    query = _get(summary, "queries", "p_exceeds") or {}
    if query:
        c = query.get("threshold")
        label = format(float(c), ".4g") if _finite(c) else str(c)
        add(f"P(θ > {label}), {_school([query.get('school')], 0)}", query.get("p"), query.get("mcse"),
            _exact_p_exceeds(exact))
    return out


def check(summary: dict, sd_mcse: dict | None = None, alpha: float = ALPHA) -> dict | None:
    """The comparison's verdict (summary.json's ``exact_check``); None without an exact reference.

    ``num_compared`` z-scores were defined, ``threshold`` is Bonferroni's for them, ``num_beyond`` exceed
    it (``beyond`` names up to MAX_LISTED, worst first), ``max_abs_z`` and ``worst`` give the largest,
    ``num_undefined`` quantities had no z (no MCSE: their draws do not vary, or a missing value), and
    ``flagged`` says whether any |z| exceeds the threshold.
    """
    compared = rows(summary, sd_mcse)
    if not compared:
        return None
    scored = sorted(((abs(z), label) for label, _, _, _, z in compared if z is not None), reverse=True)
    limit = threshold(len(scored), alpha)
    beyond = [label for z, label in scored if z > limit]
    return {
        "alpha": alpha,
        "num_compared": len(scored),
        "threshold": limit,
        "max_abs_z": scored[0][0] if scored else None,
        "worst": scored[0][1] if scored else None,
        "num_beyond": len(beyond),
        "beyond": beyond[:MAX_LISTED],
        "num_undefined": len(compared) - len(scored),
        "flagged": bool(beyond),
    }
