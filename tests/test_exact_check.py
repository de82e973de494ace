"""jaxschools.exact_check: the sampler-vs-exact z-scores and their Bonferroni alarm (pure Python; scipy as oracle)."""

import json

import pytest
from scipy import stats

from jaxschools import exact_check


@pytest.mark.parametrize("m", [1, 2, 23, 207, 200_007])
@pytest.mark.parametrize("alpha", [0.001, 0.01])
def test_threshold_is_bonferronis_normal_quantile(m, alpha):
    assert exact_check.threshold(m, alpha) == pytest.approx(stats.norm.isf(alpha / (2 * m)), rel=1e-12)


def test_eight_schools_threshold_is_about_four():
    assert 4.0 < exact_check.threshold(23) < 4.1


def _summary(mean=1.0, mcse=0.1, exact=1.0, names=("A", "B")):
    """A minimal summary.json: mu's mean against its exact value, everything else missing."""
    return {
        "data": {"names": list(names)},
        "posterior": {"mu": {"mean": mean, "mcse_mean": mcse, "sd": None, "mcse_sd": None}},
        "exact": {"mu": {"mean": exact}},
    }


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
    assert exact_check.check({"data": {"names": []}}) is None  # no exact reference, no verdict

