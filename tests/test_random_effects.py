"""The classical random-effects estimators against R's metafor 3.8 (fixtures made by
tests/fixtures/metafor_reference.R, which records the version): three public datasets on three scales (the BCG
vaccine trials' log risk ratios, Normand 1999's mean differences in length of stay, the eight schools), every
tau^2 estimator, to 1e-6 relative. The three datasets are padded to one shape and fitted as one batch, so each
estimator compiles once and the mask is tested on the way."""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxschools.core import random_effects
from jaxschools.core.data import Schools

FIXTURES = json.loads((pathlib.Path(__file__).parent / "fixtures" / "metafor_reference.json").read_text())
DATASETS = tuple(FIXTURES["fits"])
RTOL, ATOL = 1e-6, 1e-9


@pytest.fixture(scope="module")
def padded():
    """The datasets as one (3, J_max) batch, padding masked out (y 0, sigma 1)."""
    fits = [FIXTURES["fits"][name] for name in DATASETS]
    width = max(len(f["yi"]) for f in fits)
    y = np.zeros((len(fits), width))
    sigma = np.ones((len(fits), width))
    mask = np.zeros((len(fits), width), bool)
    for row, f in enumerate(fits):
        k = len(f["yi"])
        y[row, :k], sigma[row, :k], mask[row, :k] = f["yi"], np.sqrt(f["vi"]), True
    return Schools(jnp.asarray(y), jnp.asarray(sigma), mask=jnp.asarray(mask)), [len(f["yi"]) for f in fits]


@pytest.fixture(scope="module")
def fits(padded):
    data, _ = padded
    fit = jax.jit(random_effects.fit, static_argnames=("method", "level"))
    loo = jax.jit(random_effects.leave_one_out, static_argnames=("method", "level"))
    return {method: (fit(data, method=method), loo(data, method=method)) for method in random_effects.METHODS}


def _close(actual, expected):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected, float), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("method", random_effects.METHODS)
@pytest.mark.parametrize("index", range(len(DATASETS)), ids=DATASETS)
def test_fit_equals_metafor(fits, method, index):
    fit, _ = fits[method]
    ref = FIXTURES["fits"][DATASETS[index]][method]
    got = jax.tree_util.tree_map(lambda leaf: leaf[index], fit)
    _close(got.tau2, ref["tau2"])
    _close(got.mu, ref["mu"])
    _close(got.se, ref["se"])
    _close(got.ci, [ref["ci_lb"], ref["ci_ub"]])
    _close(got.pi, [ref["pi_lb"], ref["pi_ub"]])
    _close(got.se_knha, ref["knha_se"])
    _close(got.ci_knha, [ref["knha_ci_lb"], ref["knha_ci_ub"]])
    _close(got.pi_knha, [ref["knha_pi_lb"], ref["knha_pi_ub"]])
    _close(got.q, ref["Q"])
    _close(got.q_p_value, ref["Q_p"])
    _close(got.i2, ref["I2"])
    _close(got.h2, ref["H2"])
    _close(got.tau2_ci, ref["tau2_ci"])
    _close(got.i2_ci, ref["I2_ci"])
    _close(got.h2_ci, ref["H2_ci"])


@pytest.mark.parametrize("method", random_effects.METHODS)
@pytest.mark.parametrize("index", range(len(DATASETS)), ids=DATASETS)
def test_leave_one_out_equals_metafor(fits, padded, method, index):
    _, loo = fits[method]
    k = padded[1][index]
    ref = FIXTURES["fits"][DATASETS[index]][method]
    rows = jax.tree_util.tree_map(lambda leaf: leaf[:k, index], loo)
    _close(rows.mu, ref["loo_mu"])
    _close(rows.se, ref["loo_se"])
    _close(rows.tau2, ref["loo_tau2"])
    _close(rows.i2, ref["loo_I2"])
    _close(rows.q, ref["loo_Q"])


def test_an_unknown_estimator_is_refused_by_name(eight):
    with pytest.raises(ValueError, match="'XX'.*REML"):
        random_effects.fit(eight, method="XX")


def test_the_config_knows_every_estimator():
    """config.py lists the estimators without importing JAX; the list must be the library's."""
    from jaxschools.app import config

    assert config.CLASSICAL_METHODS == random_effects.METHODS


def test_egger_equals_metafors_regtest(padded):
    """Egger's test against metafor's regtest(model = "lm") on the three datasets, padded (masked) to one width."""
    data, _ = padded
    got = jax.jit(random_effects.egger)(data)
    for row, name in enumerate(DATASETS):
        expected = FIXTURES["fits"][name]["egger"]
        for field, key in (("intercept", "intercept"), ("intercept_se", "intercept_se"), ("t", "t"),
                           ("p_value", "p"), ("df", "df"), ("limit", "limit")):
            _close(np.asarray(getattr(got, field))[row], expected[key])
