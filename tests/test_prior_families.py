"""Every tau prior family (jaxschools.core.prior_families, tau_priors): its density against scipy's, and the exact
posterior under it against an independent quadrature written here (scipy.integrate.quad over tau of the closed-form
mu integral, numpy only), to 1e-8: the means and sds of mu and tau, and the log evidence of the proper priors. The
fewest studies for a proper posterior follow from each family's tail (checked against the integrals' divergence in
test_moments)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from jaxschools.core import exact, moments, prior_families
from jaxschools.core.data import Schools
from jaxschools.core.models import Prior

EIGHT_Y = np.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
EIGHT_SIGMA = np.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])
MU_LOC, MU_SCALE = 2.0, 20.0


def _s0_squared(sigma, typical=False):
    w = sigma**-2.0
    if typical:
        return (len(sigma) - 1) * w.sum() / (w.sum() ** 2 - (w**2).sum())
    return len(sigma) / w.sum()


def oracle_log_prior(tau_prior, scale, shape, sigma):
    """log p(tau) written from each family's definition with scipy.stats where it has the distribution."""
    if tau_prior == "uniform":
        return lambda t: 0.0
    if tau_prior == "sqrt":
        return lambda t: -0.5 * math.log(t)
    if tau_prior == "uniform_bounded":
        return lambda t: stats.uniform(0, scale).logpdf(t)
    if tau_prior == "half_normal":
        return lambda t: stats.halfnorm(scale=scale).logpdf(t)
    if tau_prior == "half_cauchy":
        return lambda t: stats.halfcauchy(scale=scale).logpdf(t)
    if tau_prior == "half_student_t":
        return lambda t: math.log(2.0) + stats.t(shape, scale=scale).logpdf(t)
    if tau_prior == "exponential":
        return lambda t: stats.expon(scale=scale).logpdf(t)
    if tau_prior == "lognormal":  # tau^2 ~ LogNormal(2 log s, c): density of tau = 2 tau f(tau^2)
        return lambda t: math.log(2 * t) + stats.lognorm(shape, scale=scale**2).logpdf(t * t)
    if tau_prior == "log_t5":  # log tau^2 = 2 log s + c T, T ~ t_5
        return lambda t: math.log(2 / t) + stats.t(5, loc=2 * math.log(scale), scale=shape).logpdf(math.log(t * t))
    if tau_prior == "lomax":
        return lambda t: stats.lomax(shape, scale=scale).logpdf(t)
    if tau_prior == "jeffreys":
        return lambda t: 0.5 * math.log(np.sum((t / (sigma**2 + t * t)) ** 2))
    if tau_prior == "dumouchel":
        s0 = math.sqrt(_s0_squared(sigma))
        return lambda t: math.log(s0 / (s0 + t) ** 2)
    if tau_prior in ("uniform_shrinkage", "uniform_i2"):
        s2 = _s0_squared(sigma, typical=tau_prior == "uniform_i2")
        return lambda t: math.log(2 * s2 * t / (s2 + t * t) ** 2)
    raise AssertionError(tau_prior)


def oracle(y, sigma, mu_prior, log_prior, upper=np.inf):
    """E[mu], sd(mu), E[tau], sd(tau), log Z by quad over tau of the mu integral in closed form."""
    def given_tau(t):
        v = sigma**2 + t * t
        prec = 1.0 / v
        if mu_prior == "normal":
            prec_all, y_all = np.append(prec, MU_SCALE**-2.0), np.append(y, MU_LOC)
        else:
            prec_all, y_all = prec, y
        total = prec_all.sum()
        mu_hat = (prec_all * y_all).sum() / total
        log_lik = -0.5 * np.sum(np.log(2 * np.pi * v) + (y - mu_hat) ** 2 / v)
        log_mu_prior = stats.norm(MU_LOC, MU_SCALE).logpdf(mu_hat) if mu_prior == "normal" else 0.0
        log_h = log_lik + log_mu_prior + 0.5 * np.log(2 * np.pi / total) + log_prior(t)
        return log_h, mu_hat, 1.0 / total

    peak = max(given_tau(t)[0] for t in np.geomspace(1e-3, 1e3, 61) if t < upper)

    def integrand(x):  # over x = log tau (d tau = tau dx), where every family's density is smooth
        t = math.exp(x)
        log_h, m, v = given_tau(t)
        return math.exp(log_h - peak + x) * np.array([1.0, m, v + m * m, t, t * t])

    # All five integrals in one adaptive pass (scipy's quad_vec) over log tau from -200 (the log-t_5's lower tail
    # below holds less than 1e-20 of the mass) to log 1e8 (or the bound), split at the data's scales. The
    # integrand is scaled to a peak of 1, so the absolute tolerance is a relative one on the integrals.
    top = math.log(min(upper, 1e8))
    edges = [-200.0, -20.0, *[x for x in (-5.0, 0.0, 2.0, 3.5) if x < top], top]
    total = sum(integrate.quad_vec(integrand, a, b, epsabs=1e-13, epsrel=1e-12, limit=400)[0]
                for a, b in zip(edges, edges[1:]))
    z, e_mu, e_mu2, e_tau, e_tau2 = total[0], *(total[1:] / total[0])
    return {"mu_mean": e_mu, "mu_sd": math.sqrt(e_mu2 - e_mu**2), "tau_mean": e_tau,
            "tau_sd": math.sqrt(e_tau2 - e_tau**2), "log_z": peak + math.log(z)}


# (mu prior, tau family, tau_scale, tau_shape): every family, on the eight schools.
CASES = [
    ("flat", "uniform", 1.0, None), ("normal", "uniform_bounded", 30.0, None), ("normal", "half_normal", 5.0, None),
    ("normal", "half_cauchy", 5.0, None), ("normal", "half_student_t", 5.0, 3.0), ("normal", "exponential", 8.0, None),
    ("normal", "lognormal", 6.0, 1.5), ("normal", "log_t5", 6.0, 1.2), ("normal", "lomax", 5.0, 1.5),
    ("flat", "sqrt", 1.0, None), ("flat", "jeffreys", 1.0, None), ("normal", "dumouchel", 1.0, None),
    ("normal", "uniform_shrinkage", 1.0, None), ("normal", "uniform_i2", 1.0, None),
]
IDS = [f"{mu}+{tau}" for mu, tau, _, _ in CASES]


@pytest.fixture(scope="module")
def eight():
    return Schools(jnp.asarray(EIGHT_Y), jnp.asarray(EIGHT_SIGMA))


def _summary(post):
    w = np.exp(np.asarray(post.log_weights))
    tau = np.exp(np.asarray(post.log_tau))
    mu_hat, mu_var = np.asarray(post.mu_hat), np.asarray(post.mu_var)
    e_mu, e_tau = np.sum(w * mu_hat), np.sum(w * tau)
    return {"mu_mean": e_mu, "mu_sd": math.sqrt(np.sum(w * (mu_var + mu_hat**2)) - e_mu**2), "tau_mean": e_tau,
            "tau_sd": math.sqrt(np.sum(w * tau**2) - e_tau**2), "log_z": float(post.log_norm)}


@pytest.mark.parametrize("mu_prior, tau_prior, scale, shape", CASES, ids=IDS)
def test_exact_posterior_equals_an_independent_quadrature(eight, mu_prior, tau_prior, scale, shape):
    prior = Prior.pair(mu_prior, tau_prior, mu_loc=MU_LOC, mu_scale=MU_SCALE, tau_scale=scale, tau_shape=shape)
    post = exact.posterior(eight, prior)
    got = _summary(post)
    upper = scale if tau_prior == "uniform_bounded" else np.inf
    expected = oracle(EIGHT_Y, EIGHT_SIGMA, mu_prior, oracle_log_prior(tau_prior, scale, shape, EIGHT_SIGMA), upper)
    for key in ("mu_mean", "mu_sd", "tau_mean", "tau_sd"):
        assert got[key] == pytest.approx(expected[key], rel=1e-8), key
    # log Z is p(y) for a proper prior, and the same integral up to the improper prior's arbitrary constant else.
    assert got["log_z"] == pytest.approx(expected["log_z"], abs=1e-8)
    assert np.isnan(float(post.log_evidence)) != prior.proper
    assert float(post.error) < 1e-8


@pytest.mark.parametrize("mu_prior, tau_prior, scale, shape", CASES, ids=IDS)
def test_each_density_is_the_definitions(mu_prior, tau_prior, scale, shape):
    """log p(mu, tau) at a few points against the oracle's (with the normal mu prior's term)."""
    prior = Prior.pair(mu_prior, tau_prior, mu_loc=MU_LOC, mu_scale=MU_SCALE, tau_scale=scale, tau_shape=shape)
    data = Schools(jnp.asarray(EIGHT_Y), jnp.asarray(EIGHT_SIGMA))
    log_prior = oracle_log_prior(tau_prior, scale, shape, EIGHT_SIGMA)
    taus = np.array([0.01, 0.7, 3.0, 11.0, 29.0, 300.0])
    got = np.asarray(prior.log_prob(jnp.full(taus.shape, 1.5), jnp.log(jnp.asarray(taus)), data))
    mu_term = stats.norm(MU_LOC, MU_SCALE).logpdf(1.5) if mu_prior == "normal" else 0.0
    expected = np.array([log_prior(t) for t in taus]) + mu_term
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_proper_families_integrate_to_one():
    """Each proper family's density of tau (the flat mu prior, so only the tau term) integrates to 1 by quad."""
    for name, family in prior_families.FAMILIES.items():
        if not family.proper:
            continue
        prior = Prior.pair("flat", name, tau_scale=3.0, tau_shape=2.0 if family.shape else None)
        data = Schools(jnp.asarray(EIGHT_Y), jnp.asarray(EIGHT_SIGMA))
        density = lambda t: math.exp(float(prior.log_prob(0.0, math.log(t), data)))  # noqa: E731
        edges = (0.0, 3.0, 30.0, np.inf)
        mass = sum(integrate.quad(density, a, b, limit=400, epsabs=0, epsrel=1e-11)[0]
                   for a, b in zip(edges, edges[1:]))
        assert mass == pytest.approx(1.0, rel=1e-7), name


@pytest.mark.parametrize("kind, fewest", [
    ("flat", 3), ("flat+sqrt", 2), ("flat+jeffreys", 2), ("normal+uniform", 2), ("normal+sqrt", 1),
    ("flat+half_cauchy", 1), ("normal+half_student_t:3", 0), ("normal+log_t5:2", 0),
])
def test_the_fewest_studies_for_a_proper_posterior_follow_from_the_tail(kind, fewest):
    """p(tau | y) ~ p(tau) tau^-(J - 1) (flat mu) or tau^-J (normal mu): proper iff a + J (- 1) > 1."""
    assert moments.min_schools(kind, "tau", 0) == fewest


def test_a_users_log_density_runs_through_the_exact_posterior(eight):
    """Prior.custom: a half-normal(5) written by hand gives the built-in half-normal's posterior."""
    custom = Prior.custom(lambda tau: math.log(2.0) + jax.scipy.stats.norm.logpdf(tau, 0.0, 5.0), mu_loc=MU_LOC,
                          mu_scale=MU_SCALE, tail_exponent=math.inf)
    built_in = Prior.pair("normal", "half_normal", mu_loc=MU_LOC, mu_scale=MU_SCALE, tau_scale=5.0)
    a, b = _summary(exact.posterior(eight, custom)), _summary(exact.posterior(eight, built_in))
    for key in a:
        assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-9), key
    assert moments.min_schools(custom, "tau", 2) == 0


def test_sigma_dependent_priors_follow_the_data(eight):
    """The uniform shrinkage prior's s0 is recomputed from the studies in the likelihood (the mask), and
    d log p / d sigma is the oracle's."""
    prior = Prior.pair("normal", "uniform_shrinkage")
    masked = eight.replace(mask=jnp.arange(8) != 0)
    got = float(prior.log_prob(0.0, jnp.log(4.0), masked))
    assert got == pytest.approx(oracle_log_prior("uniform_shrinkage", 1, None, EIGHT_SIGMA[1:])(4.0)
                                + stats.norm(0, 5).logpdf(0.0), rel=1e-12)
    grad = jax.grad(lambda s: prior.log_prob(0.0, jnp.log(4.0), eight.replace(sigma=s)))(eight.sigma)
    step = 1e-6
    fd = [(oracle_log_prior("uniform_shrinkage", 1, None, EIGHT_SIGMA + step * np.eye(8)[j])(4.0)
           - oracle_log_prior("uniform_shrinkage", 1, None, EIGHT_SIGMA - step * np.eye(8)[j])(4.0)) / (2 * step)
          for j in range(8)]
    np.testing.assert_allclose(np.asarray(grad), fd, rtol=1e-6)


def test_bad_shapes_and_names_are_refused():
    with pytest.raises(ValueError, match="tau_shape"):
        Prior.pair("normal", "lomax")
    with pytest.raises(ValueError, match="unknown tau prior 'gamma'"):
        Prior.pair("normal", "gamma")
    with pytest.raises(ValueError, match="unknown mu prior"):
        Prior.pair("cauchy", "half_normal")


PROPER = [(case, name) for case, name in zip(CASES, IDS)
          if prior_families.spec(prior_families.kind_of(case[0], case[1], case[3])).joint_proper]


@pytest.mark.slow  # one compilation of the draws per family
@pytest.mark.parametrize("mu_prior, tau_prior, scale, shape", [c for c, _ in PROPER], ids=[i for _, i in PROPER])
def test_draws_from_each_proper_family_follow_its_density(eight, mu_prior, tau_prior, scale, shape):
    """models.sample_prior's tau: at the draws' deciles, the oracle CDF (scipy quad of the density written from the
    family's definition) is within 4.5 binomial sds of the decile's probability."""
    from jaxschools.core import models

    prior = Prior.pair(mu_prior, tau_prior, mu_loc=MU_LOC, mu_scale=MU_SCALE, tau_scale=scale, tau_shape=shape)
    n = 20_000
    mu, tau = models.sample_prior(jax.random.key(5), prior, (n,), jnp.float64, data=eight)
    tau = np.asarray(tau)
    assert np.all(tau >= 0) and np.all(np.isfinite(tau))
    assert abs(np.mean(mu) - MU_LOC) < 4.5 * MU_SCALE / math.sqrt(n)
    log_prior = oracle_log_prior(tau_prior, scale, shape, EIGHT_SIGMA)
    for p in np.arange(1, 10) / 10:
        t = float(np.quantile(tau, p))
        # In log tau (the density is smooth there): F(t) = integral up to log t of p(tau) tau d log tau.
        cdf = integrate.quad(lambda x: math.exp(log_prior(math.exp(x)) + x), -200.0, math.log(t), limit=400,
                             epsabs=1e-12, epsrel=1e-10, points=[math.log(t) - 5.0])[0]
        assert abs(cdf - p) < 4.5 * math.sqrt(p * (1 - p) / n), (p, cdf)
