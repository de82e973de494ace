"""Reading a summary.json dict (or the analysis's summary before it is written): pure Python, no NumPy.

Shared by :mod:`jaxschools.app.exact_check` and :mod:`jaxschools.presentation.report`, which both read saved summaries, where any
level may be missing or null (a moment that does not exist, an undefined diagnostic, an older schema).
"""

from __future__ import annotations

import math
import numbers

__all__ = ["finite", "get", "school_label", "exact_p_exceeds"]


def finite(x) -> bool:
    """A real number (Python's or NumPy's, not a bool) that is finite."""
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(float(x))


def get(tree, *keys, default=None):
    """``tree[k0][k1]...``, or ``default`` where a level is missing or None (or an index is out of range)."""
    for key in keys:
        try:
            tree = tree[key]
        except (KeyError, IndexError, TypeError):
            return default
        if tree is None:
            return default
    return tree


def school_label(names, j) -> str:
    """'school A', or the name alone where it already says so ('School 12', 'school_03')."""
    name = str(names[j]) if j < len(names) else f"#{j + 1}"
    return name if name.lower().startswith("school") else f"school {name}"


def exact_p_exceeds(exact: dict):
    """The exact P(theta_k > c | y): ``exact.p_exceeds`` is a number, or a dict with it under ``p``."""
    value = exact.get("p_exceeds")
    return value.get("p") if isinstance(value, dict) else value
