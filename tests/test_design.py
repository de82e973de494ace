"""Design of a new study (jaxschools.core.design): the preposterior criterion and its optimum.

Default suite (one compilation: the criterion over a grid of n): the law of total variance (a consistency check
of the whole update and of the quadrature over y_new), bad arguments. Slow (each optimiser or oracle is one more
compilation of 2 to 6 s of CPU, beyond the default suite's budget): the optimum against a brute-force grid of the
same loss (an interior minimum, and the boundary n = 0 when the cost is too high), the criterion against scipy's
adaptive quadrature over y_new of the exact posterior of the augmented data (J + 1 schools, through
exact.posterior), the information against its definition (the KL divergence by adaptive quadrature), the gradient against central differences, and the variance and information objectives
against their grids.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import scipy.special

import jaxschools as js
from jaxschools.core import design

NUM_NODES = 256
UNIT_SD = 100.0  # the sd of one student's score: the eight schools' sigma_j are those of ~30 to ~140 students
LOG_N = np.linspace(math.log(1.0), math.log(1e4), 41)  # the brute-force grid of n


def _criterion_on(data, prior, objective, log_n):
    """The preposterior at each n of ``log_n`` (one exact rule, one compiled vmap over n)."""
    sigma_new = UNIT_SD / np.sqrt(np.exp(log_n))
    return design.preposterior(data, prior, sigma_new, information=objective == "information", num_nodes=NUM_NODES)


@pytest.fixture(scope="module")
def flat_grid(eight):
    return _criterion_on(eight, "flat", "sd", LOG_N)


def test_law_of_total_variance(eight, flat_grid):
    """E[Var(mu | y, y_new)] + Var(E[mu | y, y_new]) = Var(mu | y) for every sigma_new: it holds only if the update
    given y_new is the Bayesian one and the rule over y_new integrates the predictive (tower property)."""
    pre = flat_grid
    # Var(mu | y) of the rule itself (the slow oracle test checks it against exact.posterior's fields; an eager
    # exact.posterior here would cost a 3 s compilation of its unused theta moments).
    current = float(pre.current_sd[0])
    np.testing.assert_allclose(np.asarray(pre.current_sd), current, rtol=1e-15)
    np.testing.assert_allclose(np.asarray(pre.var + pre.var_of_mean), current**2, rtol=1e-10)
    np.testing.assert_allclose(np.asarray(pre.mass), 1.0, atol=1e-10)
    # Not vacuous: the study moves the variance between the two terms, from all in var to a third out of it.
    assert float(pre.var_of_mean[0]) < 0.01 * current**2 < 0.3 * current**2 < float(pre.var_of_mean[-1])
    # More data never increases the expected posterior sd (Blackwell).
    assert np.all(np.diff(np.asarray(pre.sd)) < 0)


@pytest.fixture(scope="module")
def optima(eight):
    """The optimiser for two costs (one compilation): cheap subjects (interior optimum), dear ones (none)."""
    return {cost: design.optimal_sample_size(eight, "flat", unit_sd=UNIT_SD, cost=cost, num_nodes=NUM_NODES)
            for cost in (0.003, 0.02)}


@pytest.mark.slow
def test_interior_optimum_matches_the_grid(flat_grid, optima):
    found = optima[0.003]
    loss = np.asarray(flat_grid.sd) + 0.003 * np.exp(LOG_N)
    k = int(np.argmin(loss))
    assert 0 < k < LOG_N.size - 1, "the grid must bracket the minimum"
    assert bool(found.converged) and not bool(found.boundary)
    assert abs(math.log(float(found.n)) - LOG_N[k]) <= LOG_N[1] - LOG_N[0]
    assert float(found.loss) <= loss.min() + 1e-12 * loss.min()
    assert float(found.sigma_new) == pytest.approx(UNIT_SD / math.sqrt(float(found.n)), rel=1e-12)
    assert float(found.loss) == pytest.approx(float(found.criterion) + 0.003 * float(found.n), rel=1e-12)
    # A study worth running: the loss falls clearly below the no-study loss.
    assert float(found.loss) < float(found.no_study_loss) - 0.01


@pytest.mark.slow
def test_too_dear_a_study_is_the_boundary(flat_grid, optima):
    """At 0.02 per subject every grid point loses against no study: n = 0 exactly, the loss the current sd."""
    found = optima[0.02]
    loss = np.asarray(flat_grid.sd) + 0.02 * np.exp(LOG_N)
    current = float(flat_grid.current_sd[0])
    assert np.all(loss > current)
    assert bool(found.boundary) and bool(found.converged)
    assert float(found.n) == 0.0 and math.isinf(float(found.sigma_new))
    assert float(found.loss) == pytest.approx(current, rel=1e-12)
    assert float(found.no_study_loss) == pytest.approx(current, rel=1e-12)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"objective": "entropy"}, "unknown objective 'entropy'"),
        ({"unit_sd": 0.0}, "unit_sd must be finite and > 0"),
        ({"unit_sd": math.inf}, "unit_sd must be finite and > 0"),
        ({"cost": 0.0}, "cost must be finite and > 0"),
        ({"cost": -1.0}, "cost must be finite and > 0"),
        ({"n_start": -3.0}, "n_start must be finite and > 0"),
        ({"num_nodes": 100}, "num_nodes"),
        ({"num_points": 4}, "num_points"),
        ({"gtol": -1.0}, "gtol"),
        ({"max_iterations": 2.5}, "max_iterations"),
    ],
)
def test_bad_arguments_raise_a_value_error_naming_the_problem(eight, kwargs, words):
    with pytest.raises(ValueError, match=words):
        design.optimal_sample_size(eight, "flat", **{"unit_sd": UNIT_SD, "cost": 0.003, **kwargs})


def test_a_criterion_that_does_not_exist_is_refused(eight):
    """The flat prior with 4 schools: the posterior variance of mu is infinite (moments.py), so is the criterion."""
    four = eight.replace(mask=jnp.arange(8) < 4)
    with pytest.raises(ValueError, match="variance of mu does not exist"):
        design.optimal_sample_size(four, "flat", unit_sd=UNIT_SD, cost=0.003)
    with pytest.raises(ValueError, match="sigma_new must be finite and > 0"):
        design.preposterior(eight, "flat", sigma_new=0.0)
    with pytest.raises(ValueError, match="sigma_new must be finite and > 0"):
        design.preposterior(eight, "flat", sigma_new=[1.0, math.nan])


@pytest.mark.slow
@pytest.mark.parametrize("prior", ["flat", "half_cauchy"])
def test_criterion_against_adaptive_quadrature_of_the_augmented_exact_posterior(eight, prior):
    """E over y_new ~ p(y_new | y) of sd and Var of mu given the J + 1 schools, each point an exact.posterior of
    the augmented data (p(y_new | y) = Z(y, y_new) / Z(y), the rule's normalising constants), integrated by
    scipy's adaptive quad_vec: an oracle that shares nothing with the module but exact.posterior."""
    sigma_new = 10.0
    log_z = float(js.exact.posterior(eight, prior, NUM_NODES).log_norm)

    def integrand(y_new):
        data = js.data.Schools(jnp.append(eight.y, y_new), jnp.append(eight.sigma, sigma_new))
        post = js.exact.posterior(data, prior, NUM_NODES)
        w, m, v = (np.asarray(a) for a in (jnp.exp(post.log_weights), post.mu_hat, post.mu_var))
        mean = w @ m
        var = w @ (v + (m - mean) ** 2)
        density = math.exp(float(post.log_norm) - log_z)
        return np.array([density, density * math.sqrt(var), density * var])

    want, err = scipy.integrate.quad_vec(integrand, -np.inf, np.inf, epsrel=1e-11, epsabs=0)
    assert err < 1e-9
    pre = design.preposterior(eight, prior, sigma_new, num_nodes=NUM_NODES)
    np.testing.assert_allclose([float(pre.mass), float(pre.sd), float(pre.var)], want, rtol=1e-9)
    post = js.exact.posterior(eight, prior, NUM_NODES)
    w, m, v = (np.asarray(a) for a in (jnp.exp(post.log_weights), post.mu_hat, post.mu_var))
    assert float(pre.current_sd) == pytest.approx(math.sqrt(w @ (v + (m - w @ m) ** 2)), rel=1e-12)


def _log_mixture(mu, post):
    """log sum_n w_n N(mu | m_n, V_n), the exact rule's density of mu, at the points ``mu``."""
    lw, m, v = (np.asarray(a) for a in (post.log_weights, post.mu_hat, post.mu_var))
    mu = np.atleast_1d(mu)[:, None]
    return scipy.special.logsumexp(lw - 0.5 * np.log(2 * np.pi * v) - 0.5 * (mu - m) ** 2 / v, axis=1)


@pytest.mark.slow
def test_information_against_adaptive_quadrature_of_the_kl_divergence(eight):
    """The information as its definition states it, E_{y_new}[KL(p(mu | y, y_new) || p(mu | y))]: for each y_new
    the augmented data's exact.posterior (J + 1 schools), the KL divergence by scipy's adaptive quad over the whole
    line of mu (three pieces, the tails to infinity: cut at 40 sds, the flat prior's power tails of p(mu | y)
    left out 9e-9 of it), and quad_vec over y_new. The module computes it otherwise (mutual information as
    H(y_new | y) - E_mu H(y_new | mu, y), on sinh rules), so the two share only exact.posterior. Within 1e-9
    relative, the 256-node tau rule's accuracy as in the sd and variance oracle above (the oracle's own error
    estimate is about 1e-11)."""
    sigma_new = 10.0
    current = js.exact.posterior(eight, "flat", NUM_NODES)
    augmented = jax.jit(lambda y_new: js.exact.posterior(
        js.data.Schools(jnp.append(eight.y, y_new), jnp.append(eight.sigma, sigma_new)), "flat", NUM_NODES))

    def integrand(y_new):
        post = augmented(y_new)
        w, m, v = (np.asarray(a) for a in (jnp.exp(post.log_weights), post.mu_hat, post.mu_var))
        mean, sd = w @ m, math.sqrt(w @ (v + (m - w @ m) ** 2))

        def kl_density(mu):
            log_new = _log_mixture(mu, post)[0]
            return math.exp(log_new) * (log_new - _log_mixture(mu, current)[0])

        pieces = ((-np.inf, mean - 10 * sd), (mean - 10 * sd, mean + 10 * sd), (mean + 10 * sd, np.inf))
        kl = sum(scipy.integrate.quad(kl_density, a, b, epsabs=0, epsrel=1e-11, limit=200)[0] for a, b in pieces)
        density = math.exp(float(post.log_norm) - float(current.log_norm))  # p(y_new | y)
        return np.array([density, density * kl])

    want, err = scipy.integrate.quad_vec(integrand, -np.inf, np.inf, epsrel=1e-10, epsabs=0)
    assert err < 1e-9 * want[1]
    pre = design.preposterior(eight, "flat", sigma_new, information=True, num_nodes=NUM_NODES)
    np.testing.assert_allclose(float(pre.mass), want[0], rtol=1e-9)
    np.testing.assert_allclose(float(pre.information), want[1], rtol=1e-9)


@pytest.mark.slow
def test_gradient_against_central_differences(log_risk_ratios):
    """d/d log sigma_new of each criterion: jax.grad against central differences, step 1e-4 in log sigma_new
    (truncation error ~h^2 f''' ~ 1e-8 relative, rounding ~1e-16 / h ~ 1e-12: well inside 1e-6)."""
    prior = js.models.Prior("half_normal", 0.0, 1.0, 0.2)

    def criteria(log_sigma):
        pre = design.preposterior(log_risk_ratios, prior, jnp.exp(log_sigma), information=True, num_nodes=NUM_NODES)
        return jnp.stack([pre.sd, pre.var, pre.information])

    x, h = math.log(0.1), 1e-4
    grad = np.asarray(jax.jit(jax.jacrev(criteria))(x))
    f = jax.jit(criteria)
    central = (np.asarray(f(x + h)) - np.asarray(f(x - h))) / (2 * h)
    np.testing.assert_allclose(grad, central, rtol=1e-6)
    assert np.all(np.abs(grad) > 1e-2 * np.abs(np.asarray(f(x))))  # each criterion depends on sigma_new here


@pytest.mark.slow
@pytest.mark.parametrize("objective, cost", [("var", 0.03), ("information", 2e-4)])
def test_other_objectives_match_their_grids(eight, objective, cost):
    pre = _criterion_on(eight, "flat", objective, LOG_N)
    criterion = np.asarray(getattr(pre, "var" if objective == "var" else "information"))
    loss = (-criterion if objective == "information" else criterion) + cost * np.exp(LOG_N)
    k = int(np.argmin(loss))
    assert 0 < k < LOG_N.size - 1, "the grid must bracket the minimum"
    found = design.optimal_sample_size(eight, "flat", unit_sd=UNIT_SD, cost=cost, objective=objective,
                                       num_nodes=NUM_NODES)
    assert bool(found.converged) and not bool(found.boundary)
    assert abs(math.log(float(found.n)) - LOG_N[k]) <= LOG_N[1] - LOG_N[0]
    assert float(found.loss) <= loss.min() + 1e-12 * abs(loss.min())
    # A larger study always tells more: the information rises and the variance falls along the grid.
    assert np.all(np.diff(criterion) > 0) if objective == "information" else np.all(np.diff(criterion) < 0)
