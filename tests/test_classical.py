"""Separate and pooled estimates against scipy and the seed's printed figures."""

import jax.numpy as jnp
import numpy as np
from scipy import stats

import jaxschools as js


def test_separate_intervals_match_the_seed(eight):
    out = js.classical.separate(eight)
    np.testing.assert_allclose(out["lower"], stats.norm.ppf(0.025, eight.y, eight.sigma), rtol=1e-12)
    np.testing.assert_allclose(out["upper"], stats.norm.ppf(0.975, eight.y, eight.sigma), rtol=1e-12)
    # The seed's qnorm table, first and last rows.
    np.testing.assert_allclose([out["lower"][0], out["upper"][0]], [-1.39946, 57.39946], atol=1e-5)
    np.testing.assert_allclose([out["lower"][7], out["upper"][7]], [-23.27935, 47.27935], atol=1e-5)


def test_pooled_estimate_and_chi2_test(eight):
    out = js.classical.pooled(eight)
    np.testing.assert_allclose(out["mean"], 7.68561672495604, rtol=1e-12)
    np.testing.assert_allclose(out["var"], 16.58053, rtol=1e-6)
    y, s = np.asarray(eight.y), np.asarray(eight.sigma)
    chi2 = np.sum((y - out["mean"]) ** 2 / s**2)
    np.testing.assert_allclose(out["chi2"], chi2, rtol=1e-12)
    assert int(out["df"]) == 7
    np.testing.assert_allclose(out["p_value"], stats.chi2.sf(chi2, 7), rtol=1e-10)


def test_mask_leaves_a_school_out(eight):
    masked = js.data.Schools(eight.y, eight.sigma, eight.names, mask=jnp.arange(8) != 0)
    dropped = js.data.Schools(eight.y[1:], eight.sigma[1:])
    a, b = js.classical.pooled(masked), js.classical.pooled(dropped)
    for key in ("mean", "var", "chi2", "df", "p_value"):
        np.testing.assert_allclose(a[key], b[key], rtol=1e-12)
