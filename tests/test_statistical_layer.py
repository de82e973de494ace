r"""Every kernel against the exact posterior, through the statistical layer of ``tests/statistical.py``.

Three targets, each with its exact reference (one quadrature per dataset, compiled once per shape):

* ``eight_schools``: BDA3 section 5.5 with the seed's flat prior;
* ``tau_near_zero``: eight schools whose estimates differ far less than their standard errors (chi^2 = 0.04
  on 7 df), on the scale of test scores (y ~ 510, sigma 30-60): p(tau | y) is largest at tau = 0 and the
  posterior of log tau has a long exponential left tail (its density falls like tau as tau -> 0). Flat
  prior: the posterior is proper for J >= 3, and the marginal has no trouble at small tau;
* ``many_schools``: J = 60 log risk ratios (sigma 0.05-0.4, true tau 0.15) under the half-Cauchy prior
  (tau ~ HalfCauchy(0, 5), mu ~ N(0, 5)): another scale, and a posterior of log tau three times narrower.

**Adding a kernel.** Append a :class:`KernelCase` to :data:`CASES` (see its docstring); the parametrised
:func:`test_kernel_matches_exact` then runs it on each of its ``datasets``. Its ``build(target)`` gets a
:class:`Target` and returns a ``SamplingAlgorithm`` (or ``(algorithm, extra sampling.run keywords)``, e.g.
``{"adaptation": ...}``). A combination that is known to be biased (the centered joint with HMC, whose
funnel keeps it from small tau) is added with ``known_bias="why"``: it is then an expected failure
(``xfail(strict=True)``), so it fails the suite the day it stops failing the layer.

**Teeth.** Two subtly broken kernels (:data:`BROKEN`) must fail the layer, on the bias stages and not on
mixing: random-walk Metropolis on a log-density whose Jacobian term is 0.9 log tau instead of log tau, and a
drifted random walk whose Hastings correction is left out. Each is exact Metropolis for a known tilted
density p(x) exp(g . x), so its bias follows from the exact posterior, and the test checks the power as well as
the failure: the expected z of the most affected comparison (exact bias / this run's MCSE) is at least twice
its limit, so the failure is not this key's luck.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from oracle import eight_schools_oracle
from statistical import assert_matches_exact, check_against_exact, exact_reference
from test_prior_families import CASES as PRIOR_CASES, MU_LOC, MU_SCALE

import jaxschools as js
from jaxschools.core import exact, laplace, models, posterior, sampling
from jaxschools.core.adaptation import window_adaptation
from jaxschools.core.kernels.base import SamplingAlgorithm, metropolis_accept
from jaxschools.core.kernels.hmc import hmc
from jaxschools.core.kernels.nuts import nuts
from jaxschools.core.kernels.rwmh import RWMHInfo, RWMHState, rwmh

# One chain shape for every case: the diagnostics and the driver compile once per shape and are reused.
# 4 x 40,000 random-walk draws give a mean-ESS of log tau near 5,000 on the eight schools: the Jacobian bug's
# bias is then expected at 11 MCSE, twice the limit, while a correct kernel's z stay N(0, 1). The steps are
# cheap (the whole run takes a fraction of a second); compilation dominates the time.
NUM_CHAINS, NUM_SAMPLES, BURN_IN = 4, 40_000, 1_000
# HMC and NUTS: Stan's 1,000 warm-up steps of window adaptation (75 fast, slow windows 25 ... 500, 50 fast),
# then 2,000 kept draws a chain (see CASES).
GRADIENT_SAMPLES, GRADIENT_WARMUP = 2_000, 1_000
SEED = 20240611


# ---------------------------------------------------------------------------------------------------------
# Targets.


def _many_schools() -> js.data.Schools:
    """60 log risk ratios: theta_j ~ N(-0.1, 0.15^2), y_j ~ N(theta_j, sigma_j^2), sigma_j ~ U(0.05, 0.4)."""
    rng = np.random.default_rng(SEED)  # fixed data, not Monte Carlo: the same 60 values every run
    num = 60
    sigma = np.round(rng.uniform(0.05, 0.4, num), 3)
    theta = -0.1 + 0.15 * rng.standard_normal(num)
    y = np.round(theta + sigma * rng.standard_normal(num), 3)
    return js.data.Schools(y=jnp.asarray(y), sigma=jnp.asarray(sigma), names=[f"trial {j + 1}" for j in range(num)])


def _tau_near_zero() -> js.data.Schools:
    return js.data.Schools(
        y=jnp.array([512.0, 509.0, 515.0, 508.0, 511.0, 514.0, 507.0, 510.0]),
        sigma=jnp.array([40.0, 55.0, 35.0, 45.0, 38.0, 60.0, 30.0, 42.0]),
    )


# name -> (dataset factory, prior)
DATASETS = {
    "eight_schools": (js.data.eight_schools, "flat"),
    "tau_near_zero": (_tau_near_zero, "flat"),
    "many_schools": (_many_schools, "half_cauchy"),
}


class Target(NamedTuple):
    """What a kernel factory gets: the dataset, prior, the log-density of the case's parameterization, the
    Laplace fit of the *marginal* (mode and covariance of (mu, log tau)), and overdispersed starting points
    (num_chains, dim) for that parameterization (joint ones: theta or eta drawn given the start's (mu, tau))."""

    name: str
    data: js.data.Schools
    prior: models.Prior
    logdensity: models.LogDensity
    fit: laplace.LaplaceFit
    initial_positions: jax.Array


class KernelCase(NamedTuple):
    """One kernel on the targets it is meant for.

    ``build(target) -> algorithm`` or ``(algorithm, run_kwargs)``: any BlackJAX-style ``SamplingAlgorithm``;
    ``run_kwargs`` go to :func:`jaxschools.core.sampling.run` (e.g. ``{"adaptation": window_adaptation(...)}``).
    ``parameterization``: ``marginal`` | ``centered`` | ``noncentered``: the density the kernel samples
    (its positions start with (mu, log tau), which is what the layer checks). ``datasets``: keys of
    :data:`DATASETS`. ``known_bias``: empty, or why this combination is expected to fail the layer.
    Chain lengths default to the shared shape; a kernel with larger ESS per draw may use fewer.
    """

    name: str
    build: Callable[[Target], Any]
    parameterization: str = "marginal"
    datasets: tuple = tuple(DATASETS)
    known_bias: str = ""
    num_chains: int = NUM_CHAINS
    num_samples: int = NUM_SAMPLES
    burn_in: int = BURN_IN


def _rwmh_seed(target: Target):
    """The seed's kernel: random-walk Metropolis with N(x, 2^2 cov_Laplace) proposals."""
    return rwmh(target.logdensity, target.fit.cov, 2.0)


# HMC's trajectory as the analysis configures it (configs/default.toml: sampler.num_steps, sampler.jitter):
# a jittered length, so no fixed trajectory resonates with the target.
HMC_STEPS, HMC_JITTER = 8, 0.5


def _gradient(kind: str):
    """``build(target)`` for NUTS or HMC with Stan-style warm-up (``window_adaptation``, initial step size 1):
    the metric (inverse mass matrix diagonal) starts from the Laplace variances on the 2-d marginal and from
    ones on a joint target, which has no mode to fit (as ``analysis.sample_chains`` does)."""

    def build(target: Target):
        dim = target.initial_positions.shape[-1]
        dtype = target.initial_positions.dtype
        metric = jnp.diag(target.fit.cov) if dim == 2 else jnp.ones(dim, dtype)
        if kind == "nuts":
            algorithm = nuts(target.logdensity, 1.0, metric)
        else:
            algorithm = hmc(target.logdensity, 1.0, metric, HMC_STEPS, HMC_JITTER)
        return algorithm, {"adaptation": window_adaptation(1.0, metric)}

    return build


# The centered joint's funnel: where the data leave tau near zero plausible, the chains cannot enter the neck
# (tens to hundreds of divergences per chain), so they never or seldom reach the exact posterior's lowest
# 5% of log tau, and their R-hat and ESS of log tau fail as well. Not run on the 60 schools: there tau is
# well away from zero and the centered form is the natural one (it passes the layer given 8,000 draws a
# chain, and is only short of mixing at 2,000).
FUNNEL = ("centered funnel: divergences keep the chains out of its neck, so they under-visit small tau "
          "(and R-hat / ESS of log tau fail)")

# The hook: every kernel of the project, on the targets it is meant for. HMC and NUTS draw 2,000 a chain
# after 1,000 warm-up steps: their ESS of (mu, log tau) is then 1,000 to 10,000 on every target (over
# eight keys, the lowest was 1,057), far above the layer's 400, and their z spread like N(0, 1).
CASES: list[KernelCase] = [
    KernelCase("rwmh", _rwmh_seed),
    # NUTS on every target; HMC, which shares NUTS's integrator and warm-up, on the eight schools only, and the
    # funnel's expected failure on the eight schools only: the suite must stay under 10 minutes on two cores.
    *[KernelCase(f"{kind}-{parameterization}", _gradient(kind), parameterization, num_samples=GRADIENT_SAMPLES,
                 burn_in=GRADIENT_WARMUP, datasets=tuple(DATASETS) if kind == "nuts" else ("eight_schools",))
      for kind in ("nuts", "hmc") for parameterization in ("marginal", "noncentered")],
    *[KernelCase(f"{kind}-centered", _gradient(kind), "centered", datasets=("eight_schools",),
                 known_bias=FUNNEL, num_samples=GRADIENT_SAMPLES, burn_in=GRADIENT_WARMUP)
      for kind in ("nuts", "hmc")],
]


# ---------------------------------------------------------------------------------------------------------
# Subtly broken kernels: each is correct Metropolis for a slightly wrong, exactly known density.


def _jacobian_09(position, logdensity):
    # The bug: log p(y | mu, tau) + log p(mu, tau) + 0.9 log tau, i.e. the correct density times tau^-0.1.
    return logdensity(position) - 0.1 * position[1]


def _rwmh_jacobian_09(target: Target):
    return rwmh(jax.tree_util.Partial(_jacobian_09, logdensity=target.logdensity), target.fit.cov, 2.0)


def _drifted_step(rng_key, state, logdensity_fn, scale_tril, drift):
    r"""Proposal x' = x + d + L z (L L^T = Sigma), accepted with min(1, p(x') / p(x)): the Hastings term
    log q(x | x') - log q(x' | x) = -2 d^T Sigma^-1 (x' - x) is left out. Metropolis with that acceptance
    is exactly correct for p~(x) = p(x) exp(2 d^T Sigma^-1 x) (then p~(x') q(x | x') / (p~(x) q(x' | x))
    = p(x') / p(x)), so the chain converges, and mixes, to that tilted density."""
    key_proposal, key_accept = jax.random.split(rng_key)
    noise = jax.random.normal(key_proposal, state.position.shape, dtype=state.position.dtype)
    proposal = state.position + drift + scale_tril @ noise
    proposal_logdensity = logdensity_fn(proposal)
    new_state, accepted, rate = metropolis_accept(key_accept, proposal_logdensity - state.logdensity, state,
                                                  RWMHState(proposal, proposal_logdensity))
    return new_state, RWMHInfo(rate, accepted, proposal)


# The bugs' tilts exp(g . x) of the target: each moves some posterior mean by about 0.1 posterior sd.
JACOBIAN_TILT = (0.0, -0.1)  # density times tau^-0.1
DRIFT_TILT = 0.1


def _drift_tilt(target: Target):
    """g with d = Sigma g / 2, Sigma = 2^2 cov_Laplace, so the chain samples p(x) exp(g . x).

    Along mu where the prior on mu is proper: exp(c mu) p is then integrable (Var(mu | tau, y) <= mu_scale^2),
    and c = 0.1 / sd_Laplace(mu) shifts E[mu] by about 0.1 sd. Under the flat prior Var(mu | tau, y) grows
    like tau^2 / J, so exp(c mu) p is not integrable; there the drift goes along log tau (p tau^0.1). Either
    way each step drifts by about a tenth of the proposal's sd (0.2 of 2 Laplace sd along mu; 0.15 of 2 along
    log tau for the eight schools)."""
    if target.prior.proper:
        return (DRIFT_TILT / float(jnp.sqrt(target.fit.cov[0, 0])), 0.0)
    return (0.0, DRIFT_TILT)


def _rwmh_drift_no_hastings(target: Target):
    base = rwmh(target.logdensity, target.fit.cov, 2.0)
    sigma = 4.0 * target.fit.cov
    drift = 0.5 * sigma @ jnp.asarray(_drift_tilt(target), sigma.dtype)
    step = jax.tree_util.Partial(_drifted_step, logdensity_fn=target.logdensity,
                                 scale_tril=2.0 * jnp.linalg.cholesky(target.fit.cov), drift=drift)
    return SamplingAlgorithm(base.init, step)


class BrokenCase(NamedTuple):
    """A kernel that is exact Metropolis for p(x) exp(g . x) instead of p(x): ``tilt(target) -> g``."""

    name: str
    build: Callable[[Target], Any]
    tilt: Callable[[Target], tuple]
    datasets: tuple


# The teeth: each must fail the layer wherever it runs. The Jacobian bug is not run on the 60 schools: there
# the posterior of log tau is so narrow (sd 0.3) that tau^-0.1 moves it by 0.03 sd, which nothing should flag.
BROKEN = [
    BrokenCase("rwmh-jacobian-0.9", _rwmh_jacobian_09, lambda target: JACOBIAN_TILT,
               ("eight_schools", "tau_near_zero")),
    BrokenCase("rwmh-drift-no-hastings", _rwmh_drift_no_hastings, _drift_tilt,
               ("eight_schools", "tau_near_zero", "many_schools")),
]


def _tilted_expectations(target: Target, tilt, reference) -> dict:
    """What a chain on p(x) exp(g . x) converges to, by quadrature on a fine grid of log tau: the means of mu
    and log tau and P(log tau <= q_k) at the layer's points, keyed by the layer's row names.

    Given tau, mu ~ N(m, V) (BDA3 eqs. 5.20-5.21; the N(mu_loc, mu_scale^2) prior is one more observation),
    so exp(g_mu mu) tilts it to N(m + g_mu V, V) and multiplies the weight of tau by exp(g_mu m + g_mu^2 V / 2).
    """
    g_mu, g_tau = tilt
    data, prior = target.data, target.prior
    bounds = np.asarray(exact.posterior(data, prior).bounds, float)
    x = np.linspace(bounds[0], bounds[1], 40_001)
    log_p = np.asarray(exact.log_tau_logdensity(data, prior, jnp.asarray(x)), float)
    y, sigma = np.asarray(data.y, float), np.asarray(data.sigma, float)
    w = 1.0 / (sigma[None] ** 2 + np.exp(2 * x)[:, None])
    precision, weighted = w.sum(1), (w * y).sum(1)
    if prior.proper:
        precision = precision + 1.0 / float(prior.mu_scale) ** 2
        weighted = weighted + float(prior.mu_loc) / float(prior.mu_scale) ** 2
    m, v = weighted / precision, 1.0 / precision
    log_q = log_p + g_tau * x + g_mu * m + 0.5 * g_mu**2 * v
    q = np.exp(log_q - log_q.max())
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (q[1:] + q[:-1]) * np.diff(x))])
    q, cdf = q / cdf[-1], cdf / cdf[-1]
    out = {"mean of mu": np.trapezoid(q * (m + g_mu * v), x), "mean of log tau": np.trapezoid(q * x, x)}
    for p, point in zip(reference.cdf_probs, reference.cdf_points):
        out[f"P(log tau <= {point:.4g}) [exact q{p:.3f}]"] = np.interp(point, x, cdf)
    return out


# ---------------------------------------------------------------------------------------------------------
# Shared, module-scoped work: one exact reference and one Laplace fit per dataset.


class _Store:
    def __init__(self):
        self.references, self.targets = {}, {}

    def reference(self, dataset):
        if dataset not in self.references:
            make, prior = DATASETS[dataset]
            self.references[dataset] = exact_reference(make(), prior)
        return self.references[dataset]

    def target(self, dataset, parameterization, num_chains):
        key = (dataset, parameterization, num_chains)
        if key not in self.targets:
            make, prior_name = DATASETS[dataset]
            self.targets[key] = make_target(dataset, make(), models.make_prior(prior_name), parameterization,
                                            num_chains)
        return self.targets[key]


def make_target(name: str, data, prior: models.Prior, parameterization: str, num_chains: int) -> Target:
    """The :class:`Target` of ``data`` under ``prior`` on a parameterization (also used by
    ``tests/test_draw_sensitivity.py``): the marginal's Laplace fit and overdispersed starts from it."""
    marginal = models.marginal_logdensity(data, prior)
    fit = laplace.fit(marginal, laplace.default_init(data))
    assert bool(fit.converged), name
    start_key, theta_key = jax.random.split(jax.random.fold_in(jax.random.key(SEED), 1))
    starts = sampling.overdispersed_positions(start_key, fit.mode, fit.cov, num_chains, 2.0)
    if parameterization != "marginal":
        theta = posterior.theta_draws(theta_key, starts, data)
        extra = theta if parameterization == "centered" else (theta - starts[:, :1]) / jnp.exp(starts[:, 1:2])
        starts = jnp.concatenate([starts, extra], axis=1)
    logdensity = models.logdensity_for(data, prior, parameterization)
    return Target(name, data, prior, logdensity, fit, starts)


@pytest.fixture(scope="module")
def store():
    return _Store()


def _draws(build, target: Target, *, num_chains=NUM_CHAINS, num_samples=NUM_SAMPLES, burn_in=BURN_IN):
    built = build(target)
    # A SamplingAlgorithm is itself a (NamedTuple) pair, so tell the two returns apart by the protocol.
    algorithm, run_kwargs = (built, {}) if hasattr(built, "step") else built
    # One fixed key for every case: results are reproducible, and tolerances come from the MCSEs, not the key.
    samples = sampling.run(jax.random.key(SEED), algorithm, target.initial_positions, num_samples=num_samples,
                           num_chains=num_chains, burn_in=burn_in, **run_kwargs)
    return samples.positions


# The README's suite runs one case of each kernel family and one broken kernel (the teeth) on the eight
# schools; the rest of the matrix (the other targets and parameterizations, HMC, the funnel's expected failure)
# is marked slow, which .ci/run runs after it, so every combination still gates CI.
DEFAULT_SUITE = {("rwmh", "eight_schools"), ("nuts-noncentered", "eight_schools"),
                 ("rwmh-jacobian-0.9", "eight_schools")}


def _speed_marks(name: str, dataset: str) -> list:
    return [] if (name, dataset) in DEFAULT_SUITE else [pytest.mark.slow]


def _case_params():
    params = []
    for case in CASES:
        for dataset in case.datasets:
            marks = [pytest.mark.xfail(strict=True, raises=AssertionError, reason=case.known_bias)] \
                if case.known_bias else []
            marks += _speed_marks(case.name, dataset)
            params.append(pytest.param(case, dataset, id=f"{case.name}-{dataset}", marks=marks))
    return params


# ---------------------------------------------------------------------------------------------------------
# Tests.


@pytest.mark.parametrize("case, dataset", _case_params())
def test_kernel_matches_exact(store, case: KernelCase, dataset: str):
    target = store.target(dataset, case.parameterization, case.num_chains)
    positions = _draws(case.build, target, num_chains=case.num_chains, num_samples=case.num_samples,
                       burn_in=case.burn_in)
    assert_matches_exact(positions, store.reference(dataset), label=f"{case.name} on {dataset}")


@pytest.mark.parametrize("broken, dataset",
                         [pytest.param(b, d, id=f"{b.name}-{d}", marks=_speed_marks(b.name, d))
                          for b in BROKEN for d in b.datasets])
def test_broken_kernel_fails(store, broken: BrokenCase, dataset: str):
    target = store.target(dataset, "marginal", NUM_CHAINS)
    positions = _draws(broken.build, target)
    check = check_against_exact(positions, store.reference(dataset))
    # It mixes (to the wrong density), so the layer must catch it on the bias, not on convergence.
    assert check.mixed, check.mixing
    with pytest.raises(AssertionError, match="disagrees with the exact posterior"):
        assert_matches_exact(positions, store.reference(dataset))
    # Power, from the exact tilted density rather than from this run's luck: the expected z of the most
    # affected comparison (its exact bias over this run's MCSE) is at least twice its limit, so a pass would
    # take a 5-sigma fluctuation in the sampler's favour.
    expected = _tilted_expectations(target, broken.tilt(target), store.reference(dataset))
    margins = {r.quantity: abs(expected[r.quantity] - r.exact) / r.mcse / r.limit for r in check.rows
               if r.quantity in expected}
    assert max(margins.values()) >= 2, margins


def test_a_chain_that_has_not_mixed_fails_on_mixing(store):
    """Proposals 100 times too small from overdispersed starts: R-hat far above 1.01. The layer must say
    so, rather than compare means with MCSEs that a stuck chain makes meaningless."""
    target = store.target("eight_schools", "marginal", NUM_CHAINS)
    positions = _draws(lambda t: rwmh(t.logdensity, t.fit.cov, 0.02), target)
    with pytest.raises(AssertionError, match="chains have not mixed"):
        assert_matches_exact(positions, store.reference("eight_schools"))


def test_reference_quantiles_match_the_scipy_oracle(store):
    """The layer's 20 exact quantiles of log tau (and its means), against scipy's adaptive quadrature."""
    reference = store.reference("eight_schools")
    oracle = eight_schools_oracle("flat")
    cdf = np.array([oracle.log_tau_cdf(q) for q in reference.cdf_points])
    np.testing.assert_allclose(cdf, reference.cdf_probs, atol=1e-9)
    np.testing.assert_allclose(reference.mean["log_tau"], oracle.expect(lambda l: l), rtol=1e-9)
    np.testing.assert_allclose(reference.mean["mu"], oracle.mu_mean(), rtol=1e-9)


# Every tau prior family (tests/test_prior_families.py checks their exact posteriors against scipy): the random walk
# on the marginal and NUTS on the non-centered joint, and HMC on three of them, against each family's exact
# posterior. The bounded uniform is for the random walk only (its density has no gradient across the bound; the
# config refuses hmc and nuts with it). Slow: one compilation of each kernel per family.
_FAMILY_KERNELS = {"rwmh": (_rwmh_seed, "marginal", NUM_SAMPLES, BURN_IN),
                   "nuts-noncentered": (_gradient("nuts"), "noncentered", GRADIENT_SAMPLES, GRADIENT_WARMUP),
                   "hmc-marginal": (_gradient("hmc"), "marginal", GRADIENT_SAMPLES, GRADIENT_WARMUP)}


def _family_params():
    params = []
    for mu, tau, scale, shape in PRIOR_CASES:  # test_prior_families.py's: both layers check the same priors
        for kernel in _FAMILY_KERNELS:
            if kernel != "rwmh" and tau == "uniform_bounded":
                continue
            if kernel == "hmc-marginal" and tau not in ("lomax", "jeffreys", "log_t5"):
                continue
            params.append(pytest.param(mu, tau, scale, shape, kernel, id=f"{kernel}-{mu}+{tau}",
                                       marks=[pytest.mark.slow]))
    return params


@pytest.mark.parametrize("mu_prior, tau_prior, scale, shape, kernel", _family_params())
def test_every_prior_family_through_the_kernels(mu_prior, tau_prior, scale, shape, kernel):
    prior = models.Prior.pair(mu_prior, tau_prior, mu_loc=MU_LOC, mu_scale=MU_SCALE, tau_scale=scale, tau_shape=shape)
    build, parameterization, num_samples, burn_in = _FAMILY_KERNELS[kernel]
    target = make_target(f"eight_schools, {prior.kind}", js.data.eight_schools(), prior, parameterization,
                         NUM_CHAINS)
    positions = _draws(build, target, num_samples=num_samples, burn_in=burn_in)
    assert_matches_exact(positions, exact_reference(target.data, prior), label=f"{kernel} under {prior.kind}")
