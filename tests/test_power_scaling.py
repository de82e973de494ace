"""Power-scaling sensitivity (issue 15, item 3; jaxschools.core.power_scaling) against an independent oracle.

**The oracle** (:class:`Oracle`, written here from scratch with numpy and scipy): the power-scaled posterior
p(mu, tau)^a_prior p(y | .)^a_lik of (mu, log tau) on a two-dimensional Gauss-Legendre grid, the densities
evaluated as written (alpha times scipy-style log densities: nothing of ``PowerScaledPrior``'s
N(m, s)^alpha = N(m, s / sqrt(alpha)) identity, and mu integrated numerically, not in closed form as
``exact`` does). Its moments agree with tests/oracle.py (adaptive quad over log tau) to 1e-14 at alpha = 1.

**Finite differences** in t = log2(alpha): central, (f(2^h) - f(2^-h)) / 2h with h = 1e-4. The oracle's nodes
do not move with alpha (mu's grid is centred by a smooth function of alpha), so its discretisation error is a
smooth function of alpha and cancels in the quotient; truncation h^2 f''' / 6 ~ 1e-9 of the derivative's
scale, rounding 1e-16 |f| / h ~ 1e-12. Derivatives must agree to 1e-6 of their row's largest entry (the
issue's relative 1e-6); measured: 1e-10 to 1e-8.

**Cost.** The default suite compiles one ``analyse`` (half-Cauchy prior, the marginal likelihood, ranges
given, quantiles left out: the configuration whose compilation is cheapest) and shares it between the oracle
checks and the labels; the quantiles, the conditional likelihood, the flat prior, the default range, finite
alpha, the finite difference at delta = 0.01 and ArviZ each compile more and are marked slow.
"""

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize, special

import jaxschools as js
from jaxschools.core import exact, power_scaling as ps
from jaxschools.core.power_scaling import PowerScaledPrior, Quantities

NODES = 256
H = 1e-4
REL = 1e-6
Y = np.array([28.0, 8, -3, 7, -1, 1, 18, 12])
SIGMA = np.array([15.0, 10, 16, 11, 9, 11, 10, 18])
EIGHT_PRIOR = ("half_cauchy", 0.0, 5.0, 5.0)  # posteriordb's eight schools
_LOG_2PI = math.log(2 * math.pi)


# ---------------------------------------------------------------------------------------------------------
# The oracle.


def _rule(lo, hi, panels, points):
    """Composite Gauss-Legendre on [lo, hi] (broadcastable arrays): nodes and weights on a new last axis."""
    x, w = np.polynomial.legendre.leggauss(points)
    lo, hi = np.asarray(lo, float)[..., None], np.asarray(hi, float)[..., None]
    width = (hi - lo) / panels
    left = lo + width * np.arange(panels)
    nodes = (left[..., None] + 0.5 * width[..., None] * (1 + x)).reshape(*left.shape[:-1], -1)
    weights = np.broadcast_to(0.5 * width[..., None] * w, left.shape + (points,)).reshape(nodes.shape)
    return nodes, weights


def _normal_logpdf(x, loc, var):
    return -0.5 * (_LOG_2PI + np.log(var) + (x - loc) ** 2 / var)


class Oracle:
    """p(mu, tau)^a_prior p(y | .)^a_lik, normalised, on a grid in (log tau, mu).

    ``likelihood="marginal"``: prod_j N(y_j | mu, sigma_j^2 + tau^2)^a_lik; ``"conditional"``: the joint
    model's prod_j N(y_j | theta_j, sigma_j^2)^a_lik = N(y_j | theta_j, sigma_j^2 / a_lik) x const, whose
    integral over theta_j is N(y_j | mu, sigma_j^2 / a_lik + tau^2). Either way theta_j | mu, tau, y is the
    Gaussian of y_j | theta_j ~ N(theta_j, sigma_j^2 / a_lik). log tau: composite Gauss-Legendre from 30 below
    the smallest scale to 12 above the largest (the posterior of log tau falls like tau at 0, faster above);
    mu: 72 nodes over +/- 12 sd of the Gaussian in mu at each tau.
    """

    def __init__(self, y=Y, sigma=SIGMA, kind="half_cauchy", mu_loc=0.0, mu_scale=5.0, tau_scale=5.0,
                 a_prior=1.0, a_lik=1.0, likelihood="marginal"):
        self.y, self.sigma = np.asarray(y, float), np.asarray(sigma, float)
        self.kind, self.mu_loc, self.mu_scale, self.tau_scale = kind, mu_loc, mu_scale, tau_scale
        self.a_prior, self.a_lik, self.likelihood = a_prior, a_lik, likelihood
        lo = np.log(self.sigma.min()) - 30.0
        hi = np.log(max(self.sigma.max(), np.ptp(self.y))) + 12.0
        if kind != "flat":
            lo, hi = min(lo, np.log(tau_scale) - 30.0), max(hi, np.log(tau_scale) + 12.0)
        self.u_lo = lo
        self.u, self.wu = _rule(lo, hi, int(np.ceil(hi - lo)), 10)
        self.z, self.wz = _rule(-12.0, 12.0, 6, 12)
        self.centre, self.half = self._mu_grid(np.exp(self.u))
        mu = self.centre[:, None] + self.half[:, None] * self.z
        log_f = self._log_joint(self.u[:, None], mu)
        self.peak = log_f.max()
        mass = np.exp(log_f - self.peak) * self.wu[:, None] * self.wz * self.half[:, None]
        self.norm = mass.sum()
        self.weights, self.mu = mass / self.norm, mu
        self._scaled, self._cdfs = {}, {}

    def scaled(self, component, t):
        """The same posterior with ``component`` ("prior" or "likelihood") scaled by alpha = 2^t (kept: the
        tests ask for the same ones repeatedly)."""
        key = (component, t)
        if key not in self._scaled:
            a_prior, a_lik = (2.0**t, 1.0) if component == "prior" else (1.0, 2.0**t)
            self._scaled[key] = Oracle(self.y, self.sigma, self.kind, self.mu_loc, self.mu_scale, self.tau_scale,
                                       a_prior * self.a_prior, a_lik * self.a_lik, self.likelihood)
        return self._scaled[key]

    def _variances(self, tau):
        s2 = self.sigma**2 / (self.a_lik if self.likelihood == "conditional" else 1.0)
        power = self.a_lik if self.likelihood == "marginal" else 1.0
        return s2 + np.asarray(tau)[..., None] ** 2, power

    def _mu_grid(self, tau):
        """Where mu's nodes go given tau: the centre of the Gaussian in mu and its sd (node placement only;
        the integrand is evaluated as written)."""
        v, power = self._variances(tau)
        prec, num = power * np.sum(1 / v, -1), power * np.sum(self.y / v, -1)
        if self.kind != "flat":
            prec = prec + self.a_prior / self.mu_scale**2
            num = num + self.a_prior * self.mu_loc / self.mu_scale**2
        return num / prec, 1 / np.sqrt(prec)

    def _log_joint(self, u, mu):
        tau = np.exp(u)
        v, power = self._variances(tau)
        # sum_j log N(y_j | mu, v_j), its square in mu expanded (sum_j (y_j - mu)^2 / v_j = A mu^2 - 2 B mu + C)
        # so that the sum over schools is taken once per tau, not once per (tau, mu) node.
        a, b, c = np.sum(1 / v, -1), np.sum(self.y / v, -1), np.sum(self.y**2 / v, -1)
        log_lik = -0.5 * power * (np.sum(_LOG_2PI + np.log(v), -1) + a * mu**2 - 2 * b * mu + c)
        log_prior = 0.0
        if self.kind != "flat":
            log_mu = _normal_logpdf(mu, self.mu_loc, self.mu_scale**2)
            if self.kind == "half_cauchy":
                log_tau = np.log(2 / (np.pi * self.tau_scale)) - np.log1p((tau / self.tau_scale) ** 2)
            else:
                log_tau = np.log(2.0) + _normal_logpdf(tau, 0.0, self.tau_scale**2)
            log_prior = self.a_prior * (log_mu + log_tau)
        return log_lik + log_prior + u  # + log tau: the Jacobian of tau -> log tau

    def _shrinkage(self, tau):
        return self.sigma**2 / (self.sigma**2 + self.a_lik * np.asarray(tau)[..., None] ** 2)

    def moments(self):
        """{name: (mean, sd)} of mu, tau and theta (J,)."""
        w, mu, tau = self.weights, self.mu, np.exp(self.u)[:, None] * np.ones_like(self.mu)
        b = self._shrinkage(tau)
        mean_t, var_t = (1 - b) * self.y + b * mu[..., None], tau[..., None] ** 2 * b
        out = {}
        for name, m in (("mu", mu), ("tau", tau)):
            e = np.sum(w * m)
            out[name] = (e, np.sqrt(np.sum(w * (m - e) ** 2)))
        e = np.einsum("um,umj->j", w, mean_t)
        out["theta"] = (e, np.sqrt(np.einsum("um,umj->j", w, (mean_t - e) ** 2 + var_t)))
        return out

    def cdf_mu(self, x):
        """P(mu <= x) at points x (K,): the joint density integrated over mu up to x at each tau."""
        x = np.asarray(x, float).reshape(-1, 1)
        lo, hi = self.centre - 12 * self.half, self.centre + 12 * self.half
        mu, wm = _rule(lo, np.clip(x, lo, hi), 4, 16)  # (K, U, 64)
        log_f = self._log_joint(self.u[:, None], mu)
        return np.sum(np.exp(log_f - self.peak) * wm * self.wu[:, None], (-1, -2)) / self.norm

    def cdf_tau(self, t):
        """P(tau <= t) at points t (K,): the density of log tau (mu integrated on its grid) up to log t."""
        u, wu = _rule(self.u_lo, np.log(np.asarray(t, float)), 40, 10)  # (K, U)
        centre, half = self._mu_grid(np.exp(u))
        log_f = self._log_joint(u[..., None], centre[..., None] + half[..., None] * self.z)
        return np.sum(np.exp(log_f - self.peak) * self.wz * half[..., None] * wu[..., None], (-1, -2)) / self.norm

    def cdf_theta(self, x, j):
        """P(theta_j <= x): theta_j | tau is Gaussian (every factor is Gaussian in mu and theta), with mu's
        conditional moments from the grid (Phi of theta given mu is step-like in mu at small tau, which a rule
        in mu would not resolve)."""
        tau, p_u = np.exp(self.u), self.weights.sum(1)
        m1 = np.sum(self.weights * self.mu, 1) / p_u
        m2 = np.sum(self.weights * (self.mu - m1[:, None]) ** 2, 1) / p_u
        b = self._shrinkage(tau)[:, j]
        mean, var = (1 - b) * self.y[j] + b * m1, tau**2 * b + b**2 * m2
        return special.ndtr((np.asarray(x, float).reshape(-1, 1) - mean) / np.sqrt(var)) @ p_u

    def cdf(self, name, x, j=None):
        """The CDF of mu, tau or theta_j at x (kept per points)."""
        x = np.asarray(x, float)
        key = (name, j, x.tobytes())
        if key not in self._cdfs:
            self._cdfs[key] = (self.cdf_theta(x, j) if name == "theta"
                               else {"mu": self.cdf_mu, "tau": self.cdf_tau}[name](x))
        return self._cdfs[key]

    def log_tau_moments(self):
        p = self.weights.sum(1)
        m = p @ self.u
        return m, np.sqrt(p @ (self.u - m) ** 2)


def _slope(oracle, component, fn, h=H):
    """Central difference of fn(oracle) in t = log2(alpha) (module docstring)."""
    return (np.asarray(fn(oracle.scaled(component, h))) - np.asarray(fn(oracle.scaled(component, -h)))) / (2 * h)


def _test_bounds(oracle, k=3.5):
    """A range for the diagnostic: +/- k sd around the mean (tau: of log tau), about the expected range of
    4,000 draws of a Gaussian."""
    m = oracle.moments()
    lt, slt = oracle.log_tau_moments()
    return Quantities(jnp.array([m["mu"][0] - k * m["mu"][1], m["mu"][0] + k * m["mu"][1]]),
                      jnp.exp(jnp.array([lt - k * slt, lt + k * slt])),
                      jnp.stack([m["theta"][0] - k * m["theta"][1], m["theta"][0] + k * m["theta"][1]], -1))


def _oracle_grid(bounds, name, j=None):
    """The oracle's own rule over [a, b] (48 nodes: the CDFs are smooth on the scale of the sd and [a, b] spans
    about 7 sd; tau over log tau with its Jacobian): x and weights."""
    if name == "tau":
        u, w = _rule(np.log(float(bounds.tau[0])), np.log(float(bounds.tau[1])), 3, 16)
        return np.exp(u), w * np.exp(u)
    lo, hi = (bounds.mu if name == "mu" else bounds.theta[j])
    return _rule(float(lo), float(hi), 3, 16)


def _oracle_limit(oracle, component, bounds, name, j=None):
    """max(S_+, S_-) from the oracle: dF/dt by central differences, the integrals by the oracle's rule."""
    x, w = _oracle_grid(bounds, name, j)
    cdf = lambda o: o.cdf(name, x, j)  # noqa: E731
    f, df = cdf(oracle), _slope(oracle, component, cdf)
    plus = np.sum(w * df**2 / f) / np.sum(w * f)
    minus = np.sum(w * df**2 / (1 - f)) / np.sum(w * (1 - f))
    return math.sqrt(max(plus, minus) / (8 * math.log(2)))


def _oracle_distance(oracle, component, bounds, name, t, j=None):
    """priorsense's cumulative Jensen-Shannon distance D between the base and the alpha = 2^t posterior,
    written from its definition (priorsense's cjs_dist, unsigned: the larger of x and -x), on the oracle."""
    x, w = _oracle_grid(bounds, name, j)
    p, q = oracle.cdf(name, x, j), oracle.scaled(component, t).cdf(name, x, j)

    def squared(p, q):
        m = 0.5 * (p + q)
        cjs_pq = np.sum(w * p * np.log2(p / m)) + 0.5 / math.log(2) * np.sum(w * (q - p))
        cjs_qp = np.sum(w * q * np.log2(q / m)) + 0.5 / math.log(2) * np.sum(w * (p - q))
        return (cjs_pq + cjs_qp) / np.sum(w * (p + q))

    return math.sqrt(max(squared(p, q), squared(1 - p, 1 - q)))


def _data(y=Y, sigma=SIGMA):
    return js.data.Schools(jnp.asarray(y), jnp.asarray(sigma))


def _close(got, want, what, rel=REL):
    got, want = np.asarray(got, float), np.asarray(want, float)
    np.testing.assert_allclose(got, want, rtol=0, atol=rel * np.max(np.abs(want)), err_msg=what)


# ---------------------------------------------------------------------------------------------------------
# Default suite: one compiled analyse (half-Cauchy, marginal likelihood, ranges given, no quantiles).


def _analyse(data, prior, bounds, **kw):
    return ps.analyse(data, prior, bounds=bounds, quantiles=False, num_nodes=NODES, **kw)


@pytest.fixture(scope="module")
def eight_schools():
    oracle = Oracle(*(Y, SIGMA), *EIGHT_PRIOR)
    bounds = _test_bounds(oracle)
    return oracle, bounds, _analyse(_data(), js.models.Prior(*EIGHT_PRIOR), bounds)


def test_derivatives_of_means_and_sds_against_the_oracle(eight_schools):
    """d/dt of E and sd of mu, tau and every theta_j, prior and likelihood power-scaling, against central
    differences of the oracle; the values at alpha = 1 to 1e-9."""
    oracle, _, (value, prior, likelihood, _) = eight_schools
    base = oracle.moments()
    for name in Quantities._fields:
        _close(getattr(value, name).mean, base[name][0], f"E[{name}]", 1e-9)
        _close(getattr(value, name).sd, base[name][1], f"sd({name})", 1e-9)
    for component, got in (("prior", prior), ("likelihood", likelihood)):
        assert got.applicable
        for name in Quantities._fields:
            for i, stat in enumerate(("mean", "sd")):
                want = _slope(oracle, component, lambda o: o.moments()[name][i])
                _close(getattr(getattr(got.derivative, name), stat), want, f"d {stat}({name}) / dt, {component}")
            assert np.all(np.isnan(getattr(got.derivative, name).q50))  # quantiles were left out


def test_diagnostic_against_the_oracle(eight_schools):
    """priorsense's diagnostic of mu, tau and every theta_j, both components, against the oracle's
    max(S_+, S_-) with dF/dt by central differences and its own rule over the same ranges."""
    oracle, bounds, (_, prior, likelihood, used) = eight_schools
    for a, b in zip(jax.tree_util.tree_leaves(used), jax.tree_util.tree_leaves(bounds)):
        np.testing.assert_array_equal(a, b)
    for component, got in (("prior", prior), ("likelihood", likelihood)):
        _close(got.sensitivity.mu, _oracle_limit(oracle, component, bounds, "mu"), f"mu, {component}")
        _close(got.sensitivity.tau, _oracle_limit(oracle, component, bounds, "tau"), f"tau, {component}")
        want = [_oracle_limit(oracle, component, bounds, "theta", j) for j in range(len(Y))]
        _close(got.sensitivity.theta, want, f"theta, {component}")


def test_the_limit_is_what_priorsense_finite_difference_approaches(eight_schools):
    """The definition, on the oracle alone: priorsense's (D(2^-h) + D(2^h)) / 2h, D the cumulative
    Jensen-Shannon distance written as priorsense writes it (both halves with their (1 / 2 ln 2) terms),
    tends to max(S_+, S_-) like h^2 (the odd terms cancel): h = 1e-2 and 1e-3 differ from it by a ratio near
    100, and by less than 1e-5 at h = 1e-3. A wrong constant (8 ln 2), a missing survival half, or a
    one-sided limit that differed from the other would each fail."""
    oracle, bounds, _ = eight_schools
    for component, name in (("prior", "mu"), ("likelihood", "tau"), ("prior", "theta")):
        j = 0 if name == "theta" else None
        limit = _oracle_limit(oracle, component, bounds, name, j)
        errors = []
        for h in (1e-2, 1e-3):
            lower, upper = (_oracle_distance(oracle, component, bounds, name, s, j) for s in (-h, h))
            assert abs(lower - upper) / h < 0.05 * limit  # the two one-sided slopes agree to O(h)
            errors.append(abs((lower + upper) / (2 * h) - limit) / limit)
        assert errors[1] < 1e-5, (component, name, errors)
        assert 30 < errors[0] / errors[1] < 300, (component, name, errors)


@pytest.mark.parametrize("case, mu_loc, mu_scale, tau_scale, sigma_factor, want_mu", [
    ("strong prior far from the data", -40.0, 5.0, 5.0, 1.0, ps.PRIOR_DATA_CONFLICT),
    ("tight prior, weak data", 0.0, 2.0, 1.0, 10.0, ps.STRONG_PRIOR_WEAK_LIKELIHOOD),
    ("vague prior, precise data", 0.0, 100.0, 100.0, 0.2, ps.NO_FLAG),
])
def test_labels_on_constructed_cases(case, mu_loc, mu_scale, tau_scale, sigma_factor, want_mu):
    """priorsense's labels where the answer is known by construction (the same compiled function as above:
    the same J and prior family). The conflict case labels tau too; every theta_j of the tight prior with
    weak data is 'strong prior / weak likelihood'; nothing is flagged with a vague prior and precise data.
    The numbers behind each label are the diagnostic's, checked against the oracle above."""
    sigma = SIGMA * sigma_factor
    bounds = _test_bounds(Oracle(Y, sigma, "half_cauchy", mu_loc, mu_scale, tau_scale))
    got = ps.diagnose(_data(Y, sigma), js.models.Prior("half_cauchy", mu_loc, mu_scale, tau_scale),
                      bounds=bounds, quantiles=False, num_nodes=NODES)
    assert got.diagnosis.mu == want_mu, (case, got.rows()[0])
    if want_mu == ps.PRIOR_DATA_CONFLICT:
        assert got.diagnosis.tau == ps.PRIOR_DATA_CONFLICT
    elif want_mu == ps.STRONG_PRIOR_WEAK_LIKELIHOOD:
        assert set(got.diagnosis.theta) == {ps.STRONG_PRIOR_WEAK_LIKELIHOOD}
    else:
        assert {row[-1] for row in got.rows()} == {ps.NO_FLAG}
    rows = got.rows()
    assert [r[0] for r in rows] == ["mu", "tau"] + [f"theta[{n}]" for n in got.names]
    assert rows[0][1:3] == (float(got.prior.sensitivity.mu), float(got.likelihood.sensitivity.mu))


def test_label_rules():
    """priorsense's rules at the threshold: conflict needs both >= threshold, strong prior / weak likelihood
    prior > threshold and likelihood < threshold (so prior == threshold with a weak likelihood is unflagged);
    a NaN prior (the flat prior) is 'not applicable'."""
    t = ps.THRESHOLD
    assert t == 0.05
    assert ps.label(t, t) == ps.PRIOR_DATA_CONFLICT
    assert ps.label(0.2, 0.049) == ps.STRONG_PRIOR_WEAK_LIKELIHOOD
    assert ps.label(t, 0.01) == ps.NO_FLAG
    assert ps.label(0.049, 0.9) == ps.NO_FLAG
    assert ps.label(math.nan, 0.3) == ps.NOT_APPLICABLE
    assert ps.label(0.2, 0.2, threshold=0.3) == ps.NO_FLAG


def test_power_scaled_prior_is_the_prior_to_the_power():
    """PowerScaledPrior: log_prob is alpha times the base prior's; mu_scale is s / sqrt(alpha), and
    N(mu | m, s)^alpha / N(mu | m, s / sqrt(alpha)) is the same at every mu (so exact's reading of mu's prior
    as an observation of precision alpha / s^2 is p^alpha); powers multiply; the marginal density built on it
    is log p(y | mu, tau) + alpha log p(mu, tau) + log tau; the flat prior is refused."""
    base = js.models.Prior("half_normal", 1.5, 4.0, 3.0)
    mu, log_tau = jnp.linspace(-20.0, 20.0, 9), jnp.linspace(-3.0, 4.0, 9)

    @jax.jit  # one compilation for both powers (and the base), instead of one per eager operation
    def evaluate(alpha):
        p = PowerScaledPrior(base, alpha)
        density = js.models.marginal_logdensity(_data(), p)
        return p.log_prob(mu, log_tau), base.log_prob(mu, log_tau), p.mu_scale, jax.vmap(density)(
            jnp.stack([mu, log_tau], -1))

    for alpha in (0.5, 2.0):
        p = PowerScaledPrior(base, alpha)
        assert isinstance(p, js.models.Prior) and p.proper and p.kind == "half_normal"
        log_prob, base_log_prob, mu_scale, got = evaluate(alpha)
        np.testing.assert_allclose(log_prob, alpha * base_log_prob, rtol=1e-14)
        np.testing.assert_allclose(mu_scale, 4.0 / math.sqrt(alpha), rtol=1e-15)
        ratio = alpha * _normal_logpdf(np.asarray(mu), 1.5, 16.0) - _normal_logpdf(np.asarray(mu), 1.5, 16 / alpha)
        np.testing.assert_allclose(ratio - ratio[0], 0.0, atol=1e-12)
        m, lt = np.asarray(mu)[:, None], np.asarray(log_tau)[:, None]
        want = (np.sum(_normal_logpdf(Y, m, SIGMA**2 + np.exp(2 * lt)), -1)
                + alpha * (_normal_logpdf(m, 1.5, 16.0) + math.log(2) + _normal_logpdf(np.exp(lt), 0, 9.0))[:, 0]
                + lt[:, 0])
        np.testing.assert_allclose(got, want, rtol=1e-13)
    twice = PowerScaledPrior(PowerScaledPrior(base, 0.5), 3.0)
    np.testing.assert_allclose(twice.power, 1.5, rtol=1e-15)
    np.testing.assert_allclose(twice.mu_scale, 4.0 / math.sqrt(1.5), rtol=1e-15)
    leaves, treedef = jax.tree_util.tree_flatten(twice)
    assert len(leaves) == 4 and jax.tree_util.tree_unflatten(treedef, leaves).power == twice.power
    with pytest.raises(ValueError, match="flat"):
        PowerScaledPrior("flat", 2.0)
    with pytest.raises(ValueError, match="likelihood"):
        ps.analyse(_data(), "flat", likelihood="joint")


# ---------------------------------------------------------------------------------------------------------
# Slow: the other configurations (each compiles its own analyse).


@pytest.mark.slow
@pytest.mark.parametrize("likelihood", ["marginal", "conditional"])
def test_quantile_derivatives_against_the_oracle(likelihood):
    """Every quantile of mu, tau and each theta_j: F_oracle(q) = p at the exact quantile (1e-9), and
    dq/dt = -(dF/dt)(q) / f(q) with both from the oracle (dF/dt by central differences in t at fixed q, f by
    central differences in x); means and sds as in the default test, for the conditional likelihood too."""
    oracle = Oracle(Y, SIGMA, *EIGHT_PRIOR, likelihood=likelihood)
    value, prior, lik, _ = ps.analyse(_data(), js.models.Prior(*EIGHT_PRIOR), likelihood=likelihood,
                                      num_nodes=NODES)
    base = oracle.moments()
    levels = dict(zip(ps.Stats._fields[2:], exact.QUANTILES.values()))
    for component, got in (("prior", prior), ("likelihood", lik)):
        for name in Quantities._fields:
            for i, stat in enumerate(("mean", "sd")):
                want = _slope(oracle, component, lambda o: o.moments()[name][i])
                _close(getattr(getattr(got.derivative, name), stat), want, f"d {stat}({name}), {component}")
            schools = range(len(Y)) if name == "theta" else [None]
            for key, p in levels.items():
                q = np.atleast_1d(np.asarray(getattr(getattr(value, name), key)))
                dq = np.atleast_1d(np.asarray(getattr(getattr(got.derivative, name), key)))
                want = []
                for j, qj in zip(schools, q):
                    eps = 1e-5 * float(base[name][1] if j is None else base[name][1][j])
                    cdf = lambda o, x: float(o.cdf(name, np.array([x]), j)[0])  # noqa: E731
                    np.testing.assert_allclose(cdf(oracle, qj), p, atol=1e-9, err_msg=f"{name} {key}")
                    density = (cdf(oracle, qj + eps) - cdf(oracle, qj - eps)) / (2 * eps)
                    want.append(-_slope(oracle, component, lambda o: cdf(o, qj)) / density)
                _close(dq, want, f"d {key}({name}) / dt, {component}, {likelihood}")
    assert np.all(np.isfinite(np.asarray(lik.sensitivity.theta)))


@pytest.mark.slow
def test_the_two_likelihoods_differ_and_share_the_prior_part():
    """The marginal (case weights alpha) and conditional (sigma / sqrt(alpha)) readings give the same prior
    power-scaling and different likelihood power-scaling (already at first order; module docstring)."""
    bounds = _test_bounds(Oracle(Y, SIGMA, *EIGHT_PRIOR))
    marginal = _analyse(_data(), js.models.Prior(*EIGHT_PRIOR), bounds)
    conditional = _analyse(_data(), js.models.Prior(*EIGHT_PRIOR), bounds, likelihood="conditional")
    for a, b in zip(jax.tree_util.tree_leaves(marginal[1]), jax.tree_util.tree_leaves(conditional[1])):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    assert abs(float(marginal[2].derivative.tau.mean) - float(conditional[2].derivative.tau.mean)) > 0.1


@pytest.mark.slow
@pytest.mark.parametrize("alpha", [0.5, 2.0])
def test_power_scaled_posterior_at_finite_alpha(alpha):
    """exact.summary with PowerScaledPrior (p^alpha) and with case weights alpha (the likelihood to the alpha)
    against the oracle's power-scaled posterior: means and sds of mu, tau and theta to 1e-9."""
    data, prior = _data(), js.models.Prior(*EIGHT_PRIOR)
    for component in ("prior", "likelihood"):
        oracle = Oracle(Y, SIGMA, *EIGHT_PRIOR).scaled(component, math.log2(alpha))
        if component == "prior":
            s = exact.summary(data, PowerScaledPrior(prior, alpha), num_nodes=NODES)
        else:
            s = exact.summary(data, prior, num_nodes=NODES, case_weights=jnp.full(8, alpha))
        want = oracle.moments()
        for name in Quantities._fields:
            _close(s[name]["mean"], want[name][0], f"E[{name}], {component} ^ {alpha}", 1e-9)
            _close(s[name]["sd"], want[name][1], f"sd({name}), {component} ^ {alpha}", 1e-9)


@pytest.mark.slow
def test_delta_is_the_finite_difference_on_exact_cdfs(eight_schools):
    """delta=0.01: (D(1 / 1.01) + D(1.01)) / (2 log2 1.01) on the exact CDFs, against the same quotient of the
    oracle's distances (written from priorsense's definition); it differs from the limit by O(delta^2)."""
    oracle, bounds, (_, prior_limit, lik_limit, _) = eight_schools
    _, prior, lik, _ = _analyse(_data(), js.models.Prior(*EIGHT_PRIOR), bounds, delta=0.01)
    step = math.log2(1.01)
    for component, got, limit in (("prior", prior, prior_limit), ("likelihood", lik, lik_limit)):
        for name in ("mu", "tau"):
            want = sum(_oracle_distance(oracle, component, bounds, name, s) for s in (-step, step)) / (2 * step)
            _close(getattr(got.sensitivity, name), want, f"{name}, {component}")
            assert abs(float(getattr(got.sensitivity, name)) / float(getattr(limit.sensitivity, name)) - 1) < 1e-3


@pytest.mark.slow
def test_default_range_is_the_expected_extremes_of_the_draws():
    """Without bounds: the range [F^-1(1 / (n + 1)), F^-1(n / (n + 1))], n = num_draws (the CDF values of
    the extremes of n draws, in expectation), checked on the oracle's CDFs; the diagnostic over it against
    the oracle's; labels and rows from diagnose on the eight schools."""
    oracle = Oracle(Y, SIGMA, *EIGHT_PRIOR)
    n = 1000
    value, prior, lik, used = ps.analyse(_data(), js.models.Prior(*EIGHT_PRIOR), num_draws=n, num_nodes=NODES)
    ends = np.array([1 / (n + 1), n / (n + 1)])
    np.testing.assert_allclose(oracle.cdf_mu(np.asarray(used.mu)), ends, atol=1e-10)
    np.testing.assert_allclose(oracle.cdf_tau(np.asarray(used.tau)), ends, atol=1e-10)
    for j in range(len(Y)):
        np.testing.assert_allclose(oracle.cdf_theta(np.asarray(used.theta[j]), j), ends, atol=1e-10)
    _close(prior.sensitivity.tau, _oracle_limit(oracle, "prior", used, "tau"), "tau")
    _close(lik.sensitivity.mu, _oracle_limit(oracle, "likelihood", used, "mu"), "mu")
    got = ps.diagnose(_data(), js.models.Prior(*EIGHT_PRIOR), num_draws=n, num_nodes=NODES)
    assert got.num_draws == n and got.likelihood_kind == "marginal" and got.threshold == ps.THRESHOLD
    assert got.diagnosis.mu == ps.label(got.prior.sensitivity.mu, got.likelihood.sensitivity.mu)


@pytest.mark.slow
def test_flat_prior_is_not_applicable(eight):
    """The flat prior: prior power-scaling 'not applicable' (applicable False, every number NaN, every label
    'not applicable'); likelihood power-scaling as usual, against the oracle."""
    oracle = Oracle(Y, SIGMA, "flat")
    bounds = _test_bounds(oracle)
    got = ps.diagnose(eight, "flat", bounds=bounds, num_nodes=NODES)
    assert not got.prior.applicable and got.likelihood.applicable
    numbers = jax.tree_util.tree_leaves((got.prior.derivative, got.prior.sensitivity))
    assert all(np.all(np.isnan(leaf)) for leaf in numbers)
    assert got.diagnosis.mu == got.diagnosis.tau == ps.NOT_APPLICABLE
    assert set(got.diagnosis.theta) == {ps.NOT_APPLICABLE}
    assert all(math.isnan(row[1]) and row[-1] == ps.NOT_APPLICABLE for row in got.rows())
    _close(got.likelihood.sensitivity.tau, _oracle_limit(oracle, "likelihood", bounds, "tau"), "tau")
    want = _slope(oracle, "likelihood", lambda o: o.moments()["mu"][1])
    _close(got.likelihood.derivative.mu.sd, want, "d sd(mu) / dt")
    want = []
    for p_key in ("q025", "q975"):
        q = float(getattr(got.value.tau, p_key))
        eps = 1e-5 * oracle.moments()["tau"][1]
        density = (oracle.cdf_tau(np.array([q + eps]))[0] - oracle.cdf_tau(np.array([q - eps]))[0]) / (2 * eps)
        slope = _slope(oracle, "likelihood", lambda o: o.cdf_tau(np.array([q]))[0])
        _close(getattr(got.likelihood.derivative.tau, p_key), -slope / density, f"d {p_key}(tau) / dt")


# ---------------------------------------------------------------------------------------------------------
# ArviZ's power-scaling diagnostic on the same draws.


def _arviz_with_psens():
    az = pytest.importorskip("arviz")
    if not hasattr(az, "psens"):
        pytest.skip(f"ArviZ {az.__version__} has no psens (power-scaling sensitivity)")
    return az


def _arviz_comparison(az, replicates, n, seed=1000):
    """For each of ``replicates`` sets of n independent exact draws: {(component, quantity, j): ArviZ's psens
    minus the exact finite difference over the same range}, and the exact values. Components: "prior" and
    "likelihood" (to_inference_data's log_prior and log_likelihood groups: the conditional likelihood), and
    "marginal" (ArviZ given log N(y_j | mu, sigma_j^2 + tau^2) as its log-likelihood; mu and tau only)."""
    from jaxschools.interop import inference_data

    data, prior = _data(), js.models.Prior(*EIGHT_PRIOR)
    diffs, values = {}, {}

    def add(component, theirs, ours, names):
        for name in names:
            pairs = zip(np.atleast_1d(theirs[name].values), np.atleast_1d(np.asarray(getattr(ours, name))))
            for j, (a, b) in enumerate(pairs):
                diffs.setdefault((component, name, j), []).append(a - b)
                values.setdefault((component, name, j), []).append(b)

    for r in range(replicates):
        draws = exact.sample(jax.random.key(seed + r), data, n, prior, num_nodes=NODES)
        positions = jnp.stack([draws["mu"], draws["log_tau"]], -1)[None]
        idata = inference_data.to_inference_data(positions, data, theta=draws["theta"][None],
                                                 rng_key=jax.random.key(r), prior=prior)
        assert set(idata.log_prior.data_vars) == {"mu", "tau"}
        bounds = ps.bounds_of_draws(draws["mu"], draws["tau"], draws["theta"])
        exact_part = lambda likelihood: ps.analyse(data, prior, likelihood=likelihood, bounds=bounds,  # noqa: E731
                                                   delta=0.01, quantiles=False, num_nodes=NODES)
        _, ours_prior, ours_conditional, _ = exact_part("conditional")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PSIS's notes on small samples
            for component, ours in (("prior", ours_prior), ("likelihood", ours_conditional)):
                theirs = az.psens(idata, component=component, var_names=list(Quantities._fields), delta=0.01)
                add(component, theirs, ours.sensitivity, Quantities._fields)
            terms = js.models.marginal_loglik_terms(draws["mu"], draws["log_tau"], data)
            idata.log_likelihood["y"] = (("chain", "draw", "school"), np.asarray(terms)[None])
            theirs = az.psens(idata, component="likelihood", var_names=["mu", "tau"], delta=0.01)
        add("marginal", theirs, exact_part("marginal")[2].sensitivity, ("mu", "tau"))
    return {k: np.array(v) for k, v in diffs.items()}, {k: np.mean(v) for k, v in values.items()}


@pytest.mark.slow
def test_agrees_with_arviz_psens_on_the_same_draws():
    """ArviZ's psens (PSIS-reweighted draws, delta = 0.01) against the exact finite difference at the same
    delta over the same range (the draws' min and max: priorsense's range), set by set, on R = 12 sets of
    n = 16,000 independent exact draws (exact.sample: no autocorrelation). Prior, likelihood (the conditional
    one, which to_inference_data's log_likelihood group holds) for mu, tau and every theta_j; the marginal
    likelihood for mu and tau (theta is not comparable: reweighting leaves theta's conditional untempered,
    case weights temper it). Each quantity's R paired differences must have a mean within the Student-t
    limit (R - 1 df, Bonferroni over the quantities at a family-wise 1e-3) of its standard error.

    Why n = 16,000: ArviZ's estimate squares a noisy difference of CDFs, so it is biased upwards by about
    s^2 / (2 S) (s its Monte Carlo sd), a bias falling like 1 / n against a standard error like 1 / sqrt(n R).
    Measured at n = 4,000 (16 sets): tau's conditional-likelihood value 0.016 read 0.008 high (z = 3.7), the
    marginal likelihood's tau 0.010 high (z = 3.0) and mu 0.003 high (z = 2.2); at 16,000 (these 12 sets):
    0.0017 (z = 1.7), 0.005 (z = 1.7) and 0.0013 (z = 2.7), every other quantity |z| < 1.6; the limit is
    about 5.9."""
    az = _arviz_with_psens()
    from scipy import stats

    replicates = 12
    diffs, values = _arviz_comparison(az, replicates, 16_000)
    assert len(diffs) == 2 * (2 + len(Y)) + 2
    limit = stats.t.ppf(1 - 1e-3 / (2 * len(diffs)), replicates - 1)
    for key, d in diffs.items():
        z = d.mean() / (d.std(ddof=1) / math.sqrt(replicates))
        assert abs(z) < limit, (key, values[key], d.mean(), d.std(ddof=1), z, limit)


@pytest.mark.slow
def test_to_inference_data_writes_log_prior(eight):
    """The log_prior group: log N(mu | m, s^2) and log p(tau) that sum to Prior.log_prob at every draw; none
    for the flat prior (nor without prior=, as before)."""
    pytest.importorskip("arviz")
    from jaxschools.interop import inference_data

    prior = js.models.Prior("half_normal", 1.0, 4.0, 3.0)
    positions = jnp.stack([jnp.linspace(-5.0, 5.0, 12), jnp.linspace(-2.0, 2.0, 12)], -1).reshape(2, 6, 2)
    theta = jnp.zeros((2, 6, 8))
    idata = inference_data.to_inference_data(positions, eight, theta=theta, rng_key=jax.random.key(0), prior=prior)
    mu, tau = idata.posterior["mu"].values, idata.posterior["tau"].values
    np.testing.assert_allclose(idata.log_prior["mu"].values, _normal_logpdf(mu, 1.0, 16.0), rtol=1e-13)
    np.testing.assert_allclose(idata.log_prior["tau"].values, np.log(2) + _normal_logpdf(tau, 0.0, 9.0), rtol=1e-13)
    assert idata.log_prior["mu"].dims == ("chain", "draw")
    for p in ("flat", None):
        other = inference_data.to_inference_data(positions, eight, theta=theta, rng_key=jax.random.key(0), prior=p)
        assert "log_prior" not in other.groups()
