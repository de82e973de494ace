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

import functools
import math

import numpy as np

__all__ = ["ecdf_band", "ecdf_counts", "evaluation_points", "ranks_within_band", "coverage_band", "binomial_cdf"]


_BAND_SIMULATIONS = 2000
# At most this many evaluation points for the ECDF band: the band's cost (its simulation and binomial tables)
# grows with the points, and more points than this add little power (Säilynoja et al. 2022 evaluate at
# K <= N points). Up to this many ranks, every point i = 1..L is used, as before.
MAX_EVALUATION_POINTS = 1000
# A binomial's probabilities beyond this many standard deviations (plus a margin for skewed, small-mean
# cases) from its mean are below 1e-100 and are left out of the tables: every tail probability the band
# compares with its level (at least ~1e-7 for 2,000 simulations) is far above that.
_WINDOW_SDS = 40.0


def _binomial_window(n: int, p: float):
    """``(start, cdf)``: P(X <= k) for k = start .. start + len(cdf) - 1, X ~ Binomial(n, p), on a window
    around the mean that holds all but < 1e-100 of the mass (P(X <= k) is 0 below it and 1 above it to that
    precision). The pmf comes from the ratio recurrence pmf(k + 1) / pmf(k) = (n - k) p / ((k + 1)(1 - p)),
    anchored by one lgamma evaluation at the mode, so the cost is the window's length, O(sqrt(n)), not n."""
    if p <= 0.0:
        return 0, np.ones(1)
    if p >= 1.0:
        return n, np.ones(1)
    mean, sd = n * p, math.sqrt(n * p * (1.0 - p))
    start = max(0, int(math.floor(mean - _WINDOW_SDS * sd - _WINDOW_SDS)))
    stop = min(n, int(math.ceil(mean + _WINDOW_SDS * sd + _WINDOW_SDS)))
    mode = min(max(int(math.floor((n + 1) * p)), start), stop)
    log_mode = (math.lgamma(n + 1) - math.lgamma(mode + 1) - math.lgamma(n - mode + 1)
                + mode * math.log(p) + (n - mode) * math.log1p(-p))
    k = np.arange(start, stop, dtype=np.float64)  # steps k -> k + 1 for k = start .. stop - 1
    steps = np.log(n - k) - np.log(k + 1.0) + (math.log(p) - math.log1p(-p))
    log_pmf = np.concatenate([[0.0], np.cumsum(steps)])
    log_pmf += log_mode - log_pmf[mode - start]
    return start, np.minimum(np.cumsum(np.exp(log_pmf)), 1.0)


def _cdf_at(start, cdf, k):
    """P(X <= k) for an integer array ``k``, from a window of :func:`_binomial_window`."""
    index = np.asarray(k) - start
    inside = cdf[np.clip(index, 0, cdf.size - 1)]
    return np.where(index < 0, 0.0, np.where(index >= cdf.size, 1.0, inside))


def binomial_cdf(n: int, p: float):
    """The table P(X <= k), k = 0..n, for X ~ Binomial(n, p) (pmf in log space, so any n works)."""
    start, window = _binomial_window(n, p)
    return _cdf_at(start, window, np.arange(n + 1))


def evaluation_points(num_ranks: int):
    """The integers i at which the ECDF of ranks on {0, ..., L} is checked (the count of ranks below i).

    Every i = 1..L when L <= :data:`MAX_EVALUATION_POINTS`, else that many evenly spaced ones, so a band's
    cost does not grow with L (L = 10^6 hung the run, issue #13). Each z_i = i / (L + 1) is exactly the
    probability that a uniform rank is below i, so the band stays exact at the points it checks.
    """
    levels = num_ranks + 1
    if num_ranks <= MAX_EVALUATION_POINTS:
        return np.arange(1, levels, dtype=np.int64)
    k = np.arange(1, MAX_EVALUATION_POINTS + 1, dtype=np.int64)
    return (k * levels) // (MAX_EVALUATION_POINTS + 1)  # strictly increasing, in [1, L]


def ecdf_counts(ranks, num_ranks: int):
    """The ECDF of ``ranks`` (N,) as counts of ranks below each of :func:`evaluation_points`."""
    return np.searchsorted(np.sort(np.asarray(ranks).astype(np.int64)), evaluation_points(num_ranks), side="left")


def ecdf_band(num_ranks: int, num_datasets: int, alpha: float, *, seed: int = 0):
    """Simultaneous (1 - alpha) band for the ECDF of ``num_datasets`` uniform ranks on {0, ..., num_ranks}.

    Returns ``(z, lower, upper)``: at each z_i = i / (L + 1), i over :func:`evaluation_points` (every
    i = 1..L for L up to :data:`MAX_EVALUATION_POINTS`), the ECDF (as a count of ranks below i) must lie in
    [lower_i, upper_i] for all i at once with probability about 1 - alpha (Säilynoja et al. 2022, the
    simulation-based adjustment of the pointwise level gamma): gamma is the alpha-quantile, over simulated
    uniform samples, of the smallest two-sided pointwise binomial tail probability of their ECDF, and the
    band at each point is the central 1 - gamma interval of Binomial(N, z_i). The simulated ECDFs are drawn
    as multinomial counts of the N ranks between consecutive points. Time and memory grow with the number of
    points times (2,000 simulations + sqrt(N)), never with L, and stay within seconds for any N and L.
    """
    # A study checks every parameter against the same band: computed once per (L, N, alpha, seed).
    return _ecdf_band(int(num_ranks), int(num_datasets), float(alpha), int(seed))


@functools.lru_cache(maxsize=32)
def _ecdf_band(num_ranks, num_datasets, alpha, seed):
    n, levels = num_datasets, num_ranks + 1
    points = evaluation_points(num_ranks)
    z = points / levels
    rng = np.random.default_rng(seed)
    # Probability that a uniform rank falls between consecutive points (and below the first, above the last).
    edges = np.concatenate([[0], points, [levels]])
    counts = rng.multinomial(n, np.diff(edges) / levels, size=_BAND_SIMULATIONS)[:, :-1].cumsum(axis=1)
    worst = np.ones(_BAND_SIMULATIONS)
    windows = [_binomial_window(n, zi) for zi in z]
    for i, (start, window) in enumerate(windows):
        at_or_below = _cdf_at(start, window, counts[:, i])
        below = _cdf_at(start, window, counts[:, i] - 1)
        worst = np.minimum(worst, np.minimum(1.0, 2.0 * np.minimum(at_or_below, 1.0 - below)))
    gamma = float(np.quantile(worst, alpha))
    # lower: the smallest k with P(X <= k) >= gamma / 2; upper: the smallest k with P(X <= k) >= 1 - gamma / 2.
    lower = np.array([min(n, start + int((window < gamma / 2).sum())) for start, window in windows])
    upper = np.array([min(n, start + int((window < 1 - gamma / 2).sum())) for start, window in windows])
    for array in (z, lower, upper):
        array.flags.writeable = False  # shared by every caller of the cache
    return z, lower, upper


def ranks_within_band(ranks, num_ranks: int, alpha: float):
    """Whether the ECDF of ``ranks`` (N,) stays inside the simultaneous band; also the band and ECDF."""
    ranks = np.asarray(ranks)
    z, lower, upper = ecdf_band(num_ranks, ranks.size, alpha)
    counts = ecdf_counts(ranks, num_ranks)
    inside = bool(np.all((counts >= lower) & (counts <= upper)))
    return inside, {"z": z, "lower": lower, "upper": upper, "counts": counts}


def coverage_band(level: float, num_datasets: int, alpha: float):
    """Two-sided (1 - alpha) band for the share of N intervals at ``level`` that cover, under correctness."""
    cdf = binomial_cdf(num_datasets, level)
    lower = int((cdf < alpha / 2).sum())
    upper = int((cdf < 1 - alpha / 2).sum())
    return lower / num_datasets, upper / num_datasets


def __dir__():
    # The public names only, not the imports (``dir(js.diagnostics)`` lists no ``jax`` or ``jnp``).
    return list(__all__)
