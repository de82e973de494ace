r"""Sensitivities from draws (:mod:`jaxschools.core.draw_sensitivity`): d E[g] / d phi = Cov(g, score) + E[dg/dphi].

Default suite (cheap): case weights in the densities against scipy; the score against its closed forms; the
identity on a Gaussian toy whose sensitivities are known exactly, from autocorrelated AR(1) chains (with the
E[dg/dphi] term, and without it, which must fail); the batch-means MCSE against the exact asymptotic variance of
the estimator over replicate chains; shapes and names of the schools model's result.

Slow (the statistical layer, ``tests/statistical.py``'s :func:`check_sensitivities`): random-walk Metropolis on
the marginal and NUTS on the non-centered joint, on three datasets and priors, against the exact gradient
(``jax.jacrev`` of ``exact.summary``) within a multiplicity-aware MCSE limit; and deliberately wrong
log-density derivatives must fail it, on the inputs they break and only there.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
import test_statistical_layer as layer  # its datasets, targets and chain settings
from statistical import assert_sensitivities_match, check_sensitivities

import jaxschools as js
from jaxschools.core import draw_sensitivity as ds
from jaxschools.core import models

Y = np.array([28.0, 8, -3, 7, -1, 1, 18, 12])
SIGMA = np.array([15.0, 10, 16, 11, 9, 11, 10, 18])


# ---------------------------------------------------------------------------------------------------------
# Case weights and the score.


@jax.jit
def _with_and_without_weights(plain, masked, weights, left_out, position):
    """The density without weights, with w = 1 and with ``weights``, the first two's gradients, and the density
    with the weights ``left_out`` beside ``masked``'s (one compilation per parameterization)."""
    ones = plain.with_case_weights(jnp.ones_like(weights))
    return (plain(position), ones(position), plain.with_case_weights(weights)(position), jax.grad(plain)(position),
            jax.grad(ones)(position), plain.with_case_weights(left_out)(position), masked(position))


@jax.jit
def _conditionals(mu, log_tau, data, weights):
    return (models.tempered_conditional(mu, log_tau, data, jnp.ones_like(weights)),
            js.posterior.conditional_theta(mu, log_tau, data), models.tempered_conditional(mu, log_tau, data, weights))


def _tempered(mu, tau, weights):
    """theta_j | mu, tau, y with y_j | theta_j ~ N(theta_j, sigma_j^2 / w_j), by precisions (BDA3 eq. 5.17)."""
    precision = weights / SIGMA**2 + 1 / tau**2
    return (weights * Y / SIGMA**2 + mu / tau**2) / precision, 1 / precision


def test_case_weights_in_the_densities(eight):
    """None is today's density. Weights w raise the marginal term N(y_j | mu, sigma_j^2 + tau^2) to w_j and, on
    the joint targets, replace theta_j's conditional by the tempered one (scipy, precisions by hand); w_j = 0 is
    the school masked out, in every parameterization."""
    rng = np.random.default_rng(3)
    weights = rng.uniform(0.0, 2.0, 8)
    mu, log_tau = 4.0, 1.3
    tau = math.exp(log_tau)
    marginal_terms = stats.norm.logpdf(Y, mu, np.sqrt(SIGMA**2 + tau**2))
    scipy_prior = stats.norm.logpdf(mu, 0, 5) + stats.halfcauchy.logpdf(tau, scale=5)
    left_out = jnp.ones(8).at[2].set(0.0)
    for parameterization in models.PARAMETERIZATIONS:
        plain = models.logdensity_for(eight, "half_cauchy", parameterization)
        position = jnp.concatenate([jnp.array([mu, log_tau]), jnp.asarray(rng.normal(size=8))])[: plain.dim]
        masked = models.logdensity_for(eight.replace(mask=jnp.arange(8) != 2), "half_cauchy", parameterization)
        value, at_ones, weighted, grad, grad_at_ones, without_2, masked_2 = _with_and_without_weights(
            plain, masked, jnp.asarray(weights), left_out, position)
        assert float(at_ones) == float(value), parameterization
        np.testing.assert_allclose(grad_at_ones, grad, rtol=1e-13, atol=1e-15)  # XLA may reorder the sums
        expected = float(value) + np.sum((weights - 1.0) * marginal_terms)
        if parameterization != "marginal":
            theta = np.asarray(position[2:]) if parameterization == "centered" else mu + tau * np.asarray(position[2:])
            (mean_w, var_w), (mean_1, var_1) = _tempered(mu, tau, weights), _tempered(mu, tau, np.ones(8))
            expected += np.sum(stats.norm.logpdf(theta, mean_w, np.sqrt(var_w))
                               - stats.norm.logpdf(theta, mean_1, np.sqrt(var_1)))
        else:
            np.testing.assert_allclose(float(weighted), np.sum(weights * marginal_terms) + scipy_prior + log_tau,
                                       rtol=1e-12)
        np.testing.assert_allclose(float(weighted), expected, rtol=1e-12, err_msg=parameterization)
        np.testing.assert_allclose(float(without_2), float(masked_2), rtol=1e-12, err_msg=parameterization)
    # The constructors' keyword, and the tempered conditional against posterior's at w = 1.
    keyword = models.joint_logdensity(eight, "flat", "centered", case_weights=jnp.asarray(weights))
    np.testing.assert_array_equal(keyword.case_weights, weights)
    at_ones, posterior_form, tempered = _conditionals(mu, log_tau, eight, jnp.asarray(weights))
    np.testing.assert_allclose(at_ones, posterior_form, rtol=1e-13)
    np.testing.assert_allclose(tempered, _tempered(mu, tau, weights), rtol=1e-12)


def test_score_matches_its_closed_forms(eight):
    """d/dphi log p(y, mu, log tau | phi) of the marginal with the half-Cauchy prior, by hand."""
    mu, log_tau = 4.0, 1.3
    tau = math.exp(log_tau)
    mu_loc, mu_scale, tau_scale = 1.0, 6.0, 3.0
    density = models.marginal_logdensity(eight, "half_cauchy", case_weights=jnp.ones(8), mu_loc=mu_loc,
                                         mu_scale=mu_scale, tau_scale=tau_scale)
    got = ds.inputs(ds.score(density, jnp.array([mu, log_tau])))
    v = SIGMA**2 + tau**2
    expected = {
        "y": -(Y - mu) / v,
        "sigma": -SIGMA / v + (Y - mu) ** 2 * SIGMA / v**2,
        "case_weights": stats.norm.logpdf(Y, mu, np.sqrt(v)),
        "mu_loc": (mu - mu_loc) / mu_scale**2,
        "mu_scale": -1.0 / mu_scale + (mu - mu_loc) ** 2 / mu_scale**3,
        # log p(tau) = log(2 / pi) - log s - log(1 + tau^2 / s^2)
        "tau_scale": -1.0 / tau_scale + 2.0 * tau**2 / (tau_scale * (tau_scale**2 + tau**2)),
    }
    assert set(got) == set(expected)
    for name, value in expected.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-12, err_msg=name)
    assert ds.score(density, jnp.array([mu, log_tau])).data.mask is None  # booleans are not differentiated


# ---------------------------------------------------------------------------------------------------------
# A Gaussian toy with exact answers: x ~ N(m, s^2), drawn by AR(1) chains that keep N(m, s^2) stationary.

TOY_M, TOY_S, TOY_RHO = 1.5, 2.0, 0.5
TOY_CHAINS, TOY_DRAWS = 4, 4_000


def _toy_logdensity(m, s, position):
    return jnp.sum(jax.scipy.stats.norm.logpdf(position, m, s))


def _toy_quantities(position, model):
    m, s = model.args
    x = position[0]
    return {"x": x, "x2": x * x, "z": (x - m) / s, "z_frozen": (x - jax.lax.stop_gradient(m)) / s}


# d E[g] / d(m, s) for g in _toy_quantities: E[x] = m, E[x^2] = m^2 + s^2, E[(x - m) / s] = 0. "z_frozen" reads m
# without its derivative, so the estimator misses E[dg/dm] = -1/s and converges to 1/s, not 0.
TOY_EXACT = {"x": (1.0, 0.0), "x2": (2 * TOY_M, 2 * TOY_S), "z": (0.0, 0.0)}


def _ar1_chains(seed: int, num_chains: int = TOY_CHAINS, num_draws: int = TOY_DRAWS):
    """x_t = m + rho (x_{t-1} - m) + sqrt(1 - rho^2) s e_t from x_0 ~ N(m, s^2): stationary N(m, s^2), lag-k
    autocorrelation rho^k; shape (..., chain, draw, 1) for a ``num_chains`` tuple or int."""
    noise = np.random.default_rng(seed).standard_normal(np.atleast_1d(num_chains).tolist() + [num_draws])
    z = np.empty_like(noise)
    z[..., 0] = noise[..., 0]
    for t in range(1, num_draws):
        z[..., t] = TOY_RHO * z[..., t - 1] + math.sqrt(1 - TOY_RHO**2) * noise[..., t]
    return jnp.asarray(TOY_M + TOY_S * z)[..., None]


def _toy_model():
    return jax.tree_util.Partial(_toy_logdensity, jnp.asarray(TOY_M), jnp.asarray(TOY_S))


def _toy_by_input(tree_of_partials) -> dict:
    return {name: {"m": tree.args[0], "s": tree.args[1]} for name, tree in tree_of_partials.items()}


NUM_REPLICATES = 48


@pytest.fixture(scope="module")
def toy():
    """Sensitivities of :func:`_toy_quantities` from R replicate sets of AR(1) chains, in one vmapped call:
    ``(estimate, mcse, mean, mean_mcse)``, each with a leading replicate axis."""
    positions = _ar1_chains(5, (NUM_REPLICATES, TOY_CHAINS))
    quantity = jax.tree_util.Partial(_toy_quantities)

    def one(chains):
        out = ds.sensitivity(_toy_model(), chains, quantity)
        return out.estimate, out.mcse, out.mean, out.mean_mcse

    return jax.vmap(one)(positions)


def test_identity_on_a_gaussian_with_exact_answers(toy):
    """x, x^2 and (x - m) / s, whose derivative needs E[dg/dphi]: all within the MCSE limit of their exact
    derivatives (one replicate); leaving E[dg/dm] out (z_frozen) must fail on d/dm, by ~1/s / MCSE."""
    estimate, mcse, mean, mean_mcse = jax.tree_util.tree_map(lambda leaf: leaf[0], toy)
    estimate, mcse = _toy_by_input(estimate), _toy_by_input(mcse)
    num_batches = TOY_CHAINS * ds.NUM_BATCHES
    exact = {name: {"m": dm, "s": dsig} for name, (dm, dsig) in TOY_EXACT.items()}
    check = check_sensitivities(None, estimate, mcse, exact, num_batches)
    assert check.passed, check.table()
    check = check_sensitivities(None, estimate, mcse, {"z_frozen": exact["z"]}, num_batches)
    assert [row.quantity for row in check.failures] == ["d z_frozen / d m"], check.table()
    assert abs(float(mean["x"]) - TOY_M) < 6 * float(mean_mcse["x"])


def test_batch_means_mcse_matches_the_exact_asymptotic_variance(toy):
    """For g = x the estimator of d E[x] / dm is the mean of h_t = (x_t - xbar)(x_t - m) / s^2 ~ z_t^2, whose
    autocorrelation is rho^(2k): Var = 2 (1 + rho^2) / (1 - rho^2) / N. Over R replicate sets of chains, the
    mean of MCSE^2 must match it (to 5 of its own standard errors, plus the batch means' known bias
    2 rho^2 / (L (1 - rho^4)) of relative size) and the estimates must spread as it says (chi-squared bounds)."""
    estimates = np.asarray(toy[0]["x"].args[0])
    squares = np.asarray(toy[1]["x"].args[0]) ** 2
    truth = 2 * (1 + TOY_RHO**2) / (1 - TOY_RHO**2) / (TOY_CHAINS * TOY_DRAWS)
    bias = 2 * TOY_RHO**2 / (TOY_DRAWS // ds.NUM_BATCHES * (1 - TOY_RHO**4))
    assert abs(squares.mean() / truth - 1) < 5 * squares.std(ddof=1) / math.sqrt(NUM_REPLICATES) / truth + bias
    # An MCSE that ignored the autocorrelation would be (1 - rho^2) / (1 + rho^2) = 0.6 of this: far outside.
    ratio, df = estimates.var(ddof=1) / truth, NUM_REPLICATES - 1
    assert stats.chi2.ppf(1e-6, df) / df < ratio < stats.chi2.ppf(1 - 1e-6, df) / df, ratio
    assert abs(np.mean(estimates) - 1.0) < 5 * math.sqrt(truth / NUM_REPLICATES)


# ---------------------------------------------------------------------------------------------------------
# The schools model: names and shapes.


def test_model_sensitivity_names_and_shapes(eight):
    rng = np.random.default_rng(0)
    draws = jnp.asarray(rng.normal(size=(4, 100, 10)) * 0.3 + np.r_[5.0, 1.5, np.zeros(8)])
    flat = ds.model_sensitivity(models.marginal_logdensity(eight), draws[..., :2], threshold=10.0)
    assert set(flat.estimate) == {"mu", "tau", "theta", "p_exceeds"} == set(flat.mcse)
    assert set(flat.estimate["mu"]) == {"y", "sigma", "case_weights"}  # the flat prior has no hyperparameters
    assert flat.estimate["theta"]["y"].shape == (8, 8) and flat.estimate["mu"]["sigma"].shape == (8,)
    assert flat.estimate["p_exceeds"]["case_weights"].shape == (8,)
    assert flat.num_batches == 4 * ds.NUM_BATCHES
    # E[g]: the draws' means of mu and of the Rao-Blackwellised theta and P(theta_1 > 10), BDA3 eq. 5.17 by hand.
    mu, tau = np.asarray(draws[..., 0])[..., None], np.exp(np.asarray(draws[..., 1]))[..., None]
    precision = 1 / SIGMA**2 + 1 / tau**2
    theta_hat = (Y / SIGMA**2 + mu / tau**2) / precision
    np.testing.assert_allclose(flat.mean["mu"], mu.mean(), rtol=1e-12)
    np.testing.assert_allclose(flat.mean["theta"], theta_hat.mean((0, 1)), rtol=1e-12)
    p_exceeds = stats.norm.sf(10.0, theta_hat[..., 0], 1 / np.sqrt(precision[..., 0]))
    np.testing.assert_allclose(flat.mean["p_exceeds"], p_exceeds.mean(), rtol=1e-10)
    # A proper prior's hyperparameters join the inputs (shapes only: no second compilation).
    proper = jax.eval_shape(
        lambda chains: ds.model_sensitivity(models.joint_logdensity(eight, "half_normal", "noncentered"), chains,
                                            school=2)[:2], draws)
    assert set(proper[0]["tau"]) == {"y", "sigma", "case_weights", "mu_loc", "mu_scale", "tau_scale"}
    assert proper[0]["theta"]["tau_scale"].shape == (8,) and proper[1]["mu"]["mu_loc"].shape == ()
    with pytest.raises(ValueError, match="batches"):
        ds.model_sensitivity(models.marginal_logdensity(eight), draws[:, :3, :2])
    assert "draw_sensitivity" in dir(js) and js.draw_sensitivity is ds


# ---------------------------------------------------------------------------------------------------------
# The statistical layer: sampler draws against the exact gradient (slow).

# Three datasets, each under a prior whose hyperparameters matter there: the eight schools under posteriordb's
# half-Cauchy (tau_scale moves E[tau] by a third of its own size); estimates far closer than their standard
# errors under the flat prior (tau piled at 0; no hyperparameters); 60 log risk ratios under a half-normal
# prior on their own scale.
SENSITIVITY_DATASETS = {
    "eight_schools": (js.data.eight_schools, models.Prior("half_cauchy")),
    "tau_near_zero": (layer._tau_near_zero, models.Prior("flat")),
    "many_schools": (layer._many_schools, models.Prior("half_normal", mu_loc=0.0, mu_scale=1.0, tau_scale=0.3)),
}
# The two targets of the issue: the seed's random walk on the marginal (4 x 40,000 draws) and NUTS with Stan's
# warm-up on the non-centered joint (4 x 2,000), as the kernel layer runs them.
TARGETS = ("rwmh-marginal", "nuts-noncentered")
QUERY_SCHOOL = 0


def _headline(y, sigma, case_weights, prior, data, threshold):
    summary = js.exact.summary(data.replace(y=y, sigma=sigma), prior, QUERY_SCHOOL, threshold,
                               case_weights=case_weights)
    return {"mu": summary["mu"]["mean"], "tau": summary["tau"]["mean"], "theta": summary["theta"]["mean"],
            "p_exceeds": summary["p_exceeds"]}


def exact_gradient(data, prior: models.Prior, threshold: float) -> dict:
    """d/dphi of exact.summary's E[mu], E[tau], E[theta] and P(theta_1 > threshold) by jax.jacrev (itself
    checked against central differences by the exact layer's tests), as ``{quantity: {input: array}}``."""
    leaves = jax.tree_util.tree_map(lambda leaf: jnp.asarray(leaf, data.y.dtype), prior)
    jac = jax.jit(jax.jacrev(_headline, argnums=(0, 1, 2, 3)))(data.y, data.sigma, jnp.ones_like(data.y), leaves,
                                                                 data, threshold)
    out = {}
    for name, (d_y, d_sigma, d_w, d_prior) in jac.items():
        out[name] = {"y": d_y, "sigma": d_sigma, "case_weights": d_w}
        if prior.proper:
            out[name].update(mu_loc=d_prior.mu_loc, mu_scale=d_prior.mu_scale, tau_scale=d_prior.tau_scale)
    return out


class _Case:
    """One dataset: data, prior, the query's threshold (E[theta_1] + sd: a probability near 0.16, where it moves
    most), the exact gradient, and the draws of each target (made once, on first use)."""

    def __init__(self, name):
        make, self.prior = SENSITIVITY_DATASETS[name]
        self.name, self.data = name, make()
        summary = js.exact.summary(self.data, self.prior)
        self.threshold = float(summary["theta"]["mean"][QUERY_SCHOOL] + summary["theta"]["sd"][QUERY_SCHOOL])
        self.exact = exact_gradient(self.data, self.prior, self.threshold)
        self.draws = {}

    def positions(self, target_name):
        if target_name not in self.draws:
            kernel, parameterization = target_name.split("-")
            target = layer.make_target(self.name, self.data, self.prior, parameterization, layer.NUM_CHAINS)
            if kernel == "rwmh":
                self.draws[target_name] = layer._draws(layer._rwmh_seed, target)
            else:
                self.draws[target_name] = layer._draws(layer._gradient("nuts"), target,
                                                       num_samples=layer.GRADIENT_SAMPLES,
                                                       burn_in=layer.GRADIENT_WARMUP)
        return self.draws[target_name]

    def logdensity(self, target_name):
        return models.logdensity_for(self.data, self.prior, target_name.split("-")[1])


@pytest.fixture(scope="module")
def cases():
    made = {}

    def get(name):
        if name not in made:
            made[name] = _Case(name)
        return made[name]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("target_name", TARGETS)
@pytest.mark.parametrize("dataset", SENSITIVITY_DATASETS)
def test_sensitivities_match_the_exact_gradient(cases, dataset, target_name):
    case = cases(dataset)
    positions = case.positions(target_name)
    out = ds.model_sensitivity(case.logdensity(target_name), positions, school=QUERY_SCHOOL,
                               threshold=case.threshold)
    check = assert_sensitivities_match(positions, out.estimate, out.mcse, case.exact, out.num_batches,
                                       label=f"{target_name} on {dataset}")
    worst = check.worst()
    print(f"{target_name} on {dataset}: {len(check.rows)} components, max |z| {abs(worst.z):.2f} "
          f"(limit {worst.limit:.2f}, {worst.quantity}); rms z "
          f"{math.sqrt(np.mean([row.z**2 for row in check.rows])):.2f}")


# Deliberately wrong log-density derivatives. Each density has the right value, so the draws are the right ones
# (those of the correct target, reused), and only its derivative in one input is wrong: the layer must reject
# the estimates on that input's rows, and pass the others.


def _y_derivative_reversed(position, data, prior):
    """The marginal density, whose derivative in y has the wrong sign (y enters as 2 stop_gradient(y) - y)."""
    y = 2.0 * jax.lax.stop_gradient(data.y) - data.y
    return models.marginal_logdensity(data.replace(y=y), prior)(position)


def _log_variance_constant_in_sigma(position, data, prior):
    """The marginal density with -1/2 log(sigma_j^2 + tau^2) treated as a constant in sigma: its derivative in
    sigma_j misses -sigma_j / (sigma_j^2 + tau^2), a term that depends on tau (unlike -log sigma_j in a
    conditional likelihood, whose omission would change nothing)."""
    tau2 = jnp.exp(2.0 * position[1])
    frozen = jnp.log(jax.lax.stop_gradient(data.sigma) ** 2 + tau2) - jnp.log(data.sigma**2 + tau2)
    return models.marginal_logdensity(data, prior)(position) - 0.5 * jnp.sum(frozen)


@jax.tree_util.register_pytree_node_class
class _WeightsOnTheConditionalTerm(models.LogDensity):
    """The non-centered joint with case weights on the conditional term, N(y_j | theta_j, sigma_j^2)^w_j, instead
    of the marginal term: the same density at w = 1, another derivative in w (the issue's warning)."""

    __slots__ = ()

    def __call__(self, position):
        theta = position[0] + jnp.exp(position[1]) * position[2:]
        conditional = jax.scipy.stats.norm.logpdf(self.data.y, theta, self.data.sigma)
        return self.fn(position, self.data, self.prior) + jnp.sum((self.case_weights - 1.0) * conditional)


def _wrong_marginal(fn):
    return lambda data, prior: models.LogDensity(fn, data, prior, "marginal")


def _wrong_weights(data, prior):
    right = models.joint_logdensity(data, prior, "noncentered")
    return _WeightsOnTheConditionalTerm(right.fn, data, prior, "noncentered", jnp.ones_like(data.y))


# bug -> (dataset, target, density(data, prior), the input whose derivative is wrong)
WRONG_DERIVATIVES = {
    "y-derivative-reversed": ("eight_schools", "rwmh-marginal", _wrong_marginal(_y_derivative_reversed), "y"),
    "log-variance-constant-in-sigma": ("eight_schools", "rwmh-marginal",
                                       _wrong_marginal(_log_variance_constant_in_sigma), "sigma"),
    "weights-on-the-conditional-term": ("eight_schools", "nuts-noncentered", _wrong_weights, "case_weights"),
}


@pytest.mark.slow
@pytest.mark.parametrize("bug", WRONG_DERIVATIVES)
def test_a_wrong_log_density_derivative_fails(cases, bug):
    dataset, target_name, make, wrong_input = WRONG_DERIVATIVES[bug]
    case = cases(dataset)
    positions = case.positions(target_name)
    out = ds.model_sensitivity(make(case.data, case.prior), positions, school=QUERY_SCHOOL, threshold=case.threshold)
    check = check_sensitivities(positions, out.estimate, out.mcse, case.exact, out.num_batches)
    assert check.mixed, check.mixing  # the right draws: the layer must catch the derivative, not the chains
    with pytest.raises(AssertionError, match="disagree with the exact gradient"):
        assert_sensitivities_match(positions, out.estimate, out.mcse, case.exact, out.num_batches)
    assert all(f"/ d {wrong_input} [" in row.quantity for row in check.failures), check.table(check.failures)
    worst = check.worst()
    print(f"{bug}: {len(check.failures)} of {len(check.rows)} components fail, max |z| {abs(worst.z):.1f} "
          f"(limit {worst.limit:.2f}, {worst.quantity})")
    if bug == "y-derivative-reversed":
        # Power from exact values, not this run's luck: mu does not read y, so the reversed score's estimand of
        # d E[mu] / d y_j is -exact, 2 |exact| / MCSE away; the largest must be at least twice the limit.
        expected = [2 * abs(float(exact)) / float(mcse) for exact, mcse in
                    zip(case.exact["mu"]["y"], out.mcse["mu"]["y"])]
        assert max(expected) >= 2 * worst.limit, expected
