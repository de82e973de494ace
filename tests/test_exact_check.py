"""jaxschools.app.exact_check: the sampler-vs-exact z-scores and their Bonferroni alarm (pure Python; scipy as oracle)."""

import json

import pytest
from scipy import stats

from jaxschools.app import exact_check


@pytest.mark.parametrize("m", [1, 2, 23, 207, 200_007])
@pytest.mark.parametrize("alpha", [0.001, 0.01])
def test_threshold_is_bonferronis_normal_quantile(m, alpha):
    assert exact_check.threshold(m, alpha) == pytest.approx(stats.norm.isf(alpha / (2 * m)), rel=1e-12)


def test_eight_schools_threshold_is_about_four():
    assert 4.0 < exact_check.threshold(23) < 4.1


def _nulled(tree):
    """``tree`` with every number replaced by None (null in summary.json)."""
    if isinstance(tree, dict):
        return {key: _nulled(value) for key, value in tree.items()}
    if isinstance(tree, list):
        return [_nulled(value) for value in tree]
    return None if isinstance(tree, float) else tree


def _summary(mean=1.0, mcse=0.1, exact=1.0):
    """A summary.json with every key the check reads: mu's mean against its exact value, every other value null."""
    summary = _full_summary("half_normal", 2)
    summary = {key: _nulled(value) if key != "config" else value for key, value in summary.items()}
    summary["queries"]["p_exceeds"]["threshold"] = 1.0
    summary["posterior"]["mu"].update(mean=mean, mcse_mean=mcse)
    summary["exact"]["mu"]["mean"] = exact
    return summary


@pytest.mark.parametrize("mcse", [None, float("nan"), 0.0, -1.0, float("inf")])
def test_z_is_undefined_without_a_positive_finite_mcse(mcse):
    verdict = exact_check.check(_summary(mean=5.0, mcse=mcse))
    assert verdict["num_compared"] == 0 and not verdict["flagged"] and verdict["max_abs_z"] is None
    assert verdict["num_undefined"] == len(exact_check.rows(_summary()))
    json.dumps(verdict, allow_nan=False)


def test_flagged_beyond_the_adjusted_threshold_only():
    limit = exact_check.threshold(1)
    inside = exact_check.check(_summary(mean=1.0 + 0.99 * limit * 0.1))
    outside = exact_check.check(_summary(mean=1.0 - 1.01 * limit * 0.1))
    assert not inside["flagged"] and inside["num_beyond"] == 0
    assert outside["flagged"] and outside["beyond"] == ["mean of μ"] and outside["worst"] == "mean of μ"
    assert outside["max_abs_z"] == pytest.approx(1.01 * limit)



def test_a_missing_key_is_an_error_not_a_missing_value():
    """The check reads the summary strictly: a key that is absent (another schema, a bug) raises, while a null
    value is an undefined z counted as 'missing'."""
    with pytest.raises(KeyError):
        exact_check.check({"data": {"names": []}})
    summary = _full_summary("half_normal", 3)
    del summary["posterior"]["tau"]["mcse_sd"]
    with pytest.raises(KeyError, match="mcse_sd"):
        exact_check.check(summary)



def _full_summary(prior, num_schools, mcse=0.1):
    """A summary.json of ``num_schools`` schools under ``prior`` where every estimate equals its exact value
    and has an MCSE (as a summary of schema 1 had even where the MCSE's moment does not exist), except that
    the means and sds that do not exist are null, exact and sampled, as the analysis writes them."""
    names = [f"S{j}" for j in range(num_schools)]
    # p(tau | y) ~ tau^(1 - J) (flat) or tau^-(J + 2) (half-Cauchy): E[tau^k] needs J >= k + 3 or J >= k.
    need = {"flat": 3, "half_cauchy": 0, "half_normal": -99}[prior]

    def moment(order, quantity):
        exists = quantity == "log_tau" or (quantity == "mu" and prior != "flat") or num_schools >= order + need
        return 1.0 if exists else None

    posterior = {q: {"mean": moment(1, q), "mcse_mean": mcse, "sd": moment(2, q), "mcse_sd": mcse}
                 for q in ("mu", "log_tau", "tau")}
    exact = {q: {"mean": moment(1, q), "sd": moment(2, q)} for q in ("mu", "log_tau", "tau")}
    exact.update(theta={"mean": [0.5] * num_schools}, shrinkage=[0.3] * num_schools, p_exceeds=0.2)
    return {
        "config": {"model": {"prior": prior}},
        "data": {"names": names},
        "posterior": posterior,
        "theta": {"mean": [0.5] * num_schools, "mean_mcse": [mcse] * num_schools},
        "shrinkage": [0.3] * num_schools,
        "shrinkage_mcse": [mcse] * num_schools,
        "queries": {"p_exceeds": {"school": "S0", "threshold": 1.0, "p": 0.2, "mcse": mcse}},
        "exact": exact,
    }


# (prior, J) -> the undefined z-scores by reason, from the tails of p(tau | y) (jaxschools.core.moments' docstring):
# a mean's MCSE needs E[x^2], an sd's E[x^4]; flat E[tau^k], E[|mu|^k] need J >= k + 3, half-Cauchy E[tau^k]
# J >= k (mu: always), half-normal always.
@pytest.mark.parametrize("prior, num_schools, expected", [
    ("flat", 3, {"moment_does_not_exist": 4}),           # no mean or sd of mu, tau
    ("flat", 4, {"moment_does_not_exist": 2, "mcse_needs_higher_moment": 2}),  # sds missing; means' MCSE
    ("flat", 5, {"mcse_needs_higher_moment": 2}),        # sd of mu and tau: their MCSE needs E[x^4], J >= 7
    ("flat", 6, {"mcse_needs_higher_moment": 2}),
    ("flat", 7, {}),
    ("half_cauchy", 2, {"mcse_needs_higher_moment": 1}),  # sd of tau: MCSE needs J >= 4
    ("half_cauchy", 3, {"mcse_needs_higher_moment": 1}),
    ("half_cauchy", 4, {}),
    ("half_normal", 2, {}),
])
def test_undefined_z_scores_are_counted_by_reason(prior, num_schools, expected):
    verdict = exact_check.check(_full_summary(prior, num_schools))
    want = dict.fromkeys(exact_check.REASONS, 0) | expected
    assert verdict["undefined"] == want
    assert verdict["num_undefined"] == sum(expected.values())
    assert verdict["num_compared"] == 7 + 2 * num_schools - verdict["num_undefined"]
    assert verdict["max_abs_z"] == 0.0 and not verdict["flagged"]


def test_draws_that_do_not_vary_are_told_apart_from_missing_moments():
    """Flat J = 5 with no MCSE anywhere (a frozen run): the two sds are still undefined because of their
    moment, the other 15 because the draws do not vary; an estimate missing for no moment reason is
    'missing'."""
    frozen = _full_summary("flat", 5, mcse=None)
    assert exact_check.check(frozen)["undefined"] == {"moment_does_not_exist": 0, "mcse_needs_higher_moment": 2,
                                                     "draws_do_not_vary": 15, "missing": 0}
    gap = _full_summary("flat", 8)
    gap["theta"]["mean"][3] = None
    assert exact_check.check(gap)["undefined"]["missing"] == 1
    # Without a known prior only the values can be looked at.
    unknown = _full_summary("flat", 5)
    unknown["config"]["model"]["prior"] = "my_prior"
    assert exact_check.check(unknown)["undefined"]["mcse_needs_higher_moment"] == 0


def _page(summary):
    """The report's sentence for the verdict on ``summary`` (rendered from the typed verdict, as on the page)."""
    from jaxschools.app import results
    from jaxschools.presentation import report

    return report._undefined_text(results.ExactCheck.build(exact_check.check(summary)))


def test_report_words_each_reason():
    """The report's sentence on what the exact check could not compare names the reason: not 'draws do not
    vary' for a healthy flat J = 5 or J = 3 run, whose moments (or their MCSEs) do not exist."""
    j5 = _page(_full_summary("flat", 5))
    assert "2 sampler estimates have no Monte Carlo standard error because it would need a higher moment" in j5
    assert "do not vary" not in j5
    j3 = _page(_full_summary("flat", 3))
    assert "4 posterior moments do not exist" in j3 and "do not vary" not in j3 and "standard error" not in j3
    frozen = _page(_full_summary("flat", 8, mcse=None))
    assert "23 sampler estimates have no Monte Carlo standard error: their draws do not vary" in frozen


def test_the_report_has_words_for_every_reason():
    """Every reason an estimate has no z-score is worded in the report's table cell and its sentence: a reason
    added to exact_check.REASONS without words fails here instead of showing a blank (the table looks it up
    with [], a KeyError)."""
    from jaxschools.presentation import report

    assert set(report._UNDEFINED_CELL) == set(exact_check.REASONS) == set(report._UNDEFINED_WORDS)
