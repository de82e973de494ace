"""Validation of concrete school data: files and Python values, before any JAX is imported.

The command line runs this first, so bad input is answered instantly with one line that names the file,
the line, the column or the school. Only NumPy and the standard library are imported here; keep it so
(``tests/test_validation.py`` checks that importing this module does not import JAX).
"""

import array
import csv
import difflib
import itertools
import json
import math
import pathlib
import re
import string
import warnings

import numpy as np

from jaxschools.core import data_layouts, datasets, input_files
from jaxschools.core.data_layouts import LAYOUTS
from jaxschools.errors import InputError
from jaxschools.core.moments import messages as moment_messages
from jaxschools.core.moments import PRIORS, min_schools

__all__ = ["COLUMNS", "NUMBER_COLUMNS", "MIN_SCHOOLS", "MAX_MAGNITUDE", "MIN_SIGMA", "read_text", "read_table", "check_schools",
           "default_names", "name_problem", "check_groups", "from_columns", "read_data"]

COLUMNS = ("name", "y", "sigma")
NUMBER_COLUMNS = ("y", "sigma")

# The fewest schools each prior needs for the analysis to run at all: a proper posterior (``jaxschools.core.moments``:
# the flat prior's p(tau | y) ~ tau^(1 - J) is integrable only for J >= 3), and at least 2, because the pooled
# chi-squared homogeneity test has J - 1 degrees of freedom. Which moments exist is ``moments``' alone.
MIN_SCHOOLS = {prior: max(min_schools(prior, "tau", 0), 2) for prior in PRIORS}


def read_text(path, what="data file", limit=None):
    """Return the text of the user's file at ``path``, decoded as UTF-8 with any byte-order mark dropped.

    At most ``limit`` bytes (default :data:`jaxschools.core.input_files.MAX_DATA_BYTES`) are read: see
    :mod:`jaxschools.core.input_files`. Raises InputError naming the file when it does not exist, is a directory,
    cannot be read, is larger than the limit, or is not UTF-8 (then with the line and byte offset of the
    first bad byte).
    """
    return input_files.read_text(path, what, input_files.MAX_DATA_BYTES if limit is None else limit)


def read_table(path, measure=""):
    """Read study data from a CSV or JSON file: ``{"names", "y", "sigma", "layout", "measure",
    "zero_cell_corrected", "covariates"}`` (see :func:`from_columns`).

    The header (a CSV's first row, in any case and column order; a JSON object's keys) says which layout of
    :mod:`jaxschools.core.data_layouts` the file has: ``name,y,sigma``, metafor's ``yi,vi`` or ``yi,sei``, 2x2
    counts ``ai,bi,ci,di`` or two-group summaries ``m1i,sd1i,n1i,m2i,sd2i,n2i``; raw data need ``measure``
    (``data.measure``: RR, OR, RD; MD, SMD), from which y and sigma are computed as metafor's ``escalc``
    computes them. Other columns are kept as study-level covariates. JSON: an object of lists, ``name``
    optional (defaulting as in :func:`default_names`). A ``.csv`` or ``.json`` extension picks the format;
    otherwise a file whose first non-space character is ``{`` is JSON and anything else CSV.

    Every value is checked: y finite, sigma finite and > 0 (as :func:`check_schools` checks them), counts
    >= 0, sds, variances and sizes > 0, names non-empty, unique and free of the characters :func:`name_problem`
    refuses, and the computed y and sigma too. Any problem raises InputError with one line naming the file and,
    where there is one, the line (the header is line 1) and column. The file is read with a size limit
    (:data:`jaxschools.core.input_files.MAX_DATA_BYTES`), a CSV row by row: the first problem in file order is
    the one reported, as soon as it is read.
    """
    with input_files.open_lines(path, "data file", input_files.MAX_DATA_BYTES) as lines:
        # Only the lines up to the first non-blank one are held to choose the format; a CSV is then read
        # and checked row by row, and its first bad row stops the reading.
        head, first = [], ""
        for line in lines:
            head.append(line)
            if line.strip():
                first = line.lstrip()[0]
                break
        if not first:
            raise InputError(f"{path}: the file is empty; expected a header name,y,sigma and one row per school")
        suffix = pathlib.Path(path).suffix.lower()
        lines = itertools.chain(head, lines)
        is_json = suffix == ".json" or (suffix != ".csv" and first == "{")
        return _read_json(path, "".join(lines), measure) if is_json else _read_csv(path, lines, measure)


# The columns checked as effects (y) and as standard errors (sigma) by _value_problem; the others of a layout
# by data_layouts.cell_problem.
_AS_Y, _AS_SIGMA = {"y", "yi"}, {"sigma", "sei"}


def _cell_problem(column, value):
    """Why ``value`` cannot be in column ``column`` of a layout, or None."""
    if column in _AS_Y or column in _AS_SIGMA:
        checked_as = "y" if column in _AS_Y else "sigma"
        problem = _value_problem(checked_as, value)
        return problem and problem.replace(checked_as, column, 1)
    return data_layouts.cell_problem(column, value)


def _read_csv(path, lines, measure):
    # Not strict: spaces after a closing quote ("B" ,8) then stay in the cell, to be stripped below.
    reader = csv.reader(lines, skipinitialspace=True)
    header_line, header = None, None
    # Each row is checked as it is read and only its values are kept (floats in compact arrays), so the
    # first bad row ends the reading and memory stays a small multiple of the file's size.
    names, first_line, lines_of_rows = [], {}, array.array("q")
    end = 0
    try:
        for row in reader:
            # A quoted cell may span lines; a record is reported by the line it starts on.
            start, end = end + 1, reader.line_num
            cells = [cell.strip() for cell in row]
            # Blank lines, and the rows of bare commas spreadsheets append, carry no school.
            if not any(cells):
                continue
            if header is None:
                header_line, header = start, cells
                layout, at, name_at, extra_at = _csv_columns(path, header_line, header)
                needed = LAYOUTS[layout].columns
                width = len(header)
                values = {column: array.array("d") for column in needed}
                extras = {header[index]: [] for index in extra_at}
                fast_y_sigma = layout == "y_sigma"
                continue
            # The common case in a few operations; any doubt goes to _csv_row, which raises the precise error.
            try:
                numbers = [float(cells[index]) for index in at]
                name = cells[name_at] if name_at is not None else None
                good = len(cells) == width and (name is None or (name != "" and _REFUSED_IN_NAMES.search(name) is None))
                if good and fast_y_sigma:
                    good = MIN_SIGMA <= numbers[1] <= MAX_MAGNITUDE and abs(numbers[0]) <= MAX_MAGNITUDE
                elif good:
                    good = all(_cell_problem(column, value) is None for column, value in zip(needed, numbers))
            except (IndexError, ValueError):
                good = False
            if not good:
                name, numbers = _csv_row(path, start, cells, header, header_line, needed, at, name_at)
            if name is not None:
                if name in first_line:
                    raise InputError(
                        f"{path}: lines {first_line[name]} and {start}: school name {name!r} appears twice; "
                        "school names must be unique"
                    )
                first_line[name] = start
                names.append(name)
            lines_of_rows.append(start)
            for column, value in zip(needed, numbers):
                values[column].append(value)
            for index in extra_at:
                extras[header[index]].append(cells[index])
    except csv.Error as error:
        raise InputError(f"{path}: line {reader.line_num}: malformed CSV ({error})") from None
    if header is None:
        raise InputError(f"{path}: the file has no header and no rows")
    if not lines_of_rows:
        raise InputError(f"{path}: no data rows, only the header (line {header_line}); add one row per school")
    covariates = {column: _covariate(cells) for column, cells in extras.items()}
    return _table(path, layout, measure, names or None, {c: v.tolist() for c, v in values.items()}, covariates,
                  lambda i: f"line {lines_of_rows[i]}")


def _covariate(cells):
    """A covariate column's cells: numbers where every non-empty cell is one, else strings; empty cells None."""
    try:
        return [float(cell) if cell else None for cell in cells]
    except ValueError:
        return [cell if cell else None for cell in cells]


def _csv_row(path, line, cells, header, header_line, needed, at, name_at):
    """The name and the numbers of one data row, or InputError naming its line and column."""
    if len(cells) != len(header):
        unclosed = " (a quote opened on this line is never closed?)" if any("\n" in c for c in cells) else ""
        raise InputError(
            f"{path}: line {line}: {len(cells)} field{'s' if len(cells) > 1 else ''}, but the header "
            f"(line {header_line}) has {len(header)}{unclosed}"
        )
    for column, index in (("name", name_at), *zip(needed, at)):
        if index is not None and not cells[index]:
            raise InputError(f"{path}: line {line}, column '{column}': empty cell")
    name = None
    if name_at is not None:
        name = cells[name_at]
        problem = name_problem(name)
        if problem:
            raise InputError(f"{path}: line {line}, column 'name': the school name {problem}")
    numbers = []
    for column, index in zip(needed, at):
        cell = cells[index]
        try:
            numbers.append(float(cell))
        except ValueError:
            raise InputError(f"{path}: line {line}, column '{column}': {cell!r} is not a number") from None
        problem = _cell_problem(column, numbers[-1])
        if problem:
            raise InputError(f"{path}: line {line}, column '{column}': {problem}")
    return name, numbers


_METAFOR_LAYOUTS = "; or metafor's " + " / ".join(",".join(layout.columns) for key, layout in LAYOUTS.items()
                                                   if key != "y_sigma")


def _csv_columns(path, line, header):
    """(layout, indices of its columns, index of ``name`` or None, indices of the other columns) for
    ``header``; InputError when a column is missing or repeated."""
    lowered = [cell.lower() for cell in header]
    for column in set(lowered):
        if column and lowered.count(column) > 1:
            raise InputError(f"{path}: line {line}: column '{column}' appears more than once in the header")
    layout, why = data_layouts.detect(lowered)
    if layout is None and why:
        raise InputError(f"{path}: line {line}: {why}")
    if layout is None or (LAYOUTS[layout].name_required and "name" not in lowered):
        layout = layout or data_layouts.nearest(lowered)
        required = (("name",) if LAYOUTS[layout].name_required else ()) + LAYOUTS[layout].columns
        missing = [column for column in required if column not in lowered]
        found = ", ".join(repr(cell) for cell in header)
        hint = "".join(_misspelling(column, lowered) for column in missing)
        also = _METAFOR_LAYOUTS if layout == "y_sigma" else "; or name, y and sigma"
        raise InputError(
            f"{path}: line {line}: missing column{'s' if len(missing) > 1 else ''} "
            f"{', '.join(repr(column) for column in missing)}; the header has {found} but needs "
            f"{data_layouts.column_list(required)}{hint} ({LAYOUTS[layout].what}{also})"
        )
    at = [lowered.index(column) for column in LAYOUTS[layout].columns]
    name_at = lowered.index("name") if "name" in lowered else None
    extra_at = [i for i, column in enumerate(lowered) if column and i not in at and i != name_at]
    return layout, at, name_at, extra_at


def _table(path, layout, measure, names, columns, covariates, where):
    """The table of a file's validated columns: the effect sizes computed and checked (a problem names the
    study by ``where(index)``), the names checked or defaulted."""
    try:
        measure = data_layouts.resolve_measure(layout, measure)
    except ValueError as error:
        raise InputError(f"{path}: {error}") from None
    for index, problem in data_layouts.study_problems(layout, measure, columns)[:1]:
        raise InputError(f"{path}: {where(index)}: {problem}")
    y, sigma, corrected = data_layouts.effects(layout, measure, columns)
    if layout != "y_sigma":
        for column, values in (("y", y), ("sigma", sigma)):
            for index, value in enumerate(values.tolist()):
                problem = _value_problem(column, value)
                if problem:
                    raise InputError(f"{path}: {where(index)}: the computed {problem}")
    names = default_names(y.size) if names is None else names
    return {"names": list(names), "y": y.tolist(), "sigma": sigma.tolist(), "layout": layout, "measure": measure,
            "zero_cell_corrected": None if corrected is None else corrected.tolist(), "covariates": covariates}


def from_columns(columns, measure="", names=None, origin="data"):
    """The table (as :func:`read_table` returns it) of Python columns: a dict of equal-length lists keyed by a
    layout's column names (a built-in dataset, :mod:`jaxschools.core.datasets`), other keys kept as
    covariates. Checked as a file is; errors start with ``origin``."""
    layout, why = data_layouts.detect(columns)
    if layout is None:
        layout = data_layouts.nearest(columns)
        raise InputError(f"{origin}: {why or 'no layout: needs ' + data_layouts.column_list(LAYOUTS[layout].columns)}")
    needed = LAYOUTS[layout].columns
    lengths = {len(columns[column]) for column in needed}
    if len(lengths) != 1 or not lengths.pop():
        raise InputError(f"{origin}: the columns {', '.join(needed)} must be non-empty and of one length")
    values = {}
    for column in needed:
        values[column] = []
        for index, value in enumerate(columns[column]):
            if not _is_number(value):
                raise InputError(f"{origin}: {column}[{index}] is {json.dumps(value)}, not a number")
            problem = _cell_problem(column, float(value))
            if problem:
                raise InputError(f"{origin}: {column}[{index}]: {problem}")
            values[column].append(float(value))
    count = len(values[needed[0]])
    if names is not None:
        names = _check_names(names, count)
    covariates = {key: [float(v) if _is_number(v) else v for v in value] for key, value in columns.items()
                  if key not in needed and key != "name" and isinstance(value, list) and len(value) == count
                  and all(v is None or _is_number(v) or isinstance(v, str) for v in value)}
    return _table(origin, layout, measure, names, values, covariates, lambda i: f"study {i}")


def read_data(path="", dataset="", measure=""):
    """The table of the run's data: the file at ``path`` (:func:`read_table`), else the built-in ``dataset``
    (:data:`jaxschools.core.datasets.BUILT_IN`, on ``measure`` or else its usual measure), else the eight
    schools: ``data.path``, ``data.dataset`` and ``data.measure`` of a resolved config."""
    if path:
        return read_table(path, measure)
    name = dataset or "eight_schools"
    if name not in datasets.BUILT_IN:
        raise InputError(f"unknown dataset {name!r}: the built-in ones are {', '.join(datasets.BUILT_IN)}")
    columns = dict(datasets.BUILT_IN[name])
    names, usual = columns.pop("names"), columns.pop("measure", "")
    return from_columns(columns, measure or usual, names, origin=f"dataset {name}")


def _read_json(path, text, measure):
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        where = f"{path}: line {error.lineno}, column {error.colno}"
        raise InputError(f"{where}: invalid JSON ({error.msg})") from None
    expected = 'a JSON object {"name": [...], "y": [...], "sigma": [...]}'
    if not isinstance(document, dict):
        raise InputError(f"{path}: expected {expected}, got {_json_kind(document)}")
    keys = ", ".join(repr(key) for key in document) or "none"
    layout, why = data_layouts.detect(document)
    if why:
        raise InputError(f"{path}: {why}")
    layout = layout or data_layouts.nearest(document)
    for key in ("name",) + LAYOUTS[layout].columns:
        if key in document:
            continue
        hint = _misspelling(key, document)
        # A missing name only falls back to default names when nothing looks like a misspelt one.
        if key != "name" or hint:
            raise InputError(f"{path}: the JSON object has no key {key!r} (its keys: {keys}){hint}")
    columns = {key: _json_list(path, document, key, _is_number, "a number") for key in LAYOUTS[layout].columns}
    names = None
    if "name" in document:
        names = _json_list(path, document, "name", lambda value: isinstance(value, str), "a string")
    lengths = {key: len(values) for key, values in columns.items()}
    if len(set(lengths.values())) > 1:
        first, *rest = lengths
        other = next(key for key in rest if lengths[key] != lengths[first])
        raise InputError(f"{path}: {first} has {lengths[first]} values but {other} has {lengths[other]}; give one "
                         "of each per school")
    if layout == "y_sigma":
        try:
            names, y, sigma = check_schools(columns["y"], columns["sigma"], names)
        except InputError as error:
            raise InputError(f"{path}: {error}") from None
    elif names is not None:
        try:
            names = _check_names(names, lengths[LAYOUTS[layout].columns[0]])
        except InputError as error:
            raise InputError(f"{path}: {error}") from None
    document = {key: value for key, value in document.items() if key != "name"}
    return from_columns(document, measure, names, origin=str(path))


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
        problem = name_problem(name)
        if problem:
            raise InputError(f"school name at index {index} {problem}")
    duplicate = _first_duplicate(names)
    if duplicate:
        first, second = duplicate
        raise InputError(
            f"school name {names[first]!r} appears twice (indices {first} and {second}); "
            "school names must be unique"
        )
    return tuple(str(name) for name in names)


# Characters a school name may not hold. Names go into figures, HTML, JSON, terminal lines and ArviZ's
# netCDF file (whose strings cannot hold a NUL), so refused are: every control character (Unicode category
# Cc: C0 U+0000-U+001F, among them NUL, tab, line feed and carriage return, and DEL U+007F and C1
# U+0080-U+009F), the line and paragraph separators U+2028 and U+2029 (categories Zl, Zp), lone UTF-16
# surrogates U+D800-U+DFFF (category Cs: JSON's "\ud800" escape gives one, and UTF-8 cannot encode it), and
# the bidirectional-text controls U+061C, U+200E-U+200F, U+202A-U+202E and U+2066-U+2069, which reorder the
# text shown after them (names are displayed, so one could disguise another). Allowed: every printable
# character of any script, all spaces (a no-break space from a spreadsheet too), and the other format
# characters, such as the zero-width (non-)joiners U+200C and U+200D that Persian and Indic words and emoji
# need. Leading and trailing whitespace in a CSV cell, tabs included, is stripped before this check.
_REFUSED_IN_NAMES = re.compile(
    "[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)
_CONTROL_NAMES = {0x00: "NUL", 0x09: "tab", 0x0A: "line feed", 0x0D: "carriage return", 0x7F: "DEL"}


def name_problem(name):
    """Why the school name ``name`` cannot be used, or None: it holds a character of ``_REFUSED_IN_NAMES``.

    The answer names the first such character by code point and kind and its position in the name.
    """
    found = _REFUSED_IN_NAMES.search(name)
    if found is None:
        return None
    code = ord(found.group())
    if code <= 0x9F:
        kind = f"{_CONTROL_NAMES[code]}, a control character" if code in _CONTROL_NAMES else "a control character"
    elif code in (0x2028, 0x2029):
        kind = "a line separator" if code == 0x2028 else "a paragraph separator"
    elif 0xD800 <= code <= 0xDFFF:
        kind = "a lone surrogate, not a character"
    else:
        kind = "a bidirectional-text control"
    shown = repr(name) if len(name) <= 40 else repr(name[:40]) + "..."
    return (
        f"{shown} contains U+{code:04X} ({kind}) at position {found.start()}; school names may not contain "
        "control characters, line or paragraph separators or bidirectional-text controls"
    )


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
    When the posterior is proper but a mean or sd does not exist (:mod:`jaxschools.core.moments`: flat, those of
    mu and tau for J < 4 and J < 5; a new school's theta likewise; the half-Cauchy's and half-normal's all
    exist for J >= 2), one UserWarning per condition names them, since their Monte Carlo estimates never
    settle and summary.json reports them as null.
    """
    try:
        fewest = min_schools(prior, "tau", 0)
    except ValueError as error:
        raise InputError(str(error)) from None
    needed = max(fewest, 2)
    if num_schools < needed:
        improper = fewest > num_schools
        why = ("the posterior is improper (p(tau | y) is not integrable)" if improper
               else "the pooled chi-squared test needs 2")
        raise InputError(
            f"the {prior} prior needs at least {needed} schools, got J={num_schools}: {why}"
            + ("; use a proper prior such as half_cauchy" if improper else "")
        )
    for message in moment_messages(prior, num_schools, ("mu", "tau", "log_tau", "theta", "theta_out")):
        warnings.warn(
            f"{message}: estimates from draws will not settle, and summary.json reports them as null",
            UserWarning,
            stacklevel=2,
        )


def __dir__():
    # The public names only, not the imports (``dir(js.diagnostics)`` lists no ``jax`` or ``jnp``).
    return list(__all__)
