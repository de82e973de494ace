r"""The layouts a data file may have, and the effect sizes y_j and standard errors sigma_j each one gives.

A data file's header (a CSV's first row, a JSON object's keys) names its columns, and the columns say what
each study reports (metafor's names where metafor has them):

==========  ==================================  =====================================================
layout      columns                              y_j and sigma_j
==========  ==================================  =====================================================
y_sigma     name, y, sigma                       as given (jaxschools' own layout)
yi_vi       yi, vi                               y = yi, sigma = sqrt(vi)   (vi: the sampling variance)
yi_sei      yi, sei                              y = yi, sigma = sei        (sei: the standard error)
counts      ai, bi, ci, di                       2x2 counts: ``data.measure`` RR, OR or RD
means       m1i, sd1i, n1i, m2i, sd2i, n2i       two-group summaries: ``data.measure`` MD or SMD
==========  ==================================  =====================================================

The effect sizes of raw data are metafor's ``escalc`` (:mod:`jaxschools.core.effect_sizes`, computed here
with NumPy, before JAX is imported). With ``yi``/``vi``, ``yi``/``sei`` or ``y``/``sigma`` the effects are
taken as given, and ``data.measure`` may still name their scale (``OR`` for log odds ratios, so that the
report back-transforms them); empty, the scale is left unnamed. A ``name`` column is required by the
``y_sigma`` layout only; other columns are kept as study-level covariates.

Pure Python and NumPy (no JAX): :mod:`jaxschools.core.validation` reads files with it.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from jaxschools.core import effect_sizes

__all__ = ["Layout", "LAYOUTS", "MEASURES", "detect", "nearest", "resolve_measure", "cell_problem", "study_problems",
           "effects", "column_list"]

MEASURES = effect_sizes.MEASURES


class Layout(NamedTuple):
    columns: tuple[str, ...]  # the columns the layout needs (besides ``name``)
    what: str  # what they are, for messages and the report
    measures: tuple[str, ...]  # the measures it can be given as (empty: any, or none)
    name_required: bool


LAYOUTS = {
    "y_sigma": Layout(("y", "sigma"), "effects and standard errors", (), True),
    "yi_vi": Layout(("yi", "vi"), "effects and sampling variances", (), False),
    "yi_sei": Layout(("yi", "sei"), "effects and standard errors", (), False),
    "counts": Layout(effect_sizes.COLUMNS["RR"], "2x2 counts", effect_sizes.COUNT_MEASURES, False),
    "means": Layout(effect_sizes.COLUMNS["MD"], "two-group means, sds and sizes", effect_sizes.MEAN_MEASURES, False),
}

# Counts and group sizes are non-negative; sds, variances and standard errors positive.
_NON_NEGATIVE = {"ai", "bi", "ci", "di"}
_POSITIVE = {"vi", "sei", "sigma", "sd1i", "sd2i", "n1i", "n2i"}
# Raw values up to this magnitude (the data's bound, validation.MAX_MAGNITUDE; repeated here to keep this
# module free of validation's import): the effect sizes computed from them stay finite in double precision.
_MAX_MAGNITUDE = 1e150


def column_list(columns) -> str:
    """'a, b and c'."""
    columns = list(columns)
    return columns[0] if len(columns) == 1 else ", ".join(columns[:-1]) + " and " + columns[-1]


def detect(present) -> tuple[str | None, str]:
    """(the layout whose columns are all in ``present``, ""), or (None, why) when no layout's columns are all
    there (``why`` is then "": :func:`nearest` says which to name) or more than one layout's are."""
    present = set(present)
    complete = [name for name, layout in LAYOUTS.items() if set(layout.columns) <= present]
    if len(complete) == 1:
        return complete[0], ""
    if len(complete) > 1:
        shown = " and ".join(f"{LAYOUTS[name].what} ({', '.join(LAYOUTS[name].columns)})" for name in complete)
        return None, f"the columns give both {shown}; keep the columns of one layout only"
    return None, ""


def nearest(present) -> str:
    """The layout with the most of its columns in ``present`` (``y_sigma`` on a tie): the one a message about
    missing columns should name."""
    present = set(present)
    best = max(LAYOUTS, key=lambda name: (len(set(LAYOUTS[name].columns) & present), name == "y_sigma"))
    return best if set(LAYOUTS[best].columns) & present else "y_sigma"


def resolve_measure(layout: str, measure: str) -> str | None:
    """The measure the effects are on: ``measure`` (``data.measure``), checked against the layout; None when a
    layout of given effects names none. Raises ValueError with the sentence a user reads."""
    allowed = LAYOUTS[layout].measures
    if allowed:
        if measure not in allowed:
            given = f"data.measure = {measure!r} is not one of them" if measure else "data.measure is not set"
            raise ValueError(f"the data give {LAYOUTS[layout].what} ({', '.join(LAYOUTS[layout].columns)}): set "
                             f"data.measure to {column_list([repr(m) for m in allowed]).replace(' and ', ' or ')} ({given})")
        return measure
    if measure and measure not in MEASURES:
        raise ValueError(f"data.measure = {measure!r} is not one of {', '.join(MEASURES)}")
    return measure or None


def cell_problem(column: str, value: float) -> str | None:
    """Why ``value`` cannot be in raw column ``column`` (one of a layout's columns other than y and sigma,
    which :func:`jaxschools.core.validation._value_problem` checks), or None."""
    if not math.isfinite(value):
        return f"{column} must be finite, got {value}"
    if abs(value) > _MAX_MAGNITUDE:
        return (f"{column} = {value:g} exceeds {_MAX_MAGNITUDE:g} in magnitude: express the data in smaller units")
    if column in _NON_NEGATIVE and value < 0:
        return f"{column} is a count and must be >= 0, got {value:g}"
    if column in _POSITIVE and value <= 0:
        return f"{column} must be positive, got {value:g}"
    return None


def study_problems(layout: str, measure: str | None, columns: dict) -> list[tuple[int, str]]:
    """(study index, why) for each study whose raw values, each valid alone, give no effect size: a group of
    no participants (counts), an SMD's groups too small for Hedges' correction (n1 + n2 >= 4)."""
    problems = []
    if layout == "counts":
        for group, (events, others) in (("1", ("ai", "bi")), ("2", ("ci", "di"))):
            size = np.asarray(columns[events]) + np.asarray(columns[others])
            problems += [(int(i), f"group {group} has no participants ({events} + {others} = 0)")
                         for i in np.flatnonzero(size <= 0)]
    if layout == "means" and measure == "SMD":
        total = np.asarray(columns["n1i"]) + np.asarray(columns["n2i"])
        problems += [(int(i), f"n1i + n2i = {total[i]:g}: Hedges' g needs at least 4 participants")
                     for i in np.flatnonzero(total < 4)]
    return sorted(problems)


def effects(layout: str, measure: str | None, columns: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(y, sigma, zero_cell_corrected) of the studies from the layout's columns (float64 NumPy arrays; the last
    is None but for counts). The values must have passed :func:`cell_problem` and :func:`study_problems`."""
    if layout == "y_sigma":
        return np.asarray(columns["y"], float), np.asarray(columns["sigma"], float), None
    if layout == "yi_vi":
        return np.asarray(columns["yi"], float), np.sqrt(np.asarray(columns["vi"], float)), None
    if layout == "yi_sei":
        return np.asarray(columns["yi"], float), np.asarray(columns["sei"], float), None
    sizes = effect_sizes.compute(measure, xp=np, **{name: columns[name] for name in LAYOUTS[layout].columns})
    corrected = np.asarray(sizes.zero_cell_corrected, bool) if layout == "counts" else None
    return np.asarray(sizes.y, float), np.sqrt(np.asarray(sizes.v, float)), corrected


def __dir__():
    # The public names only, not the imports (``dir(js.diagnostics)`` lists no ``jax`` or ``jnp``).
    return list(__all__)
