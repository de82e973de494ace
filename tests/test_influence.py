"""Influence of each school and the sensitivity API (issue 15, item 4; jaxschools.core.sensitivity).

The leave-one-out values by weights (w_j = 0) against the same analysis of the data with school j masked;
the derivatives and exact changes against closed forms in the complete-pooling limit; the derivative against
finite differences of the weights; and the Jacobian API's shapes, NaN rules and agreement with exact.summary.
Each compiled function is built once per module (the same shapes and prior family reuse it).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import jaxschools as js
from jaxschools.core import exact
from jaxschools.core.sensitivity import Quantities

NODES = 256
Y = np.array([28.0, 8, -3, 7, -1, 1, 18, 12])
SIGMA = np.array([15.0, 10, 16, 11, 9, 11, 10, 18])
# The default tests share one compiled influence: the same shapes, prior family and query school (the prior's
# scales and the threshold are traced values).
KIND, QUERY, THRESHOLD = "half_normal", 2, 10.0


def _influence(data, prior):
    return js.sensitivity.influence(data, prior, query_school=QUERY, threshold=THRESHOLD, num_nodes=NODES)


def test_leave_one_out_by_weight_is_leave_one_out_by_mask(eight):
    """influence's loo[j] (w_j = 0) equals the analysis of the data with school j masked (the same compiled
    function called with each mask, so no new compilation), every quantity to 1e-12; and the fields are
    what they say: change = loo - full, linear = -derivative, linear_error = change - linear."""
    got = _influence(eight, KIND)
    for j in range(8):
        masked = _influence(eight.replace(mask=eight.mask.at[j].set(False)), KIND)
        for name in Quantities._fields:
            np.testing.assert_allclose(getattr(got.loo, name)[j], getattr(masked.full, name), rtol=1e-12,
                                       err_msg=f"{name}, school {j}")
    for name in Quantities._fields:
        field = lambda part: np.asarray(getattr(part, name))  # noqa: E731
        np.testing.assert_allclose(field(got.change), field(got.loo) - field(got.full), rtol=1e-15)
        np.testing.assert_allclose(field(got.linear), -field(got.derivative), rtol=0)
        np.testing.assert_allclose(field(got.linear_error), field(got.change) - field(got.linear), rtol=1e-15)


def test_complete_pooling_limit_has_closed_form_influence():
    """tau ~ HalfNormal(1e-8) pins tau at ~1e-8 (tau^2 / sigma^2 ~ 1e-18), so mu | y and theta_k | y are the
    Gaussian of complete pooling with the N(mu_loc, m^2) prior: precision P(w) = sum w_j / sigma_j^2 + 1/m^2,
    mean E(w) = (sum w_j y_j / sigma_j^2 + mu_loc / m^2) / P(w). Then dE/dw_j = (y_j - E) / (sigma_j^2 P), the
    exact leave-one-out change is E(1 - e_j) - E(1), and P(theta_k > c) = Phi((E - c) sqrt(P)) with its
    derivative phi(z) (dE/dw_j sqrt(P) + (E - c) dP/dw_j / (2 sqrt(P)))."""
    mu_loc, m, c = 3.0, 20.0, THRESHOLD
    got = _influence(js.data.Schools(jnp.asarray(Y), jnp.asarray(SIGMA)), js.models.Prior(KIND, mu_loc, m, 1e-8))

    def pooled(w):
        precision = np.sum(w / SIGMA**2) + 1 / m**2
        return (np.sum(w * Y / SIGMA**2) + mu_loc / m**2) / precision, precision

    mean, precision = pooled(np.ones(8))
    loo = np.array([pooled(1.0 - np.eye(8)[j]) for j in range(8)])
    d_mean = (Y - mean) / SIGMA**2 / precision
    z = (mean - c) * np.sqrt(precision)
    d_p = stats.norm.pdf(z) * (d_mean * np.sqrt(precision) + (mean - c) / SIGMA**2 / (2 * np.sqrt(precision)))
    for name in ("mu_mean", "theta_mean"):
        np.testing.assert_allclose(getattr(got.full, name), mean, rtol=1e-12, err_msg=name)
        np.testing.assert_allclose(getattr(got.derivative, name), d_mean, rtol=1e-9, atol=1e-12, err_msg=name)
        np.testing.assert_allclose(getattr(got.change, name), loo[:, 0] - mean, rtol=1e-9, atol=1e-12, err_msg=name)
        # The linear prediction's error has a closed form too: the change plus the derivative.
        np.testing.assert_allclose(getattr(got.linear_error, name), loo[:, 0] - mean + d_mean, rtol=1e-7,
                                   atol=1e-11, err_msg=name)
    np.testing.assert_allclose(got.full.p_exceeds, stats.norm.cdf(z), rtol=1e-10)
    np.testing.assert_allclose(got.derivative.p_exceeds, d_p, rtol=1e-8, atol=1e-14)
    want = stats.norm.cdf((loo[:, 0] - c) * np.sqrt(loo[:, 1]))
    np.testing.assert_allclose(got.loo.p_exceeds, want, rtol=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("prior", ["flat", "half_cauchy"])
def test_influence_derivative_against_finite_differences_of_the_weights(eight, prior):
    """d Q / d w_j at w = 1 against central differences of exact.summary at w = 1 +/- h e_j (h = 1e-5; the
    quantities are smooth in w, see tests/test_exact_gradients.py for the step), relative 1e-6 of each
    quantity's largest derivative."""
    got = js.sensitivity.influence(eight, prior, query_school=3, num_nodes=NODES)
    h = 1e-5
    steps = jnp.concatenate([1.0 + h * jnp.eye(8), 1.0 - h * jnp.eye(8)])
    s = jax.jit(jax.vmap(lambda w: exact.summary(eight, prior, query_school=3, threshold=float(Y[3]),
                                                 num_nodes=NODES, case_weights=w)))(steps)
    values = {"mu_mean": s["mu"]["mean"], "tau_mean": s["tau"]["mean"], "theta_mean": s["theta"]["mean"][:, 3],
              "p_exceeds": s["p_exceeds"]}
    for name, v in values.items():
        fd = (np.asarray(v[:8]) - np.asarray(v[8:])) / (2 * h)
        np.testing.assert_allclose(getattr(got.derivative, name), fd, rtol=0, atol=1e-6 * np.abs(fd).max(),
                                   err_msg=name)


@pytest.mark.slow
def test_jacobian_api(eight):
    """The Jacobian's shapes; values equal exact.summary's; forward equals reverse; the flat prior's prior
    scales and log evidence are NaN ('not applicable'), a proper prior's finite; a moment that does not exist
    (E[tau] with three schools, flat prior) has a NaN row, not zeros."""
    rev = js.sensitivity.jacobian(eight, "half_cauchy", query_school=1, num_nodes=NODES)
    fwd = js.sensitivity.jacobian(eight, "half_cauchy", query_school=1, num_nodes=NODES, mode="forward")
    s = exact.summary(eight, "half_cauchy", query_school=1, num_nodes=NODES)
    assert rev.jacobian.theta_mean.y.shape == (8, 8) and rev.jacobian.mu_q975.tau_scale.shape == ()
    for got, want in [(rev.value.mu_mean, s["mu"]["mean"]), (rev.value.mu_q975, s["mu"]["q975"]),
                      (rev.value.tau_q025, s["tau"]["q025"]), (rev.value.theta_mean, s["theta"]["mean"]),
                      (rev.value.p_exceeds, s["p_exceeds"]), (rev.value.log_evidence, s["log_evidence"])]:
        np.testing.assert_allclose(got, want, rtol=1e-12)
    for a, b in zip(jax.tree_util.tree_leaves(rev.jacobian), jax.tree_util.tree_leaves(fwd.jacobian)):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-13)
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(rev.jacobian))
    flat = js.sensitivity.jacobian(eight.replace(mask=jnp.arange(8) < 3), "flat", num_nodes=NODES)
    for field in flat.jacobian:
        assert np.all(np.isnan(field.tau_scale)) and np.all(np.isnan(field.mu_loc))
    assert np.all(np.isnan(flat.jacobian.log_evidence.y))
    assert np.isnan(flat.value.tau_mean) and np.all(np.isnan(flat.jacobian.tau_mean.y))
    assert np.all(np.isfinite(flat.jacobian.tau_q975.y))


@pytest.mark.slow
def test_leave_one_out_of_an_improper_posterior_is_nan_not_a_number(eight):
    """Flat prior. Four of the eight schools in the likelihood: leaving one out leaves 3, a proper posterior,
    so P(theta_k > c) without each school is a number. Three in: leaving one leaves 2, an improper posterior,
    so those rows are NaN (the quadrature's truncated range would give finite numbers), while the rows of the
    masked schools (already out: the same three schools) are not."""
    four = js.sensitivity.influence(eight.replace(mask=jnp.arange(8) < 4), "flat", num_nodes=NODES)
    three = js.sensitivity.influence(eight.replace(mask=jnp.arange(8) < 3), "flat", num_nodes=NODES)
    assert np.all(np.isfinite(four.loo.p_exceeds[:4]))
    for name in Quantities._fields:
        assert np.all(np.isnan(getattr(three.loo, name)[:3])) and np.all(np.isnan(getattr(three.change, name)[:3]))
    assert np.all(np.isfinite(three.loo.p_exceeds[3:]))
