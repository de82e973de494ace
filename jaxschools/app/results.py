"""The typed result of a run: what the report and the figures render, and what summary.json serialises.

Two kinds of record, both frozen dataclasses built once by the application layer
(:mod:`jaxschools.app.analysis`, :mod:`jaxschools.app.experiments`):

* :class:`Summary` and the records it nests: every number the report shows. ``Summary.to_json()`` is the
  content of summary.json (schema :data:`SCHEMA_VERSION`, documented in ``docs/summary.md``), and
  ``Summary.from_json(obj)`` reads one back *strictly*: a missing key, an unknown key or a value of the wrong
  JSON type raises :class:`SchemaError` naming its path. The records are the schema; there is no second copy
  of it.
* :class:`AnalysisFigures`, :class:`SweepFigures`, :class:`SimulationFigures`: the arrays the figures draw
  (draws, grids, curves), as NumPy arrays; they are not serialised.

A record's constructor converts what it is given to its field types (NumPy or JAX scalars and arrays to
Python numbers, tuples and lists; a number that is NaN or infinite to None, ``null`` in JSON), so the
records hold plain Python values and NumPy arrays only. This module imports neither JAX nor the library:
the presentation layer reads these records without starting JAX.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import types
import typing
from typing import Any, Optional, Union

import numpy as np

__all__ = [
    "SCHEMA_VERSION", "SchemaError", "Unplottable", "span", "central_range", "failure_note", "finite", "finite_rows", "valid_cov",
    "school_label", "Z975", "NOT_MIXED_REASONS", "Record", "key_paths",
    "Summary", "Data", "Separate", "Pooled", "Interval", "ClassicalLeaveOneOut", "ClassicalFit", "EggerTest", "Classical", "Laplace", "Mcmc", "Flags", "Limits", "MuLogTau", "Contrast",
    "Mean", "ContrastPosterior", "Stats", "Posterior", "Theta", "PExceeds", "Queries", "Moments", "NewSchool",
    "PpcEntry", "Predictive", "ExactStats", "ExactTheta", "BayesFactors", "ExactDistribution", "Heterogeneity",
    "ExactPrediction", "Shortest", "ExactPredictiveCheck", "Exact", "ExactRow", "ExactCheck", "LaplaceVsExact",
    "Provenance", "SweepTheta", "SweepPosterior", "SweepQueries", "Loo", "SweepExact", "SweepRow", "Coverage", "Failures",
    "Sbc", "Study", "AnalysisFigures", "ContourGrid", "DivergencePanel", "SweepFigures", "SimulationFigures", "StudyFigures",
    "PriorPredictive", "RunRecord", "PriorScales", "Derivatives", "SchoolPriorScales", "ThetaDerivatives",
    "InfluenceEntry", "PriorCurve", "PriorCurves", "PowerScalingRow", "PowerScaling", "SensitivitySection",
    "SensitivityFigures",
]

# 3 (issue 14): the typed result; 4 (issue 15): the sensitivity section; 5 (issue 16): the classical section and
# the data's measure; 6 (issue 16): the exact section's Bayes factors, heterogeneity, prediction, shortest intervals
# and predictive check. CHANGELOG.md lists the changes of keys.
SCHEMA_VERSION = 6

Real = Optional[float]  # a JSON number, or null where the value does not exist or is undefined
# Phi^-1(0.975): the half-width of a central 95% normal interval in sds.
Z975 = 1.959963984540054
# Why chains are not shown to have mixed (``mcmc.not_mixed_reasons``, decided by ``_record.not_mixed_reasons``):
# one chain only (R-hat cannot compare chains); an ESS or R-hat undefined (draws that do not vary); R-hat at or
# above its limit; a bulk or tail ESS below its limit.
NOT_MIXED_REASONS = ("one_chain", "undefined", "rhat", "ess")


class SchemaError(ValueError):
    """A value does not fit the summary's typed model: its message names the path (``mcmc.ess.mu``)."""


class Unplottable(ValueError):
    """The values cannot be placed on a matplotlib axis (their span overflows double precision)."""


def span(low: float, high: float, pad: float = 0.06) -> tuple[float, float]:
    """``[low, high]`` widened by ``pad`` of its width, and made non-degenerate: an axis's limits.

    Raises :class:`Unplottable` when the limits are not finite numbers or their span overflows double
    precision (e.g. values of -1e308 and 1e308): no axis can show them. Shared by the figures and by the
    analysis, which lays out the grids the figures draw.
    """
    low, high = float(low), float(high)
    width = high - low
    if not width > 0:
        width = max(abs(low), abs(high)) * 0.2 or 1.0
        low, high = low - width / 2, high + width / 2
    limits = (low - pad * width, high + pad * width)
    if not (math.isfinite(width) and all(map(math.isfinite, limits))):
        raise Unplottable(f"the values from {low:.3g} to {high:.3g} span more than double precision can plot")
    return limits


def central_range(values) -> Optional[tuple[float, float]]:
    """The central 99.8% of the finite ``values`` (their 0.001 and 0.999 quantiles), made non-degenerate by
    :func:`span` (without padding) where they are equal; None when no value is finite.

    A drawing range, not a statistic: the marginal figures bin the draws over it, cutting the extreme tails so
    the bulk stays readable, and the analysis lays the Laplace curve it computes for those panels over the same
    range (:func:`jaxschools.app._record.analysis_figures`), so that both are one rule. Raises
    :class:`Unplottable` when the range overflows double precision.
    """
    x = np.asarray(values, float).ravel()
    x = x[np.isfinite(x)]
    if not x.size:
        return None
    low, high = np.quantile(x, [0.001, 0.999])
    if not high > low or not math.isfinite(high - low):
        low, high = span(float(low), float(high), pad=0.0)
    return low, high


def failure_note(error: BaseException) -> str:
    """One line saying why a figure (or the data it needs) could not be made, for the report."""
    text = " ".join(str(error).split())
    text = text if len(text) <= 300 else text[:297] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def finite(x) -> bool:
    """A real number (Python's or NumPy's, not a bool) that is finite; False for None (an undefined value)."""
    return isinstance(x, numbers.Real) and not isinstance(x, (bool, np.bool_)) and math.isfinite(float(x))


def finite_rows(positions) -> np.ndarray:
    """(chain, draw, 2) draws of (mu, log tau) -> (n, 2), chain by chain, without the rows holding a NaN or inf."""
    flat = np.asarray(positions, float).reshape(-1, 2)
    return flat[np.all(np.isfinite(flat), axis=1)]


def valid_cov(cov) -> bool:
    """Whether ``cov`` is a finite, symmetric-part positive definite 2 x 2 matrix (a Laplace fit that can be drawn
    as an ellipse and spans a grid)."""
    cov = np.asarray(cov, float)
    if cov.shape != (2, 2) or not np.all(np.isfinite(cov)):
        return False
    return bool(np.all(np.linalg.eigvalsh(0.5 * (cov + cov.T)) > 0))


def school_label(names, j: int) -> str:
    """'school A', or the name alone where it already says so ('School 12', 'school_03')."""
    name = str(names[j])
    return name if name.lower().startswith("school") else f"school {name}"


# ----------------------------------------------------------------------------------------------------------
# Conversion to field types (from computed values) and strict checking (of JSON read back).


def _is_optional(tp) -> tuple[bool, Any]:
    """(whether None is allowed, the type without None)."""
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        allowed = len(args) < len(typing.get_args(tp))
        return allowed, (args[0] if len(args) == 1 else Union[tuple(args)])
    return False, tp


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _convert(tp, value, path: str, strict: bool):
    """``value`` as type ``tp``. ``strict``: ``value`` must already be JSON of that type (summary.json read
    back); otherwise NumPy/JAX values are converted (a computed result)."""
    if tp is Any:
        return _plain(value, path, strict)
    optional, inner = _is_optional(tp)
    if value is None:
        if optional:
            return None
        raise SchemaError(f"{path}: null where {getattr(inner, '__name__', inner)} is required")
    if not strict and not isinstance(value, (str, bytes, dict, list, tuple, Record)) and hasattr(value, "__array__") \
            and inner is not np.ndarray:
        array = np.asarray(value)
        value = array.item() if array.ndim == 0 else array.tolist()
    if inner is np.ndarray:
        return np.asarray(value)
    if inner is float:
        if not _is_number(value):
            raise SchemaError(f"{path}: {value!r} is not a number")
        value = float(value)
        if math.isfinite(value):
            return value
        if strict or not optional:
            raise SchemaError(f"{path}: {value!r} is not a finite number")
        return None
    if inner is int:
        if strict and not (isinstance(value, int) and not isinstance(value, bool)):
            raise SchemaError(f"{path}: {value!r} is not an integer")
        if not strict and not (_is_number(value) and float(value) == int(value)):
            raise SchemaError(f"{path}: {value!r} is not an integer")
        return int(value)
    if inner is bool:
        if strict and not isinstance(value, bool):
            raise SchemaError(f"{path}: {value!r} is not true or false")
        if not isinstance(value, (bool, np.bool_)):
            raise SchemaError(f"{path}: {value!r} is not true or false")
        return bool(value)
    if inner is str:
        if not isinstance(value, str):
            raise SchemaError(f"{path}: {value!r} is not a string")
        return value
    origin = typing.get_origin(inner)
    if origin is tuple:
        item = typing.get_args(inner)[0]
        if not isinstance(value, (list, tuple)) or (strict and not isinstance(value, list)):
            raise SchemaError(f"{path}: {type(value).__name__} where a list is required")
        return tuple(_convert(item, v, f"{path}[{i}]", strict) for i, v in enumerate(value))
    if origin is dict:
        key_type, item = typing.get_args(inner)
        if not isinstance(value, dict):
            raise SchemaError(f"{path}: {type(value).__name__} where an object is required")
        return {str(k): _convert(item, v, f"{path}.{k}", strict) for k, v in value.items()}
    if isinstance(inner, type) and issubclass(inner, Record):
        if isinstance(value, inner) and not strict:
            return value
        return inner._from(value, path, strict)
    if origin in (Union, types.UnionType):  # a swept value: a number or a string, kept as it was given
        option = str if isinstance(value, str) else int if isinstance(value, (int, np.integer)) else float
        if option not in typing.get_args(inner) or isinstance(value, (bool, np.bool_)):
            raise SchemaError(f"{path}: {value!r} is none of {typing.get_args(inner)}")
        return _convert(option, value, path, strict)
    raise TypeError(f"{path}: no conversion to {inner!r}")  # a field type this module does not handle


def _plain(value, path: str, strict: bool):
    """Free-form JSON (the resolved config): dicts, lists, strings, numbers, booleans, null."""
    if isinstance(value, dict):
        return {str(k): _plain(v, f"{path}.{k}", strict) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{path}[{i}]", strict) for i, v in enumerate(value)]
    if value is None or isinstance(value, (str, bool)):
        return value
    if not strict and hasattr(value, "__array__"):
        return _plain(np.asarray(value).tolist(), path, strict)
    if _is_number(value):
        if isinstance(value, float) and not math.isfinite(value):
            if strict:
                raise SchemaError(f"{path}: {value!r} is not a finite number")
            return None
        return value
    raise SchemaError(f"{path}: {value!r} is not JSON")


def _dump(value):
    if isinstance(value, Record):
        return value.to_json()
    if isinstance(value, tuple):
        return [_dump(v) for v in value]
    if isinstance(value, dict):
        return {k: _dump(v) for k, v in value.items()}
    return value


class Record:
    """Base of the frozen dataclasses below: conversion on construction, ``to_json`` and strict ``from_json``."""

    _hints = None  # the resolved field types of the subclass, set on first use

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls._hints = None  # resolved on first use, once the whole module (every nested record) is defined

    @classmethod
    def _types(cls) -> dict:
        if cls._hints is None:
            cls._hints = typing.get_type_hints(cls)
        return cls._hints

    def __post_init__(self):
        hints = self._types()
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            object.__setattr__(self, field.name, _convert(hints[field.name], value, field.name, False))

    @classmethod
    def _from(cls, obj, path: str, strict: bool):
        if not isinstance(obj, dict):
            raise SchemaError(f"{path or cls.__name__}: {type(obj).__name__} where an object is required")
        names = [field.name for field in dataclasses.fields(cls)]
        missing, unknown = [n for n in names if n not in obj], sorted(set(obj) - set(names))
        if missing or unknown:
            where = path or "summary"
            raise SchemaError(f"{where}: " + "; ".join(
                part for part in (f"missing {missing}" if missing else "", f"unknown {unknown}" if unknown else "")
                if part))
        hints = cls._types()
        prefix = f"{path}." if path else ""
        values = {n: _convert(hints[n], obj[n], prefix + n, strict) for n in names}
        return cls(**values)

    @classmethod
    def from_json(cls, obj: dict):
        """The record of JSON ``obj`` (summary.json as ``json.load`` gives it), checked strictly: every key
        present, no other, each value of its JSON type; raises :class:`SchemaError` naming the first path
        that is not."""
        return cls._from(obj, "", True)

    @classmethod
    def build(cls, obj: dict):
        """The record of a computed nested dict whose leaves may be NumPy or JAX values (converted); the
        keys are checked as strictly as by :meth:`from_json`."""
        return cls._from(obj, "", False)

    def to_json(self) -> dict:
        """Plain JSON: records as objects in field order, tuples as lists, None as null."""
        return {field.name: _dump(getattr(self, field.name)) for field in dataclasses.fields(self)}


record = dataclasses.dataclass(frozen=True, eq=False)


def key_paths(cls=None, prefix: str = "") -> list[str]:
    """Every key of the JSON of record class ``cls`` (default :class:`Summary`) as a dotted path, nested
    records included (``mcmc.ess.mu``); a list's or a map's items add ``[]`` (``sweep[].ess.mu``,
    ``predictive.ppc[].p_value``). docs/summary.md documents each (a test checks that it does)."""
    cls = Summary if cls is None else cls
    paths = []
    hints = cls._types()
    for name in (field.name for field in dataclasses.fields(cls)):
        tp = hints[name]
        path = f"{prefix}{name}"
        paths.append(path)
        inner = _is_optional(tp)[1]
        suffix = ""
        while typing.get_origin(inner) in (tuple, dict):
            inner = _is_optional(typing.get_args(inner)[-1 if typing.get_origin(inner) is dict else 0])[1]
            suffix += "[]"
        if isinstance(inner, type) and issubclass(inner, Record):
            paths += key_paths(inner, f"{path}{suffix}.")
    return paths


# ----------------------------------------------------------------------------------------------------------
# summary.json (docs/summary.md describes every key).


@record
class Data(Record):
    """The studies' effects and standard errors, and what they were computed from."""
    names: tuple[str, ...]
    y: tuple[float, ...]
    sigma: tuple[float, ...]
    layout: str
    measure: Optional[str]
    zero_cell_corrected: Optional[tuple[bool, ...]]
    covariates: dict[str, tuple[Optional[Union[float, str]], ...]]
    source: str
    dataset: Optional[str]
    citation: Optional[str]


@record
class Separate(Record):
    """95% intervals y_j -/+ 1.96 sigma_j."""
    lower: tuple[Real, ...]
    upper: tuple[Real, ...]


@record
class Pooled(Record):
    """Complete pooling (BDA3 eq. 5.13): the precision-weighted mean, its variance, sd and 95% interval, and
    the chi-squared homogeneity test."""
    mean: Real
    var: Real
    sd: Real
    q025: Real
    q975: Real
    chi2: Real
    df: int
    p_value: Real


@record
class Interval(Record):
    """The two ends of an interval."""
    lower: Real
    upper: Real


@record
class ClassicalLeaveOneOut(Record):
    """One estimator's fits with each study left out in turn, in the data's order of studies."""
    mu: tuple[Real, ...]
    ci_lower: tuple[Real, ...]
    ci_upper: tuple[Real, ...]
    tau2: tuple[Real, ...]
    i2: tuple[Real, ...]
    q: tuple[Real, ...]
    q_p_value: tuple[Real, ...]


@record
class ClassicalFit(Record):
    """The random-effects meta-analysis by one tau^2 estimator, as metafor's ``rma.uni`` reports it."""
    tau2: Real
    tau: Real
    mu: Real
    se: Real
    ci: Interval
    pi: Interval
    se_knha: Real
    ci_knha: Interval
    pi_knha: Interval
    q: Real
    q_df: int
    q_p_value: Real
    i2: Real
    h2: Real
    tau2_ci: Interval
    i2_ci: Interval
    h2_ci: Interval
    leave_one_out: ClassicalLeaveOneOut


@record
class EggerTest(Record):
    """Egger's regression test of funnel-plot asymmetry (:func:`jaxschools.core.random_effects.egger`)."""
    intercept: Real
    intercept_se: Real
    t: Real
    df: int
    p_value: Real
    limit: Real


@record
class Classical(Record):
    """The classical section (``jaxschools.app.classical_record``): one fit per configured estimator, and Egger's
    test (null with fewer than 3 studies)."""
    level: float
    num_studies: int
    fits: dict[str, ClassicalFit]
    egger: Optional[EggerTest]


@record
class Laplace(Record):
    """The Laplace fit of (mu, log tau): mode, covariance and what the report derives from them."""
    mode: tuple[Real, ...]
    cov: tuple[tuple[Real, ...], ...]
    converged: bool
    log_evidence: Real
    iterations: int
    sd: tuple[Real, ...]
    corr: Real
    tau_at_mode: Real


@record
class MuLogTau(Record):
    mu: Real
    log_tau: Real


@record
class Flags(Record):
    """What the analysis warns about; a value that is not empty, false or 0 is a warning."""
    stuck_chains: tuple[int, ...]
    not_mixed: bool
    laplace_not_converged: bool
    frozen_chains: tuple[int, ...]
    divergent_transitions: int
    exact_mismatch: int


@record
class Limits(Record):
    """The thresholds the flags use: R-hat below ``rhat`` and ESS at least ``ess`` (Vehtari et al. 2021); a
    chain is stuck below ``stuck_acceptance`` and frozen when its sd is at most ``frozen_rtol`` of the
    posterior's scale."""
    rhat: float
    ess: float
    frozen_rtol: float
    stuck_acceptance: float


@record
class Mean(Record):
    mean: Real


@record
class ContrastPosterior(Record):
    mu: Mean
    log_tau: Mean


@record
class Contrast(Record):
    """The second parameterization's run (``model.contrast``)."""
    parameterization: str
    divergences: Optional[int]
    divergence_rate: Real
    divergences_below_median_tau: Real
    step_size: Optional[tuple[Real, ...]]
    num_integration_steps: Real
    acceptance_rate: tuple[Real, ...]
    ess: MuLogTau
    rhat: MuLogTau
    posterior: ContrastPosterior


@record
class Mcmc(Record):
    kernel: str
    num_chains: int
    num_samples: int
    burn_in: int
    acceptance_rate: tuple[Real, ...]
    ess: MuLogTau
    ess_tail: MuLogTau
    rhat: MuLogTau
    divergences: Optional[int]
    flags: Flags
    limits: Limits
    # Frozen chains (flags.frozen_chains) that accepted at least limits.stuck_acceptance of their proposals: frozen
    # not by rejecting but by steps below floating-point resolution (the others are stuck).
    frozen_accepting: tuple[int, ...]
    # Every chain of frozen_accepting with a known acceptance rate accepted every proposal (rate 1, at least one
    # known): the report then says their steps are below floating-point resolution.
    frozen_accepted_every_proposal: bool
    # Why flags.not_mixed is set, in NOT_MIXED_REASONS' order; empty when the chains are shown to have mixed.
    not_mixed_reasons: tuple[str, ...]
    parameterization: str
    divergence_rate: Real
    divergences_below_median_tau: Real
    step_size: Optional[tuple[Real, ...]]
    num_integration_steps: Real
    contrast: Optional[Contrast]


@record
class Stats(Record):
    mean: Real
    sd: Real
    q025: Real
    q975: Real
    mcse_mean: Real
    ess_bulk: Real
    ess_tail: Real
    rhat: Real
    mcse_sd: Real


@record
class Posterior(Record):
    mu: Stats
    log_tau: Stats
    tau: Stats


@record
class Theta(Record):
    mean: tuple[Real, ...]
    mean_mcse: tuple[Real, ...]
    sd: tuple[Real, ...]
    q025: tuple[Real, ...]
    q975: tuple[Real, ...]


@record
class PExceeds(Record):
    """P(theta_k > c | y) by the sampler (with its MCSE), exactly, and by the separate and pooled analyses."""
    school: str
    threshold: float
    p: Real
    mcse: Real
    exact: Real
    separate: Real
    pooled: Real


@record
class Queries(Record):
    p_exceeds: PExceeds
    p_greater: Optional[tuple[tuple[Real, ...], ...]]
    p_best: tuple[Real, ...]


@record
class Moments(Record):
    mean: Real
    mcse_mean: Real
    sd: Real
    q025: Real
    q975: Real


@record
class NewSchool(Record):
    sigma: Real
    theta: Moments
    y: Moments


@record
class PpcEntry(Record):
    label: str
    observed: Real
    p_value: Real
    mcse: Real
    replicated_q025: Real
    replicated_q975: Real


@record
class Predictive(Record):
    """The posterior predictive check (BDA3 section 6.3), by test statistic in the check's order, and a new
    school."""
    new_school: NewSchool
    ppc: dict[str, PpcEntry]


@record
class ExactStats(Record):
    mean: Real
    sd: Real
    q025: Real
    q25: Real
    q50: Real
    q75: Real
    q975: Real


@record
class ExactTheta(Record):
    mean: tuple[Real, ...]
    sd: tuple[Real, ...]
    q025: tuple[Real, ...]
    q25: tuple[Real, ...]
    q50: tuple[Real, ...]
    q75: tuple[Real, ...]
    q975: tuple[Real, ...]


@record
class BayesFactors(Record):
    """The marginal likelihood and the Bayes factors for tau = 0 and mu = 0, actual and minimum
    (:mod:`jaxschools.core.bayes_factors`); null where the prior leaves one undefined, and ``undefined`` says why."""
    log_marginal_likelihood: Real
    tau0: Real
    mu0: Real
    min_tau0: Real
    min_mu0: Real
    log_tau0: Real
    log_mu0: Real
    log_min_tau0: Real
    log_min_mu0: Real
    tau_ml: Real
    mu_ml: Real
    undefined: dict[str, str]


@record
class ExactDistribution(ExactStats):
    """A posterior (or predictive) distribution's exact summary (:class:`ExactStats`) with its shortest interval."""
    shortest_lower: Real
    shortest_upper: Real


@record
class Heterogeneity(Record):
    """I^2 and H^2 with Higgins and Thompson's typical within-study variance (:mod:`jaxschools.core.meta_quantities`)."""
    typical_variance: Real
    i2: ExactDistribution
    h2: ExactDistribution


@record
class ExactPrediction(Record):
    """theta and y of a new study with standard error ``sigma_new``, exact."""
    sigma_new: Real
    theta_new: ExactDistribution
    y_new: ExactDistribution


@record
class Shortest(Record):
    """The shortest intervals of mass ``level``; ``theta_lower``/``theta_upper`` null past 200 studies."""
    level: float
    mu: Interval
    tau: Interval
    theta_lower: Optional[tuple[Real, ...]]
    theta_upper: Optional[tuple[Real, ...]]


@record
class ExactPredictiveCheck(Record):
    """Posterior predictive p-values: Cochran's Q (Monte Carlo from exact draws) and each study's y (exact)."""
    q: Real
    q_p_value: Real
    q_mcse: Real
    num_draws: int
    study_p_values: tuple[Real, ...]


@record
class Exact(Record):
    """The exact posterior by quadrature (:mod:`jaxschools.core.exact`) and the meta-analytic quantities on it."""
    log_evidence: Real
    log_tau: ExactStats
    mu: ExactStats
    p_best: tuple[Real, ...]
    p_exceeds: Real
    p_greater: Optional[tuple[tuple[Real, ...], ...]]
    quadrature_error: Real
    shrinkage: tuple[Real, ...]
    tau: ExactStats
    theta: ExactTheta
    threshold: Real
    nonexistent_moments: Optional[str]
    bayes_factors: BayesFactors
    heterogeneity: Heterogeneity
    prediction: ExactPrediction
    shortest: Shortest
    predictive_check: ExactPredictiveCheck


@record
class ExactRow(Record):
    """One compared quantity (:mod:`jaxschools.app.exact_check`): ``school`` its index for a per-school
    quantity; ``z`` null when undefined, and then ``reason`` says why."""
    quantity: str
    school: Optional[int]
    estimate: Real
    mcse: Real
    exact: Real
    z: Real
    reason: Optional[str]


@record
class ExactCheck(Record):
    alpha: float
    num_compared: int
    threshold: float
    max_abs_z: Real
    worst: Optional[str]
    num_beyond: int
    beyond: tuple[str, ...]
    num_undefined: int
    undefined: dict[str, int]
    flagged: bool
    rows: tuple[ExactRow, ...]


@record
class LaplaceVsExact(Record):
    """Per coordinate: (Laplace mode - exact mean) / exact sd and Laplace sd / exact sd."""
    mu: MuShift
    log_tau: MuShift


@record
class MuShift(Record):
    """``off_centre``: |shift| > 0.1 (``_record.OFF_CENTRE_SHIFT``), the mode a tenth of an sd or more from the
    mean (a skewed posterior the normal approximation misplaces); null where the shift is undefined."""
    shift: Real
    sd_ratio: Real
    off_centre: Optional[bool]


@record
class Provenance(Record):
    """What produced the result, recorded by the run itself (not the machine that renders the report)."""
    jax: str
    jaxlib: str
    python: str
    platform: str
    backend: str
    x64: bool
    jaxschools: str
    numpy: str
    matplotlib: str


# --- sweeps and simulation studies


@record
class SweepTheta(Record):
    mean: tuple[Real, ...]
    q025: tuple[Real, ...]
    q975: tuple[Real, ...]
    names: tuple[str, ...]


@record
class SweepPosterior(Record):
    mu: Mean
    log_tau: Mean
    tau: Mean


@record
class SweepQueries(Record):
    p_exceeds: Real
    p_best: tuple[Real, ...]


@record
class Loo(Record):
    """Exact leave-one-out predictive log densities (a prior sweep's cells)."""
    pointwise: tuple[Real, ...]
    elpd_loo: Real


@record
class SweepExact(Record):
    """A prior sweep cell's exact posterior (:mod:`jaxschools.core.exact`): mu and tau by median and central 95%
    interval, the median of I^2, and the Bayes factors under that prior."""
    mu_median: Real
    mu_lower: Real
    mu_upper: Real
    tau_median: Real
    tau_lower: Real
    tau_upper: Real
    i2_median: Real
    bayes_factors: BayesFactors


@record
class SweepRow(Record):
    """One cell of a sweep: the swept value, what ran (kernel and parameterization) and its summaries."""
    cell: int
    swept: str
    value: Union[int, float, str]
    kernel: str
    parameterization: str
    acceptance_rate: Real
    divergences: Optional[int]
    ess: MuLogTau
    rhat: MuLogTau
    rhat_max: Real
    laplace_converged: bool
    posterior: SweepPosterior
    theta: SweepTheta
    shrinkage: tuple[Real, ...]
    queries: SweepQueries
    ess_per_1000_draws: MuLogTau
    loo: Optional[Loo]
    exact: Optional[SweepExact]


@record
class Coverage(Record):
    """Interval coverage at one level: the share per parameter, its mean, and (proper priors) the band."""
    share: dict[str, Real]
    mean_share: Real
    band: Optional[tuple[float, ...]]
    inside: Optional[dict[str, bool]]


@record
class Failures(Record):
    laplace_not_converged: int
    not_mixed: int


@record
class Sbc(Record):
    band_level_per_parameter: float
    inside: dict[str, bool]
    all_inside: bool


@record
class Study(Record):
    """One prior's simulation study: what ran, coverage per level, SBC verdicts, failures."""
    prior: str
    kernel: str
    parameterization: str
    draws_from: str
    num_datasets: int
    failures: Failures
    coverage: dict[str, Coverage]
    sbc: Optional[Sbc]
    calibrated: Optional[bool]
    note: Optional[str]


# --- sensitivity (jaxschools.app.sensitivity_record; docs/sensitivity.md, "Reading the sensitivity section")


@record
class PriorScales(Record):
    """d Q / d (prior hyperparameter) of one headline quantity Q."""
    mu_loc: Real
    mu_scale: Real
    tau_scale: Real


@record
class Derivatives(Record):
    """A headline quantity Q: its exact value and d Q / d input, per school for the data and case weights;
    ``prior`` null for the flat prior (it has no scales: not applicable)."""
    value: Real
    y: tuple[Real, ...]
    sigma: tuple[Real, ...]
    case_weights: tuple[Real, ...]
    prior: Optional[PriorScales]


@record
class SchoolPriorScales(Record):
    """d E[theta_i] / d (prior hyperparameter), one per school i."""
    mu_loc: tuple[Real, ...]
    mu_scale: tuple[Real, ...]
    tau_scale: tuple[Real, ...]


@record
class ThetaDerivatives(Record):
    """E[theta_i | y] and its derivatives: ``y[i][j]`` = d E[theta_i] / d y_j (the influence matrix), likewise
    ``sigma`` and ``case_weights`` (J x J); ``prior`` null for the flat prior."""
    value: tuple[Real, ...]
    y: tuple[tuple[Real, ...], ...]
    sigma: tuple[tuple[Real, ...], ...]
    case_weights: tuple[tuple[Real, ...], ...]
    prior: Optional[SchoolPriorScales]


@record
class InfluenceEntry(Record):
    """One quantity Q's influence, per school j: ``derivative`` dQ / dw_j at w = 1, ``loo`` Q with school j left
    out (w_j = 0), ``change`` loo - full (exact), ``linear`` -derivative (its first-order prediction) and
    ``linear_error`` change - linear."""
    full: Real
    derivative: tuple[Real, ...]
    loo: tuple[Real, ...]
    change: tuple[Real, ...]
    linear: tuple[Real, ...]
    linear_error: tuple[Real, ...]


@record
class PriorCurve(Record):
    """A quantity at each tau_scale of the grid, and its derivative d/d tau_scale there."""
    value: tuple[Real, ...]
    derivative: tuple[Real, ...]


@record
class PriorCurves(Record):
    """Prior-sensitivity curves (proper priors): ``curves`` maps each quantity (``mu_mean``, ``mu_q025``,
    ``mu_q975``, ``tau_mean``, ``tau_q025``, ``tau_q975``) to its values at the ``tau_scale`` grid, a log grid
    around the ``configured`` value."""
    tau_scale: tuple[float, ...]
    configured: float
    curves: dict[str, PriorCurve]


@record
class PowerScalingRow(Record):
    """priorsense's table row: the power-scaling sensitivities of one quantity (the cumulative Jensen-Shannon
    distance's slope in log2(alpha) at alpha = 1) to the prior (null when not applicable) and the likelihood,
    and its diagnosis."""
    quantity: str
    prior: Real
    likelihood: Real
    diagnosis: str


@record
class PowerScaling(Record):
    """Power-scaling diagnostics (Kallioinen et al. 2024): the threshold of the labels, which likelihood is
    scaled, the number of draws whose expected range the distance is integrated over, and one row per quantity."""
    threshold: float
    likelihood: str
    num_draws: int
    rows: tuple[PowerScalingRow, ...]


@record
class SensitivitySection(Record):
    """summary.json's ``sensitivity``: what the report's Sensitivity section shows (docs/summary.md). ``headline``
    maps each headline scalar of :class:`jaxschools.core.sensitivity.Headline` (``mu_mean``, ``mu_sd``,
    ``mu_q025``, ``mu_q975``, ``tau_mean``, ``tau_q025``, ``tau_q975``, ``p_exceeds``, ``log_evidence``) to its
    :class:`Derivatives`; ``theta`` is E[theta_i] with the influence matrix; ``influence`` maps ``mu_mean``,
    ``tau_mean``, ``theta_mean`` (the query school's) and ``p_exceeds`` to each school's :class:`InfluenceEntry`.
    A part that was not computed is null and its note says why (``note`` for the whole section: too many
    schools)."""
    query_school: str
    threshold: float
    num_nodes: int
    note: Optional[str]
    headline: Optional[dict[str, Derivatives]]
    theta: Optional[ThetaDerivatives]
    prior_scales_note: Optional[str]
    influence: Optional[dict[str, InfluenceEntry]]
    prior_curves: Optional[PriorCurves]
    prior_curves_note: Optional[str]
    power_scaling: Optional[PowerScaling]
    power_scaling_note: Optional[str]


@record
class Summary(Record):
    """summary.json."""
    schema_version: int
    data: Data
    separate: Separate
    pooled: Pooled
    classical: Optional[Classical]
    laplace: Laplace
    mcmc: Mcmc
    posterior: Posterior
    theta: Theta
    shrinkage: tuple[Real, ...]
    shrinkage_mcse: tuple[Real, ...]
    queries: Queries
    predictive: Predictive
    exact: Exact
    laplace_vs_exact: LaplaceVsExact
    exact_check: ExactCheck
    sensitivity: Optional[SensitivitySection]
    config: dict[str, Any]
    provenance: Provenance
    sweep: Optional[tuple[SweepRow, ...]]
    simulation: Optional[tuple[Study, ...]]

    def __post_init__(self):
        super().__post_init__()
        if self.schema_version != SCHEMA_VERSION:
            raise SchemaError(f"schema_version: {self.schema_version}, this version reads {SCHEMA_VERSION}")


# ----------------------------------------------------------------------------------------------------------
# The arrays the figures draw (not serialised).


@record
class ContourGrid(Record):
    """The contour figure's grid: the log posterior of (mu, log tau) and its highest-density regions.

    ``mu`` (G,) and ``log_tau`` (G,) the axes, ``logp`` (G, G) the log posterior (rows log tau), ``density``
    exp(logp - max logp) (0 where logp is not finite); ``levels`` increasing values of ``density`` whose
    super-level sets {density >= level} hold ``fractions`` of the mass on the grid (a fraction whose level
    would not exceed a larger fraction's is left out).
    """
    mu: np.ndarray
    log_tau: np.ndarray
    logp: np.ndarray
    density: np.ndarray
    levels: tuple[float, ...]
    fractions: tuple[float, ...]


@record
class DivergencePanel(Record):
    """One run's draws for the divergence figure: log tau and the first school's theta, (chain, draw), which
    transitions diverged, and their count, of how many, and rate."""
    title: str
    log_tau: np.ndarray
    theta_first: np.ndarray
    divergent: np.ndarray
    num_divergent: int
    num_transitions: int
    rate: float


@record
class AnalysisFigures(Record):
    """What the single analysis's figures draw, beyond the summary's numbers.

    ``positions`` (chain, draw, 2) the kept draws of (mu, log tau); ``contour`` the log posterior on a grid
    and its highest-density levels (:class:`ContourGrid`), or None with ``contour_note`` saying why;
    ``laplace_ellipse`` (2, points) the boundary of the Laplace fit's 95% region, {x : (x - mode)' cov^-1
    (x - mode) = chi^2_2(0.95)}, or None where the fit has no finite mode or positive definite covariance;
    ``exact_log_tau`` ``(grid, density)`` of the exact marginal of log tau, or None with ``exact_note``;
    ``laplace_marginals`` per coordinate (mu, log tau) ``(grid, density)`` of the Laplace normal
    N(mode_d, cov_dd), or None where the marginals figure draws none (the fit did not converge, has no valid
    covariance, or there are no finite draws); ``autocorrelation`` (chain, 2, lag) of mu and log tau and
    ``autocorrelation_band`` Phi^-1(0.975) / sqrt(draws per chain), the half-width within which white noise's
    sample autocorrelation falls 95% of the time; ``mu_median`` the posterior median of mu (the shrinkage figure's line
    where E[mu | y] does not exist); ``shrinkage_curve`` ``(sigma grid, E[sigma^2 / (sigma^2 + tau^2) | y])``
    or None; ``divergence_panels`` empty without divergences; ``ppc`` the check's statistics
    ``(observed (S,), replicated (chain, draw, S), p_value (S,))`` and ``new_school`` its
    ``(theta draws, y draws)``; ``forest_schools`` the indices of the schools the forest plot shows, in data
    order; ``tau_density`` ``(tau grid, p(tau | y), p(tau) or None for an improper prior)`` and ``i2_density``
    ``(I^2 grid, p(I^2 | y))``, exact, or None where they could not be evaluated.
    """
    positions: np.ndarray
    contour: Optional[ContourGrid]
    contour_note: str
    laplace_ellipse: Optional[np.ndarray]
    exact_log_tau: Optional[tuple[np.ndarray, ...]]
    exact_note: str
    laplace_marginals: tuple[Optional[tuple[np.ndarray, ...]], ...]
    autocorrelation: np.ndarray
    autocorrelation_band: float
    mu_median: Real
    shrinkage_curve: Optional[tuple[np.ndarray, ...]]
    divergence_panels: tuple[DivergencePanel, ...]
    ppc: tuple[np.ndarray, ...]
    new_school: tuple[np.ndarray, ...]
    forest_schools: np.ndarray
    tau_density: Optional[tuple[Optional[np.ndarray], ...]] = None
    i2_density: Optional[tuple[np.ndarray, ...]] = None


@record
class SweepFigures(Record):
    """A sweep's figure data: its kind and swept column; ``ess_per_second`` per cell (None where unknown) and
    ``best`` the cell whose smaller ESS (of mu, log tau) per second, else per draw, is the largest; a prior
    sweep's ``prior_predictive``: one :class:`PriorPredictive` per proper prior."""
    kind: str
    column: str
    ess_per_second: tuple[Optional[tuple[float, ...]], ...]
    best: Optional[int]
    prior_predictive: tuple[PriorPredictive, ...]


@record
class PriorPredictive(Record):
    """Datasets drawn from one proper prior with the data's sigmas: the first school's y and the sd of y."""
    prior: str
    y_first: np.ndarray
    sd: np.ndarray


@record
class StudyFigures(Record):
    """One study's SBC ranks (datasets, parameters) and their ECDF against the simultaneous band:
    ``z`` the fractional ranks, ``lower``/``upper`` the band and ``counts`` (parameters, points) the ECDFs."""
    ranks: np.ndarray
    z: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    counts: np.ndarray


@record
class SimulationFigures(Record):
    params: tuple[str, ...]
    num_ranks: int
    alpha: float
    studies: dict[str, StudyFigures]


@record
class SensitivityFigures(Record):
    """What the sensitivity figures draw beyond the summary's numbers: ``tangents``, per prior-curve quantity, the
    (G, 2, 2) ends (tau_scale, value) of its tangent at each grid point on a logarithmic tau_scale axis (NaN
    where undefined); None without prior curves (the flat prior)."""
    tangents: Optional[dict[str, np.ndarray]]


@dataclasses.dataclass(frozen=True, eq=False)
class RunRecord:
    """What the report and the figures render: the single analysis (``summary.sweep`` and
    ``summary.simulation`` null) or a whole run: ``summary`` (with its sweep and simulation sections), the analysis's figure data and,
    when they ran, the sweep's and the simulation study's; ``sensitivity`` the sensitivity figures' arrays (None when
    the section is off or has no curves to draw)."""
    summary: Summary
    figures: AnalysisFigures
    sweep: Optional[SweepFigures] = None
    simulation: Optional[SimulationFigures] = None
    sensitivity: Optional[SensitivityFigures] = None


def __dir__():
    # The public names only, not the imports (``dir(js.diagnostics)`` lists no ``jax`` or ``jnp``).
    return list(__all__)

