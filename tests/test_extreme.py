"""Extreme but valid data, and the flags that say when a result cannot be trusted.

Every analysis here runs the default config (the seed's: 4 chains of 5,000 + 5,000 random-walk steps), except
J = 10,000 (a few hundred draws) and the deliberately broken runs. For each: the summary is JSON without NaN
or infinity, the numbers a reader uses are finite, and, when the chains mixed (R-hat < 1.01, ESS >= 400; the
summary's own flags), the sampler's estimates are within 5 Monte Carlo standard errors of the exact posterior
(quadrature, float64).

What these cases found: the Laplace fit's saddle-free Newton step floored the Hessian's eigenvalues relative
to the largest, and the curvatures of mu and log tau differ by the data's scale squared, so on data scaled by
1e3 (float32) or 1e9 (float64) it stopped short or ran out of iterations, reported "not converged", and the
chains then ran on the identity covariance (stuck or unmixed). Fixed in ``laplace.py`` by equilibrating the
Hessian (Jacobi scaling) before the eigen-decomposition.
"""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxschools.app import analysis, config
from jaxschools.core import exact, laplace, sampling
from jaxschools.presentation import report
from jaxschools.core.data import Schools
from jaxschools.core.kernels import rwmh
from jaxschools.core.kernels.base import metropolis_accept

Y8 = np.array([28.0, 8, -3, 7, -1, 1, 18, 12])
SIGMA8 = np.array([15.0, 10, 16, 11, 9, 11, 10, 18])


def _analyze(y, sigma, *sets, dtype=jnp.float64):
    data = Schools(jnp.asarray(y, dtype), jnp.asarray(sigma, dtype))
    return analysis.analyze(config.load_config(sets=list(sets)), data)


def _strict_json(summary) -> dict:
    """The summary through JSON as summary.json is written (NaN or infinity would raise) and read back."""
    text = json.dumps(summary, allow_nan=False)
    return json.loads(text, parse_constant=lambda token: pytest.fail(f"{token} in the summary"))


def _all_finite(*values):
    for value in values:
        array = np.asarray(value, dtype=float)  # None would become NaN here
        assert array.size and np.all(np.isfinite(array)), value


# p(tau | y) ~ tau^-a as tau -> inf (BDA3 eq. 5.21, mu integrated out): under the flat prior the Gaussian integral
# over mu leaves V_mu^(1/2) prod_j v_j^(-1/2) ~ tau^(1 - J); a N(mu_loc, mu_scale^2) prior on mu leaves
# tau^-J, times the half-Cauchy's tau^-2; the half-normal's tail is Gaussian (faster than any power).
def _tail_exponent(kind, num_schools):
    return {"flat": num_schools - 1, "half_cauchy": num_schools + 2, "half_normal": math.inf}[kind]


def _moment_exists(kind, name, order, num_schools):
    """E[|name|^order | y] < inf, written out here from the tail exponent a (not from ``jaxschools.core.moments``):
    the posterior is proper iff a > 1; E[tau^k] < inf iff a > k + 1; mu | tau, y has variance V_mu ~ tau^2 / J
    under the flat prior (so mu has tau's conditions) and V_mu <= mu_scale^2 under a normal prior on mu (every
    moment); log tau has exponential tails, so every moment of a proper posterior (tests/test_moments.py checks
    these exponents by quadrature)."""
    a = _tail_exponent(kind, num_schools)
    if a <= 1:
        return False
    if name == "tau" or (name == "mu" and kind == "flat"):
        return a > order + 1
    return True


def _check_finite(summary, frozen=False):
    """The numbers a reader uses: every one of them a finite number (None is allowed only where the contract
    says a value does not exist: the improper prior's evidence, the diagonal of p_greater, the means and
    sds that do not exist for this prior and J (:func:`_moment_exists`: those are None, sampled and exact),
    and, when ``frozen`` (no chain moved), the ESS, which is then undefined and must be None)."""
    post, theta, queries = summary["posterior"], summary["theta"], summary["queries"]
    kind, num_schools = summary["config"]["model"]["prior"], len(summary["data"]["names"])
    moment = {(name, key): _moment_exists(kind, name, order, num_schools)
              for name in ("mu", "log_tau", "tau") for key, order in (("mean", 1), ("sd", 2))}
    ess = summary["mcmc"]["ess"]
    if frozen:
        assert ess == {"mu": None, "log_tau": None}, ess
    _all_finite(summary["laplace"]["mode"], summary["laplace"]["cov"], summary["mcmc"]["acceptance_rate"],
                *(post[name][key] for (name, key), exists in moment.items() if exists),
                *(theta[key] for key in ("mean", "sd", "q025", "q975")), summary["shrinkage"],
                queries["p_exceeds"]["p"], queries["p_best"], *([] if frozen else [ess["mu"], ess["log_tau"]]),
                summary["exact"]["theta"]["mean"])
    for (name, key), exists in moment.items():
        assert (post[name][key] is not None) == exists and (summary["exact"][name][key] is not None) == exists
    assert (summary["exact"]["nonexistent_moments"] is not None) == (not all(moment.values()))
    matrix = queries["p_greater"]
    if matrix is not None:
        off_diagonal = [row[j] for i, row in enumerate(matrix) for j in range(len(row)) if i != j]
        _all_finite(off_diagonal)
        assert all(row[i] is None for i, row in enumerate(matrix))


def _mixed(summary) -> bool:
    flags = summary["mcmc"]["flags"]
    return not flags["not_mixed"] and not flags["stuck_chains"]


def _within_mcse(estimate, mcse, truth):
    estimate, mcse, truth = (np.asarray(v, dtype=float) for v in (estimate, mcse, truth))
    assert np.all(np.abs(estimate - truth) < 5 * mcse), (estimate, mcse, truth)


def _check_against(summary, truth):
    """The sampler's estimates against an exact summary (a dict as exact.summary returns)."""
    post = summary["posterior"]
    _within_mcse(post["mu"]["mean"], post["mu"]["mcse_mean"], truth["mu"]["mean"])
    _within_mcse(post["log_tau"]["mean"], post["log_tau"]["mcse_mean"], truth["log_tau"]["mean"])
    _within_mcse(summary["theta"]["mean"], summary["theta"]["mean_mcse"], truth["theta"]["mean"])
    _within_mcse(summary["shrinkage"], summary["shrinkage_mcse"], truth["shrinkage"])
    p = summary["queries"]["p_exceeds"]
    _within_mcse(p["p"], p["mcse"], truth["p_exceeds"])
    shrinkage = np.asarray(summary["shrinkage"])
    assert np.all((shrinkage > 0) & (shrinkage < 1))


def _exact64(y, sigma, prior="flat"):
    data = Schools(jnp.asarray(y, jnp.float64), jnp.asarray(sigma, jnp.float64))
    return jax.tree_util.tree_map(lambda v: np.asarray(v, float), exact.summary(data, prior))


# --- J = 8, float64, the flat prior: scale, ties, outliers ------------------------------------------------------

OUTLIER = Y8.copy()
OUTLIER[0] = 1e4  # 700 standard errors from the rest
J8_CASES = {
    "scaled-by-1e-6": (Y8 * 1e-6, SIGMA8 * 1e-6),
    "scaled-by-1e6": (Y8 * 1e6, SIGMA8 * 1e6),
    "all-effects-equal": (np.full(8, 5.0), SIGMA8),  # tau's posterior piles up near 0
    "one-huge-outlier": (OUTLIER, SIGMA8),
}


@pytest.fixture(scope="module")
def j8_results():
    return {key: _strict_json(_analyze(y, sigma).summary) for key, (y, sigma) in J8_CASES.items()}


@pytest.mark.parametrize("key", list(J8_CASES))
def test_extreme_eight_school_data(j8_results, key):
    y, sigma = J8_CASES[key]
    summary = j8_results[key]
    _check_finite(summary)
    assert summary["laplace"]["converged"] and _mixed(summary), summary["mcmc"]
    truth = _exact64(y, sigma)
    _check_against(summary, truth)
    if key == "all-effects-equal":  # E[theta_j | y] = 5 for every school, by symmetry
        _within_mcse(summary["theta"]["mean"], summary["theta"]["mean_mcse"], 5.0)
        assert truth["tau"]["q50"] < 0.5 * SIGMA8.min()


def test_scaled_data_give_the_scaled_analysis(j8_results):
    """Flat prior: on data scaled by c every location and scale is c times the unscaled one's, and log tau
    shifts by log c; the chains are the same chains (the proposal is the Laplace covariance's, which scales)."""
    small, large = j8_results["scaled-by-1e-6"], j8_results["scaled-by-1e6"]
    np.testing.assert_allclose(np.asarray(small["laplace"]["mode"]) + [0, math.log(1e12)],
                               np.asarray(large["laplace"]["mode"]) * [1e-12, 1], rtol=1e-9)
    np.testing.assert_allclose(np.asarray(small["theta"]["mean"]) * 1e12, large["theta"]["mean"], rtol=1e-8)
    np.testing.assert_allclose(small["posterior"]["log_tau"]["mean"] + math.log(1e12),
                               large["posterior"]["log_tau"]["mean"], rtol=1e-10)
    assert small["mcmc"]["acceptance_rate"] == pytest.approx(large["mcmc"]["acceptance_rate"], abs=1e-9)


# --- the fewest schools each prior allows --------------------------------------------------------------------


@pytest.mark.slow  # over 9 s of the default suite on the 2-core machine; CI runs it (-m slow)
def test_three_schools_under_the_flat_prior():
    """The flat prior's smallest proper posterior (tau's tail ~ 1/tau^2: its mean does not exist), so the
    chains' estimates of mu and tau never settle; the summary must stay finite and flag what it cannot show."""
    summary = _strict_json(_analyze(Y8[:3], SIGMA8[:3]).summary)
    _check_finite(summary)
    assert summary["laplace"]["converged"]
    mcmc = summary["mcmc"]
    rhat, ess = max(mcmc["rhat"].values()), min(list(mcmc["ess"].values()) + list(mcmc["ess_tail"].values()))
    assert mcmc["flags"]["not_mixed"] == (rhat >= 1.01 or ess < 400)
    # With J = 3 the flat prior's posterior means of mu, tau and theta are infinite: null, with the reason.
    assert summary["exact"]["tau"]["mean"] is None and "J = 3" in summary["exact"]["nonexistent_moments"]
    truth = _exact64(Y8[:3], SIGMA8[:3])
    # log tau's moments exist whatever J; its exact quantiles bracket the exact median.
    assert truth["log_tau"]["q025"] < truth["log_tau"]["q50"] < truth["log_tau"]["q975"]
    if _mixed(summary):
        post = summary["posterior"]
        _within_mcse(post["log_tau"]["mean"], post["log_tau"]["mcse_mean"], truth["log_tau"]["mean"])


@pytest.mark.slow  # over 9 s of the default suite on the 2-core machine; CI runs it (-m slow)
def test_two_schools_under_a_proper_prior():
    summary = _strict_json(_analyze(Y8[:2], SIGMA8[:2], "model.prior=half_cauchy").summary)
    _check_finite(summary)
    assert summary["laplace"]["converged"] and _mixed(summary), summary["mcmc"]
    _all_finite(summary["laplace"]["log_evidence"], summary["exact"]["log_evidence"])
    _check_against(summary, _exact64(Y8[:2], SIGMA8[:2], "half_cauchy"))


# --- float32 ------------------------------------------------------------------------------------------------


@pytest.mark.slow  # a whole float32 analysis compiles on its own (about 30 s); CI runs it (-m slow)
@pytest.mark.parametrize("factor", [1.0, 1e-6, 1e6])
def test_float32_on_any_scale(factor):
    """float32 resolves 7 digits, and mu's curvature is 1e-12 of log tau's on data scaled by 1e6: before the
    fix the Laplace fit did not converge and the chains ran on the identity covariance (stuck at 1e-6)."""
    y, sigma = Y8 * factor, SIGMA8 * factor
    result = _analyze(y, sigma, dtype=jnp.float32)
    assert result.samples.positions.dtype == jnp.float32
    summary = _strict_json(result.summary)
    _check_finite(summary)
    assert summary["laplace"]["converged"] and _mixed(summary), summary["mcmc"]
    # The float64 mode mapped to this scale. Converged means a Newton decrement g' H^-1 g below
    # 10 eps (1 + |f|), i.e. (for a quadratic) within sqrt(10 eps (1 + |f|)) Laplace sds of the mode in
    # Mahalanobis distance: about 0.012 here, float32's limit. Twice that allows for f's own rounding.
    delta = np.asarray(summary["laplace"]["mode"]) - [7.92441233 * factor, 1.84139827 + math.log(factor)]
    distance = math.sqrt(delta @ np.linalg.solve(np.asarray(result.fit.cov, float), delta))
    assert distance < 2 * math.sqrt(10 * np.finfo(np.float32).eps * (1 + abs(float(result.fit.logdensity))))
    _check_against(summary, _exact64(y, sigma))


# --- J = 10,000 ----------------------------------------------------------------------------------------------


@pytest.mark.slow  # over 9 s of the default suite on the 2-core machine; CI runs it (-m slow)
def test_ten_thousand_schools(tmp_path):
    """Everything that grows as J^2 is capped (p_greater is null past 200 schools, figures and tables show a
    subset): summary.json stays a few hundred bytes per school, and the report renders."""
    rng = np.random.default_rng(0)
    num_schools = 10_000
    sigma = rng.uniform(5.0, 20.0, num_schools)
    y = 5.0 + 8.0 * rng.standard_normal(num_schools) + sigma * rng.standard_normal(num_schools)
    result = _analyze(y, sigma, "sampler.num_chains=2", "sampler.num_samples=200", "sampler.burn_in=200")
    summary = _strict_json(result.summary)
    _check_finite(summary)
    assert summary["laplace"]["converged"]
    assert summary["queries"]["p_greater"] is None and summary["exact"]["p_greater"] is None
    assert len(summary["theta"]["mean"]) == len(summary["queries"]["p_best"]) == num_schools
    size = len(json.dumps(summary, indent=2))
    assert size < 2000 * num_schools, size  # one J x J matrix alone would be 10^8 numbers
    # Many schools pin tau down: a few hundred draws already agree with the exact posterior.
    post, truth = summary["posterior"], summary["exact"]
    _within_mcse(post["mu"]["mean"], post["mu"]["mcse_mean"], truth["mu"]["mean"])
    page = report.render_html(summary, [], drawn=False)
    assert "Showing the first" in page and len(page) < 2_000_000


# --- results that cannot be trusted say so -------------------------------------------------------------------


def test_a_laplace_fit_that_does_not_converge_says_so():
    result = _analyze(Y8, SIGMA8, "laplace.max_iterations=1")
    summary = _strict_json(result.summary)
    assert summary["laplace"]["converged"] is False and summary["mcmc"]["flags"]["laplace_not_converged"]
    assert "did not converge" in report.render_html(summary, [], drawn=False)
    _check_finite(summary)  # the chains still ran, on the identity covariance


@pytest.mark.parametrize("logdensity", [
    lambda x: jnp.nan * jnp.sum(x),  # NaN everywhere
    lambda x: x[0] - 0.5 * x[1] ** 2,  # no mode: unbounded along x[0]
    lambda x: jnp.where(x[0] > 0, -jnp.inf, -0.5 * jnp.sum(x**2)),  # the start itself has density 0
], ids=["nan", "no-mode", "start-outside-support"])
def test_laplace_on_a_density_without_a_usable_mode_reports_not_converged(logdensity):
    fit = laplace.fit(logdensity, jnp.array([0.5, 0.5]), max_iterations=20)
    assert not bool(fit.converged)


def test_stuck_chains_are_flagged_in_the_summary_and_the_report():
    """Proposals 1e100 Laplace standard deviations wide: one is accepted only if both of its standard normal
    components are within ~1e-99 of 0 (else mu is ~1e100 off, a log density of ~-1e200, or log tau is, and
    tau overflows or the Jacobian term is -1e100), which no float64 normal draw is. So, certainly, no chain
    moves: acceptance 0, every chain frozen and stuck, ESS, R-hat and MCSE undefined (null, not perfect:
    issue #13); all else finite. J = 8 under the flat prior: p(tau | y) ~ tau^-7, so every mean and sd
    exists and none of them may be null."""
    result = _analyze(Y8, SIGMA8, "sampler.scale=1e100")
    summary = _strict_json(result.summary)
    mcmc = summary["mcmc"]
    flags = mcmc["flags"]
    assert mcmc["acceptance_rate"] == [0.0] * 4
    assert flags["frozen_chains"] == flags["stuck_chains"] == [0, 1, 2, 3] and flags["not_mixed"]
    for group in ("ess", "ess_tail", "rhat"):
        assert mcmc[group] == {"mu": None, "log_tau": None}, group
    for name in ("mu", "log_tau", "tau"):
        stats = summary["posterior"][name]
        assert stats["mcse_mean"] is None and stats["ess_bulk"] is None, name
        assert all(value is not None for value in (stats["mean"], stats["sd"], summary["exact"][name]["mean"],
                                                   summary["exact"][name]["sd"])), name
    assert summary["exact"]["nonexistent_moments"] is None
    page = report.render_html(summary, [], drawn=False)
    assert "stuck" in page and "not shown to have mixed" in page
    _check_finite(summary, frozen=True)


# --- kernels: a proposal whose log-density is not finite is never accepted -------------------------------------


@pytest.mark.parametrize("bad", [jnp.nan, -jnp.inf], ids=["nan", "minus-inf"])
def test_metropolis_rejects_a_proposal_with_a_non_finite_log_density(bad):
    keys = jax.random.split(jax.random.key(0), 1000)
    accepted = jax.vmap(lambda key: metropolis_accept(key, jnp.asarray(bad) - 1.0, 0.0, 1.0)[1])(keys)
    assert not bool(jnp.any(accepted))


def _chain_avoids(region_value):
    """A random-walk chain on N(0, I) whose density is ``region_value`` where x[0] > 1: it must never be there."""

    def logdensity(x):
        return jnp.where(x[0] > 1.0, region_value, -0.5 * jnp.sum(x**2))

    algorithm = rwmh(logdensity, jnp.eye(2), 1.0)
    samples = sampling.run(jax.random.key(1), algorithm, jnp.zeros(2), num_samples=2000, num_chains=2)
    positions = np.asarray(samples.positions)
    return not np.any(positions[..., 0] > 1.0), float(np.mean(np.asarray(samples.acceptance_rate)))


@pytest.mark.parametrize("region_value", [jnp.nan, -jnp.inf], ids=["nan", "minus-inf"])
def test_a_chain_never_enters_a_region_of_non_finite_density(region_value):
    avoided, acceptance = _chain_avoids(region_value)
    assert avoided and acceptance > 0.2


def test_a_chain_never_enters_a_region_of_infinite_density():
    avoided, _ = _chain_avoids(jnp.inf)
    assert avoided
