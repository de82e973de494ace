"""jaxschools.core.diagnostics against ArviZ (the test-only oracle), in float64.

XLA compilation dominates the run time, so every diagnostic is compiled into one
jitted function (``diagnose``) that is reused for all inputs of a shape and dtype.
"""

import logging
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxschools.core import diagnostics as dg

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    az = pytest.importorskip("arviz")

RTOL = 1e-8
PROBS = (0.05, 0.5, 0.95)
SCALAR = ("ess", "ess_tail", "ess_mean", "rhat", "mcse_mean", "mcse_sd")
PER_PROB = ("ess_quantile", "mcse_quantile")


@pytest.fixture(autouse=True)
def _x64():
    # The suite's conftest enables float64 too; this keeps the module self-contained.
    with jax.enable_x64(True):
        yield


def _all(x, probs):
    out = {name: getattr(dg, name)(x) for name in SCALAR}
    for name in PER_PROB:
        out[name] = jax.vmap(getattr(dg, name), in_axes=(None, 0))(x, probs)
    out["autocorrelation"] = dg.autocorrelation(x)
    return out


@pytest.fixture(scope="module")
def diagnose():
    """All diagnostics of draws ``x`` at the quantile levels PROBS, jitted once."""
    compiled = jax.jit(_all)
    return lambda x: compiled(x, jnp.asarray(PROBS, x.dtype))


def _arviz(x):
    """ArviZ's diagnostics of ``x`` in ``_all``'s layout, with its warnings silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            out = {
                "ess": az.ess(x, method="bulk"),
                "ess_tail": az.ess(x, method="tail"),
                "ess_mean": az.ess(x, method="mean"),
                "rhat": az.rhat(x, method="rank"),
                "mcse_mean": az.mcse(x, method="mean"),
                "mcse_sd": az.mcse(x, method="sd"),
                "ess_quantile": [az.ess(x, method="quantile", prob=p) for p in PROBS],
                "mcse_quantile": [az.mcse(x, method="quantile", prob=p) for p in PROBS],
                "autocorrelation": az.autocorr(np.atleast_2d(x), axis=1),
            }
        finally:
            logging.disable(logging.NOTSET)
    return {k: np.asarray(v, dtype=float) for k, v in out.items()}


def _assert_match(got, expected, rtol=RTOL, atol=0.0):
    for name, value in expected.items():
        np.testing.assert_allclose(np.asarray(got[name]), value, rtol=rtol, atol=atol, equal_nan=True, err_msg=name)


def _ar1(rng, chains, draws, phi):
    eps = rng.normal(size=(chains, draws)) * np.sqrt(1.0 - phi**2)
    x = np.empty((chains, draws))
    x[:, 0] = rng.normal(size=chains)
    for t in range(1, draws):
        x[:, t] = phi * x[:, t - 1] + eps[:, t]
    return x


def _random_walk_metropolis(rng, chains, draws, step=2.5):
    """Metropolis on N(0, 1) with a wide proposal: most draws repeat the previous one."""
    x = np.empty((chains, draws))
    current = np.zeros(chains)
    for t in range(draws):
        proposal = current + step * rng.normal(size=chains)
        accept = np.log(rng.uniform(size=chains)) < 0.5 * (current**2 - proposal**2)
        current = np.where(accept, proposal, current)
        x[:, t] = current
    return x


def _cases():
    rng = np.random.default_rng(20240607)
    cases = {f"ar1_{phi}": _ar1(rng, 4, 1000, phi) for phi in (0.0, 0.5, 0.95)}
    cases["metropolis_ties"] = _random_walk_metropolis(rng, 4, 1000)
    # Seven distinct values: every quantile lands inside a big tie.
    cases["rounded"] = np.round(_ar1(rng, 4, 1000, 0.5)) / 3
    stuck = _ar1(rng, 4, 1000, 0.3)
    stuck[2, 200:800] = stuck[2, 199]
    cases["stuck_chain"] = stuck
    cases["different_means"] = _ar1(rng, 4, 1000, 0.5) + np.array([[0.0], [0.0], [1.5], [3.0]])
    # One chain of odd length: the split drops the middle draw; R-hat is nan.
    cases["one_chain_odd"] = _ar1(rng, 1, 1001, 0.7)
    cases["one_chain_odd_ties"] = np.round(_random_walk_metropolis(rng, 1, 1001), 1)
    # Short odd chains: Geyer's sequence hits its lag limit after one pair.
    cases["short_odd"] = np.round(rng.normal(size=(2, 11)), 1)
    cases["short_odd_ar1"] = _ar1(rng, 2, 11, 0.9)
    return cases


CASES = _cases()


@pytest.mark.parametrize("case", list(CASES))
def test_matches_arviz(diagnose, case):
    x = CASES[case]
    got = diagnose(x)
    assert all(v.dtype == jnp.float64 for v in got.values())
    _assert_match(got, _arviz(x), atol=1e-12)


def test_bad_mixing_flags_rhat(diagnose):
    assert float(diagnose(CASES["different_means"])["rhat"]) > 1.1
    assert _arviz(CASES["different_means"])["rhat"] > 1.1
    assert float(diagnose(CASES["ar1_0.0"])["rhat"]) < 1.01


def test_ties_and_autocorrelation_lower_ess(diagnose):
    assert len(np.unique(CASES["rounded"])) <= 8
    assert np.mean(np.diff(CASES["metropolis_ties"], axis=1) == 0) > 0.5
    independent = float(diagnose(CASES["ar1_0.0"])["ess"])
    sticky = float(diagnose(CASES["metropolis_ties"])["ess"])
    slow = float(diagnose(CASES["ar1_0.95"])["ess"])
    assert slow < 0.1 * independent and sticky < 0.5 * independent
    acf = np.asarray(diagnose(CASES["ar1_0.95"])["autocorrelation"])
    np.testing.assert_allclose(acf[:, 0], 1.0, rtol=1e-14)
    np.testing.assert_allclose(acf[:, 1], 0.95, atol=0.05)


def _all_nan(got):
    return all(np.all(np.isnan(np.asarray(got[name]))) for name in SCALAR + PER_PROB)


def test_constant_input_is_undefined_not_perfect(diagnose):
    """Draws that do not vary: every diagnostic is nan (the module's one deliberate difference from ArviZ).

    ArviZ agrees that R-hat is nan (0/0), but reports ESS = the number of draws and MCSEs of ~1e-17, as if
    the chains were perfect; Stan's posterior package returns NA for all of them, as we do.
    """
    const = np.full((4, 1000), 0.7)
    got, expected = diagnose(const), _arviz(const)
    assert np.isnan(expected["rhat"]) and _all_nan(got)
    assert expected["ess"] == 4000.0  # ArviZ's "perfect" answer, which we refuse to give
    # Every chain constant but at different values: within-chain variance 0, R-hat and ESS undefined
    # (ArviZ: R-hat ~1e16 from rounding, ESS of a few).
    assert _all_nan(diagnose(const + np.arange(4.0)[:, None]))
    # Moving by one unit in the last place (a step below float resolution, rounded): still constant.
    # ArviZ sees ranks of two tied values alternating and reports ESS ~1000 and R-hat 0.99.
    ulp = const.copy()
    ulp[:, ::2] = np.nextafter(0.7, 1.0)
    assert 0.98 < _arviz(ulp)["rhat"] < 1.01
    assert _all_nan(diagnose(ulp))
    # A single chain, constant, and one of odd length (the split drops its middle draw).
    assert np.isnan(float(dg.ess(np.full(11, -3.0)))) and np.isnan(float(dg.ess_mean(np.full((2, 11), 5e-300))))


def test_near_constant_and_partly_stuck_inputs_follow_arviz(diagnose):
    # Draws that move, however little (1e-13 on 0.7 is ~900 units in the last place), are left to the
    # estimators, as in ArviZ: catching them is frozen_chains' job, relative to the posterior's scale.
    # The rank-based ones match exactly; the others, computed from differences of nearly equal numbers,
    # only to the cancellation error, so they are compared on a less extreme motion.
    tiny = 0.7 + 1e-13 * CASES["ar1_0.5"]
    ranked = ("ess", "ess_tail", "rhat", "ess_quantile")
    _assert_match({k: diagnose(tiny)[k] for k in ranked}, {k: _arviz(tiny)[k] for k in ranked}, atol=1e-12)
    small = 0.7 + 1e-9 * CASES["ar1_0.5"]
    _assert_match(diagnose(small), _arviz(small), rtol=1e-6, atol=1e-7)
    # One chain frozen among moving ones: not constant input, so ArviZ's answer (R-hat flags it).
    partly = CASES["ar1_0.5"].copy()
    partly[3] = partly[3, 0]
    got = diagnose(partly)
    _assert_match(got, {k: v for k, v in _arviz(partly).items() if k != "autocorrelation"}, atol=1e-12)
    assert float(got["rhat"]) > 1.01


def test_frozen_chains_relative_to_the_posterior_scale():
    rng = np.random.default_rng(3)
    healthy = rng.normal(7.9, 5.0, size=(4, 500))
    assert not np.any(dg.frozen_chains(healthy, 5.0))
    barely = healthy.copy()
    barely[1] = 7.9 + 1e-4 * rng.normal(size=500)  # sd 1e-4 against a posterior sd of 5
    barely[2] = 7.9
    np.testing.assert_array_equal(dg.frozen_chains(barely, 5.0), [False, True, True, False])
    np.testing.assert_array_equal(dg.constant_chains(barely), [False, False, True, False])
    # Without a usable scale only constant chains are frozen; one draw cannot be judged.
    for scale in (np.nan, np.inf, 0.0, -1.0):
        np.testing.assert_array_equal(dg.frozen_chains(barely, scale), [False, False, True, False])
    assert not np.any(dg.frozen_chains(np.full((3, 1), 2.0), 1.0))
    # Rounding-level motion at any magnitude: constant to rounding, frozen whatever the scale.
    huge = np.full((2, 50), 1e300)
    huge[:, 1::2] = np.nextafter(1e300, np.inf)
    assert np.all(dg.constant_chains(huge)) and np.all(dg.frozen_chains(huge, np.nan))


def test_nan_inputs_are_nan(diagnose):
    with_nan = CASES["ar1_0.5"].copy()
    with_nan[1, 5] = np.nan
    got = diagnose(with_nan)
    for name in SCALAR + PER_PROB:
        assert np.all(np.isnan(np.asarray(got[name]))), name


def test_too_few_draws_or_chains_give_nan():
    # Known from the shape alone, so no compilation happens here.
    for name in SCALAR:
        assert np.isnan(float(getattr(dg, name)(np.ones((4, 3)))))
    for name in PER_PROB:
        assert np.isnan(float(getattr(dg, name)(np.ones((4, 3)), prob=0.5)))
    assert np.isnan(float(dg.rhat(np.ones((1, 100)))))
    with pytest.raises(ValueError):
        dg.ess(np.ones((2, 3, 100)))


def test_jit_and_eager_agree(diagnose):
    # Eager dispatch runs op by op, without the fused multiply-adds XLA makes
    # under jit. The 0.95 quantile of 1001 draws sits exactly on an order
    # statistic, where a fused n * p + (1 - p) would pick the next one.
    x = CASES["one_chain_odd"]
    eager = dg.ess_quantile(x, PROBS[2])
    np.testing.assert_allclose(eager, diagnose(x)["ess_quantile"][2], rtol=1e-12)
    np.testing.assert_allclose(eager, _arviz(x)["ess_quantile"][2], rtol=RTOL)
    np.testing.assert_allclose(dg.ess(x), diagnose(x)["ess"], rtol=1e-12)


def test_one_dimensional_input_is_one_chain():
    x = CASES["short_odd_ar1"][0]
    np.testing.assert_allclose(jax.jit(dg.ess_mean)(x), _arviz(x)["ess_mean"], rtol=RTOL)


def test_vmap_equals_loop(diagnose):
    batch = np.stack([CASES["ar1_0.5"], CASES["metropolis_ties"], CASES["stuck_chain"]])
    probs = jnp.asarray(PROBS)
    mapped = jax.jit(jax.vmap(_all, in_axes=(0, None)))(batch, probs)
    for i, x in enumerate(batch):
        _assert_match({k: v[i] for k, v in mapped.items()}, diagnose(x), rtol=1e-12, atol=1e-14)


def test_float32_follows_input_dtype(diagnose):
    x = CASES["metropolis_ties"]
    single, double = diagnose(x.astype(np.float32)), diagnose(x)
    for name, value in single.items():
        assert value.dtype == jnp.float32, name
    # Same ranks and ties in both precisions, so the results agree closely.
    _assert_match(single, {k: np.asarray(v) for k, v in double.items()}, rtol=1e-3, atol=1e-5)
