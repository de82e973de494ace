"""The exact posterior (jaxschools.core.exact) against independent oracles.

The oracle below is written from BDA3 section 5.4 in plain numpy/scipy: the textbook forms of eqs. 5.17-5.21
(the flat prior) or scipy's multivariate normal with mu integrated out as a rank-one covariance term (proper
priors), integrated over log tau with scipy.integrate (quad, quad_vec; dblquad over (mu, log tau) for the mu
integral itself). It shares no code with the module. Published figures (BDA3, posteriordb) come last.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, optimize, special, stats

import jaxschools as js
from jaxschools.core import exact

Y = np.array([28.0, 8, -3, 7, -1, 1, 18, 12])
SIGMA = np.array([15.0, 10, 16, 11, 9, 11, 10, 18])
RR_Y = np.array([-0.21, 0.12, 0.05, -0.33, 0.02, -0.11, 0.17, -0.05, 0.0, 0.31])  # conftest's log_risk_ratios
RR_SIGMA = np.array([0.06, 0.10, 0.21, 0.30, 0.08, 0.12, 0.15, 0.25, 0.10, 0.19])
EQUAL_Y = np.full(10, 0.7)  # no between-school spread: p(tau | y) piles up near zero
EQUAL_SIGMA = np.array([1.0, 2.0, 0.5, 1.5, 3.0, 1.0, 0.8, 2.5, 1.2, 0.6])
PAIRS = [(0, 2), (6, 4), (1, 7), (3, 5)]
TOL = 1e-6


# ---------------------------------------------------------------------------------------------------------
# The oracle.


class Oracle:
    """p(log tau | y) and the Gaussian conditionals given tau, straight from BDA3 section 5.4."""

    def __init__(self, y, sigma, prior="flat", mu_loc=0.0, mu_scale=5.0, tau_scale=5.0):
        self.y, self.sigma = np.asarray(y, float), np.asarray(sigma, float)
        self.prior, self.mu_loc, self.mu_scale, self.tau_scale = prior, mu_loc, mu_scale, tau_scale
        bracket = (np.log(self.sigma.min()) - 20.0, np.log(np.ptp(self.y) + self.sigma.max()) + 10.0)
        fit = optimize.minimize_scalar(lambda x: -self.log_unnorm(x), bounds=bracket, method="bounded",
                                       options={"xatol": 1e-10})
        self.mode = fit.x
        self.shift = self.log_unnorm(self.mode)
        self.lo, self.hi = self.mode - 60.0, self.mode + 60.0  # both tails fall at least like e^-|x - mode|
        self.log_z = np.log(self.integrate(lambda x: np.ones(1))[0]) + self.shift

    def log_p_y_given_tau(self, tau):
        """log of the integral over mu of p(y | mu, tau) p(mu), all constants kept."""
        y, v = self.y, self.sigma**2 + tau**2
        if self.prior == "flat":  # BDA3 eq. 5.21, with its constants
            w = 1.0 / v
            mu_hat = np.sum(w * y) / np.sum(w)
            return (-0.5 * (len(y) - 1) * np.log(2 * np.pi) - 0.5 * np.log(np.sum(w)) - 0.5 * np.sum(np.log(v))
                    - 0.5 * np.sum((y - mu_hat) ** 2 / v))
        cov = np.diag(v) + self.mu_scale**2  # y ~ N(mu_loc 1, diag(sigma^2 + tau^2) + mu_scale^2 1 1')
        return stats.multivariate_normal.logpdf(y, mean=np.full(len(y), self.mu_loc), cov=cov)

    def log_prior_tau(self, tau):
        if self.prior == "flat":
            return 0.0
        if self.prior == "half_cauchy":
            return stats.halfcauchy.logpdf(tau, scale=self.tau_scale)
        return stats.halfnorm.logpdf(tau, scale=self.tau_scale)

    def log_unnorm(self, x):
        tau = np.exp(x)
        return self.log_p_y_given_tau(tau) + self.log_prior_tau(tau) + x

    def density(self, x):
        return np.exp(self.log_unnorm(x) - self.log_z)

    def integrate(self, g, lo=None, hi=None):
        """Integral over log tau of exp(log_unnorm - shift) * g(x), g vector-valued (quad_vec)."""
        lo, hi = (self.lo if lo is None else lo), (self.hi if hi is None else hi)
        points = [self.mode] if lo < self.mode < hi else None
        value, _ = integrate.quad_vec(lambda x: np.exp(self.log_unnorm(x) - self.shift) * g(x), lo, hi,
                                      epsabs=0.0, epsrel=1e-13, norm="max", points=points, limit=5000)
        return value

    def expect(self, g):
        return self.integrate(g) * np.exp(self.shift - self.log_z)

    def cdf_log_tau(self, x):
        return self.integrate(lambda t: np.ones(1), hi=x)[0] * np.exp(self.shift - self.log_z)

    # Given tau, BDA3 eqs. 5.17-5.20 in their textbook form.
    def mu_moments(self, tau):
        w = 1.0 / (self.sigma**2 + tau**2)
        precision, weighted = np.sum(w), np.sum(w * self.y)
        if self.prior != "flat":
            precision, weighted = precision + self.mu_scale**-2, weighted + self.mu_loc * self.mu_scale**-2
        return weighted / precision, 1.0 / precision

    def theta_moments(self, tau):
        """E, Var of theta_j | tau, y; V_j = Var(theta_j | mu, tau, y); d E[theta_j | mu, tau] / d mu."""
        mu_hat, v_mu = self.mu_moments(tau)
        v = 1.0 / (1.0 / self.sigma**2 + 1.0 / tau**2)
        slope = v / tau**2
        return (self.y / self.sigma**2 + mu_hat / tau**2) * v, v + slope**2 * v_mu, v, slope

    def moments(self, threshold, pairs):
        """Posterior expectations of everything the summary reports, in one quad_vec."""
        J = len(self.y)

        def g(x):
            tau = np.exp(x)
            mu_hat, v_mu = self.mu_moments(tau)
            m, v, v_cond, slope = self.theta_moments(tau)
            b = tau**-2 / (tau**-2 + self.sigma**-2)
            exceed = stats.norm.sf((threshold - m[0]) / np.sqrt(v[0]))
            # theta_i - theta_j | tau, y: both linear in the same mu, plus independent noise
            greater = [stats.norm.cdf((m[i] - m[j])
                                      / np.sqrt(v_cond[i] + v_cond[j] + (slope[i] - slope[j]) ** 2 * v_mu))
                       for i, j in pairs]
            return np.concatenate([[x, x * x, tau, tau * tau, mu_hat, v_mu + mu_hat**2], m, v + m * m, b,
                                   [exceed], greater])

        e = self.expect(g)
        out = {"log_tau": _mean_sd(e[0], e[1]), "tau": _mean_sd(e[2], e[3]), "mu": _mean_sd(e[4], e[5])}
        out["theta"] = _mean_sd(e[6:6 + J], e[6 + J:6 + 2 * J])
        out["shrinkage"] = e[6 + 2 * J:6 + 3 * J]
        out["p_exceeds"] = e[6 + 3 * J]
        out["p_greater"] = e[7 + 3 * J:]
        out["e_tau2"], out["e_v_mu"] = e[3], e[5] - e[4] ** 2  # for the masked test
        return out

    def mixture_cdf_pdf(self, q_mu, q_theta):
        """CDF and density of mu at q_mu (Q,) and of theta_j at q_theta (Q, J)."""
        def g(x):
            mu_hat, v_mu = self.mu_moments(np.exp(x))
            m, v, _, _ = self.theta_moments(np.exp(x))
            z_mu, z = (q_mu - mu_hat) / np.sqrt(v_mu), (q_theta - m) / np.sqrt(v)
            return np.concatenate([stats.norm.cdf(z_mu), stats.norm.pdf(z_mu) / np.sqrt(v_mu),
                                   stats.norm.cdf(z).ravel(), (stats.norm.pdf(z) / np.sqrt(v)).ravel()])

        e = self.expect(g)
        Q, size = len(q_mu), q_theta.size
        return (e[:Q], e[Q:2 * Q], e[2 * Q:2 * Q + size].reshape(q_theta.shape),
                e[2 * Q + size:].reshape(q_theta.shape))


def _mean_sd(first, second):
    return first, np.sqrt(second - first**2)


def _schools(y, sigma):
    return js.data.Schools(y=jnp.asarray(y), sigma=jnp.asarray(sigma))


# ---------------------------------------------------------------------------------------------------------
# Fixtures: one module call per (dataset, prior), compiled once per shape and prior kind.

CASES = {
    "eight-flat": (Y, SIGMA, "flat"),
    "eight-half_cauchy": (Y, SIGMA, "half_cauchy"),
    "eight-half_normal": (Y, SIGMA, "half_normal"),
    "log_rr-flat": (RR_Y, RR_SIGMA, "flat"),
    "equal_y-flat": (EQUAL_Y, EQUAL_SIGMA, "flat"),
}


@pytest.fixture(scope="module")
def results():
    cache = {}

    def get(name):
        if name not in cache:
            y, sigma, prior = CASES[name]
            # p_best needs a key; it is requested only where a summary with a key is compiled anyway.
            key = jax.random.key(7) if name == "eight-flat" else None
            cache[name] = (exact.summary(_schools(y, sigma), prior, rng_key=key), Oracle(y, sigma, prior))
        return cache[name]

    return get


@pytest.fixture(scope="module")
def eight_flat_posterior():
    return exact.posterior(_schools(Y, SIGMA), "flat")


# ---------------------------------------------------------------------------------------------------------
# Agreement with the quadrature oracle.


@pytest.mark.parametrize("case", list(CASES))
def test_moments_and_probabilities_match_scipy(results, case):
    got, oracle = results(case)
    y = CASES[case][0]
    want = oracle.moments(threshold=y[0], pairs=PAIRS)
    for name in ("log_tau", "tau", "mu"):
        mean, sd = want[name]
        assert abs(float(got[name]["mean"]) - mean) <= TOL * sd, name
        np.testing.assert_allclose(got[name]["sd"], sd, rtol=TOL, err_msg=name)
    np.testing.assert_allclose(got["tau"]["mean"], want["tau"][0], rtol=TOL)
    mean, sd = want["theta"]
    np.testing.assert_array_less(np.abs(np.asarray(got["theta"]["mean"]) - mean), TOL * sd)
    np.testing.assert_allclose(got["theta"]["sd"], sd, rtol=TOL)
    np.testing.assert_allclose(got["shrinkage"], want["shrinkage"], rtol=TOL)
    np.testing.assert_allclose(got["p_exceeds"], want["p_exceeds"], rtol=TOL)
    np.testing.assert_allclose(got["threshold"], y[0])
    p_greater = np.asarray(got["p_greater"])
    np.testing.assert_allclose([p_greater[i, j] for i, j in PAIRS], want["p_greater"], rtol=TOL)
    np.testing.assert_allclose(p_greater + p_greater.T, np.where(np.eye(len(y)), np.nan, 1.0), rtol=1e-12)
    assert np.all(np.isnan(np.diag(p_greater)))
    assert float(got["quadrature_error"]) < 1e-8


@pytest.mark.parametrize("case", list(CASES))
def test_quantiles_match_scipy(results, case):
    """The oracle's CDF at the module's quantiles: (F(q) - p) / f(q) is the quantile error, to 1e-6 sd."""
    got, oracle = results(case)
    probs = np.array(list(exact.QUANTILES.values()))
    keys = list(exact.QUANTILES)
    q_mu = np.array([float(got["mu"][k]) for k in keys])
    q_theta = np.stack([np.asarray(got["theta"][k]) for k in keys])
    cdf_mu, pdf_mu, cdf_theta, pdf_theta = oracle.mixture_cdf_pdf(q_mu, q_theta)
    assert np.all(np.abs(cdf_mu - probs) / pdf_mu <= TOL * float(got["mu"]["sd"]))
    assert np.all(np.abs(cdf_theta - probs[:, None]) / pdf_theta <= TOL * np.asarray(got["theta"]["sd"]))
    for key, p in exact.QUANTILES.items():
        q = float(got["log_tau"][key])
        assert abs(oracle.cdf_log_tau(q) - p) / oracle.density(q) <= TOL * float(got["log_tau"]["sd"]), key
        np.testing.assert_allclose(got["tau"][key], np.exp(q), rtol=1e-12)


def test_normalising_constant_matches_scipy(results, eight_flat_posterior):
    """Every constant kept: log p(y) under the proper priors, and log Z (improper) under the flat one."""
    for case in ("eight-half_cauchy", "eight-half_normal"):
        got, oracle = results(case)
        np.testing.assert_allclose(got["log_evidence"], oracle.log_z, atol=TOL)
    got, oracle = results("eight-flat")
    assert np.isnan(float(got["log_evidence"]))
    np.testing.assert_allclose(eight_flat_posterior.log_norm, oracle.log_z, atol=TOL)
    np.testing.assert_allclose(jnp.sum(jnp.exp(eight_flat_posterior.log_weights)), 1.0, rtol=1e-13)
    for case in ("log_rr-flat", "equal_y-flat"):
        y, sigma, prior = CASES[case]
        np.testing.assert_allclose(exact.posterior(_schools(y, sigma), prior).log_norm, results(case)[1].log_z, atol=TOL)


def test_double_integral_checks_the_analytic_mu_integral(results, eight_flat_posterior):
    """dblquad over (mu, log tau) of the raw p(y | mu, tau) p(mu, tau) tau: Z, P(theta_A > 28), log p(y)."""
    got, oracle = results("eight-flat")
    J = len(Y)

    def log_joint(mu, x, prior):  # plain numpy (scipy.stats per call would make dblquad slow)
        tau2 = np.exp(2 * x)
        v = SIGMA**2 + tau2
        out = -0.5 * np.sum(np.log(2 * np.pi * v) + (Y - mu) ** 2 / v) + x
        if prior == "half_cauchy":  # mu ~ N(0, 5^2), tau ~ HalfCauchy(0, 5)
            out += -0.5 * np.log(2 * np.pi * 25.0) - mu * mu / 50.0
            out += np.log(2.0 / (5.0 * np.pi)) - np.log1p(tau2 / 25.0)
        return out

    def mu_window(x):  # the precision-weighted mean lies in [min y, max y], its sd below sqrt((max sigma^2 + tau^2)/J)
        half = 15.0 * np.sqrt((SIGMA.max() ** 2 + np.exp(2 * x)) / J)
        return Y.min() - half, Y.max() + half

    def dbl(f, prior, shift):
        value, _ = integrate.dblquad(lambda mu, x: np.exp(log_joint(mu, x, prior) - shift) * f(mu, x),
                                     oracle.mode - 40.0, oracle.mode + 25.0, lambda x: mu_window(x)[0],
                                     lambda x: mu_window(x)[1], epsabs=0.0, epsrel=1e-9)
        return value

    def exceeds(mu, x):  # theta_A | mu, tau, y (BDA3 eq. 5.17)
        tau2 = np.exp(2 * x)
        v = 1.0 / (1.0 / SIGMA[0] ** 2 + 1.0 / tau2)
        return special.ndtr(((Y[0] / SIGMA[0] ** 2 + mu / tau2) * v - 28.0) / np.sqrt(v))

    norm = dbl(lambda mu, x: 1.0, "flat", oracle.shift)
    np.testing.assert_allclose(np.log(norm) + oracle.shift, eight_flat_posterior.log_norm, atol=TOL)
    np.testing.assert_allclose(got["p_exceeds"], dbl(exceeds, "flat", oracle.shift) / norm, rtol=TOL)
    got, oracle = results("eight-half_cauchy")
    log_evidence = np.log(dbl(lambda mu, x: 1.0, "half_cauchy", oracle.shift)) + oracle.shift
    np.testing.assert_allclose(got["log_evidence"], log_evidence, atol=TOL)


def test_densities_match_scipy(eight):
    oracle = Oracle(Y, SIGMA)
    x = np.array([-30.0, -3.0, 0.0, 1.5, 2.5, 4.0, 8.0])
    np.testing.assert_allclose(exact.log_tau_logdensity(eight, "flat", x),
                               [np.log(oracle.density(t)) for t in x], rtol=1e-10)
    tau = np.array([0.0, 1e-8, 0.5, 4.0, 30.0])
    at_zero = np.exp(oracle.log_p_y_given_tau(0.0) - oracle.log_z)  # p(tau | y) is finite at tau = 0
    want = [at_zero] + [oracle.density(np.log(t)) / t for t in tau[1:]]
    np.testing.assert_allclose(exact.tau_density(eight, "flat", tau), want, rtol=1e-10)


# ---------------------------------------------------------------------------------------------------------
# Published figures.


def test_published_exact_figures(results):
    """Flat prior: E[theta_A | y] = 11.40 and P(theta_A > 28 | y) = 0.0435 (to their rounding), E[log tau] ~ 1.44."""
    got, _ = results("eight-flat")
    assert abs(float(got["theta"]["mean"][0]) - 11.40) <= 0.005
    assert abs(float(got["p_exceeds"]) - 0.0435) <= 0.00005
    assert abs(float(got["log_tau"]["mean"]) - 1.44) <= 0.005


def test_posteriordb_reference_means(results):
    """posteriordb eight_schools (mu ~ N(0, 5), tau ~ HalfCauchy(0, 5)) reference posterior means.

    Assumption: the reference posterior holds 10,000 independent draws, so its Monte Carlo standard error
    is the exact posterior sd / sqrt(10,000); each published mean must lie within 4 of those of the exact one.
    """
    got, _ = results("eight-half_cauchy")
    for value, reference in ((got["mu"], 4.411), (got["tau"], 3.602)):
        assert abs(float(value["mean"]) - reference) <= 4 * float(value["sd"]) / 100.0
    assert abs(float(got["theta"]["mean"][0]) - 6.151) <= 4 * float(got["theta"]["sd"][0]) / 100.0


def test_bda3_table_5_3_school_a(eight_flat_posterior):
    """BDA3 Table 5.3, school A: quantiles of 200 simulation draws, printed as integers: -2, 7, 10, 16, 31.

    A 200-draw empirical q-quantile lies between the order statistics X_(k) and X_(k+1), k = floor(200 q)
    (which of them depends on the quantile definition), and X_(k) = F^-1(U_(k)), U_(k) ~ Beta(k, 201 - k),
    with F the exact CDF. A printed integer r stands for a value in [r - 0.5, r + 0.5]. The test asks that
    interval to meet the 99.9% central interval of the empirical quantile: Beta_k.cdf(F(r + 0.5)) >= 0.0005 and
    Beta_(k+1).sf(F(r - 0.5)) >= 0.0005.
    """
    post = eight_flat_posterior
    w = np.exp(np.asarray(post.log_weights))
    loc, scale = np.asarray(post.theta_mean[:, 0]), np.sqrt(np.asarray(post.theta_var[:, 0]))
    cdf = lambda t: float(np.sum(w * stats.norm.cdf((t - loc) / scale)))  # noqa: E731
    n, alpha = 200, 0.001
    for q, printed in zip((0.025, 0.25, 0.5, 0.75, 0.975), (-2, 7, 10, 16, 31)):
        k = int(np.floor(n * q))
        assert stats.beta(k, n + 1 - k).cdf(cdf(printed + 0.5)) >= alpha / 2, (q, printed)
        assert stats.beta(k + 1, n - k).sf(cdf(printed - 0.5)) >= alpha / 2, (q, printed)


# ---------------------------------------------------------------------------------------------------------
# Sampling.


def test_sample_matches_summary_and_the_exact_cdf(eight, results):
    got, oracle = results("eight-flat")
    n = 20_000
    draws = exact.sample(jax.random.key(3), eight, n, "flat")
    assert draws["theta"].shape == (n, 8) and draws["mu"].shape == (n,)
    np.testing.assert_allclose(draws["tau"], np.exp(draws["log_tau"]), rtol=1e-12)
    for name in ("mu", "log_tau", "tau"):
        x = np.asarray(draws[name])
        mean, sd = float(got[name]["mean"]), float(got[name]["sd"])
        assert abs(x.mean() - mean) < 5 * sd / np.sqrt(n), name  # independent draws: ESS = n
        # Var of the sample variance is (m4 - sd^4) / n.
        m4 = np.mean((x - x.mean()) ** 4)
        assert abs(x.var() - sd**2) < 5 * np.sqrt((m4 - x.var() ** 2) / n), name
    theta = np.asarray(draws["theta"])
    sd = np.asarray(got["theta"]["sd"])
    np.testing.assert_array_less(np.abs(theta.mean(0) - np.asarray(got["theta"]["mean"])), 5 * sd / np.sqrt(n))
    p = float(got["p_exceeds"])
    assert abs(np.mean(theta[:, 0] > 28.0) - p) < 5 * np.sqrt(p * (1 - p) / n)
    # KS of the log tau draws against the oracle's CDF (Simpson on a fine grid; independent draws).
    grid = np.linspace(oracle.mode - 40.0, oracle.mode + 20.0, 30_001)
    log_f = np.array([oracle.log_unnorm(x) for x in grid])
    cdf = integrate.cumulative_simpson(np.exp(log_f - log_f.max()), x=grid, initial=0.0)
    ks = stats.kstest(np.asarray(draws["log_tau"]), lambda t: np.interp(t, grid, cdf / cdf[-1]))
    assert ks.pvalue > 1e-3, ks


def test_p_best_is_a_distribution_consistent_with_p_greater(eight, results):
    got, _ = results("eight-flat")
    p_best, p_greater = np.asarray(got["p_best"]), np.asarray(got["p_greater"])
    np.testing.assert_allclose(p_best.sum(), 1.0, rtol=1e-12)
    # P(theta_j is the largest) <= P(theta_j > theta_k) for every k, up to Monte Carlo error.
    num_draws = 10_000
    bound = np.nanmin(p_greater, axis=1)
    np.testing.assert_array_less(p_best, bound + 5 * np.sqrt(bound * (1 - bound) / num_draws) + 1e-12)
    # Against independent draws from sample (another key): two estimates, each with sd sqrt(p (1 - p) / n).
    theta = np.asarray(exact.sample(jax.random.key(11), eight, 20_000, "flat")["theta"])
    other = np.bincount(theta.argmax(1), minlength=8) / theta.shape[0]
    se = np.sqrt(p_best * (1 - p_best) / num_draws + other * (1 - other) / theta.shape[0])
    np.testing.assert_array_less(np.abs(p_best - other), 5 * se + 1e-12)
    assert np.all(np.isnan(np.asarray(exact.summary(eight, "half_cauchy")["p_best"])))


# ---------------------------------------------------------------------------------------------------------
# The rule: convergence and robustness of the range.


def test_n_and_2n_nodes_agree(eight, eight_flat_posterior):
    coarse = exact.posterior(eight, "flat", num_nodes=512)
    fine = eight_flat_posterior  # 1024 nodes
    assert float(fine.error) < 1e-8
    np.testing.assert_allclose(coarse.log_norm, fine.log_norm, atol=1e-9)
    for post in (coarse, fine):
        assert abs(float(jnp.sum(jnp.exp(post.log_weights))) - 1.0) < 1e-13
    mean = lambda post, f: float(jnp.sum(jnp.exp(post.log_weights) * f(post)))  # noqa: E731
    for f in (lambda p: p.log_tau, lambda p: jnp.exp(p.log_tau), lambda p: p.mu_hat, lambda p: p.theta_mean[:, 0]):
        np.testing.assert_allclose(mean(coarse, f), mean(fine, f), rtol=1e-8)
    with pytest.raises(ValueError, match="multiple of 32"):
        exact.posterior(eight, "flat", num_nodes=100)


@pytest.mark.parametrize("scale", [1e-6, 1e6])
def test_any_scale_of_the_data(eight_flat_posterior, scale):
    """Scaling y and sigma by c shifts log tau by log c and scales mu: the range follows the data."""
    post = exact.posterior(_schools(Y * scale, SIGMA * scale), "flat")
    ref = eight_flat_posterior
    assert float(post.error) < 1e-8
    mean = lambda p, v: float(jnp.sum(jnp.exp(p.log_weights) * v))  # noqa: E731
    np.testing.assert_allclose(mean(post, post.log_tau), mean(ref, ref.log_tau) + np.log(scale), atol=1e-10)
    np.testing.assert_allclose(mean(post, post.mu_hat), scale * mean(ref, ref.mu_hat), rtol=1e-10)
    np.testing.assert_allclose(mean(post, post.theta_var[:, 3]), scale**2 * mean(ref, ref.theta_var[:, 3]), rtol=1e-10)


@pytest.mark.parametrize("name", ["heavy_tail_J3", "J10000", "J10000_equal"])
def test_hard_ranges(name):
    """A flat prior with J = 3 (p(log tau | y) falls only like 1/tau), and J = 10,000 (a log-tau posterior
    of width 0.07; and one piled near tau = 0): E, sd of log tau and log Z against scipy."""
    rng = np.random.default_rng(0)
    if name == "heavy_tail_J3":
        # Three of the eight schools, the rest masked out (so it shares the eight schools' compilation).
        keep = np.array([True, False, True, False, False, False, True, False])
        data = _schools(Y, SIGMA).replace(mask=jnp.asarray(keep))
        y, sigma = Y[keep], SIGMA[keep]
    else:
        sigma = rng.uniform(0.5, 2.0, 10_000)
        y = rng.normal(0.0, 0.3, sigma.size) + sigma * rng.normal(size=sigma.size)
        y = np.zeros(sigma.size) if name == "J10000_equal" else y
        data = _schools(y, sigma)
    post = exact.posterior(data, "flat")
    oracle = Oracle(y, sigma)
    m, second = oracle.expect(lambda x: np.array([x, x * x]))
    sd = np.sqrt(second - m * m)
    w = jnp.exp(post.log_weights)
    got_m = float(jnp.sum(w * post.log_tau))
    assert abs(got_m - m) < TOL * sd
    np.testing.assert_allclose(float(jnp.sqrt(jnp.sum(w * (post.log_tau - got_m) ** 2))), sd, rtol=TOL)
    np.testing.assert_allclose(post.log_norm, oracle.log_z, atol=TOL)
    assert float(post.error) < 1e-8


# ---------------------------------------------------------------------------------------------------------
# jit / vmap and the mask.


def test_vmap_over_datasets_equals_a_loop(log_risk_ratios):
    datasets = [log_risk_ratios, _schools(EQUAL_Y, EQUAL_SIGMA), _schools(RR_Y * 3.0 + 0.1, RR_SIGMA * 2.0)]
    batch = jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *datasets)
    batched = jax.jit(jax.vmap(lambda d: exact.summary(d, "flat")))(batch)
    for i, data in enumerate(datasets):
        single = exact.summary(data, "flat")
        for path, value in jax.tree_util.tree_leaves_with_path(single):
            other = jax.tree_util.tree_leaves_with_path(batched)
            match = dict((jax.tree_util.keystr(p), v) for p, v in other)[jax.tree_util.keystr(path)]
            np.testing.assert_allclose(match[i], value, rtol=1e-9, atol=1e-12, err_msg=jax.tree_util.keystr(path))


def test_masked_school_drops_out_of_the_likelihood(eight):
    """School C masked (its y set to NaN): mu, tau and the others as for the seven-school data, and
    theta_C | mu, tau ~ N(mu, tau^2)."""
    masked = eight.replace(y=eight.y.at[2].set(jnp.nan), mask=eight.mask.at[2].set(False))
    got = exact.summary(masked, "flat", rng_key=jax.random.key(7))
    keep = np.arange(8) != 2
    oracle = Oracle(Y[keep], SIGMA[keep])
    want = oracle.moments(threshold=Y[0], pairs=[(0, 1)])
    for name in ("log_tau", "tau", "mu"):
        mean, sd = want[name]
        assert abs(float(got[name]["mean"]) - mean) <= TOL * sd, name
        np.testing.assert_allclose(got[name]["sd"], sd, rtol=TOL, err_msg=name)
    mean, sd = want["theta"]
    np.testing.assert_allclose(np.asarray(got["theta"]["mean"])[keep], mean, rtol=TOL)
    np.testing.assert_allclose(np.asarray(got["theta"]["sd"])[keep], sd, rtol=TOL)
    np.testing.assert_allclose(got["p_exceeds"], want["p_exceeds"], rtol=TOL)
    mu_mean, mu_sd = want["mu"]
    np.testing.assert_allclose(got["theta"]["mean"][2], mu_mean, rtol=TOL)
    np.testing.assert_allclose(got["theta"]["sd"][2], np.sqrt(want["e_tau2"] + mu_sd**2), rtol=TOL)
    np.testing.assert_allclose(got["shrinkage"][2], 1.0)
    assert np.all(np.isfinite(np.asarray(got["p_best"])))
