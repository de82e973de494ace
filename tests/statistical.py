r"""The statistical test layer: does a sampler's output match the exact posterior, within Monte Carlo error?

Every kernel in the project must pass this on the targets it is meant for (``tests/test_statistical_layer.py``
runs it); the checks are on the coordinates every target shares, ``x = (mu, log tau)`` = ``positions[..., :2]``
(the marginal's whole position, the joint densities' first two coordinates), against the exact posterior by
quadrature (:mod:`jaxschools.core.exact`, itself checked against scipy in ``tests/test_exact.py``).

The checks run in this order, and the first that fails decides the message:

1. **Mixing** (Vehtari et al. 2021's thresholds): for mu and log tau, rank-normalised split R-hat < 1.01 and
   bulk and tail ESS >= 400. Without it the MCSEs below are not trustworthy (an unmixed chain has an
   underestimated or meaningless MCSE, and one stuck chain has an enormous one), so a sampler that has not
   mixed *fails* here rather than passing on a huge MCSE.

2. **Moments and quantiles**: for mu and log tau, the posterior mean and the 2.5, 25, 50, 75 and 97.5%
   quantiles, each as z = (estimate - exact) / MCSE, must have |z| < 5. MCSE of a mean: sd / sqrt(ESS_mean);
   of a quantile: :func:`jaxschools.core.diagnostics.mcse_quantile` (the Beta approximation to the order
   statistic's position; Vehtari et al. 2021). Both are ArviZ's. A correct sampler has z
   approximately N(0, 1), so each comparison wrongly fails with probability 2 Phi(-5) = 5.7e-7, the twelve of
   them with at most 7e-6 (Bonferroni).

3. **The distribution of log tau** at K (default 20) exact quantiles q_k, p_k = k / (K + 1): the share of
   draws with log tau <= q_k estimates p_k, with

   .. math:: \mathrm{MCSE}_k = \sqrt{p_k (1 - p_k) / \mathrm{ESS}_k}, \qquad z_k = (\hat p_k - p_k) / \mathrm{MCSE}_k,

   where p_k (1 - p_k) is the indicator's variance under the null (exact, so a chain that never reaches a
   region still gets a finite, honest MCSE) and ESS_k the mean-ESS of the indicator chains (its
   autocorrelation, as in Vehtari et al. 2021's quantile ESS). The K tests are one family, corrected by
   Bonferroni at family-wise level ``family_alpha`` (default 1e-5): fail if any |z_k| > Phi^-1(1 - alpha / (2K))
   (5.03 for K = 20, alpha = 1e-5). Holm's step-down procedure rejects *some* hypothesis exactly when
   Bonferroni's smallest-p-value test does, so for this pass/fail decision the two coincide.

   Why not a Kolmogorov-Smirnov test of the draws against the exact CDF: KS assumes independent draws, and
   MCMC draws are autocorrelated, so the KS statistic's null distribution (that of n independent draws) is
   far too narrow for them and the test rejects correct samplers. Talts et al. (2018, "Validating Bayesian
   inference algorithms with simulation-based calibration") make the same point for their rank tests, which
   they apply only after thinning the chains to near-independence; BDA3 section 11.5 gives the effective
   number of draws. Indicators at fixed points, each with its own ESS, are the autocorrelation-aware form of
   the same comparison of CDFs.

The whole layer therefore fails a correct, mixed sampler with probability below about 2e-5 (normal
approximation to the estimators), while a kernel with a bias of b posterior sd fails once b sqrt(ESS)
exceeds about 5: with ESS ~ 2,000, a bias of 0.11 sd.

**Sensitivities from draws** (:func:`check_sensitivities`, issue 15): the covariance-identity estimates of
:mod:`jaxschools.core.draw_sensitivity`, d E[g] / d phi for every quantity g and input phi, against the exact
gradient (``jax.jacrev`` of :func:`jaxschools.core.exact.summary`). Mixing first, as above; then every component
is one comparison z = (estimate - exact) / MCSE. The MCSE is by batch means over B batches, so under a correct
estimator z is approximately Student-t with B - 1 degrees of freedom (not normal: the MCSE is itself estimated
from B numbers); the m components are one Bonferroni family at level ``family_alpha``, so each must have
|z| < t_{B-1}^{-1}(1 - alpha / (2m)) (6.0 for B = 100, m = 300 and alpha = 1e-5). The components are strongly
correlated (one set of draws), which makes Bonferroni conservative, never liberal.

References: Vehtari, Gelman, Simpson, Carpenter & Buerkner (2021), Rank-normalization, folding, and
localization: an improved R-hat for assessing convergence of MCMC, Bayesian Analysis 16(2); Talts,
Betancourt, Simpson, Vehtari & Gelman (2018), arXiv:1804.06788.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy import special, stats

from jaxschools.core import diagnostics, exact

__all__ = [
    "Reference",
    "Row",
    "Check",
    "exact_reference",
    "check_against_exact",
    "assert_matches_exact",
    "check_sensitivities",
    "assert_sensitivities_match",
    "Z_MAX",
    "FAMILY_ALPHA",
    "NUM_CDF_POINTS",
    "QUANTILE_PROBS",
]

Z_MAX = 5.0
FAMILY_ALPHA = 1e-5
NUM_CDF_POINTS = 20
# The quantiles exact.summary reports, in its key order.
QUANTILE_PROBS = dict(exact.QUANTILES)
PARAMETERS = ("mu", "log_tau")
_LABELS = {"mu": "mu", "log_tau": "log tau"}


class Reference(NamedTuple):
    """Exact values the sampler is compared with (plain numpy floats; built by :func:`exact_reference`)."""

    mean: dict  # {"mu": float, "log_tau": float}
    quantiles: dict  # {"mu": {"q025": float, ...}, "log_tau": {...}}
    cdf_probs: np.ndarray  # (K,) p_k = k / (K + 1)
    cdf_points: np.ndarray  # (K,) exact quantiles q_k of log tau


class Row(NamedTuple):
    """One comparison: ``|z| < limit`` passes (z = (estimate - exact) / mcse)."""

    quantity: str
    estimate: float
    mcse: float
    exact: float
    z: float
    limit: float

    @property
    def ok(self) -> bool:
        return bool(abs(self.z) < self.limit)  # NaN fails


class Check(NamedTuple):
    """What :func:`check_against_exact` found. ``mixing``: (quantity, value, requirement, ok) rows."""

    mixing: list
    rows: list

    @property
    def mixed(self) -> bool:
        return all(ok for *_, ok in self.mixing)

    @property
    def failures(self) -> list:
        return [row for row in self.rows if not row.ok]

    @property
    def passed(self) -> bool:
        return self.mixed and not self.failures

    def worst(self, prefix: str = "") -> Row:
        """The row with the largest |z| / limit among those whose quantity starts with ``prefix``."""
        rows = [row for row in self.rows if row.quantity.startswith(prefix)]
        return max(rows, key=lambda row: abs(row.z) / row.limit if math.isfinite(row.z) else math.inf)

    def table(self, rows=None) -> str:
        rows = self.rows if rows is None else rows
        lines = [f"  {'quantity':<34} {'sampler':>11} {'MCSE':>9} {'exact':>11} {'z':>8} {'limit':>6}"]
        for row in rows:
            lines.append(f"  {row.quantity:<34} {row.estimate:>11.5g} {row.mcse:>9.3g} {row.exact:>11.5g} "
                         f"{row.z:>8.2f} {row.limit:>6.2f}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------
# The exact reference.


# The inverse CDF of log tau of jaxschools.core.exact (the one behind exact.summary's quantiles and exact.sample,
# both tested against scipy), at K probabilities at once; compiled once per shape of the quadrature rule.
_log_tau_quantiles = jax.jit(jax.vmap(exact._logtau_icdf, in_axes=(None, 0)))


def exact_reference(data, prior, num_cdf_points: int = NUM_CDF_POINTS) -> Reference:
    """The exact posterior values the layer compares with, for ``data`` under ``prior`` (name or Prior)."""
    summary = exact.summary(data, prior)
    post = exact.posterior(data, prior)
    probs = np.arange(1, num_cdf_points + 1) / (num_cdf_points + 1)
    points = np.asarray(_log_tau_quantiles(post, jnp.asarray(probs, data.y.dtype)), float)
    error = float(summary["quadrature_error"])
    assert error < 1e-6, f"the exact reference itself is unreliable (quadrature error {error:.2g})"
    return Reference(
        mean={name: float(summary[name]["mean"]) for name in PARAMETERS},
        quantiles={name: {key: float(summary[name][key]) for key in QUANTILE_PROBS} for name in PARAMETERS},
        cdf_probs=probs,
        cdf_points=points,
    )


# ---------------------------------------------------------------------------------------------------------
# The checks.


def _mixing_rows(draws: dict) -> list:
    rows = []
    for name, x in draws.items():
        label = _LABELS[name]
        rhat = float(diagnostics.rhat(x))
        bulk, tail = float(diagnostics.ess(x)), float(diagnostics.ess_tail(x))
        rows.append((f"R-hat of {label}", rhat, f"< {diagnostics.RHAT_THRESHOLD}", rhat < diagnostics.RHAT_THRESHOLD))
        rows.append((f"bulk ESS of {label}", bulk, f">= {diagnostics.ESS_THRESHOLD}",
                     bulk >= diagnostics.ESS_THRESHOLD))
        rows.append((f"tail ESS of {label}", tail, f">= {diagnostics.ESS_THRESHOLD}",
                     tail >= diagnostics.ESS_THRESHOLD))
    return rows


def _row(quantity, estimate, mcse, truth, limit) -> Row:
    estimate, mcse, truth = float(estimate), float(mcse), float(truth)
    z = (estimate - truth) / mcse if mcse > 0 else (0.0 if estimate == truth else math.inf)
    return Row(quantity, estimate, mcse, truth, z, limit)


# ESS of every indicator chain in one compiled call: (K, chain, draw) -> (K,).
_indicator_ess = jax.jit(jax.vmap(diagnostics.ess_mean))


def check_against_exact(positions, reference: Reference, *, z_max: float = Z_MAX,
                        family_alpha: float = FAMILY_ALPHA) -> Check:
    """Compare draws ``positions`` (chain, draw, >= 2), whose first two coordinates are (mu, log tau), with
    ``reference`` (:func:`exact_reference`); see the module docstring for the three stages.

    Returns a :class:`Check` with every row, passed or not (for reports and failure margins).
    """
    positions = jnp.asarray(positions)
    if positions.ndim != 3 or positions.shape[-1] < 2:
        raise ValueError(f"positions must be (chain, draw, dim >= 2) with (mu, log tau) first; got {positions.shape}")
    draws = {"mu": positions[..., 0], "log_tau": positions[..., 1]}
    mixing = _mixing_rows(draws)

    rows = []
    for name, x in draws.items():
        label = _LABELS[name]
        flat = np.asarray(x, float).ravel()
        rows.append(_row(f"mean of {label}", flat.mean(), diagnostics.mcse_mean(x), reference.mean[name], z_max))
        for key, prob in QUANTILE_PROBS.items():
            rows.append(_row(f"{100 * prob:g}% quantile of {label}", np.quantile(flat, prob),
                             diagnostics.mcse_quantile(x, prob), reference.quantiles[name][key], z_max))

    # Stage 3: indicators at the exact quantiles of log tau, one Bonferroni family.
    probs, points = reference.cdf_probs, reference.cdf_points
    num_points = len(probs)
    limit = float(-special.ndtri(family_alpha / (2 * num_points)))
    indicators = (draws["log_tau"][None] <= jnp.asarray(points, positions.dtype)[:, None, None])
    indicators = indicators.astype(positions.dtype)
    shares = np.asarray(jnp.mean(indicators, axis=(1, 2)), float)
    ess = np.asarray(_indicator_ess(indicators), float)
    for p, q, share, n_eff in zip(probs, points, shares, ess):
        mcse = math.sqrt(p * (1 - p) / n_eff) if n_eff > 0 else math.inf
        rows.append(_row(f"P(log tau <= {q:.4g}) [exact q{p:.3f}]", share, mcse, p, limit))
    return Check(mixing, rows)


def assert_matches_exact(positions, reference: Reference, *, z_max: float = Z_MAX,
                         family_alpha: float = FAMILY_ALPHA, label: str = "") -> Check:
    """:func:`check_against_exact`, raising ``AssertionError`` on the first stage that fails.

    The message starts with ``chains have not mixed`` (stage 1) or ``sampler disagrees with the exact
    posterior`` (stages 2-3) and tabulates the failing rows. Returns the :class:`Check` when all pass.
    """
    check = check_against_exact(positions, reference, z_max=z_max, family_alpha=family_alpha)
    return _passed(check, label, "sampler disagrees with the exact posterior")


def _passed(check: Check, label: str, disagreement: str, max_rows: int | None = None) -> Check:
    """``check`` if it passed; else AssertionError: ``chains have not mixed`` (stage 1) or ``disagreement``,
    tabulating the failing rows (the first ``max_rows``)."""
    prefix = f"{label}: " if label else ""
    if not check.mixed:
        lines = [f"  {quantity} = {value:.5g} (need {need})" for quantity, value, need, ok in check.mixing if not ok]
        raise AssertionError(f"{prefix}chains have not mixed, so their MCSEs cannot be trusted:\n" + "\n".join(lines))
    if check.failures:
        raise AssertionError(f"{prefix}{disagreement} beyond Monte Carlo error "
                             f"({len(check.failures)} of {len(check.rows)} comparisons):\n"
                             + check.table(check.failures[:max_rows]))
    return check


# ---------------------------------------------------------------------------------------------------------
# Sensitivities from draws against the exact gradient.


def check_sensitivities(positions, estimate: dict, mcse: dict, exact_gradient: dict, num_batches: int, *,
                        family_alpha: float = FAMILY_ALPHA) -> Check:
    """Compare ``estimate`` and its ``mcse`` (``{quantity: {input: array}}``, as
    :func:`jaxschools.core.draw_sensitivity.model_sensitivity` returns them) with ``exact_gradient`` (the same
    keys and shapes), after the mixing of ``positions``' (mu, log tau) (None: draws known to be exact or
    independent, no mixing stage); see the module docstring.

    Every (quantity, input) pair of ``exact_gradient`` must be in ``estimate`` (KeyError otherwise), so no
    comparison is silently left out.
    """
    mixing = [] if positions is None else _mixing_rows({"mu": positions[..., 0], "log_tau": positions[..., 1]})
    triples = []
    for quantity, by_input in exact_gradient.items():
        for name, truth in by_input.items():
            truth = np.asarray(truth, float)
            values = np.broadcast_to(np.asarray(estimate[quantity][name], float), truth.shape)
            errors = np.broadcast_to(np.asarray(mcse[quantity][name], float), truth.shape)
            for index in np.ndindex(truth.shape):  # (quantity index..., input index...)
                label = f"d {quantity} / d {name} {list(index)}" if index else f"d {quantity} / d {name}"
                triples.append((label, values[index], errors[index], truth[index]))
    limit = float(stats.t.ppf(1.0 - family_alpha / (2 * len(triples)), num_batches - 1))
    return Check(mixing, [_row(label, value, error, truth, limit) for label, value, error, truth in triples])


def assert_sensitivities_match(positions, estimate: dict, mcse: dict, exact_gradient: dict, num_batches: int, *,
                               family_alpha: float = FAMILY_ALPHA, label: str = "") -> Check:
    """:func:`check_sensitivities`, raising ``AssertionError`` (``chains have not mixed`` or ``sensitivities
    disagree with the exact gradient``, with the failing rows) unless everything passes."""
    check = check_sensitivities(positions, estimate, mcse, exact_gradient, num_batches, family_alpha=family_alpha)
    # A wrong derivative can fail hundreds of components: the table shows the first 40.
    return _passed(check, label, "sensitivities disagree with the exact gradient", max_rows=40)
