r"""Calibration checks of a whole inference procedure over simulated datasets.

* **Simulation-based calibration** (Talts, Betancourt, Simpson, Vehtari & Gelman 2018): draw
  (theta*, y) from the prior predictive, infer, and rank theta* among L posterior draws. If the
  procedure is correct, the rank is uniform on {0, ..., L}. Draws are thinned to about their ESS
  first, since autocorrelated draws give ranks that look non-uniform even for a correct sampler.
* **Uniformity** of N ranks is judged with *simultaneous* bands for their ECDF (Säilynoja, Bürkner &
  Vehtari 2022): the pointwise binomial band at level 1 - gamma, with gamma calibrated by simulation
  so that the whole ECDF of a uniform sample stays inside every band with probability 1 - alpha.
  A correct sampler passes with probability 1 - alpha (per parameter; the callers divide alpha
  among parameters, Bonferroni).
* **Coverage** of central posterior intervals: the share of datasets whose interval at level ``l``
  holds the true value. Under draws from the prior this is ``l`` exactly for a correct procedure, and
  the count is Binomial(N, l); its two-sided band is Bonferroni-corrected the same way.

Host-side numpy (the inputs are small arrays of ranks); the band calibration uses a fixed-seed
numpy Generator so the bands are the same on every run.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["ecdf_band", "ranks_within_band", "coverage_band", "binomial_cdf"]


_BAND_SIMULATIONS = 2000


def binomial_cdf(n: int, p: float):
    """The table P(X <= k), k = 0..n, for X ~ Binomial(n, p) (pmf summed in log space, so any n works)."""
    support = np.arange(n + 1)
    log_choose = np.array([math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) for k in support])
    with np.errstate(divide="ignore"):
        log_pmf = log_choose + support * np.log(p) + (n - support) * np.log1p(-p)
    return np.minimum(np.cumsum(np.exp(log_pmf)), 1.0)


def _tails(counts, tables):
    """Two-sided pointwise tail probability 2 min(P(X <= k), P(X >= k)) of counts (..., L) given (L, n + 1) CDFs."""
    index = np.arange(tables.shape[0])
    at_or_below = tables[index, counts]
    below = np.where(counts > 0, tables[index, np.maximum(counts - 1, 0)], 0.0)
    return np.minimum(1.0, 2.0 * np.minimum(at_or_below, 1.0 - below))


def ecdf_band(num_ranks: int, num_datasets: int, alpha: float, *, seed: int = 0):
    """Simultaneous (1 - alpha) band for the ECDF of ``num_datasets`` uniform ranks on {0, ..., num_ranks}.

    Returns ``(z, lower, upper)``: at each z_i = i / (L + 1), i = 1..L, the ECDF (as a count of ranks
    below i) must lie in [lower_i, upper_i] for all i at once with probability about 1 - alpha
    (Säilynoja et al. 2022, the simulation-based adjustment of the pointwise level gamma).
    """
    n, levels = num_datasets, num_ranks + 1
    z = np.arange(1, levels) / levels
    tables = np.stack([binomial_cdf(n, zi) for zi in z])  # (L, n + 1)
    rng = np.random.default_rng(seed)
    sims = rng.integers(0, levels, size=(_BAND_SIMULATIONS, n))
    counts = np.stack([np.bincount(row, minlength=levels).cumsum()[:-1] for row in sims])  # ranks < i
    worst = _tails(counts, tables).min(axis=1)
    gamma = float(np.quantile(worst, alpha))
    lower = (tables < gamma / 2).sum(axis=1)  # smallest k with P(X <= k) >= gamma / 2
    upper = (tables < 1 - gamma / 2).sum(axis=1)
    return z, lower, upper


def ranks_within_band(ranks, num_ranks: int, alpha: float):
    """Whether the ECDF of ``ranks`` (N,) stays inside the simultaneous band; also the band and ECDF."""
    ranks = np.asarray(ranks)
    z, lower, upper = ecdf_band(num_ranks, ranks.size, alpha)
    counts = np.bincount(ranks.astype(int), minlength=num_ranks + 1).cumsum()[:-1]
    inside = bool(np.all((counts >= lower) & (counts <= upper)))
    return inside, {"z": z, "lower": lower, "upper": upper, "counts": counts}


def coverage_band(level: float, num_datasets: int, alpha: float):
    """Two-sided (1 - alpha) band for the share of N intervals at ``level`` that cover, under correctness."""
    cdf = binomial_cdf(num_datasets, level)
    lower = int((cdf < alpha / 2).sum())
    upper = int((cdf < 1 - alpha / 2).sum())
    return lower / num_datasets, upper / num_datasets
