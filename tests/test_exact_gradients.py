"""Exact gradients of the exact posterior and the Laplace fit (issue 15, item 1).

Every differentiable entry of ``exact.summary`` (means, sds, every quantile of mu, log tau, tau and theta,
the shrinkages, P(theta_k > c), P(theta_i > theta_j), log p(y)) is differentiated with respect to y, sigma,
the case weights and the prior's leaves, in forward and reverse mode, and compared with central finite
differences; then closed forms (the conditional posterior given tau, the complete-pooling limit), exact draws,
p_best's refusal and the Laplace fit's implicit derivative.

**The finite differences.** Central differences (f(x + h) - f(x - h)) / 2h with h = 1e-5 times the input's
scale (|y| and sigma: the largest sigma of the data; w: 1; the prior's leaves: themselves, mu_loc: mu_scale).
The truncation error is h^2 f''' / 6 ~ 1e-10 of the derivative's scale, the rounding error eps |f| / h ~
1e-11, the quantile solvers' tolerance (~1e-14 of the scale) / h ~ 1e-9. One more effect is real and
deliberate: the integration range moves with the data under finite differences but is held fixed by the
derivative (``exact``'s docstring), which at 256 nodes changes a tail quantile of tau by up to a few 1e-7 of
its derivative's scale (measured; nothing at 1024 nodes). Every entry of a row of derivatives (one output with
respect to all inputs) must agree to 1e-6 of the row's largest entry, so a derivative that is wrong, or
missing a term, by more than a millionth of the output's sensitivity fails; plus 1e3 eps |f| / h, the
rounding of the difference quotient itself, which matters only for a row whose derivative is 0 (a masked
school's shrinkage is 1 whatever the data: its quotient is rounding noise, ~1e-12).

Compilation dominates the cost (a summary's Jacobian compiles for tens of seconds on two cores): the default
suite checks the headline quantities in reverse mode (one compiled function); every summary entry on three
datasets and three priors in both modes, the closed forms, draws, weights against the mask (also in
tests/test_influence.py, cheaply), p_best's refusal and the Laplace fit are marked slow.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxschools as js
from jaxschools.core import exact
from jaxschools.core.sensitivity import Inputs

NODES = 256
STEP = 1e-5
REL = 1e-6
J = 10  # every dataset padded to 10 schools with masked ones, so all share one compilation
EIGHT_Y = [28.0, 8, -3, 7, -1, 1, 18, 12]
EIGHT_SIGMA = [15.0, 10, 16, 11, 9, 11, 10, 18]
RR_Y = [-0.21, 0.12, 0.05, -0.33, 0.02, -0.11, 0.17, -0.05, 0.0, 0.31]  # conftest's log_risk_ratios
RR_SIGMA = [0.06, 0.10, 0.21, 0.30, 0.08, 0.12, 0.15, 0.25, 0.10, 0.19]


def _padded(y, sigma, keep=None):
    """y, sigma, mask padded to J schools (the padding masked, with harmless values)."""
    n = len(y)
    mask = np.zeros(J, bool)
    mask[:n] = True if keep is None else keep
    pad = J - n
    return np.r_[y, np.zeros(pad)], np.r_[sigma, np.ones(pad)], mask


# name: (y, sigma, mask, prior scales (mu_loc, mu_scale, tau_scale))
DATASETS = {
    "eight": (*_padded(EIGHT_Y, EIGHT_SIGMA), (0.0, 5.0, 5.0)),
    "log_rr": (*_padded(RR_Y, RR_SIGMA), (0.0, 0.5, 0.2)),
    # Three of the eight schools: under the flat prior p(tau | y) falls only like 1/tau (the longest range).
    "heavy_tail": (*_padded(EIGHT_Y, EIGHT_SIGMA, keep=[True, False, True, False, False, False, True, False]),
                   (0.0, 5.0, 5.0)),
}


def _batch(names, weights=None):
    """Inputs (stacked over datasets) and masks."""
    rows, masks = [], []
    for name in names:
        y, sigma, mask, scales = DATASETS[name]
        w = np.ones(J) if weights is None else weights
        rows.append(Inputs(*(jnp.asarray(v, jnp.float64) for v in (y, sigma, w, *scales))))
        masks.append(mask)
    return jax.tree_util.tree_map(lambda *v: jnp.stack(v), *rows), jnp.asarray(np.stack(masks))


def _scales(x: Inputs) -> Inputs:
    """The scale of each input for its finite-difference step (module docstring)."""
    sigma_max = jnp.max(x.sigma)
    return Inputs(
        y=jnp.maximum(jnp.abs(x.y), sigma_max),
        sigma=x.sigma,
        case_weights=jnp.ones_like(x.case_weights),
        mu_loc=x.mu_scale,
        mu_scale=x.mu_scale,
        tau_scale=x.tau_scale,
    )


def _vector(s: dict, proper: bool):
    """Every differentiable entry of an exact summary, flattened in a fixed order."""
    parts = []
    for name in ("mu", "log_tau", "tau", "theta"):
        parts += [jnp.ravel(s[name][key]) for key in ("mean", "sd", *exact.QUANTILES)]
    off_diagonal = ~np.eye(J, dtype=bool)
    parts += [s["shrinkage"], s["p_exceeds"][None], s["p_greater"][off_diagonal]]
    if proper:
        parts.append(s["log_evidence"][None])
    return jnp.concatenate(parts)


def summary_vector(x: Inputs, mask, kind: str, threshold, num_nodes=NODES):
    data = js.data.Schools.tree_unflatten((), (x.y, x.sigma, mask))
    prior = js.models.Prior.tree_unflatten(kind, (x.mu_loc, x.mu_scale, x.tau_scale))
    s = exact.summary(data, prior, query_school=0, threshold=threshold, num_nodes=num_nodes,
                      case_weights=x.case_weights)
    return _vector(s, kind != "flat")


def _flat_inputs(x: Inputs):
    leaves = jax.tree_util.tree_leaves(x)
    return jnp.concatenate([jnp.ravel(v) for v in leaves])


def _unflat_inputs(v, like: Inputs):
    out, i = [], 0
    for leaf in like:
        n = int(np.size(leaf))
        out.append(v[i:i + n].reshape(np.shape(leaf)))
        i += n
    return Inputs(*out)


def finite_differences(f, x: Inputs):
    """Central differences of f (Inputs -> vector) in every input, as a (outputs, inputs) matrix, and the
    steps; all 2n evaluations in one vmapped call."""
    flat, scale = _flat_inputs(x), _flat_inputs(_scales(x))
    h = STEP * scale
    steps = jnp.diag(h)
    points = jnp.concatenate([flat + steps, flat - steps])
    values = jax.vmap(lambda v: f(_unflat_inputs(v, x)))(points)
    n = flat.size
    return ((values[:n] - values[n:]) / (2.0 * h[:, None])).T, h


def _as_matrix(jac: Inputs):
    return jnp.concatenate([jnp.reshape(leaf, (leaf.shape[0], -1)) for leaf in jac], 1)


def assert_rows_close(jac, fd, values, label, steps):
    """|jac - fd| <= REL x the row's largest |fd| + 1e3 eps |value| / h (module docstring), for every row
    whose value is defined; ``steps`` h (inputs,)."""
    jac, fd, values, steps = np.asarray(jac), np.asarray(fd), np.asarray(values), np.asarray(steps)
    defined = np.isfinite(values)
    assert defined.sum() > 0
    scale = np.max(np.abs(fd), axis=1, keepdims=True)
    rounding = 1e3 * np.finfo(float).eps * np.abs(values)[:, None] / steps[None, :]
    bad = defined & np.any(~(np.abs(jac - fd) <= REL * scale + rounding), axis=1)
    err = np.max(np.abs(jac - fd), axis=1) / scale[:, 0]
    assert not bad.any(), f"{label}: rows {np.flatnonzero(bad)}, relative errors {err[bad]}"


@functools.lru_cache(maxsize=None)
def _compiled(kind: str, num_nodes: int):
    """value, jacfwd, jacrev and finite differences of the summary vector, vmapped over datasets: one
    compilation each per prior family."""

    def parts(x, mask, threshold):
        f = lambda x: summary_vector(x, mask, kind, threshold, num_nodes)  # noqa: E731
        return f(x), _as_matrix(jax.jacfwd(f)(x)), _as_matrix(jax.jacrev(f)(x)), *finite_differences(f, x)

    return jax.jit(jax.vmap(parts))


def _check_both_modes(values, fwd, rev, fd, steps, label):
    assert_rows_close(fwd, fd, values, f"{label} forward", steps)
    assert_rows_close(rev, fd, values, f"{label} reverse", steps)
    # The two modes are the same linear map, to rounding (on the rows whose value is defined).
    rows = np.isfinite(np.asarray(values))
    fwd, rev, fd = np.asarray(fwd)[rows], np.asarray(rev)[rows], np.asarray(fd)[rows]
    np.testing.assert_allclose(fwd, rev, rtol=1e-9, atol=1e-12 * np.max(np.abs(fd)))


def test_headline_quantities_in_reverse_mode_against_finite_differences(eight):
    """E[mu], sd(mu), the 95% interval ends of mu and tau (quantiles: the implicit derivative), E[tau],
    every E[theta_j], P(theta_1 > c) and log p(y) of the eight schools under the half-Cauchy prior (every
    input has an effect), at weights that are not all 1: jacrev against finite differences. Reverse mode is
    the transpose of the forward rules, so it checks them too; both modes side by side are in the slow
    tests below."""
    x = js.sensitivity.inputs_of(eight, "half_cauchy", jnp.linspace(0.6, 1.4, 8))
    flat = lambda x: jnp.concatenate([  # noqa: E731
        jnp.ravel(v) for v in js.sensitivity.headline(x, eight.mask, "half_cauchy", 0, 28.0, NODES)])
    values, rev, fd, steps = jax.jit(lambda x: (flat(x), _as_matrix(jax.jacrev(flat)(x)),
                                                *finite_differences(flat, x)))(x)
    assert_rows_close(rev, fd, values, "headline reverse", steps)


def _check_summary_gradients(kind, names, num_nodes):
    x, masks = _batch(names)
    values, fwd, rev, fd, steps = _compiled(kind, num_nodes)(x, masks, x.y[:, 0])  # c = y_1, held fixed
    for i, name in enumerate(names):
        _check_both_modes(values[i], fwd[i], rev[i], fd[i], steps[i], f"{name} {kind}")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["flat", "half_cauchy", "half_normal"])
def test_every_summary_quantity_on_three_datasets_and_priors(kind):
    """The eight schools, the log risk ratios and a heavy tail (J = 3 under the flat prior: its means do not
    exist, its quantiles of tau reach far), each prior family. 1,024 nodes: with 256 the heavy tail's rule
    (16 panels over ~80 units of log tau) moves with its range by ~2e-6 of some derivatives (measured)."""
    _check_summary_gradients(kind, ["eight", "log_rr", "heavy_tail"], 1024)


# ---------------------------------------------------------------------------------------------------------
# Closed forms.


@pytest.mark.slow
def test_conditional_moments_given_tau_match_their_closed_form_derivatives():
    """E[theta_j | tau, y] = (1 - B_j) y_j + B_j mu_hat at each node, with p_k = w_k / (sigma_k^2 + tau^2),
    mu_hat = sum p_k y_k / sum p_k and B_j = sigma_j^2 / (sigma_j^2 + w_j tau^2): its derivatives in y and w
    by hand (dB_j/dw_j = -B_j^2 tau^2 / sigma_j^2, d mu_hat/dw_k = p_k (y_k - mu_hat) / (w_k sum p)), at
    weights that include a 0 (the custom derivative of B_j there) and a half."""
    y, sigma = np.array(EIGHT_Y), np.array(EIGHT_SIGMA)
    w0 = np.array([1.0, 0.0, 0.5, 1.0, 1.0, 2.0, 1.0, 1.0])
    data = js.data.Schools(jnp.asarray(y), jnp.asarray(sigma))

    def theta_mean(yy, ww):
        return exact.posterior(data.replace(y=yy), "flat", num_nodes=64, case_weights=ww).theta_mean

    dy, dw = jax.jacfwd(theta_mean, argnums=(0, 1))(jnp.asarray(y), jnp.asarray(w0))
    dy_rev, dw_rev = jax.jacrev(theta_mean, argnums=(0, 1))(jnp.asarray(y), jnp.asarray(w0))
    np.testing.assert_allclose(dy_rev, dy, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dw_rev, dw, rtol=1e-12, atol=1e-14)
    tau = np.exp(np.asarray(exact.posterior(data, "flat", num_nodes=64, case_weights=jnp.asarray(w0)).log_tau))
    for i in range(0, tau.size, 7):
        t2 = tau[i] ** 2
        p = w0 / (sigma**2 + t2)
        mu_hat = np.sum(p * y) / np.sum(p)
        b = sigma**2 / (sigma**2 + w0 * t2)
        want_dy = np.diag(1.0 - b) + b[:, None] * (p / np.sum(p))[None, :]
        dmu_dw = (y - mu_hat) / (sigma**2 + t2) / np.sum(p)
        db_dw = -(b**2) * t2 / sigma**2
        want_dw = np.diag(db_dw * (mu_hat - y)) + b[:, None] * dmu_dw[None, :]
        np.testing.assert_allclose(dy[i], want_dy, rtol=1e-10, atol=1e-13, err_msg=f"node {i}")
        np.testing.assert_allclose(dw[i], want_dw, rtol=1e-10, atol=1e-13 * np.abs(want_dw).max(),
                                   err_msg=f"node {i}")


@pytest.mark.slow
def test_complete_pooling_limit_has_closed_form_derivatives():
    """tau ~ HalfNormal(1e-8) pins tau at ~1e-8 (tau^2 / sigma^2 ~ 1e-18): then mu | y is exactly Gaussian,
    precision P = sum w_j / sigma_j^2 + 1 / m^2 (m = mu_scale), mean (sum w_j y_j / sigma_j^2 + mu_loc / m^2) / P,
    and log p(y) = log N(y | mu_loc 1, diag(sigma^2) + m^2 1 1'). Their derivatives by hand: dE/dy_j = w_j /
    (sigma_j^2 P), dE/dw_j = (y_j - E) / (sigma_j^2 P), dE/dsigma_j = -2 w_j (y_j - E) / (sigma_j^3 P),
    d sd/dw_j = -P^(-3/2) / (2 sigma_j^2), the quantiles E + z sd, and d log p(y)/dy = -S^-1 (y - mu_loc)."""
    y, sigma = np.array(EIGHT_Y), np.array(EIGHT_SIGMA)
    mu_loc, m = 3.0, 20.0

    def f(x):
        data = js.data.Schools(x.y, x.sigma)
        prior = js.models.Prior("half_normal", x.mu_loc, x.mu_scale, x.tau_scale)
        s = exact.summary(data, prior, num_nodes=NODES, case_weights=x.case_weights)
        return jnp.stack([s["mu"]["mean"], s["mu"]["sd"], s["mu"]["q025"], s["mu"]["q975"], s["log_evidence"]])

    x = Inputs(*(jnp.asarray(v, jnp.float64) for v in (y, sigma, np.ones(8), mu_loc, m, 1e-8)))
    jac = jax.jacrev(f)(x)
    precision = np.sum(1 / sigma**2) + 1 / m**2
    mean = (np.sum(y / sigma**2) + mu_loc / m**2) / precision
    sd = precision**-0.5
    dmean = {"y": 1 / sigma**2 / precision, "case_weights": (y - mean) / sigma**2 / precision,
             "sigma": -2 * (y - mean) / sigma**3 / precision}
    dsd = {"y": np.zeros(8), "case_weights": -0.5 * precision**-1.5 / sigma**2,
           "sigma": precision**-1.5 / sigma**3}
    z = 1.959963984540054
    for name in ("y", "case_weights", "sigma"):
        got = np.asarray(getattr(jac, name))
        np.testing.assert_allclose(got[0], dmean[name], rtol=1e-9, atol=1e-12, err_msg=name)
        np.testing.assert_allclose(got[1], dsd[name], rtol=1e-9, atol=1e-12, err_msg=name)
        np.testing.assert_allclose(got[2], dmean[name] - z * dsd[name], rtol=1e-8, atol=1e-11, err_msg=name)
        np.testing.assert_allclose(got[3], dmean[name] + z * dsd[name], rtol=1e-8, atol=1e-11, err_msg=name)
    np.testing.assert_allclose(jac.mu_loc[0], 1 / m**2 / precision, rtol=1e-9)
    cov = np.diag(sigma**2) + m**2
    np.testing.assert_allclose(jac.y[4], -np.linalg.solve(cov, y - mu_loc), rtol=1e-9)
    np.testing.assert_allclose(jac.mu_loc[4], np.sum(np.linalg.solve(cov, y - mu_loc)), rtol=1e-9)


# ---------------------------------------------------------------------------------------------------------
# Weights against the mask, draws, p_best.


@pytest.mark.slow
def test_zero_weight_is_the_masked_dataset(eight):
    """summary with w_j = 0 equals the summary of the data with school j masked, every entry (NaN where the
    one is), for each j in one vmapped call, under the flat prior (J - 1 = 7: every moment exists)."""
    ones = jnp.ones(8)
    by_weight = jax.jit(jax.vmap(lambda w: exact.summary(eight, "flat", num_nodes=NODES, case_weights=w)))(
        ones - jnp.eye(8))
    by_mask = jax.jit(jax.vmap(lambda m: exact.summary(eight.replace(mask=m), "flat", num_nodes=NODES)))(
        ones.astype(bool) & ~jnp.eye(8, dtype=bool))
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(by_weight), jax.tree_util.tree_leaves(by_mask)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14, equal_nan=True, err_msg=jax.tree_util.keystr(path))


@pytest.mark.slow
def test_default_weights_are_ones(eight):
    a = exact.summary(eight, "half_cauchy", num_nodes=NODES)
    b = exact.summary(eight, "half_cauchy", num_nodes=NODES, case_weights=jnp.ones(8))
    for (path, u), v in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(u, v, rtol=1e-14, atol=1e-15, equal_nan=True, err_msg=jax.tree_util.keystr(path))


@pytest.mark.slow
def test_fractional_weights_count_in_the_moments_rule(eight):
    """Under the flat prior p(tau | y) falls like tau^(1 - sum w): E[tau] exists iff sum w > 3. Four schools
    with weights summing to 3.5 have a mean of tau; summing to 3, none (its quadrature value would be finite)."""
    four = eight.replace(mask=jnp.arange(8) < 4)
    assert float(exact.num_in_likelihood(four, jnp.array([1, 1, 1, 0.5, 1, 1, 1, 1.0]))) == 4.0
    assert float(exact.num_in_likelihood(four, jnp.array([1, 1, 0.5, 0.5, 9, 9, 9, 9.0]))) == 3.0
    batch = jnp.array([[1, 1, 1, 0.5, 1, 1, 1, 1.0], [1, 1, 0.5, 0.5, 1, 1, 1, 1.0]])
    s = jax.vmap(lambda w: exact.summary(four, "flat", num_nodes=NODES, case_weights=w))(batch)
    assert np.isfinite(s["tau"]["mean"][0]) and np.isnan(s["tau"]["mean"][1])


@pytest.mark.slow
def test_exact_draws_are_reparameterised(eight):
    """exact.sample with a fixed key: d draw / d (y, w, tau_scale) in both modes against finite differences
    (the same uniforms and normals, so each draw is a smooth function of the inputs)."""
    key = jax.random.key(3)

    def draws(x):
        prior = js.models.Prior("half_cauchy", 0.0, 5.0, x[16])
        d = exact.sample(key, eight.replace(y=x[:8]), 12, prior, num_nodes=NODES, case_weights=x[8:16])
        return jnp.concatenate([d["mu"], d["log_tau"], d["theta"].ravel()])

    x = jnp.concatenate([eight.y, jnp.ones(8), jnp.array([5.0])])
    h = STEP * jnp.concatenate([jnp.full(8, 18.0), jnp.ones(8), jnp.array([5.0])])
    fd = jax.jit(jax.vmap(lambda e: (draws(x + e) - draws(x - e))))(jnp.diag(h)).T / (2.0 * h)
    _check_both_modes(draws(x), jax.jacfwd(draws)(x), jax.jacrev(draws)(x), fd, h, "draws")


@pytest.mark.slow
def test_p_best_refuses_a_derivative(eight):
    """p_best counts argmaxes (piecewise constant): differentiating a summary that draws it raises, naming
    p_best, instead of returning 0; without rng_key the same derivative works."""
    key = jax.random.key(0)
    f = lambda y, k: exact.summary(eight.replace(y=y), "flat", rng_key=k, num_draws=64, num_nodes=64)  # noqa
    with pytest.raises(TypeError, match="p_best"):
        jax.grad(lambda y: f(y, key)["mu"]["mean"])(eight.y)
    assert np.all(np.isfinite(jax.grad(lambda y: f(y, None)["mu"]["mean"])(eight.y)))


# ---------------------------------------------------------------------------------------------------------
# The Laplace fit.


def _polished_fit(ld, init):
    """fit, then two plain Newton steps: a re-fit to machine precision (the fit stops at a Newton decrement
    of 10 eps (1 + |f|), leaving the mode ~1e-9 off, which divided by a finite-difference step is 1e-5)."""
    x = js.laplace.fit(ld, init).mode
    for _ in range(2):
        x = x - jnp.linalg.solve(jax.hessian(ld)(x), jax.grad(ld)(x))
    hessian = jax.hessian(ld)(x)
    return x, jnp.linalg.inv(-hessian), ld(x) - 0.5 * jnp.linalg.slogdet(-hessian)[1]


def _laplace_case(eight, prior_kind):
    """(fitted, refit, x, h): the fit's (mode, cov, log evidence) as a function of x = (y, sigma, w,
    tau_scale), the same by a polished re-fit, the point and the finite-difference steps."""

    def logdensity(x):
        prior = js.models.Prior(prior_kind, 0.0, 5.0, x[24])
        return js.models.marginal_logdensity(eight.replace(y=x[:8], sigma=x[8:16]), prior, case_weights=x[16:24])

    def fitted(x):
        ld = logdensity(x)
        fit = js.laplace.fit(ld, js.laplace.default_init(ld.data))
        out = [fit.mode, fit.cov.ravel()]
        return jnp.concatenate(out + [fit.log_evidence[None]] if prior_kind != "flat" else out)

    def refit(x):
        mode, cov, half_log_evidence = _polished_fit(logdensity(x), js.laplace.default_init(eight))
        out = [mode, cov.ravel()]
        return jnp.concatenate(out + [half_log_evidence[None] + jnp.log(2 * jnp.pi)] if prior_kind != "flat" else out)

    x = jnp.concatenate([eight.y, eight.sigma, jnp.linspace(0.7, 1.3, 8), jnp.array([5.0])])
    h = STEP * jnp.concatenate([jnp.full(8, 18.0), eight.sigma, jnp.ones(8), jnp.array([5.0])])
    return fitted, refit, x, h


def _refit_differences(refit, x, h):
    return jax.vmap(lambda e: refit(x + e) - refit(x - e))(jnp.diag(h)).T / (2.0 * h)


@pytest.mark.slow
def test_laplace_fit_in_reverse_mode_by_the_implicit_function_theorem(eight):
    """jax.jacrev of the fit (its Newton loop is a while_loop, which reverse mode cannot transpose: the mode's
    derivative is implicit) with respect to y, sigma and w, against finite differences of re-fits; the
    covariance's derivative (the Hessian's, at the moving mode) too. One compiled function."""
    fitted, refit, x, h = _laplace_case(eight, "flat")
    values, rev, fd, start = jax.jit(lambda x: (fitted(x), jax.jacrev(fitted)(x), _refit_differences(refit, x, h),
                                                refit(x)))(x)
    np.testing.assert_allclose(values, start, rtol=1e-8)
    assert_rows_close(rev[:, :24], fd[:, :24], values, "laplace reverse", h[:24])


@pytest.mark.slow
def test_laplace_fit_in_both_modes_with_a_proper_prior_and_under_vmap(eight):
    """d mode, d cov and d (log evidence) with respect to y, sigma, w and tau_scale (half-Cauchy), both modes,
    against finite differences of re-fits; vmap of the gradient over two datasets equals each alone."""
    fitted, refit, x, h = _laplace_case(eight, "half_cauchy")
    grad = jax.grad(lambda x: fitted(x)[1])
    xs = jnp.stack([x, x.at[0].set(40.0)])

    @jax.jit
    def parts(x):
        return (fitted(x), jax.jacfwd(fitted)(x), jax.jacrev(fitted)(x), _refit_differences(refit, x, h), refit(x),
                jax.vmap(grad)(xs), grad(xs[1]))

    values, fwd, rev, fd, start, batched, single = parts(x)
    np.testing.assert_allclose(values, start, rtol=1e-8)
    _check_both_modes(values, fwd, rev, fd, h, "laplace")
    np.testing.assert_allclose(batched[1], single, rtol=1e-10, atol=1e-14)
