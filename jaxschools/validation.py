"""Validation of concrete school data: files and Python values, before any JAX is imported.

The command line runs this first, so bad input is answered instantly with one line that names the file,
the line, the column or the school. Only NumPy and the standard library are imported here; keep it so
(``tests/test_validation.py`` checks that importing this module does not import JAX).
"""

import csv
import difflib
import io
import json
import math
import pathlib
import string
import warnings

import numpy as np

from jaxschools.errors import InputError
from jaxschools.moments import messages as moment_messages
from jaxschools.moments import min_schools

COLUMNS = ("name", "y", "sigma")
NUMBER_COLUMNS = ("y", "sigma")

# The fewest schools each prior needs, for: (the analysis to run at all, tau's posterior mean to exist,
# tau's posterior variance to exist). The moment thresholds come from ``jaxschools.moments`` (p(tau | y) ~
# tau^(1 - J) under the flat prior, p(tau) tau^-J with the normal prior on mu: flat 4 and 5, half-Cauchy 1 and
# 2, half-normal none); the flat prior's posterior is proper only for J >= 3, and the proper priors still
# need J >= 2 here because the pooled chi-squared homogeneity test has J - 1 degrees of freedom.
# Keep the keys equal to ``jaxschools.config.PRIORS`` (a test checks it).
MIN_SCHOOLS = {
    prior: (max(min_schools(prior, "tau", 0), 2), min_schools(prior, "tau", 1), min_schools(prior, "tau", 2))
    for prior in ("flat", "half_cauchy", "half_normal")
}


def read_text(path):
    """Return the text of the user's file at ``path``, decoded as UTF-8 with any byte-order mark dropped.

    Raises InputError naming the file when it does not exist, is a directory, cannot be read, or is not
    UTF-8 (then with the line and byte offset of the first bad byte).
    """
    try:
        raw = pathlib.Path(path).read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, not a file") from None
    except OSError as error:
        raise InputError(f"{path}: cannot read the file ({error.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        raise InputError(
            f"{path}: line {line}: not UTF-8 text (byte 0x{raw[error.start]:02x} at byte offset "
            f"{error.start}); save the file as UTF-8"
        ) from None
    return text.removeprefix("\ufeff")


def read_table(path):
    """Read school data from a CSV or JSON file into ``{"names": [...], "y": [...], "sigma": [...]}``.

    CSV: a header naming the columns ``name``, ``y`` and ``sigma`` (any order, any case, other columns
    ignored) and one row per school. JSON: an object ``{"name": [...], "y": [...], "sigma": [...]}``
    (``name`` optional, defaulting as in :func:`default_names`). A ``.csv`` or ``.json`` extension picks
    the format; otherwise a file whose first non-space character is ``{`` is JSON and anything else CSV.

    Every value is checked as :func:`check_schools` checks it: y finite, sigma finite and > 0, names
    non-empty and unique. Any problem raises InputError with one line naming the file and, where there is
    one, the line (the header is line 1) and column.
    """
    text = read_text(path)
    if not text.strip():
        raise InputError(f"{path}: the file is empty; expected a header name,y,sigma and one row per school")
    suffix = pathlib.Path(path).suffix.lower()
    is_json = suffix == ".json" or (suffix != ".csv" and text.lstrip().startswith("{"))
    return _read_json(path, text) if is_json else _read_csv(path, text)


def _read_csv(path, text):
    # Not strict: spaces after a closing quote ("B" ,8) then stay in the cell, to be stripped below.
    reader = csv.reader(io.StringIO(text, newline=""), skipinitialspace=True)
    records = []
    end = 0
    try:
        for row in reader:
            # A quoted cell may span lines; a record is reported by the line it starts on.
            start, end = end + 1, reader.line_num
            cells = [cell.strip() for cell in row]
            # Blank lines, and the rows of bare commas spreadsheets append, carry no school.
            if any(cells):
                records.append((start, cells))
    except csv.Error as error:
        raise InputError(f"{path}: line {reader.line_num}: malformed CSV ({error})") from None
    if not records:
        raise InputError(f"{path}: the file has no header and no rows")

    header_line, header = records[0]
    columns = _csv_columns(path, header_line, header)
    if len(records) == 1:
        raise InputError(f"{path}: no data rows, only the header (line {header_line}); add one row per school")

    names, y, sigma, lines = [], [], [], []
    for line, cells in records[1:]:
        if len(cells) != len(header):
            unclosed = " (a quote opened on this line is never closed?)" if any("\n" in c for c in cells) else ""
            raise InputError(
                f"{path}: line {line}: {len(cells)} field{'s' if len(cells) > 1 else ''}, but the header "
                f"(line {header_line}) has {len(header)}{unclosed}"
            )
        for column in COLUMNS:
            if not cells[columns[column]]:
                raise InputError(f"{path}: line {line}, column '{column}': empty cell")
        numbers = {}
        for column in NUMBER_COLUMNS:
            cell = cells[columns[column]]
            try:
                numbers[column] = float(cell)
            except ValueError:
                raise InputError(f"{path}: line {line}, column '{column}': {cell!r} is not a number") from None
            problem = _value_problem(column, numbers[column])
            if problem:
                raise InputError(f"{path}: line {line}, column '{column}': {problem}")
        names.append(cells[columns["name"]])
        y.append(numbers["y"])
        sigma.append(numbers["sigma"])
        lines.append(line)

    duplicate = _first_duplicate(names)
    if duplicate:
        first, second = duplicate
        raise InputError(
            f"{path}: lines {lines[first]} and {lines[second]}: school name {names[first]!r} appears twice; "
            "school names must be unique"
        )
    return {"names": names, "y": y, "sigma": sigma}


def _csv_columns(path, line, header):
    """Map each required column to its index in ``header``; InputError when one is missing or repeated."""
    lowered = [cell.lower() for cell in header]
    for column in COLUMNS:
        if lowered.count(column) > 1:
            raise InputError(f"{path}: line {line}: column '{column}' appears more than once in the header")
    missing = [column for column in COLUMNS if column not in lowered]
    if missing:
        found = ", ".join(repr(cell) for cell in header)
        hint = "".join(_misspelling(column, lowered) for column in missing)
        raise InputError(
            f"{path}: line {line}: missing column{'s' if len(missing) > 1 else ''} "
            f"{', '.join(repr(column) for column in missing)}; the header has {found} but needs "
            f"name, y and sigma{hint}"
        )
    return {column: lowered.index(column) for column in COLUMNS}


def _read_json(path, text):
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        where = f"{path}: line {error.lineno}, column {error.colno}"
        raise InputError(f"{where}: invalid JSON ({error.msg})") from None
    expected = 'a JSON object {"name": [...], "y": [...], "sigma": [...]}'
    if not isinstance(document, dict):
        raise InputError(f"{path}: expected {expected}, got {_json_kind(document)}")
    keys = ", ".join(repr(key) for key in document) or "none"
    for key in COLUMNS:
        if key in document:
            continue
        hint = _misspelling(key, document)
        # A missing name only falls back to default names when nothing looks like a misspelt one.
        if key != "name" or hint:
            raise InputError(f"{path}: the JSON object has no key {key!r} (its keys: {keys}){hint}")
    y = _json_list(path, document, "y", _is_number, "a number")
    sigma = _json_list(path, document, "sigma", _is_number, "a number")
    names = None
    if "name" in document:
        names = _json_list(path, document, "name", lambda value: isinstance(value, str), "a string")
    try:
        names, y, sigma = check_schools(y, sigma, names)
    except InputError as error:
        raise InputError(f"{path}: {error}") from None
    return {"names": list(names), "y": y.tolist(), "sigma": sigma.tolist()}


def _json_list(path, document, key, accepts, kind):
    values = document[key]
    if not isinstance(values, list):
        raise InputError(f"{path}: {key!r} must be a list, got {_json_kind(values)}")
    for index, value in enumerate(values):
        if not accepts(value):
            raise InputError(f"{path}: {key}[{index}] is {json.dumps(value)}, not {kind}")
    return values


def _is_number(value):
    # bool is a subclass of int, but true is not an effect size.
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _json_kind(value):
    kinds = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return kinds.get(type(value), "a number")


def check_schools(y, sigma, names=None):
    """Validate concrete per-school data given from Python; return ``(names, y, sigma)``.

    ``y`` and ``sigma`` are 1-D sequences of numbers of one common length J >= 1, ``y`` finite and
    ``sigma`` finite and > 0 (it is a standard error). ``names`` is one non-empty string per school, all
    different; None gives :func:`default_names`. Returns names as a tuple of str and y, sigma as float64
    arrays. Raises InputError naming the offending school and its index.
    """
    y = _as_vector("y", y)
    sigma = _as_vector("sigma", sigma)
    if y.size != sigma.size:
        raise InputError(f"y has {y.size} values but sigma has {sigma.size}; give one of each per school")
    if y.size == 0:
        raise InputError("no schools: y and sigma are empty")
    names = default_names(y.size) if names is None else _check_names(names, y.size)
    for column, values in (("y", y), ("sigma", sigma)):
        for index, value in enumerate(values.tolist()):
            problem = _value_problem(column, value)
            if problem:
                raise InputError(f"school {names[index]!r} (index {index}): {problem}")
    return names, y, sigma


def default_names(num_schools):
    """Names for schools given none: ``A``, ``B``, ... as in BDA3 for up to 26 schools, else ``1``, ``2``, ..."""
    if num_schools <= len(string.ascii_uppercase):
        return tuple(string.ascii_uppercase[:num_schools])
    return tuple(str(number) for number in range(1, num_schools + 1))


def _as_vector(label, values):
    try:
        array = np.asarray(values)
    except (TypeError, ValueError) as error:
        raise InputError(f"{label} is not an array of numbers ({error})") from None
    # Refuse rather than convert bools, strings and objects: a silent float() would hide the mistake.
    if array.dtype.kind not in "iuf":
        raise InputError(f"{label} must hold numbers, got values of dtype {array.dtype}")
    if array.ndim != 1:
        raise InputError(f"{label} must be 1-D (one value per school), got shape {array.shape}")
    return array.astype(np.float64)


def _check_names(names, num_schools):
    if isinstance(names, str):
        raise InputError(f"names must be a sequence of strings, one per school, not the single string {names!r}")
    try:
        names = tuple(names)
    except TypeError:
        raise InputError(f"names must be a sequence of strings, got {type(names).__name__}") from None
    if len(names) != num_schools:
        raise InputError(
            f"{len(names)} name{'s' if len(names) != 1 else ''} for {num_schools} schools; "
            "give one name per school"
        )
    for index, name in enumerate(names):
        if not isinstance(name, str):
            raise InputError(f"school name at index {index} is {name!r}, not a string")
        if not name.strip():
            raise InputError(f"school name at index {index} is empty")
    duplicate = _first_duplicate(names)
    if duplicate:
        first, second = duplicate
        raise InputError(
            f"school name {names[first]!r} appears twice (indices {first} and {second}); "
            "school names must be unique"
        )
    return tuple(str(name) for name in names)


# The range of magnitudes the model can be computed on in double precision. Its density needs sigma_j^2,
# 1 / sigma_j^2 and (y_j - mu)^2, which over- or underflow float64 (normal numbers 2.2e-308 to 1.8e308)
# beyond about 1e154 and 1.5e-154: one sigma of 1e-300 squares to 0, one of 1e300 or a y of 1e308 to inf,
# and every posterior summary is then NaN (issue #13 finding 5). 1e150 squared is 1e300, which leaves a
# factor of 1e8 for sums over schools. Within these bounds the exact posterior by quadrature is tested to
# match an independent scipy oracle (tests/test_extreme_figures.py); data beyond them are refused, with the
# advice to change units (the model is location-scale equivariant: data and prior scales rescaled together
# give the same posterior in the new units).
MAX_MAGNITUDE = 1e150
MIN_SIGMA = 1e-150


def _value_problem(column, value):
    """Why ``value`` cannot be in column y or sigma, or None; shared so files and Python say the same."""
    if not math.isfinite(value):
        return f"{column} must be finite, got {value}"
    if column == "sigma" and value <= 0:
        return f"sigma must be positive (it is a standard error), got {value}"
    if column == "sigma" and value < MIN_SIGMA:
        return (f"sigma = {value:g} is below {MIN_SIGMA:g}: its square underflows double precision, so the "
                "model cannot be computed; express the data in larger units")
    if abs(value) > MAX_MAGNITUDE:
        return (f"{column} = {value:g} exceeds {MAX_MAGNITUDE:g} in magnitude: its square overflows double "
                "precision, so the model cannot be computed; express the data in smaller units")
    return None


def _first_duplicate(names):
    """Indices ``(first, second)`` of the first name seen twice, or None."""
    seen = {}
    for index, name in enumerate(names):
        if name in seen:
            return seen[name], index
        seen[name] = index
    return None


def _misspelling(expected, found):
    """A hint naming the entry of ``found`` that looks like a misspelt ``expected``, or ""."""
    near = difflib.get_close_matches(expected, [name for name in found if name != expected], n=1)
    return f"; is {near[0]!r} a misspelling of {expected!r}?" if near else ""


def check_groups(num_schools, prior):
    """Check that ``num_schools`` schools are enough for ``prior``; warn about moments that do not exist.

    The flat prior p(mu, tau) ∝ 1 gives a proper posterior only for J >= 3 (BDA3 section 5.4), the proper
    priors need J >= 2 (the pooled chi-squared test has J - 1 degrees of freedom); fewer raises InputError.
    When the posterior is proper but a mean or sd does not exist (:mod:`jaxschools.moments`: flat, those of
    mu and tau for J < 4 and J < 5; a new school's theta likewise; the half-Cauchy's and half-normal's all
    exist for J >= 2), one UserWarning per condition names them, since their Monte Carlo estimates never
    settle and summary.json reports them as null.
    """
    if prior not in MIN_SCHOOLS:
        known = ", ".join(repr(name) for name in MIN_SCHOOLS)
        raise InputError(f"unknown prior {prior!r}; expected one of {known}")
    needed = MIN_SCHOOLS[prior][0]
    if num_schools < needed:
        why = (
            "the posterior is improper (p(tau | y) is not integrable)"
            if prior == "flat"
            else "the pooled chi-squared test needs 2"
        )
        raise InputError(
            f"the {prior} prior needs at least {needed} schools, got J={num_schools}: {why}"
            + ("; use a proper prior such as half_cauchy" if prior == "flat" else "")
        )
    for message in moment_messages(prior, num_schools, ("mu", "tau", "log_tau", "theta", "theta_out")):
        warnings.warn(
            f"{message}: estimates from draws will not settle, and summary.json reports them as null",
            UserWarning,
            stacklevel=2,
        )
