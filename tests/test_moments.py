"""Which posterior moments exist (issue #13, finding 14): the rule of ``jaxschools.core.moments`` against an oracle
written here in numpy/scipy (not through ``jaxschools.core.exact``), and its use by ``exact.summary``, the summary
of an analysis and the command line's warnings.

The oracle: p(tau | y) ∝ p(tau) ∫ p(mu) prod_j N(y_j | mu, sigma_j^2 + tau^2) dmu, the integral over mu done in
closed form (a Gaussian integral: BDA3 eq. 5.21), the conditional moments of mu and theta given tau from
BDA3 eqs. 5.17-5.20, and expectations by ``scipy.integrate.quad`` over tau on [0, inf).
"""

import json
import math

import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from jaxschools.core import exact
from jaxschools.core.data import Schools
from sizes import SAMPLER_SETS, THREE_SCHOOL_SETS

Y8 = np.array([28.0, 8, -3, 7, -1, 1, 18, 12])
SIGMA8 = np.array([15.0, 10, 16, 11, 9, 11, 10, 18])
PRIOR_KINDS = ("flat", "half_cauchy", "half_normal")
MU_LOC, MU_SCALE, TAU_SCALE = 0.0, 5.0, 5.0  # the defaults of jaxschools.core.models.Prior


# --- the oracle --------------------------------------------------------------------------------------------------


def _log_tau_prior(kind, tau):
    if kind == "flat":
        return 0.0
    if kind == "half_cauchy":
        return stats.halfcauchy.logpdf(tau, scale=TAU_SCALE)
    return stats.halfnorm.logpdf(tau, scale=TAU_SCALE)


def _given_tau(kind, tau, y, sigma):
    """log of p(tau) ∫ p(mu) p(y | mu, tau) dmu (unnormalised), and mu | tau, y ~ N(m, V)."""
    v = sigma**2 + tau**2
    precision, weighted = np.sum(1 / v), np.sum(y / v)
    if kind != "flat":  # mu ~ N(MU_LOC, MU_SCALE^2): one more observation
        precision, weighted = precision + MU_SCALE**-2, weighted + MU_LOC * MU_SCALE**-2
    m, big_v = weighted / precision, 1 / precision
    log_f = -0.5 * np.sum(np.log(2 * np.pi * v) + (y - m) ** 2 / v) + 0.5 * np.log(2 * np.pi * big_v)
    if kind != "flat":
        log_f += stats.norm.logpdf(m, MU_LOC, MU_SCALE)
    return log_f + _log_tau_prior(kind, tau), m, big_v


def _conditional(kind, tau, y, sigma, quantity):
    """(mean, variance) of ``quantity`` given tau, y (theta: each school; theta_out: a new school)."""
    _, m, big_v = _given_tau(kind, tau, y, sigma)
    if quantity == "mu":
        return m, big_v
    if quantity == "tau":
        return tau, 0.0
    if quantity == "log_tau":
        return math.log(tau), 0.0
    if quantity == "theta_out":  # theta_new | mu, tau ~ N(mu, tau^2)
        return m, tau**2 + big_v
    b = sigma**2 / (sigma**2 + tau**2)  # theta_j | mu, tau, y ~ N((1 - b) y + b mu, tau^2 b)
    return (1 - b) * y + b * m, tau**2 * b + b**2 * big_v


class Oracle:
    """Posterior expectations E[g(tau, y)] by quadrature over tau in [0, inf)."""

    def __init__(self, kind, y, sigma):
        self.kind, self.y, self.sigma = kind, np.asarray(y, float), np.asarray(sigma, float)
        self.scale = float(np.max(self.sigma))
        self.peak = max(_given_tau(kind, t, self.y, self.sigma)[0] for t in self.scale * np.logspace(-3, 3, 61))
        self.norm = self._integral(lambda tau: 1.0)

    def density(self, tau):
        return math.exp(_given_tau(self.kind, tau, self.y, self.sigma)[0] - self.peak)

    def _integral(self, g, upper=math.inf):
        pieces = [0.0, self.scale, 10 * self.scale, 100 * self.scale, upper]
        total = 0.0
        for a, b in zip(pieces, pieces[1:]):
            if a >= upper:
                break
            value, _ = integrate.quad(lambda t: self.density(t) * g(t), a, min(b, upper), epsabs=0, epsrel=1e-11,
                                      limit=400)
            total += value
        return total

    def mean(self, quantity, school=None):
        def first(tau):
            mean, _ = _conditional(self.kind, tau, self.y, self.sigma, quantity)
            return mean if school is None else mean[school]

        return self._integral(first) / self.norm

    def sd(self, quantity, school=None):
        def second(tau):
            mean, var = _conditional(self.kind, tau, self.y, self.sigma, quantity)
            value = mean**2 + var
            return value if school is None else value[school]

        return math.sqrt(self._integral(second) / self.norm - self.mean(quantity, school) ** 2)

    def truncated_second_moment(self, quantity, upper):
        """∫_0^upper E[X^2 | tau, y] p(tau | y) dtau for a scalar X: grows without bound iff E[X^2] is infinite."""

        def second(tau):
            mean, var = _conditional(self.kind, tau, self.y, self.sigma, quantity)
            return mean**2 + var

        return self._integral(second, upper) / self.norm


SLOTS = 8


def _summary(y, sigma, kind, mask=None):
    """exact.summary of (y, sigma) padded to eight slots with masked schools, so that every case shares the
    compilations of the suite's eight-school summaries (the padding is out of the likelihood)."""
    y, sigma = np.asarray(y, float), np.asarray(sigma, float)
    mask = np.arange(SLOTS) < len(y) if mask is None else np.pad(np.asarray(mask, bool), (0, SLOTS - len(y)))
    data = Schools(jnp.asarray(np.concatenate([y, Y8[len(y):]])), jnp.asarray(np.concatenate([sigma, SIGMA8[len(y):]])))
    out = exact.summary(data.replace(mask=jnp.asarray(mask)), kind)
    return {name: {key: np.asarray(value, float)[..., : len(y)] if name == "theta" else np.asarray(value, float)
                   for key, value in out[name].items()}
            for name in ("mu", "tau", "log_tau", "theta")}


# --- exact.summary against the oracle: the cases -------------------------------------------------------

Y3, SIGMA3 = np.array([-2.0, 4.0, 12.0]), np.array([5.0, 8.0, 10.0])


def test_three_schools_flat_theta_moments_exist_and_mu_tau_do_not():
    """J = 3, flat: p(tau | y) ~ tau^-2, so E[tau] and E[mu] are infinite, but every theta_j (conditional mean
    and variance bounded in tau) has a mean and an sd: E[theta] = -0.698011, 3.425189, 7.690188."""
    oracle = Oracle("flat", Y3, SIGMA3)
    want_mean = np.array([oracle.mean("theta", j) for j in range(3)])
    np.testing.assert_allclose(want_mean, [-0.698011, 3.425189, 7.690188], atol=5e-7)  # the figures
    want_sd = np.array([oracle.sd("theta", j) for j in range(3)])
    got = _summary(Y3, SIGMA3, "flat")
    np.testing.assert_allclose(got["theta"]["mean"], want_mean, rtol=1e-8)
    np.testing.assert_allclose(got["theta"]["sd"], want_sd, rtol=1e-8)
    for name in ("mu", "tau"):
        assert np.isnan(got[name]["mean"]) and np.isnan(got[name]["sd"]), name
    assert np.isfinite(got["log_tau"]["mean"]) and np.isfinite(got["log_tau"]["sd"])
    assert np.isfinite(got["tau"]["q50"])  # quantiles exist whatever the moments do


def test_two_schools_half_cauchy_sds_exist():
    """J = 2, half-Cauchy with mu ~ N(0, 5^2): p(tau | y) ~ tau^-4, so sd(tau) exists; mu and theta have every
    moment (V_mu <= mu_scale^2)."""
    y, sigma = Y8[:2], SIGMA8[:2]
    oracle = Oracle("half_cauchy", y, sigma)
    got = _summary(y, sigma, "half_cauchy")
    for name in ("mu", "tau"):
        np.testing.assert_allclose(got[name]["mean"], oracle.mean(name), rtol=1e-7, err_msg=name)
        # 1e-5: E[tau^2]'s integrand falls only like tau^-2 here, and the quadrature's range is cut where
        # p(log tau | y) is 40 nats below its peak (tau ~ 1e7), which leaves ~1e-6 of E[tau^2] out.
        np.testing.assert_allclose(got[name]["sd"], oracle.sd(name), rtol=1e-5, err_msg=name)
    np.testing.assert_allclose(got["theta"]["sd"], [oracle.sd("theta", j) for j in range(2)], rtol=1e-7)


def test_four_schools_flat_sd_of_tau_does_not_exist():
    """J = 4, flat: p(tau | y) ~ tau^-3: E[tau] finite, E[tau^2] infinite (its truncated integral grows like
    log of the cut), so sd(tau) and sd(mu) are NaN, not the 41.65 of a truncated range."""
    y, sigma = Y8[:4], SIGMA8[:4]
    oracle = Oracle("flat", y, sigma)
    grows = [oracle.truncated_second_moment("tau", 10.0**k) for k in (4, 6, 8)]
    # d E_T[tau^2] / d log T -> the tail constant: equal increments per decade, i.e. unbounded.
    assert grows[2] - grows[1] == pytest.approx(grows[1] - grows[0], rel=0.05) and grows[2] - grows[1] > 1
    got = _summary(y, sigma, "flat")
    assert np.isnan(got["tau"]["sd"]) and np.isnan(got["mu"]["sd"])
    np.testing.assert_allclose(got["tau"]["mean"], oracle.mean("tau"), rtol=1e-6)
    np.testing.assert_allclose(got["mu"]["mean"], oracle.mean("mu"), rtol=1e-6)
    np.testing.assert_allclose(got["theta"]["sd"], [oracle.sd("theta", j) for j in range(4)], rtol=1e-7)


def test_masked_school_has_taus_conditions_and_masked_schools_do_not_count():
    """Five slots, four in the likelihood (flat): J = 4, so sd(tau) is NaN; the masked school's theta ~ N(mu,
    tau^2) has tau's conditions (mean yes, sd no); the same data with all five in: every moment exists."""
    y, sigma = Y8[:5], SIGMA8[:5]
    got = _summary(y, sigma, "flat", mask=[True, True, True, True, False])
    oracle = Oracle("flat", y[:4], sigma[:4])
    assert np.isnan(got["tau"]["sd"])
    assert np.all(np.isfinite(got["theta"]["sd"][:4])) and np.isnan(got["theta"]["sd"][4])
    np.testing.assert_allclose(got["theta"]["mean"][4], oracle.mean("theta_out"), rtol=1e-6)
    full = _summary(y, sigma, "flat")
    assert all(np.all(np.isfinite(full[name][key])) for name in full for key in ("mean", "sd"))


# --- the rule against the tail exponents, measured here --------------------------------------------------------


def _tail_slope(kind, y, sigma, quantity, order, tau=1e6):
    """d log [p(tau | y) E[|X|^order | tau, y]] / d log tau at large tau (E|X|^k ≍ (m^2 + v)^(k/2))."""

    def log_g(t):
        log_f, *_ = _given_tau(kind, t, y, sigma)
        mean, var = _conditional(kind, t, y, sigma, quantity)
        return log_f + 0.5 * order * np.log(np.max(np.asarray(mean) ** 2 + var))

    return (log_g(10 * tau) - log_g(tau)) / math.log(10)


@pytest.mark.parametrize("kind", PRIOR_KINDS)
@pytest.mark.parametrize("num_schools", range(1, 8))
def test_rule_matches_the_measured_tail(kind, num_schools):
    """E[|X|^k] < inf iff the posterior is proper (slope of p(tau | y) < -1 at infinity) and p(tau | y)
    E[|X|^k | tau] falls faster than 1/tau; near 0 p(tau | y) is finite, so the upper tail decides."""
    from jaxschools.core import moments  # here, not at the top: the other tests also run on code without it

    y, sigma = Y8[:num_schools], SIGMA8[:num_schools]
    proper = None
    for quantity in ("tau", "mu", "theta", "theta_out"):
        for order in (0, 1, 2):
            slope = _tail_slope(kind, y, sigma, quantity, order)
            # A power tail has an integer slope (the half-normal's Gaussian one is far below any power).
            assert slope < -100 or abs(slope - round(slope)) < 1e-3, (quantity, order, slope)
            integrable = slope < -1.5
            if order == 0:
                proper = integrable if proper is None else proper
                assert integrable == proper
            want = proper and integrable
            assert moments.exists(kind, quantity, order, num_schools) == want, (kind, num_schools, quantity, order,
                                                                                 slope)
            if order == 0 and kind != "half_normal":  # the documented exponent: p(tau | y) ~ tau^-a
                assert slope == pytest.approx(-moments.tail_exponent(kind, num_schools), abs=1e-3)
    near_zero = [_given_tau(kind, t, y, sigma)[0] for t in (1e-9, 1e-6)]
    assert near_zero[0] == pytest.approx(near_zero[1], abs=1e-6)  # finite at tau = 0: no lower-tail trouble


def _measured_exists(kind, quantity, order, num_schools):
    """Whether E[|quantity|^order | y] is finite, from the oracle's measured tail alone (not jaxschools): the
    posterior is proper (slope of p(tau | y) below -1) and p(tau | y) E[|X|^order | tau, y] falls faster than
    1/tau. Power tails have integer slopes (see test_rule_matches_the_measured_tail), so -1.5 separates them;
    log tau's factor |log tau|^k adds only k (ln ln 1e7 - ln ln 1e6) / ln 10 = 0.067 k to its slope."""
    y, sigma = Y8[:num_schools], SIGMA8[:num_schools]
    proper = _tail_slope(kind, y, sigma, "tau", 0) < -1.5
    return proper and _tail_slope(kind, y, sigma, quantity, order) < -1.5


def test_theta_sd_exists_for_every_proper_posterior_in_exact_summary():
    """One compiled summary per prior over J = 1..7 slots of eight (masking the rest), NaN exactly where the
    oracle's measured tails say the moment is infinite (a school out of the likelihood has a new school's
    conditional moments: theta_out)."""
    table = []
    for kind in PRIOR_KINDS:
        for num_schools in range(1, SLOTS):  # improper, no mean, no sd, every moment; one compilation
            mask = np.arange(SLOTS) < num_schools
            got = _summary(Y8, SIGMA8, kind, mask)
            for statistic, order in (("mean", 1), ("sd", 2)):
                for name in ("mu", "tau", "log_tau"):
                    want = _measured_exists(kind, name, order, num_schools)
                    table.append(want)
                    assert np.isfinite(got[name][statistic]) == want, (kind, num_schools, name, statistic)
                want = [_measured_exists(kind, "theta" if inside else "theta_out", order, num_schools)
                        for inside in mask]
                table.extend(want)
                np.testing.assert_array_equal(np.isfinite(got["theta"][statistic]), want,
                                              err_msg=f"{kind} J={num_schools} theta {statistic}")
    # Both outcomes occur (flat, J = 3 and 4: mean and sd of mu, tau, theta_out infinite), so a summary
    # that never or always gives NaN fails.
    assert any(table) and not all(table)


# --- the command line: summary.json and the warnings ------------------------------------------------------------


@pytest.mark.parametrize(
    "rows, prior, expected",
    [
        ("A,-2,5\nB,4,8\nC,12,10\n", "flat",
         ["mean(mu), mean(tau) and mean(theta and y of a new or left-out school) do not exist for the flat prior "
          "with J = 3 schools (need J >= 4)",
          "sd(mu), sd(tau) and sd(theta and y of a new or left-out school) do not exist for the flat prior with "
          "J = 3 schools (need J >= 5)"]),
        ("A,-2,5\nB,4,8\nC,12,10\nD,1,9\n", "flat",
         ["sd(mu), sd(tau) and sd(theta and y of a new or left-out school) do not exist for the flat prior with "
          "J = 4 schools (need J >= 5)"]),
        ("A,-2,5\nB,4,8\n", "half_cauchy", []),
    ],
)
def test_cli_warnings_name_each_moment_and_its_condition(tmp_path, rows, prior, expected):
    """The warnings ``jaxschools run`` prints (before JAX), and nothing about theta or log tau."""
    from jaxschools import cli

    data = tmp_path / "schools.csv"
    data.write_text("name,y,sigma\n" + rows)
    args = cli._parser().parse_args(["run", "--data", str(data), "--set", f"model.prior={prior}"])
    found = [message for message in cli._read_inputs(args)[2] if "exist" in message]
    assert [message.split(":")[0] for message in found] == expected


def test_summary_of_three_schools_under_the_flat_prior():
    """summary.json's content (analysis.analyze, the command line's path; the default config with one chain at
    the suite's sampler size, so the compiled analysis is tests/test_report.py's J = 3 one): theta's exact means are the oracle's (not null)
    and the sampled ones have an sd; mu's and tau's means and sds, exact and sampled, and a new school's, are
    null with the reason; log tau's are not."""
    from jaxschools.app import analysis, config

    data = Schools(jnp.asarray(Y3), jnp.asarray(SIGMA3))
    summary = json.loads(json.dumps(analysis.analyze(config.load_config(None, sets=THREE_SCHOOL_SETS), data).summary,
                                    allow_nan=False))
    np.testing.assert_allclose(summary["exact"]["theta"]["mean"], [-0.698011, 3.425189, 7.690188], atol=5e-7)
    for values in (summary["exact"]["theta"]["sd"], summary["theta"]["mean"], summary["theta"]["sd"],
                   summary["theta"]["mean_mcse"]):
        assert all(isinstance(value, float) for value in values), values
    for block in (summary["exact"]["mu"], summary["exact"]["tau"], summary["posterior"]["mu"],
                  summary["posterior"]["tau"], summary["predictive"]["new_school"]["theta"],
                  summary["predictive"]["new_school"]["y"]):
        assert block["mean"] is None and block["sd"] is None, block
    for block in (summary["posterior"]["mu"], summary["posterior"]["tau"]):
        assert block["mcse_mean"] is None and block["q975"] is not None
    for block in (summary["posterior"]["log_tau"], summary["exact"]["log_tau"]):
        assert block["mean"] is not None and block["sd"] is not None
    assert "with J = 3 schools (need J >= 4)" in summary["exact"]["nonexistent_moments"]
    from jaxschools.presentation import report

    page = report.render_html(summary, [], drawn=False)  # the nulls render, with the reason
    assert "Left blank because they do not exist" in page and "need J &gt;= 5" in page
    # The four (means and sds of mu and tau) are not compared with the exact posterior because they do not
    # exist, which the report says; not that their draws do not vary.
    assert summary["exact_check"]["undefined"] == {"moment_does_not_exist": 4, "mcse_needs_higher_moment": 0,
                                                   "draws_do_not_vary": 0, "missing": 0}
    assert "4 posterior moments do not exist for this prior" in page and "draws do not vary within" not in page


def test_sweep_cells_null_the_means_that_do_not_exist():
    """A sweep cell (vmapped in a sweep; here called alone, as tests/test_experiments.py does) with three or
    four of the eight schools in the likelihood, flat prior: the sampled means of mu and tau are NaN for
    J = 3 and finite for J = 4; a masked school's theta (N(mu, tau^2)) likewise; log tau's and the observed
    schools' theta means always finite."""
    import jax

    from jaxschools.app import config, experiments, inference
    from jaxschools.core import models

    key = jax.random.fold_in(jax.random.key(0), 1)
    resolved = config.load_config(None, sets=SAMPLER_SETS)
    plan, knobs = inference.plan(resolved), inference.knobs(resolved, jnp.float64)
    for num_schools in (3, 4):
        data = Schools(jnp.asarray(Y8), jnp.asarray(SIGMA8)).replace(mask=jnp.arange(SLOTS) < num_schools)
        cell = experiments._sweep_cell(key, data, models.make_prior("flat"), knobs, 0, 28.0, plan=plan)
        exists = num_schools >= 4
        for name in ("mu", "tau"):
            assert np.isfinite(float(cell["posterior"][name]["mean"])) == exists, (name, num_schools)
        assert np.isfinite(float(cell["posterior"]["log_tau"]["mean"]))
        theta_mean = np.asarray(cell["theta"]["mean"])
        assert np.all(np.isfinite(theta_mean[:num_schools]))
        assert np.all(np.isfinite(theta_mean[num_schools:]) == exists)
