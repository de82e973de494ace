"""Empirical Bayes (jaxschools.core.empirical_bayes): L-BFGS through the exact log evidence against a brute-force grid.

Two datasets of one shape (one compilation of the fit, one of the grid): the log risk ratios, whose between-study
spread is well beyond their standard errors (an interior maximum), and the eight schools, padded to the same J
with masked schools (the maximum is the boundary tau_scale -> 0). The fits run one after the other, not under
``vmap``: a vmapped L-BFGS loop compiles three times slower here (measured 15 s against 5 s). The grid lives in the fit's own
coordinates x_1 = log(tau_scale / s_pool), x_2 = (mu_loc - y_bar_w) / mu_scale.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

import jaxschools as js
from jaxschools.core import empirical_bayes

NUM_NODES = 256
GRID = 25  # points per coordinate
# Grid ranges in the fit's coordinates, per dataset: around the interior optimum (risk ratios) and down to
# tau_scale = s_pool / 1000 (eight schools).
X1 = np.array([[0.2, 2.2], [math.log(1e-3), 2.0]])
X2 = np.array([[-0.3, 0.3], [-0.1, 0.1]])


@pytest.fixture(scope="module")
def batch(log_risk_ratios, eight):
    pad = log_risk_ratios.num_schools - eight.num_schools
    y = jnp.stack([log_risk_ratios.y, jnp.concatenate([eight.y, jnp.zeros(pad)])])
    sigma = jnp.stack([log_risk_ratios.sigma, jnp.concatenate([eight.sigma, jnp.ones(pad)])])
    mask = jnp.stack([jnp.ones(log_risk_ratios.num_schools, bool), jnp.arange(log_risk_ratios.num_schools) < 8])
    data = js.data.Schools(y, sigma, mask=mask)
    # The prior's tau_scale and mu_loc are the starts; mu_scale is fixed (0.2 on the log risk ratio scale).
    prior = js.models.Prior("half_normal", jnp.array([0.0, 0.0]), jnp.array([0.2, 20.0]), jnp.array([1.0, 5.0]))
    return data, prior


@pytest.fixture(scope="module")
def fits(batch):
    data, prior = batch
    runs = [empirical_bayes.fit(*jax.tree_util.tree_map(lambda leaf: leaf[k], (data, prior)), num_nodes=NUM_NODES)
            for k in range(2)]
    return jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *runs)


def _coords(data):
    """(log s_pool, y_bar_w) of one dataset, from numpy (independent of the module's own helper)."""
    mask = np.asarray(data.mask)
    prec = 1.0 / np.asarray(data.sigma)[mask] ** 2
    return -0.5 * math.log(prec.sum()), float((prec * np.asarray(data.y)[mask]).sum() / prec.sum())


@pytest.fixture(scope="module")
def grid(batch):
    """log p(y | phi) on a GRID x GRID grid per dataset, with its axes (tau_scale, mu_loc)."""
    data, prior = batch
    taus, locs = [], []
    for k in range(2):
        log_s_pool, ybar = _coords(jax.tree_util.tree_map(lambda leaf: leaf[k], data))
        taus.append(np.exp(log_s_pool + np.linspace(*X1[k], GRID)))
        locs.append(ybar + float(prior.mu_scale[k]) * np.linspace(*X2[k], GRID))
    taus, locs = np.array(taus), np.array(locs)

    def log_evidence(d, mu_scale, tau_scale, mu_loc):
        p = js.models.Prior("half_normal", mu_loc, mu_scale, tau_scale)
        return js.exact.posterior(d, p, NUM_NODES).log_evidence

    over_loc = jax.vmap(log_evidence, (None, None, None, 0))
    over_both = jax.vmap(over_loc, (None, None, 0, None))
    values = jax.jit(jax.vmap(over_both))(data, prior.mu_scale, jnp.asarray(taus), jnp.asarray(locs))
    return np.asarray(values), taus, locs


def test_interior_maximum_matches_the_grid(fits, grid):
    """The log risk ratios: the L-BFGS maximum is within one grid spacing of the grid's best point in each
    coordinate, and no grid point beats it."""
    values, taus, locs = grid
    fit = jax.tree_util.tree_map(lambda leaf: leaf[0], fits)
    assert bool(fit.converged) and not bool(fit.boundary)
    assert float(fit.grad_norm) <= 1e-6
    i, j = np.unravel_index(np.argmax(values[0]), values[0].shape)
    assert 0 < i < GRID - 1 and 0 < j < GRID - 1, "the grid must bracket the maximum"
    log_spacing = np.diff(np.log(taus[0]))[0]
    assert abs(math.log(float(fit.tau_scale)) - math.log(taus[0, i])) <= log_spacing
    assert abs(float(fit.mu_loc) - locs[0, j]) <= np.diff(locs[0])[0]
    assert float(fit.log_evidence) >= values[0].max() - 1e-10
    # Not a trivial check: the grid's evidence varies by far more than the tolerance over its range.
    assert values[0].max() - values[0].min() > 0.1


def test_boundary_maximum_is_reported_as_such(batch, fits, grid):
    """The eight schools: the evidence increases all the way to tau_scale -> 0, so the fit reports the boundary
    (tau_scale exactly 0) with the closed-form limit as its log evidence and the weighted mean as mu_loc."""
    data, prior = batch
    values, taus, locs = grid
    fit = jax.tree_util.tree_map(lambda leaf: leaf[1], fits)
    assert bool(fit.boundary) and bool(fit.converged)
    assert float(fit.tau_scale) == 0.0
    eight = jax.tree_util.tree_map(lambda leaf: leaf[1], data)
    _, ybar = _coords(eight)
    assert float(fit.mu_loc) == pytest.approx(ybar, rel=1e-12)
    # The limit, by scipy: y ~ N(mu_loc 1, diag(sigma^2) + mu_scale^2 1 1^T) over the 8 unmasked schools.
    mask = np.asarray(eight.mask)
    y, sigma = np.asarray(eight.y)[mask], np.asarray(eight.sigma)[mask]
    cov = np.diag(sigma**2) + float(prior.mu_scale[1]) ** 2 * np.ones((8, 8))
    limit = scipy.stats.multivariate_normal(np.full(8, ybar), cov).logpdf(y)
    assert float(fit.log_evidence) == pytest.approx(limit, abs=1e-10)
    # The grid: no point above the limit, the best at the smallest tau_scale, and the profile over mu_loc
    # increasing as tau_scale falls (rows are tau_scale ascending).
    assert values[1].max() <= limit + 1e-9
    assert np.unravel_index(np.argmax(values[1]), values[1].shape)[0] == 0
    profile = values[1].max(axis=1)
    assert np.all(np.diff(profile) < 0)
    assert limit - profile[0] < 1e-4  # tau_scale = s_pool / 1000 is already almost the limit


def test_pooled_log_evidence_against_scipy(log_risk_ratios):
    y, sigma = np.asarray(log_risk_ratios.y), np.asarray(log_risk_ratios.sigma)
    for mu_loc, mu_scale in ((0.0, 0.2), (0.4, 3.0), (-1.0, 1e-3)):
        cov = np.diag(sigma**2) + mu_scale**2 * np.ones((y.size, y.size))
        want = scipy.stats.multivariate_normal(np.full(y.size, mu_loc), cov).logpdf(y)
        got = float(empirical_bayes.pooled_log_evidence(log_risk_ratios, mu_loc, mu_scale))
        # scipy factorises a covariance whose condition number reaches 1e5: it keeps ~11 digits.
        assert got == pytest.approx(want, rel=1e-10)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"prior": "flat"}, "proper prior"),
        ({"params": ("mu_scale",)}, "mu_scale cannot be estimated"),
        ({"params": ("tau",)}, "unknown hyperparameter 'tau'"),
        ({"params": ()}, "params is empty"),
        ({"params": ("mu_loc", "mu_loc")}, "twice"),
        ({"prior": js.models.Prior("half_normal", tau_scale=0.0)}, "tau_scale must be finite and > 0"),
        ({"prior": js.models.Prior("half_cauchy", mu_loc=math.nan)}, "mu_loc must be finite"),
        ({"gtol": 0.0}, "gtol"),
        ({"max_iterations": 0}, "max_iterations"),
        ({"num_nodes": 100}, "num_nodes"),
    ],
)
def test_bad_arguments_raise_a_value_error_naming_the_problem(eight, kwargs, words):
    with pytest.raises(ValueError, match=words):
        empirical_bayes.fit(eight, **{"prior": "half_normal", **kwargs})


def test_no_school_in_the_likelihood_is_refused(eight):
    with pytest.raises(ValueError, match="no school in the likelihood"):
        empirical_bayes.fit(eight.replace(mask=jnp.zeros(8, bool)), "half_normal")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["half_normal", "half_cauchy"])
def test_tau_scale_alone_matches_a_fine_grid(log_risk_ratios, kind):
    """tau_scale alone (mu_loc fixed at 0.1, off the data's centre), 1024 nodes, both families: the maximum within
    one spacing of a 201-point grid's best point, which it does not fall below."""
    prior = js.models.Prior(kind, 0.1, 0.2, 0.01)
    fit = empirical_bayes.fit(log_risk_ratios, prior, params=("tau_scale",))
    assert bool(fit.converged) and not bool(fit.boundary)
    assert float(fit.mu_loc) == 0.1 and float(fit.mu_scale) == 0.2
    taus = np.exp(np.linspace(math.log(0.01), math.log(1.0), 201))

    def log_evidence(tau_scale):
        return js.exact.posterior(log_risk_ratios, js.models.Prior(kind, 0.1, 0.2, tau_scale)).log_evidence

    values = np.asarray(jax.jit(jax.vmap(log_evidence))(jnp.asarray(taus)))
    k = int(np.argmax(values))
    assert 0 < k < taus.size - 1
    assert abs(math.log(float(fit.tau_scale)) - math.log(taus[k])) <= math.log(taus[1] / taus[0])
    assert float(fit.log_evidence) >= values.max() - 1e-12


@pytest.mark.slow
def test_vmap_over_datasets_agrees_with_one_at_a_time(batch, fits):
    data, prior = batch
    batched = jax.vmap(lambda d, p: empirical_bayes.fit(d, p, num_nodes=NUM_NODES))(data, prior)
    for name in ("tau_scale", "mu_loc", "log_evidence"):
        np.testing.assert_allclose(np.asarray(getattr(batched, name)), np.asarray(getattr(fits, name)), rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(batched.boundary), np.asarray(fits.boundary))
