"""MCMC convergence diagnostics as pure ``jax.numpy`` functions.

Every function takes draws shaped ``(chain, draw)`` (a 1-d array is read as one
chain), is jittable and vmappable (add a leading batch axis with ``jax.vmap``),
and computes in the input's floating dtype (float32 or float64; integer or
boolean input is promoted to JAX's default float).

The estimators are those of

    Vehtari, Gelman, Simpson, Carpenter & Buerkner (2021), "Rank-normalization,
    folding, and localization: an improved R-hat for assessing convergence of
    MCMC", Bayesian Analysis 16(2), 667-718,

reproduced to rounding error as ArviZ 0.23 computes them (``arviz.ess``,
``arviz.rhat(method="rank")``, ``arviz.mcse``), ArviZ's edge cases included:

* odd draw counts: splitting a chain drops its middle draw;
* rank normalisation ranks *all* split draws jointly, ties get their average
  rank, and ranks r become z = Phi^-1((r - 3/8) / (S + 1/4)) (Blom, 1958);
* fewer than 4 draws (or fewer than 2 chains, for ``rhat``) gives nan, and so
  does any nan among the draws; ``rhat`` therefore is nan for a single chain;
* a quantity derived from the draws (ranks, tail indicators) whose split
  draws span less than 1e-15 (float64 resolution, used for every dtype, as
  ArviZ casts to float64) has ESS equal to the number of split draws;
* ``max``/``min`` of two candidates follow Python's rule (the first one is
  kept unless the second compares strictly greater/smaller), which decides
  which nan/inf wins.

One deliberate difference: **draws that do not vary within any chain give nan
for every diagnostic here**, where ArviZ 0.23 (and arviz-stats) report a
constant input as perfectly mixed (``ess`` equal to the number of draws, MCSEs
of ~1e-17) and chains constant within but differing between them as ``rhat``
~1e16 with ``ess`` of a few. The rule: if every split chain c has
max_c - min_c <= eps * max_c |x| (eps the input dtype's machine epsilon: its
draws agree to rounding), the within-chain variance W is 0, so R-hat
sqrt(((n-1)/n W + B/n) / W) and the autocorrelations rho_t = acov_t / W that
ESS needs are undefined; so are MCSEs, which rest on that ESS. A stuck
sampler (a step below floating-point resolution) produces exactly such draws,
and must not be reported as converged. Stan's ``posterior`` R package
(``should_return_NA``) likewise returns NA for constant input. Chains that
move, however little, are left to the estimators; whether they moved enough
is :func:`frozen_chains`' question, relative to the posterior's scale.

Other known differences are at rounding level: ``mcse_quantile`` inverts the beta CDF by
bisection of ``betainc`` (JAX has no beta quantile), so its order-statistic
index could differ from SciPy's only if that quantile times the draw count
lies within ~1e-12 of an integer.

The sample quantile behind the quantile ESS is R's type 7 in
``scipy.stats.mstats.mquantiles``' arithmetic. XLA contracts ``a * b + c``
into one fused multiply-add, which can move the quantile's position (1001
draws at 0.95 sit exactly on an integer) or value (inside a tie) by one bit;
the indicator ``x <= q`` then flips for whole ties, so those few products are
kept unfused on purpose.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax, vmap
from jax.scipy.special import betainc, ndtri

__all__ = [
    "RHAT_THRESHOLD",
    "ESS_THRESHOLD",
    "FROZEN_RTOL",
    "autocorrelation",
    "constant_chains",
    "ess",
    "ess_mean",
    "ess_quantile",
    "ess_tail",
    "frozen_chains",
    "mcse_mean",
    "mcse_quantile",
    "mcse_sd",
    "rhat",
]

# Convergence thresholds recommended by Vehtari et al. (2021): R-hat below 1.01, bulk and tail ESS >= 400.
RHAT_THRESHOLD = 1.01
ESS_THRESHOLD = 400

# ArviZ declares a chain constant when its range is below float64's resolution.
_FLAT_RANGE = 1e-15
# A chain whose within-chain sd is below this fraction of the posterior's scale has not explored it:
# a healthy chain's sd is of the order of the posterior sd, and a random walk of n steps of size s (in
# posterior sds) spreads about s sqrt(n), so this takes steps ~1e-5 sd over 10^4 draws, or rounding.
FROZEN_RTOL = 1e-3
_BLOM_OFFSET = 3.0 / 8.0
# Normal probabilities one standard deviation either side of the mean: the
# quantile MCSE is half the width of this credible interval of the quantile.
_ONE_SIGMA = (0.1586553, 0.8413447)


def _arviz_checks(min_chains):
    """Promote the input and apply ArviZ's validity rules to a diagnostic.

    Too few chains or draws is known from the shape, so nan comes back without
    tracing; a nan draw is data-dependent, so it masks the result.
    """

    def wrap(fn):
        # Compiled once per shape and dtype: eager dispatch of the many small ops is far slower.
        compiled = jax.jit(fn)

        @functools.wraps(fn)
        def checked(x, *args, **kwargs):
            x = _as_chains(x)
            if x.shape[0] < min_chains or x.shape[1] < 4:
                return jnp.full((), jnp.nan, x.dtype)
            out = compiled(x, *args, **kwargs)
            undefined = jnp.isnan(x).any() | jnp.all(_constant_rows(_split(x)))
            return jnp.where(undefined, jnp.nan, out).astype(x.dtype)

        return checked

    return wrap


def _constant_rows(x):
    """Whether each row of ``x`` agrees to rounding: max - min <= eps * max |x| (eps of x's dtype)."""
    top, bottom = x.max(axis=-1), x.min(axis=-1)
    magnitude = jnp.maximum(jnp.abs(top), jnp.abs(bottom))
    return top - bottom <= jnp.finfo(x.dtype).eps * magnitude


def _unfused(v):
    # An identity XLA cannot see through, so `v` is rounded before it is added.
    return jnp.where(v == v, v, jnp.nan)


def _split(x):
    """Halve every chain; the middle draw of an odd-length chain is dropped."""
    half = x.shape[1] // 2
    return jnp.concatenate([x[:, :half], x[:, x.shape[1] - half :]], axis=0)


def _z_scale(x):
    """Rank-normalise all of ``x`` jointly (average ranks for ties, Blom offsets)."""
    flat = x.ravel()
    ordered = jnp.sort(flat)
    below = jnp.searchsorted(ordered, flat, side="left")
    through = jnp.searchsorted(ordered, flat, side="right")
    # Tied draws occupy ranks below+1 .. through; they all get the middle one.
    rank = 0.5 * (below + through + 1).astype(x.dtype)
    u = (rank - _BLOM_OFFSET) / (flat.size - 2 * _BLOM_OFFSET + 1)
    return ndtri(u).reshape(x.shape)


def _autocov(x):
    """Biased per-chain autocovariance along the last axis, by zero-padded FFT."""
    n = x.shape[-1]
    # Padding to >= 2n - 1 turns the circular correlation into the linear one;
    # a 5-smooth length is fast for every FFT backend and is what ArviZ picks.
    fast = 2 * n
    while True:
        rest = fast
        for factor in (2, 3, 5):
            while rest % factor == 0:
                rest //= factor
        if rest == 1:
            break
        fast += 1
    centred = x - x.mean(axis=-1, keepdims=True)
    spec = jnp.fft.rfft(centred, n=fast, axis=-1)
    power = spec.real**2 + spec.imag**2
    return jnp.fft.irfft(power, n=fast, axis=-1)[..., :n] / n


def _ess(z):
    """ESS of split chains ``z`` (chain, draw) by Geyer's initial monotone sequence.

    rho_t = 1 - (W - mean_c acov_c(t)) / var_plus with W the mean within-chain
    variance and var_plus = W (n-1)/n + B/n. Pairs P_k = rho_2k + rho_2k+1 are
    summed while positive (and 2k - 1 < n - 3), made non-increasing, and
    tau = -1 + 2 sum_k P_k + rho_2K (the last pair's even term, kept where
    positive); ESS = m n / max(tau, 1 / log10(m n)).
    """
    m, n = z.shape
    size = m * n
    mean_acov = _autocov(z).mean(axis=0)
    mean_var = mean_acov[0] * n / (n - 1.0)
    var_plus = mean_var * (n - 1.0) / n
    if m > 1:
        var_plus = var_plus + jnp.var(z.mean(axis=1), ddof=1)
    rho = (1.0 - (mean_var - mean_acov) / var_plus).at[0].set(1.0)

    last_pair = max(0, (n - 3) // 2)
    pairs = rho[0 : 2 * last_pair + 2 : 2] + rho[1 : 2 * last_pair + 2 : 2]
    # The sequence stops at the first pair that is not positive (nan included),
    # or at the last pair the lag range allows; that pair is not summed.
    stop = jnp.argmax(jnp.concatenate([~(pairs > 0), jnp.ones(1, bool)]))
    stop = jnp.minimum(stop, last_pair)
    monotone = lax.cummin(pairs)
    head = jnp.where(jnp.arange(last_pair + 1) < stop, monotone, 0.0).sum()
    # The stopping pair's even lag still counts if the pair was non-negative or
    # the lag itself is positive (ArviZ's "improve estimation" step).
    even = rho[2 * stop]
    tail = jnp.where((pairs[stop] >= 0) | (even > 0), even, 0.0)
    tau = -1.0 + 2.0 * head + tail
    floor = 1.0 / math.log10(size)
    tau = jnp.where(floor > tau, floor, tau)
    value = jnp.where(jnp.isnan(rho[1]), jnp.nan, size / tau)
    return jnp.where(z.max() - z.min() < _FLAT_RANGE, size, value)


def _gelman_rubin(z):
    """Potential scale reduction sqrt(((n-1)/n W + B/n) / W) of chains ``z``."""
    n = z.shape[1]
    between = n * jnp.var(z.mean(axis=1), ddof=1)
    within = jnp.var(z, axis=1, ddof=1).mean()
    return jnp.sqrt((between / within + n - 1) / n)


def autocorrelation(x):
    """Normalised autocorrelation of every chain along the last axis, by FFT.

    rho_c(t) = acov_c(t) / acov_c(0) with the biased autocovariance
    acov_c(t) = (1/n) sum_{i<n-t} (x_ci - xbar_c)(x_c,i+t - xbar_c), computed
    by an FFT zero-padded to a 5-smooth length >= 2n (Vehtari et al. 2021,
    section 3.2). A constant chain gives nan (0/0), as in ``arviz.autocorr``.
    """
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    acov = _autocov(x)
    return acov / acov[..., :1]


@_arviz_checks(min_chains=1)
def ess(x):
    """Bulk effective sample size: ESS of the rank-normalised split chains.

    Split every chain in half, replace all draws by z-scores of their joint
    average ranks, and apply Geyer's initial monotone sequence estimator
    (Vehtari et al. 2021, section 3.2). Equals
    ``arviz.ess(x, method="bulk")``.
    """
    return _ess(_z_scale(_split(x)))


@_arviz_checks(min_chains=1)
def ess_mean(x):
    """ESS for the mean: Geyer's estimator on the split (not ranked) chains.

    This is the classic split-chain ESS (Vehtari et al. 2021, section 3.2), the
    one the MCSE of a mean needs. Equals ``arviz.ess(x, method="mean")``.
    """
    return _ess(_split(x))


@_arviz_checks(min_chains=1)
def ess_quantile(x, prob):
    """ESS for the ``prob`` quantile: ESS of the indicator I(x <= q_prob).

    q_prob is the type 7 sample quantile of all draws; the indicator chains
    are split and fed to Geyer's estimator (Vehtari et al. 2021).
    Equals ``arviz.ess(x, method="quantile", prob=prob)``.
    """
    ordered = jnp.sort(x.ravel())
    size = ordered.size
    prob = jnp.asarray(prob, x.dtype)
    position = _unfused(size * prob) + (1.0 - prob)
    k = jnp.floor(jnp.clip(position, 1, size - 1))
    gamma = jnp.clip(position - k, 0, 1)
    k = k.astype(int)
    q = _unfused((1.0 - gamma) * ordered[k - 1]) + _unfused(gamma * ordered[k])
    return _ess(_split((x <= q).astype(x.dtype)))


@_arviz_checks(min_chains=1)
def ess_tail(x):
    """Tail ESS: min(ESS of the 5% quantile, ESS of the 95% quantile).

    Vehtari et al. (2021). Equals ``arviz.ess(x, method="tail")``.
    """
    # One batched quantile ESS instead of two copies keeps the compiled graph small.
    low, high = vmap(ess_quantile, in_axes=(None, 0))(x, jnp.asarray([0.05, 0.95], x.dtype))
    return jnp.where(high < low, high, low)


@_arviz_checks(min_chains=2)
def rhat(x):
    """Rank-normalised split R-hat: max of the bulk and the folded R-hat.

    R-hat = sqrt(((n-1)/n W + B/n) / W) of the rank-normalised split chains
    (bulk), and of the rank-normalised |x - median(x)| (folded, sensitive to
    differing scales) (Vehtari et al. 2021); needs at least two
    chains (nan otherwise). Equals ``arviz.rhat(x, method="rank")``.
    """
    halves = _split(x)
    ordered = jnp.sort(halves.ravel())
    mid = ordered.size // 2
    median = (ordered[mid - 1] + ordered[mid]) / 2 if ordered.size % 2 == 0 else ordered[mid]
    bulk = _gelman_rubin(_z_scale(halves))
    folded = _gelman_rubin(_z_scale(jnp.abs(halves - median)))
    return jnp.where(folded > bulk, folded, bulk)


@_arviz_checks(min_chains=1)
def mcse_mean(x):
    """Monte Carlo standard error of the mean: sd(x) / sqrt(ESS_mean).

    sd is over all draws with ddof=1 (Vehtari et al. 2021).
    Equals ``arviz.mcse(x, method="mean")``.
    """
    return jnp.std(x, ddof=1) / jnp.sqrt(ess_mean(x))


@_arviz_checks(min_chains=1)
def mcse_sd(x):
    """Monte Carlo standard error of the standard deviation.

    With c = (x - mean(x))^2 and ESS_c the mean-ESS of c: Var(E c) is
    estimated as (mean(c^2) - mean(c)^2) / ESS_c and propagated through the
    square root by the delta method, MCSE = sqrt(Var(E c) / (4 mean(c)))
    (Vehtari et al. 2021). Equals ``arviz.mcse(x, method="sd")``.
    """
    sq = (x - x.mean()) ** 2
    evar = sq.mean()
    # The mean-ESS of sq itself (ArviZ's), without the public wrapper: sq may be constant when x is not
    # (x taking two values symmetric about its mean), and then ArviZ's flat rule, ESS = size, applies.
    varvar = ((sq**2).mean() - _unfused(evar * evar)) / _ess(_split(sq))
    return jnp.sqrt(varvar / evar / 4)


@_arviz_checks(min_chains=1)
def mcse_quantile(x, prob):
    """Monte Carlo standard error of the ``prob`` quantile.

    With E = ESS of the quantile indicator, the quantile's position among the
    sorted draws has a Beta(E prob + 1, E (1 - prob) + 1) distribution; the
    draws at its 15.87% and 84.13% points bracket +-1 sd, and MCSE is half
    their distance (Vehtari et al. 2021, section 4.4). Equals
    ``arviz.mcse(x, method="quantile", prob=prob)``.
    """
    ess_q = ess_quantile(x, prob)
    prob = jnp.asarray(prob, x.dtype)
    a = ess_q * prob + 1
    b = ess_q * (1 - prob) + 1
    target = jnp.asarray(_ONE_SIGMA, x.dtype)

    # Beta quantiles by bisection of the regularised incomplete beta function:
    # monotone, so a fixed number of halvings reaches the dtype's precision.
    def halve(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        below = betainc(a, b, mid) < target
        return jnp.where(below, mid, lo), jnp.where(below, hi, mid)

    zeros = jnp.zeros(2, x.dtype)
    lo, hi = lax.fori_loop(0, jnp.finfo(x.dtype).nmant + 12, halve, (zeros, zeros + 1))
    ppf = jnp.where(jnp.isnan(a + b), jnp.nan, 0.5 * (lo + hi))

    ordered = jnp.sort(x.ravel())
    size = ordered.size
    # fmax/fmin skip nan like ArviZ's nanmax/nanmin: an undefined ESS widens
    # the interval to the whole sample.
    low = jnp.floor(jnp.fmax(ppf[0] * size - 1, 0)).astype(int)
    high = jnp.ceil(jnp.fmin(ppf[1] * size - 1, size - 1)).astype(int)
    return (ordered[high] - ordered[low]) / 2


def _as_chains(x):
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise ValueError(f"expected draws shaped (chain, draw), got shape {x.shape}; use jax.vmap for batches")
    return x


def constant_chains(x):
    """Which chains of ``x`` (chain, draw) did not move: all draws equal to rounding.

    Chain c is constant when max_c - min_c <= eps * max_c |x| with eps the dtype's machine epsilon, the
    rule under which every diagnostic of this module is nan (see the module docstring). A chain of one
    draw cannot be judged and is not reported. Returns a boolean array (chain,). Jittable.
    """
    x = _as_chains(x)
    if x.shape[1] < 2:
        return jnp.zeros(x.shape[0], bool)
    return _constant_rows(x)


def frozen_chains(x, scale, rtol=FROZEN_RTOL):
    """Which chains of ``x`` (chain, draw) barely moved, relative to the posterior's ``scale``.

    Chain c is frozen when its within-chain standard deviation s_c (ddof 0) satisfies
    s_c <= rtol * scale, or when it is constant (:func:`constant_chains`, which covers a ``scale``
    that is nan, inf or not positive). ``scale`` is a posterior standard deviation of the quantity
    (e.g. the exact posterior's, or the Laplace approximation's); with ``rtol`` = 1e-3 a chain is
    frozen when it explored less than a thousandth of it. Such chains pass R-hat and ESS when they
    move only by rounding (a step below floating-point resolution: every draw is accepted and none
    moves), so they must be caught separately (Vehtari et al. 2021 assume chains that move). A chain
    of one draw cannot be judged and is not reported. Returns a boolean array (chain,). Jittable.
    """
    x = _as_chains(x)
    if x.shape[1] < 2:
        return jnp.zeros(x.shape[0], bool)
    scale = jnp.asarray(scale, x.dtype)
    usable = jnp.isfinite(scale) & (scale > 0)
    small = jnp.std(x, axis=1) <= jnp.where(usable, rtol * scale, -jnp.inf)
    return small | _constant_rows(x)


def __dir__():
    # The public names only, not the imports (``dir(js.diagnostics)`` lists no ``jax`` or ``jnp``).
    return list(__all__)
