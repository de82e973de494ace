"""The sensitivity section of a run (issue 15, item 6): how much each answer depends on each input.

:func:`build` computes, for the single analysis, the typed record :class:`jaxschools.app.results.SensitivitySection`
(summary.json's ``sensitivity``) and the arrays its figures draw (:class:`jaxschools.app.results.SensitivityFigures`):

* the Jacobian of the headline quantities (:class:`jaxschools.core.sensitivity.Headline`: E[mu], sd(mu), the 95%
  interval ends of mu and tau, E[tau], every E[theta_i], P(theta_k > c), log p(y)) with respect to y, sigma,
  the case weights w and the prior's mu_loc, mu_scale, tau_scale. Its block d E[theta_i] / d y_j is the
  influence matrix;
* each school's influence: dQ / dw_j at w = 1 for Q = E[mu], E[tau], E[theta_k], P(theta_k > c), next to the
  exact leave-one-out change Q(w_j = 0) - Q(1), the linear prediction -dQ / dw_j and its error (as
  :func:`jaxschools.core.sensitivity.influence` defines them);
* for a proper prior, prior-sensitivity curves: E[mu], E[tau] and the 95% interval ends of mu and tau at each
  tau_scale of a log grid around the configured one (``[sensitivity]`` ``tau_scale_points``,
  ``tau_scale_factor``), with their derivative d/d tau_scale at each point (the figure's tangents).

**One compiled call.** Every number above is a value or a directional derivative of one pure function, the
library's :func:`jaxschools.core.sensitivity.headline`, at some point phi of the inputs in some direction v:
(Q(phi), dQ(phi)[v]) by ``jax.jvp``. The Jacobian is the directions e_i (one per input) at the data; the
leave-one-out values are the points w = 1 - e_j; the curves are the points tau_scale = s_g in the direction of
tau_scale. So the whole section is one batch of (point, direction) pairs, mapped by ``jax.lax.map`` in blocks of
:func:`block_size` pairs (vmapped inside a block, which bounds memory), compiled once per number of schools,
prior family and grid size: the query school and threshold are traced, so other data, names, queries and scales
of the same shapes reuse it. Forward mode, because the inputs (3 J + 3) and the outputs (J + 9) are of the same
order and the curves need forward derivatives anyway. Compiled, the eight schools' section takes a tenth of a
second or so; its compilation, a few seconds, is most of its cost (:data:`QUICK_COMPILE_NUMBERS`).

The flat prior has no scales: derivatives with respect to them and prior curves are recorded as null with the
reason "not applicable", and so is prior power-scaling (a null column, labelled "not applicable"). A moment that does not exist (:mod:`jaxschools.core.moments`)
is null, and so are its derivatives (JAX would give a 0 there).

**Power-scaling** (Kallioinen et al. 2024): priorsense's diagnostic of mu, tau and each theta_j, computed exactly by
:func:`jaxschools.core.power_scaling.diagnose` (its own compiled function; the marginal likelihood p(y_j | mu,
tau) raised to alpha, the default range of 4,000 draws, the threshold 0.05), without the quantiles' derivatives,
which the table does not show. Under the flat prior its prior column is null and the label "not applicable".

References: Giordano, Broderick & Jordan (2018), JMLR 19; Nguyen, Giordano, Meager & Broderick (2024),
arXiv:2408.07240; Kallioinen, Paananen, Bürkner & Vehtari (2024), Statistics and Computing 34 (power-scaling).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxschools.app import results
from jaxschools.core import moments, power_scaling, sensitivity

__all__ = ["build", "tau_scale_grid", "tangent_segments", "block_size", "NUM_NODES", "MAX_SCHOOLS", "BLOCK_NUMBERS",
           "SCALARS", "CURVE_QUANTITIES", "INFLUENCE_QUANTITIES", "PRIOR_SCALES", "TANGENT_HALF_WIDTH",
           "QUICK_COMPILE_NUMBERS"]

# The quadrature rule: the library's default (sensitivity.jacobian and influence), so the record's numbers are
# theirs.
NUM_NODES = 1024
# Beyond this many schools the section is not computed (its note says so): the Jacobian needs 3 J + 3 directions
# and the leave-one-out J points, each a pass over nodes x J, so the cost grows like J^2. Measured on the 2-core
# test machine under load, compiled: 0.1-0.3 s for J = 8, 3.4 s for J = 50, 9.4 s for J = 100.
MAX_SCHOOLS = 50
# (point, direction) pairs are vmapped together in blocks of about BLOCK_NUMBERS / (NUM_NODES x J) pairs (all of
# them for the eight schools), mapped one block after another by lax.map: that bounds each array at BLOCK_NUMBERS
# float64 numbers (8 MiB) whatever J.
BLOCK_NUMBERS = 2**20
# The headline scalars of core.sensitivity.Headline, in its order (theta_mean, a vector, has its own record).
SCALARS = ("mu_mean", "mu_sd", "mu_q025", "mu_q975", "tau_mean", "tau_q025", "tau_q975", "p_exceeds", "log_evidence")
# The quantities the prior-sensitivity curves follow, and those whose influence is shown (core.sensitivity's).
CURVE_QUANTITIES = ("mu_mean", "mu_q025", "mu_q975", "tau_mean", "tau_q025", "tau_q975")
INFLUENCE_QUANTITIES = sensitivity.Quantities._fields
PRIOR_SCALES = ("mu_loc", "mu_scale", "tau_scale")
# Each tangent of the prior curves reaches this fraction of the grid's whole span in log tau_scale either side of
# its point (long enough to be seen leaving the curve where it bends).
TANGENT_HALF_WIDTH = 0.04

NOT_APPLICABLE_FLAT = ("not applicable: the flat prior p(mu, tau) ∝ 1 has no scales to vary (use a proper prior, "
                       "model.prior = \"half_cauchy\" or \"half_normal\", to see them)")


def tau_scale_grid(tau_scale: float, points: int, factor: float) -> np.ndarray:
    """``points`` values of tau_scale evenly spaced in log from ``tau_scale / factor`` to ``tau_scale * factor``
    (the configured tau_scale is the middle point when ``points`` is odd)."""
    return np.exp(np.linspace(math.log(tau_scale) - math.log(factor), math.log(tau_scale) + math.log(factor),
                              points))


def tangent_segments(grid, value, derivative, half_width: float = TANGENT_HALF_WIDTH) -> np.ndarray:
    """(G, 2, 2): at each grid point s_g, the tangent of the curve Q(s) drawn on a logarithmic s axis.

    In u = log s the tangent is a straight line, Q ≈ Q(s_g) + s_g Q'(s_g) (u - u_g) (dQ / du = s dQ / ds), drawn
    over u_g -/+ ``half_width`` x the grid's span in u: rows are the segments' two ends (s, Q). NaN where the
    value or the derivative is undefined.
    """
    grid, value, derivative = (np.asarray(a, float) for a in (grid, value, derivative))
    span = math.log(grid.max() / grid.min()) if grid.size > 1 else 1.0
    h = half_width * span
    slope = grid * derivative  # dQ / d log s
    ends = np.stack([np.stack([grid * math.exp(-h), value - slope * h], -1),
                     np.stack([grid * math.exp(h), value + slope * h], -1)], axis=1)
    bad = ~(np.isfinite(value) & np.isfinite(derivative))
    ends[bad] = np.nan
    return ends


def block_size(num_schools: int, num_rows: int) -> int:
    """Pairs per vmapped block: about BLOCK_NUMBERS / (NUM_NODES x J), at least 1, at most ``num_rows``."""
    return max(1, min(num_rows, BLOCK_NUMBERS // (NUM_NODES * num_schools)))


def _directional(points: sensitivity.Inputs, directions: sensitivity.Inputs, mask, kind, query_school, threshold,
                 num_nodes, block):
    """(values, derivatives): headline(point) and its derivative in the direction, for each pair of the leading
    axis (a multiple of ``block``)."""

    def pair(args):
        point, direction = args
        return jax.jvp(lambda x: sensitivity.headline(x, mask, kind, query_school, threshold, num_nodes),
                       (point,), (direction,))

    return jax.lax.map(pair, (points, directions), batch_size=block)


# The section is one compiled function per J, prior family and grid size (the arrays, the query school and the
# threshold are traced). For small problems its compilation is most of its cost: measured on the 2-core machine,
# the eight schools' function compiled in 10.7 s and ran in 0.15 s with XLA's default CPU optimisation, in 5.3 s
# and 0.23 s with LLVM at level 0; for 50 schools, 22 s and 2.9 s against 6.3 s and 8.6 s. So level 0 below
# QUICK_COMPILE_NUMBERS numbers per pass (rows x nodes x J; the eight schools: 2e5 to 5e5), the default above.
QUICK_COMPILE_NUMBERS = 2_000_000
_STATIC = ("kind", "num_nodes", "block")
_DIRECTIONAL = {
    "default": jax.jit(_directional, static_argnames=_STATIC),
    "quick": jax.jit(_directional, static_argnames=_STATIC,
                     compiler_options={"xla_backend_optimization_level": 0}),
}


def _compiled(num_rows: int, num_schools: int):
    """The jitted :func:`_directional` for this size: LLVM level 0 for small problems on the CPU."""
    small = num_rows * NUM_NODES * num_schools <= QUICK_COMPILE_NUMBERS
    return _DIRECTIONAL["quick" if small and jax.default_backend() == "cpu" else "default"]


def _batch(base: sensitivity.Inputs, proper: bool, grid: np.ndarray):
    """The (points, directions) of the section and where each part starts: rows [0, J) y, [J, 2 J) sigma,
    [2 J, 3 J) w (directions e_j at the data); then, proper priors only, mu_loc, mu_scale, tau_scale; then the
    J leave-one-out points (w = 1 - e_j); then the curve's points (tau_scale = s_g, direction tau_scale); then
    copies of the data (direction 0) up to a multiple of the block size (:func:`block_size`)."""
    y, sigma = np.asarray(base.y), np.asarray(base.sigma)
    dtype, num = y.dtype, y.size
    num_jac = 3 * num + (3 if proper else 0)
    num_rows = num_jac + num + grid.size
    block = block_size(num, num_rows)
    padded = -(-num_rows // block) * block
    eye = np.eye(num, dtype=dtype)

    def column(value):
        return np.full(padded, value, dtype)

    points = {"y": np.tile(y, (padded, 1)), "sigma": np.tile(sigma, (padded, 1)),
              "case_weights": np.ones((padded, num), dtype),
              **{name: column(np.asarray(getattr(base, name))) for name in PRIOR_SCALES}}
    directions = {"y": np.zeros((padded, num), dtype), "sigma": np.zeros((padded, num), dtype),
                  "case_weights": np.zeros((padded, num), dtype), **{name: column(0.0) for name in PRIOR_SCALES}}
    directions["y"][0:num] = eye
    directions["sigma"][num:2 * num] = eye
    directions["case_weights"][2 * num:3 * num] = eye
    if proper:
        for i, name in enumerate(PRIOR_SCALES):
            directions[name][3 * num + i] = 1.0
    points["case_weights"][num_jac:num_jac + num] -= eye
    curve = slice(num_jac + num, num_rows)
    points["tau_scale"][curve] = grid
    directions["tau_scale"][curve] = 1.0
    as_inputs = lambda parts: sensitivity.Inputs(**{k: jnp.asarray(v) for k, v in parts.items()})  # noqa: E731
    return as_inputs(points), as_inputs(directions), num_jac, curve, block


def _defined(value, derivative):
    """``derivative`` with NaN where ``value`` is NaN: a moment that does not exist has no derivative (JAX's
    ``where`` would give 0)."""
    value, derivative = np.asarray(value, float), np.asarray(derivative, float)
    return np.where(np.isnan(value), np.nan, derivative)


def _headline(values, derivs, num: int, proper: bool) -> dict:
    """summary.json's ``sensitivity.headline``: each scalar's value and its derivatives by input."""
    out = {}
    y_rows, sigma_rows, w_rows = slice(0, num), slice(num, 2 * num), slice(2 * num, 3 * num)
    for name in SCALARS:
        value, d = float(getattr(values, name)[0]), np.asarray(getattr(derivs, name), float)
        d = _defined(value, d)
        prior = ({scale: d[3 * num + i] for i, scale in enumerate(PRIOR_SCALES)} if proper else None)
        out[name] = {"value": value, "y": d[y_rows], "sigma": d[sigma_rows], "case_weights": d[w_rows],
                     "prior": prior}
    return out


def _theta(values, derivs, num: int, proper: bool) -> dict:
    """summary.json's ``sensitivity.theta``: E[theta_i | y] and its derivatives, the influence matrix among them."""
    y_rows, sigma_rows, w_rows = slice(0, num), slice(num, 2 * num), slice(2 * num, 3 * num)
    value = np.asarray(values.theta_mean[0], float)
    d = _defined(value[None, :], np.asarray(derivs.theta_mean, float))  # (row, i)
    # Row j of a block is the direction e_j: d E[theta_i] / d x_j sits at [j, i]; the record holds [i][j].
    return {"value": value, "y": d[y_rows].T, "sigma": d[sigma_rows].T, "case_weights": d[w_rows].T,
            "prior": ({scale: d[3 * num + i] for i, scale in enumerate(PRIOR_SCALES)} if proper else None)}


def _influence(values, derivs, num: int, num_jac: int, query_school: int, improper) -> dict:
    """summary.json's ``sensitivity.influence`` (as :func:`jaxschools.core.sensitivity.influence`). ``improper``
    (J,): whether the posterior without school j is improper (the flat prior with fewer than 3 schools left):
    the quadrature's numbers there are those of a truncated range, so that school's leave-one-out values are
    null."""
    w_rows, loo_rows = slice(2 * num, 3 * num), slice(num_jac, num_jac + num)
    out = {}
    for name in INFLUENCE_QUANTITIES:
        value, d = np.asarray(getattr(values, name), float), np.asarray(getattr(derivs, name), float)
        if name == "theta_mean":
            value, d = value[:, query_school], d[:, query_school]
        full = value[0]
        derivative = _defined(full, d[w_rows])
        loo = np.where(improper, np.nan, value[loo_rows])
        change = loo - full
        linear = -derivative
        out[name] = {"full": full, "derivative": derivative, "loo": loo, "change": change, "linear": linear,
                     "linear_error": change - linear}
    return out


def _curves(values, derivs, grid: np.ndarray, curve: slice, tau_scale: float):
    """summary.json's ``sensitivity.prior_curves`` and the figure's tangents."""
    curves, tangents = {}, {}
    for name in CURVE_QUANTITIES:
        value = np.asarray(getattr(values, name), float)[curve]
        derivative = _defined(value, np.asarray(getattr(derivs, name), float)[curve])
        curves[name] = {"value": value, "derivative": derivative}
        tangents[name] = tangent_segments(grid, value, derivative)
    return {"tau_scale": grid, "configured": tau_scale, "curves": curves}, tangents


def _power_scaling(data, prior, names) -> dict:
    """summary.json's ``sensitivity.power_scaling``: priorsense's table (quantity, prior, likelihood, diagnosis),
    theta's rows named after the schools."""
    diagnosis = power_scaling.diagnose(data, prior, quantiles=False)._replace(names=tuple(names))
    rows = [{"quantity": quantity, "prior": p, "likelihood": lik, "diagnosis": label}
            for quantity, p, lik, label in diagnosis.rows()]
    return {"threshold": diagnosis.threshold, "likelihood": diagnosis.likelihood_kind,
            "num_draws": diagnosis.num_draws, "rows": rows}


def build(config: dict, data, prior, query_school: int, threshold: float, query_name: str, names=None):
    """(summary.json's ``sensitivity`` as a :class:`~jaxschools.app.results.SensitivitySection`, the figures'
    :class:`~jaxschools.app.results.SensitivityFigures` or None), or (None, None) when
    ``sensitivity.enabled`` is false.

    ``data`` (unnamed :class:`~jaxschools.core.data.Schools`) and ``prior`` (:class:`~jaxschools.core.models.Prior`)
    as the analysis uses them; P(theta_k > c) for k = ``query_school`` (named ``query_name``) at c = ``threshold``,
    the analysis's query; ``names`` the schools' names (power-scaling's theta rows; default their indices).
    """
    options = config["sensitivity"]
    if not options["enabled"]:
        return None, None
    # Prior scales to vary (mu_loc, mu_scale, tau_scale): a normal mu and a tau family with a scale.
    proper = prior.spec.has_prior_scales
    num = data.num_schools
    not_applicable = None if proper else NOT_APPLICABLE_FLAT if prior.kind == "flat" else (
        f"not applicable: the {prior.kind} prior does not have the three scales mu_loc, mu_scale and tau_scale to "
        "vary (a normal prior on mu and a tau family with a scale has them)")
    section = {"query_school": query_name, "threshold": threshold, "num_nodes": NUM_NODES, "note": None,
               "headline": None, "theta": None, "prior_scales_note": not_applicable, "influence": None,
               "prior_curves": None, "prior_curves_note": not_applicable,
               "power_scaling": None, "power_scaling_note": None}
    if num > MAX_SCHOOLS:
        note = (f"not computed for {num:,} schools: the Jacobian and the leave-one-out analyses cost J^2 passes "
                f"over the quadrature rule, so the section stops at J = {MAX_SCHOOLS} "
                "(jaxschools.core.sensitivity computes them for any J)")
        section.update(note=note, prior_curves_note=section["prior_curves_note"] or note, power_scaling_note=note)
        return results.SensitivitySection.build(section), None
    base = sensitivity.inputs_of(data, prior)
    tau_scale = float(np.asarray(prior.tau_scale))
    grid = (tau_scale_grid(tau_scale, options["tau_scale_points"], options["tau_scale_factor"]) if proper
            else np.zeros(0))
    points, directions, num_jac, curve, block = _batch(base, proper, grid)
    directional = _compiled(points.y.shape[0], num)
    values, derivs = directional(points, directions, data.mask, kind=prior.kind,
                                 query_school=jnp.asarray(query_school, jnp.int32),
                                 threshold=jnp.asarray(threshold, data.y.dtype), num_nodes=NUM_NODES, block=block)
    values, derivs = jax.tree_util.tree_map(np.asarray, (values, derivs))
    section["headline"] = _headline(values, derivs, num, proper)
    section["theta"] = _theta(values, derivs, num, proper)
    observed = np.asarray(data.mask, bool)
    left = observed.sum() - observed  # schools in the likelihood without school j
    improper = left < moments.min_schools(prior.kind, "tau", 0)
    section["influence"] = _influence(values, derivs, num, num_jac, query_school, improper)
    tangents = None
    if proper:
        section["prior_curves"], tangents = _curves(values, derivs, grid, curve, tau_scale)
    section["power_scaling"] = _power_scaling(data, prior, range(num) if names is None else names)
    record = results.SensitivitySection.build(section)
    return record, results.SensitivityFigures(tangents=tangents)


def __dir__():
    # The public names only, not the imports (``dir(js.diagnostics)`` lists no ``jax`` or ``jnp``).
    return list(__all__)
