"""The exact meta-analytic quantities (jaxschools.core.bayes_factors, meta_quantities) against oracles written
here: scipy's adaptive quadrature over tau (and mu) of the model's densities written from their definitions,
scipy's optimisers, metafor's REML estimate (fixture), and an independent Monte Carlo for the one Monte Carlo
quantity. Two datasets: the eight schools (tau's posterior piles up at 0) and the BCG trials (strongly
heterogeneous, log risk ratios)."""

import json
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, optimize, stats

from jaxschools.core import bayes_factors, exact, meta_quantities
from jaxschools.core.data import Schools
from jaxschools.core.models import Prior

from test_prior_families import EIGHT_SIGMA, EIGHT_Y, oracle_log_prior

FIXTURES = json.loads((pathlib.Path(__file__).parent / "fixtures" / "metafor_reference.json").read_text())
BCG = FIXTURES["fits"]["bcg"]
BCG_Y, BCG_SIGMA = np.array(BCG["yi"]), np.sqrt(np.array(BCG["vi"]))
MU_LOC, MU_SCALE = 0.0, 4.0
# (name, y, sigma, tau_scale): a half-Cauchy tau prior on each dataset's own scale. Both are padded to the BCG's
# 13 studies (masked), so that the two share one compilation.
CASES = {"eight": (EIGHT_Y, EIGHT_SIGMA, 10.0), "bcg": (BCG_Y, BCG_SIGMA, 0.5)}
WIDTH = len(BCG_Y)


def _cdf(x, mean, sd):
    return 0.5 * math.erfc((mean - x) / (sd * math.sqrt(2.0)))


def _pdf(x, mean, sd):
    return math.exp(-0.5 * ((x - mean) / sd) ** 2) / (sd * math.sqrt(2.0 * math.pi))


class Oracle:
    """p(y | mu, tau) N(mu | MU_LOC, MU_SCALE^2) p(tau) written out, integrated by scipy.integrate.quad."""

    def __init__(self, y, sigma, family, scale, mu_scale=MU_SCALE):
        self.y, self.sigma, self.mu_scale = y, sigma, mu_scale
        self.log_tau_prior = oracle_log_prior(family, scale, None, sigma)
        self.mu_prior = stats.norm(MU_LOC, mu_scale)

    def log_lik(self, mu, tau):
        return float(np.sum(stats.norm.logpdf(self.y, mu, np.sqrt(self.sigma**2 + tau * tau))))

    def given_tau(self, tau):
        """log p(y | tau) (mu integrated against its prior: a Gaussian integral, in closed form) and the mean
        and variance of mu | tau, y."""
        v = self.sigma**2 + tau * tau
        prec = np.append(1.0 / v, self.mu_scale**-2.0)
        total = prec.sum()
        mean = np.sum(prec * np.append(self.y, MU_LOC)) / total
        return self.log_lik(mean, tau) + self.mu_prior.logpdf(mean) + 0.5 * math.log(2 * math.pi / total), mean, 1 / total

    def _integrand(self, fn):
        def integrand(x):
            t = math.exp(x)
            log_h, m, v = self.given_tau(t)
            return math.exp(log_h + self.log_tau_prior(t) + x - self.shift) * fn(t, m, v)
        return integrand

    def over_log_tau(self, fn, lo=-25.0, hi=8.0):
        """integral of fn(tau, E[mu | tau, y], Var[mu | tau, y]) p(y | tau) p(tau) d tau over x = log tau in
        [lo, hi], split at the data's scales (scaled by exp(-shift))."""
        edges = [lo, *[e for e in (-5.0, -2.0, 0.0, 2.0, 3.5) if lo < e < hi], hi]
        return sum(integrate.quad(self._integrand(fn), a, b, epsabs=0, epsrel=1e-11, limit=200)[0]
                   for a, b in zip(edges, edges[1:]))

    def posterior(self):
        """The normalising constant, and the CDF of log tau at a grid of points (cumulative quadrature), from
        which quantiles are one short quadrature and a root away."""
        self.shift = self.given_tau(1.0)[0]
        self.grid = np.linspace(-25.0, 8.0, 111)
        one = self._integrand(lambda t, m, v: 1.0)
        pieces = [integrate.quad(one, a, b, epsabs=0, epsrel=1e-12)[0] for a, b in zip(self.grid, self.grid[1:])]
        self.cumulative = np.concatenate([[0.0], np.cumsum(pieces)])
        self.z = self.cumulative[-1]
        return self

    def expect(self, fn):
        return self.over_log_tau(fn) / self.z

    def tau_density(self, tau):
        return math.exp(self.given_tau(tau)[0] + self.log_tau_prior(tau) - self.shift) / self.z

    def tau_cdf(self, tau):
        x = math.log(tau)
        k = min(np.searchsorted(self.grid, x, side="right") - 1, len(self.grid) - 2)
        rest = integrate.quad(self._integrand(lambda t, m, v: 1.0), self.grid[k], x, epsabs=0, epsrel=1e-12)[0]
        return (self.cumulative[k] + rest) / self.z

    def tau_quantile(self, p):
        return math.exp(optimize.brentq(lambda x: self.tau_cdf(math.exp(x)) - p, -24.0, 7.9, xtol=1e-14))


@pytest.fixture(scope="module", params=list(CASES))
def case(request):
    y, sigma, scale = CASES[request.param]
    pad = WIDTH - len(y)
    data = Schools(jnp.asarray(np.pad(y, (0, pad))), jnp.asarray(np.pad(sigma, (0, pad), constant_values=1.0)),
                   mask=jnp.arange(WIDTH) < len(y))
    prior = Prior.pair("normal", "half_cauchy", mu_loc=MU_LOC, mu_scale=MU_SCALE, tau_scale=scale)
    post = exact.posterior(data, prior)
    got = meta_quantities.summary(data, prior, post, rng_key=jax.random.key(3), num_draws=4000)
    return {"name": request.param, "data": data, "prior": prior, "factors": bayes_factors.bayes_factors(data, prior),
            "got": jax.tree_util.tree_map(np.asarray, got), "oracle": Oracle(y, sigma, "half_cauchy", scale).posterior()}


def test_bayes_factors_equal_quadrature(case):
    oracle, factors = case["oracle"], case["factors"]
    log_py = oracle.shift + math.log(oracle.z)
    assert float(factors["log_marginal_likelihood"]) == pytest.approx(log_py, abs=1e-8)
    log_tau0 = oracle.given_tau(0.0)[0]
    assert float(factors["log_tau0"]) == pytest.approx(log_tau0 - log_py, abs=1e-8)

    def log_lik_mu(mu):  # log p(y | mu): tau integrated against its prior
        peak = oracle.log_lik(mu, 1.0)
        value = sum(integrate.quad(lambda x: math.exp(oracle.log_lik(mu, math.exp(x)) + oracle.log_tau_prior(
            math.exp(x)) + x - peak), a, b, epsabs=0, epsrel=1e-12, limit=200)[0]
            for a, b in ((-25, -2), (-2, 0), (0, 2), (2, 3.5), (3.5, 8)))
        return peak + math.log(value)

    assert float(factors["log_mu0"]) == pytest.approx(log_lik_mu(0.0) - log_py, abs=1e-8)
    # The maximisers: each beats its neighbours (so it is the maximum, to second order in the step), and the
    # minimum Bayes factors are the ratios at them.
    mu_ml, tau_ml = float(factors["mu_ml"]), float(factors["tau_ml"])
    step = 1e-3 * float(np.std(oracle.y))
    at_ml = log_lik_mu(mu_ml)
    assert at_ml > max(log_lik_mu(mu_ml - step), log_lik_mu(mu_ml + step))
    assert float(factors["log_min_mu0"]) == pytest.approx(log_lik_mu(0.0) - at_ml, abs=1e-8)
    at_tau = oracle.given_tau(tau_ml)[0]
    assert at_tau >= oracle.given_tau(tau_ml * 1.001 + 1e-9)[0]
    if tau_ml > 0:
        assert at_tau > oracle.given_tau(tau_ml * 0.999)[0]
    assert float(factors["log_min_tau0"]) == pytest.approx(log_tau0 - max(at_tau, log_tau0), abs=1e-8)
    assert np.exp(float(factors["log_tau0"])) == pytest.approx(float(factors["tau0"]), rel=1e-12)
    if case["name"] == "eight":  # p(y | tau) is largest at tau = 0: no evidence against it at all
        assert tau_ml == 0.0 and float(factors["min_tau0"]) == pytest.approx(1.0, abs=1e-12)
    else:
        assert tau_ml > 0 and float(factors["min_tau0"]) < 1e-10


@pytest.mark.parametrize("name", ["bcg", "normand1999"])
def test_tau_ml_under_a_flat_mu_prior_is_metafors_reml(name):
    """Under a flat mu prior p(y | tau) is the restricted likelihood: its maximiser is REML's tau."""
    fit = FIXTURES["fits"][name]
    data = Schools(jnp.asarray(fit["yi"]), jnp.sqrt(jnp.asarray(fit["vi"])))
    factors = bayes_factors.bayes_factors(data, Prior.pair("flat", "half_normal", tau_scale=1.0))
    assert float(factors["tau_ml"]) ** 2 == pytest.approx(fit["REML"]["tau2"], rel=1e-6)
    assert math.isnan(float(factors["tau0"])) and math.isnan(float(factors["min_tau0"]))
    assert math.isfinite(float(factors["min_mu0"]))


def test_undefined_bayes_factors_say_why():
    assert bayes_factors.undefined("flat") == {
        "log_marginal_likelihood": "the flat prior on mu is improper", "tau0": "the flat prior on mu is improper",
        "mu0": "the flat prior on mu is improper", "min_tau0": "the flat prior on mu is improper",
        "min_mu0": "the uniform prior on tau is improper"}
    assert set(bayes_factors.undefined("normal+jeffreys")) == {"log_marginal_likelihood", "tau0", "mu0", "min_mu0"}
    assert bayes_factors.undefined("half_normal") == {}


@pytest.mark.slow  # scipy quadratures of many expectations: ~10 s a dataset
def test_i2_and_h2_equal_quadrature(case):
    oracle, got = case["oracle"], case["got"]
    s2 = meta_quantities.typical_variance(case["data"])
    w = 1.0 / case["oracle"].sigma ** 2
    assert float(s2) == pytest.approx((len(w) - 1) * w.sum() / (w.sum() ** 2 - (w**2).sum()), rel=1e-13)
    i2 = lambda t, m, v: t * t / (t * t + float(s2))  # noqa: E731
    mean = oracle.expect(i2)
    assert got["i2"]["mean"] == pytest.approx(mean, rel=1e-8)
    assert got["i2"]["sd"] == pytest.approx(math.sqrt(oracle.expect(lambda *a: i2(*a) ** 2) - mean**2), rel=1e-7)
    assert got["h2"]["mean"] == pytest.approx(1.0 + oracle.expect(lambda t, m, v: t * t) / float(s2), rel=1e-8)
    q = oracle.tau_quantile(0.975)
    assert got["i2"]["q975"] == pytest.approx(q * q / (q * q + float(s2)), rel=1e-8)


@pytest.mark.slow  # scipy quadratures of many expectations: ~10 s a dataset
def test_new_study_and_study_p_values_equal_quadrature(case):
    oracle, got = case["oracle"], case["got"]
    sigma_new = float(got["sigma_new"])
    assert sigma_new == float(np.median(oracle.sigma))
    assert np.all(np.isnan(got["study_p_values"][len(oracle.y):]))  # the padding is no study
    for key, extra in (("theta_new", 0.0), ("y_new", sigma_new**2)):
        block = got[key]
        assert block["mean"] == pytest.approx(oracle.expect(lambda t, m, v: m), rel=1e-8)
        second = oracle.expect(lambda t, m, v: m * m + v + t * t + extra)
        assert block["sd"] == pytest.approx(math.sqrt(second - block["mean"] ** 2), rel=1e-8)
        for p_key, p in (("q025", 0.025), ("q975", 0.975)):
            cdf = oracle.expect(lambda t, m, v: _cdf(block[p_key], m, math.sqrt(v + t * t + extra)))
            assert cdf == pytest.approx(p, abs=1e-9)
    y, sigma = oracle.y, oracle.sigma
    for j in (0, len(y) - 1):
        def upper(t, m, v):  # theta_j | tau, y: shrink y_j toward mu ~ N(m, v)
            b = sigma[j] ** 2 / (sigma[j] ** 2 + t * t)
            mean, var = (1 - b) * y[j] + b * m, t * t * b + b * b * v
            return 1.0 - _cdf(y[j], mean, math.sqrt(var + sigma[j] ** 2))
        assert got["study_p_values"][j] == pytest.approx(oracle.expect(upper), abs=1e-9)


@pytest.mark.slow  # scipy quadratures of many expectations: ~10 s a dataset
def test_shortest_intervals_equal_quadrature(case):
    """The shortest interval of a unimodal density holds 95% of the mass and has equal density at both ends
    (or starts at the support's end where the density falls from there): both checked by quadrature."""
    oracle, got = case["oracle"], case["got"]
    lower, upper = got["tau_shortest"]
    mass_below = oracle.tau_cdf(lower) if lower > 0 else 0.0
    assert oracle.tau_cdf(upper) - mass_below == pytest.approx(0.95, abs=1e-8)
    if lower > 0:
        assert oracle.tau_density(lower) == pytest.approx(oracle.tau_density(upper), rel=1e-6)
    else:
        assert oracle.tau_density(1e-9) > oracle.tau_density(upper)
    assert (lower > 0) == (case["name"] == "bcg")  # the eight schools' p(tau | y) falls from tau = 0

    def mu_cdf(x):
        return oracle.expect(lambda t, m, v: _cdf(x, m, math.sqrt(v)))

    def mu_density(x):
        return oracle.expect(lambda t, m, v: _pdf(x, m, math.sqrt(v)))

    lower, upper = got["mu_shortest"]
    assert mu_cdf(upper) - mu_cdf(lower) == pytest.approx(0.95, abs=1e-9)
    assert mu_density(lower) == pytest.approx(mu_density(upper), rel=1e-6)


def test_q_p_value_agrees_with_an_independent_monte_carlo(case):
    """P(Q(y_rep) >= Q(y) | y) by draws of tau from the oracle's CDF (numpy), mu | tau, theta | mu, tau, y_rep;
    the two estimates differ by less than 4.5 combined binomial sds."""
    oracle, got = case["oracle"], case["got"]
    y, sigma = oracle.y, oracle.sigma
    grid = np.linspace(-12.0, 6.0, 600)
    dens = np.array([oracle.tau_density(math.exp(x)) * math.exp(x) for x in grid])
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (dens[1:] + dens[:-1]) * np.diff(grid))])
    rng = np.random.default_rng(11)
    n = 4000
    tau = np.exp(np.interp(rng.uniform(0, cdf[-1], n), cdf, grid))
    w = 1.0 / sigma**2
    q_obs = np.sum(w * (y - np.sum(w * y) / w.sum()) ** 2)
    hits = 0
    for t in tau:
        _, m, v = oracle.given_tau(t)
        mu = rng.normal(m, math.sqrt(v))
        b = sigma**2 / (sigma**2 + t * t)
        theta = rng.normal((1 - b) * y + b * mu, np.sqrt(t * t * b))
        y_rep = rng.normal(theta, sigma)
        hits += np.sum(w * (y_rep - np.sum(w * y_rep) / w.sum()) ** 2) >= q_obs
    p = hits / n
    assert got["q"] == pytest.approx(q_obs, rel=1e-12)
    assert int(got["q_num_draws"]) == n
    both = math.sqrt(p * (1 - p) / n + got["q_mcse"] ** 2)
    assert abs(got["q_p_value"] - p) < 4.5 * both
