"""Tests of jaxschools.core.validation: reading school data files and checking concrete values."""

import warnings

import numpy as np
import pytest

from jaxschools.app.config import PRIORS
from jaxschools.errors import InputError
from jaxschools.core.validation import MIN_SCHOOLS, check_groups, check_schools, default_names, read_table

EIGHT_SCHOOLS_CSV = """name,y,sigma
A,28,15
B,8,10
C,-3,16
D,7,11
E,-1,9
F,1,11
G,18,10
H,12,18
"""
EIGHT = {
    "names": list("ABCDEFGH"),
    "y": [28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0],
    "sigma": [15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0],
}


def effects(table):
    """The names, y and sigma of a table (its other keys describe the layout: tested in test_data_layouts.py)."""
    return {key: table[key] for key in ("names", "y", "sigma")}


def write(tmp_path, filename, content):
    path = tmp_path / filename
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


# --- files that read ---------------------------------------------------------------------------------------


def test_reads_plain_csv(tmp_path):
    table = read_table(write(tmp_path, "eight.csv", EIGHT_SCHOOLS_CSV))
    assert effects(table) == EIGHT
    assert (table["layout"], table["measure"], table["zero_cell_corrected"], table["covariates"]) == (
        "y_sigma", None, None, {})


def test_reads_csv_with_bom_crlf_quotes_extra_column_and_trailing_blank_lines(tmp_path):
    content = (
        "\ufeffSigma, note ,name,y\r\n"
        '15,"first, and largest","School A, North",28\r\n'
        ' 10 ,,"B" , 8.5 \r\n'
        "\r\n"
        ",,,\r\n"
        "   \r\n"
    )
    table = read_table(write(tmp_path, "schools.csv", content))
    assert effects(table) == {"names": ["School A, North", "B"], "y": [28.0, 8.5], "sigma": [15.0, 10.0]}
    # The extra column is kept as a covariate (its header stripped), an empty cell as None.
    assert table["covariates"] == {"note": ["first, and largest", None]}


def test_reads_json_with_names(tmp_path):
    path = write(tmp_path, "eight.json", '{"name": ["p", "q"], "y": [1, 2.5], "sigma": [1, 3], "note": "x"}')
    table = read_table(path)
    assert effects(table) == {"names": ["p", "q"], "y": [1.0, 2.5], "sigma": [1.0, 3.0]}
    assert table["covariates"] == {}  # "note" is not one value per study


def test_json_without_names_gets_default_names(tmp_path):
    path = write(tmp_path, "eight.json", '{"y": [1, 2, 3], "sigma": [1, 1, 1]}')
    assert read_table(path)["names"] == ["A", "B", "C"]


@pytest.mark.parametrize(
    "filename, content",
    [
        ("data.txt", '  \n {"name": ["A"], "y": [1], "sigma": [2]}'),
        ("data.txt", "name,y,sigma\nA,1,2\n"),
        ("data", "name,y,sigma\nA,1,2\n"),
    ],
    ids=["json-sniffed", "csv-sniffed", "no-extension"],
)
def test_format_is_sniffed_without_a_known_extension(tmp_path, filename, content):
    assert effects(read_table(write(tmp_path, filename, content))) == {"names": ["A"], "y": [1.0], "sigma": [2.0]}


# --- files that do not: each case its own id, each message one line naming the file ------------------------

HEADER = "name,y,sigma\n"

MALFORMED = {
    # id: (filename, content, fragments the message must contain)
    "csv-empty-file": ("d.csv", "", ["the file is empty"]),
    "csv-blank-file": ("d.csv", "  \n\n", ["the file is empty"]),
    "csv-header-only": ("d.csv", HEADER, ["no data rows", "only the header"]),
    "csv-header-only-blank-lines": ("d.csv", HEADER + "\n\n", ["no data rows"]),
    "csv-missing-column": (
        "d.csv",
        "name,y,sigm\nA,1,2\n",
        ["line 1", "missing column 'sigma'", "'name', 'y', 'sigm'", "'sigm' a misspelling of 'sigma'?"],
    ),
    "csv-missing-columns": ("d.csv", "school,y\nA,1\n", ["missing columns 'name', 'sigma'"]),
    "csv-repeated-column": ("d.csv", "name,y,sigma,y\nA,1,2,3\n", ["line 1", "column 'y' appears more than once"]),
    "csv-ragged-short": ("d.csv", HEADER + "A,1,2\nB,3\n", ["line 3", "2 fields", "header (line 1) has 3"]),
    "csv-ragged-long": ("d.csv", HEADER + "A,1,2,\n", ["line 2", "4 fields"]),
    "csv-empty-y": ("d.csv", HEADER + "A,1,2\nB,,2\n", ["line 3, column 'y'", "empty cell"]),
    "csv-empty-sigma": ("d.csv", HEADER + "A,1, \n", ["line 2, column 'sigma'", "empty cell"]),
    "csv-empty-name": ("d.csv", HEADER + "A,1,2\n,3,4\n", ["line 3, column 'name'", "empty cell"]),
    "csv-blank-quoted-name": ("d.csv", HEADER + '"  ",3,4\n', ["line 2, column 'name'", "empty cell"]),
    "csv-text-in-y": ("d.csv", HEADER + "A,1,2\nB,high,2\n", ["line 3, column 'y'", "'high' is not a number"]),
    "csv-text-in-sigma": ("d.csv", HEADER + "A,1,2 pts\n", ["line 2, column 'sigma'", "'2 pts' is not a number"]),
    "csv-nan-y": ("d.csv", HEADER + "A,nan,2\n", ["line 2, column 'y'", "y must be finite, got nan"]),
    "csv-inf-sigma": ("d.csv", HEADER + "A,1,inf\n", ["line 2, column 'sigma'", "sigma must be finite, got inf"]),
    "csv-minus-inf-y": ("d.csv", HEADER + "A,-inf,2\n", ["line 2, column 'y'", "must be finite, got -inf"]),
    "csv-overflow-y": ("d.csv", HEADER + "A,1e400,2\n", ["line 2, column 'y'", "must be finite, got inf"]),
    "csv-zero-sigma": ("d.csv", HEADER + "A,1,2\nB,1,0\n", ["line 3, column 'sigma'", "must be positive", "0.0"]),
    "csv-negative-sigma": ("d.csv", HEADER + "A,1,-2\n", ["line 2, column 'sigma'", "must be positive", "-2.0"]),
    "csv-duplicate-names": (
        "d.csv",
        HEADER + "A,1,2\nB,1,2\nA,3,4\n",
        ["lines 2 and 4", "school name 'A' appears twice"],
    ),
    "csv-not-utf8": (
        "d.csv",
        b"name,y,sigma\nSch\xe9,1,2\n",
        ["line 2", "not UTF-8", "byte 0xe9", "byte offset 16"],
    ),
    "csv-crlf-bom-line-numbers": ("d.csv", "\ufeffname,y,sigma\r\nA,1,2\r\nB,1,-2\r\n", ["line 3, column"]),
    # A quoted cell may span lines (here in an extra column: a line feed in a name is refused, issue #13).
    "csv-line-after-multiline-cell": ("d.csv", 'name,y,sigma,note\nA,1,2,"two\nlines"\nB,1,0,x\n', ["line 4, column"]),
    "csv-unterminated-quote": ("d.csv", HEADER + 'A,1,2\n"B,1,2\nC,1,2\n', ["line 3", "1 field,", "never closed"]),
    "csv-nul-byte": ("d.csv", HEADER + "A,1,2\0\n", ["line 2, column 'sigma'", "'2\\x00' is not a number"]),
    "csv-huge-field": ("d.csv", HEADER + "A,1,2\nB,1," + "9" * 200_000 + "\n", ["line 3", "malformed CSV"]),
    "json-syntax": ("d.json", '{"y": [1, 2],\n "sigma": [1 2]}', ["line 2, column 14", "invalid JSON"]),
    "json-truncated": ("d.json", '{"y": [1, 2]', ["line 1", "invalid JSON"]),
    "json-not-object": ("d.json", "[1, 2]", ['expected a JSON object {"name"', "got a list"]),
    "json-missing-key": (
        "d.json",
        '{"y": [1], "sigm": [1]}',
        ["no key 'sigma'", "its keys: 'y', 'sigm'", "is 'sigm' a misspelling of 'sigma'?"],
    ),
    "json-misspelt-name-key": (
        "d.json",
        '{"names": ["A"], "y": [1], "sigma": [1]}',
        ["no key 'name'", "is 'names' a misspelling of 'name'?"],
    ),
    "json-not-a-list": ("d.json", '{"y": 1, "sigma": [1]}', ["'y' must be a list, got a number"]),
    "json-lengths-differ": ("d.json", '{"y": [1, 2], "sigma": [1]}', ["y has 2 values but sigma has 1"]),
    "json-names-length-differs": (
        "d.json",
        '{"name": ["A"], "y": [1, 2], "sigma": [1, 1]}',
        ["1 name for 2 schools"],
    ),
    "json-empty-lists": ("d.json", '{"y": [], "sigma": []}', ["no schools"]),
    "json-bool-is-not-a-number": ("d.json", '{"y": [1, true], "sigma": [1, 1]}', ["y[1] is true, not a number"]),
    "json-string-is-not-a-number": ("d.json", '{"y": [1], "sigma": ["2"]}', ['sigma[0] is "2", not a number']),
    "json-null-is-not-a-number": ("d.json", '{"y": [null], "sigma": [2]}', ["y[0] is null, not a number"]),
    "json-name-not-a-string": (
        "d.json",
        '{"name": ["A", 2], "y": [1, 1], "sigma": [1, 1]}',
        ["name[1] is 2, not a string"],
    ),
    "json-nan": ("d.json", '{"y": [1, NaN], "sigma": [1, 1]}', ["school 'B' (index 1)", "y must be finite"]),
    "json-infinite-sigma": ("d.json", '{"y": [1], "sigma": [Infinity]}', ["school 'A' (index 0)", "finite"]),
    "json-negative-sigma": (
        "d.json",
        '{"name": ["p", "q"], "y": [1, 1], "sigma": [1, -1]}',
        ["school 'q' (index 1)", "sigma must be positive"],
    ),
    "json-duplicate-names": (
        "d.json",
        '{"name": ["p", "p"], "y": [1, 1], "sigma": [1, 1]}',
        ["school name 'p' appears twice (indices 0 and 1)"],
    ),
    "json-empty-name": ("d.json", '{"name": ["p", " "], "y": [1, 1], "sigma": [1, 1]}', ["index 1 is empty"]),
    # Values whose squares leave double precision (issue #13 finding 5: these crashed the figures after the
    # whole run, with every posterior summary NaN): refused, with the advice to change units.
    "csv-sigma-1e-300": ("d.csv", HEADER + "A,28,1e-300\nB,8,10\nC,-3,16\n",
                         ["line 2, column 'sigma'", "sigma = 1e-300 is below 1e-150", "express the data in larger units"]),
    "csv-sigma-subnormal-1e-320": ("d.csv", HEADER + "A,28,15\nB,8,1e-320\nC,-3,16\n",
                                   ["line 3, column 'sigma'", "is below 1e-150", "underflows double precision"]),
    "csv-sigma-1e300": ("d.csv", HEADER + "A,28,1e300\nB,8,10\nC,-3,16\n",
                        ["line 2, column 'sigma'", "sigma = 1e+300 exceeds 1e+150", "express the data in smaller units"]),
    "csv-y-1e308": ("d.csv", HEADER + "A,1e308,15\nB,8,10\nC,-3,16\n",
                    ["line 2, column 'y'", "y = 1e+308 exceeds 1e+150 in magnitude", "overflows double precision"]),
    "json-y-minus-1e200": ("d.json", '{"y": [-1e200, 1, 2], "sigma": [1, 1, 1]}',
                           ["school 'A' (index 0)", "y = -1e+200 exceeds 1e+150"]),
}


@pytest.mark.parametrize("filename, content, fragments", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_file(tmp_path, filename, content, fragments):
    path = write(tmp_path, filename, content)
    with pytest.raises(InputError) as raised:
        read_table(path)
    message = str(raised.value)
    assert message.startswith(f"{path}: ")
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="nowhere.csv: no such file"):
        read_table(tmp_path / "nowhere.csv")


def test_directory(tmp_path):
    with pytest.raises(InputError, match="is a directory"):
        read_table(tmp_path)


# --- values from Python ---------------------------------------------------------------------------------------


def test_check_schools_returns_float64_arrays_and_default_names():
    names, y, sigma = check_schools([28, 8, -3], np.array([15, 10, 16], dtype=np.int32))
    assert names == ("A", "B", "C")
    assert y.dtype == sigma.dtype == np.float64
    np.testing.assert_array_equal(y, [28.0, 8.0, -3.0])
    np.testing.assert_array_equal(sigma, [15.0, 10.0, 16.0])


def test_check_schools_keeps_given_names_as_a_tuple_of_str():
    names, _, _ = check_schools([1.0, 2.0], [1.0, 1.0], names=np.array(["x", "y"]))
    assert names == ("x", "y") and all(type(name) is str for name in names)


def test_default_names_switch_to_numbers_past_26():
    assert default_names(26)[-1] == "Z"
    assert default_names(27) == tuple(str(number) for number in range(1, 28))


BAD_VALUES = {
    # id: (y, sigma, names, fragments)
    "two-dimensional": ([[1.0, 2.0]], [[1.0, 1.0]], None, ["y must be 1-D", "shape (1, 2)"]),
    "scalar": (1.0, 1.0, None, ["y must be 1-D", "shape ()"]),
    "lengths-differ": ([1.0, 2.0, 3.0], [1.0, 1.0], None, ["y has 3 values but sigma has 2"]),
    "no-schools": ([], [], None, ["no schools"]),
    "ragged-list": ([1.0, [2.0]], [1.0, 1.0], None, ["y is not an array of numbers"]),
    "strings": (["1", "2"], [1.0, 1.0], None, ["y must hold numbers", "<U1"]),
    "booleans": ([1.0, 2.0], [True, True], None, ["sigma must hold numbers", "bool"]),
    "nan-y": ([1.0, np.nan], [1.0, 1.0], None, ["school 'B' (index 1)", "y must be finite, got nan"]),
    "inf-sigma": ([1.0, 2.0], [np.inf, 1.0], None, ["school 'A' (index 0)", "sigma must be finite, got inf"]),
    "zero-sigma": ([1.0, 2.0, 3.0], [1.0, 1.0, 0.0], list("pqr"), ["school 'r' (index 2)", "must be positive"]),
    "negative-sigma": ([1.0], [-1.0], None, ["school 'A' (index 0)", "sigma must be positive", "got -1.0"]),
    "names-count": ([1.0, 2.0], [1.0, 1.0], ["A"], ["1 name for 2 schools"]),
    "names-single-string": ([1.0, 2.0], [1.0, 1.0], "AB", ["not the single string 'AB'"]),
    "name-not-a-string": ([1.0, 2.0], [1.0, 1.0], ["A", 2], ["school name at index 1 is 2, not a string"]),
    "name-empty": ([1.0, 2.0], [1.0, 1.0], ["A", ""], ["school name at index 1 is empty"]),
    "names-duplicate": ([1.0, 2.0, 3.0], [1.0, 1.0, 1.0], list("ABA"), ["'A' appears twice (indices 0 and 2)"]),
}


@pytest.mark.parametrize("y, sigma, names, fragments", BAD_VALUES.values(), ids=BAD_VALUES.keys())
def test_check_schools_rejects(y, sigma, names, fragments):
    with pytest.raises(InputError) as raised:
        check_schools(y, sigma, names)
    for fragment in fragments:
        assert fragment in str(raised.value)


def test_input_error_is_a_value_error():
    with pytest.raises(ValueError):
        check_schools([1.0], [0.0])


# --- enough schools for the prior ------------------------------------------------------------------------------


def test_every_prior_has_its_minimum_numbers_of_schools():
    """One list of prior names: the config's choices, the moments' tails and the minimum J agree; the minimum
    is a proper posterior's (flat: p(tau | y) ~ tau^(1 - J) integrable for J >= 3, BDA3 section 5.4) and 2 for
    the pooled chi-squared test."""
    from jaxschools.core import moments

    assert tuple(PRIORS) == moments.PRIORS == tuple(MIN_SCHOOLS)
    assert MIN_SCHOOLS == {"flat": 3, "half_cauchy": 2, "half_normal": 2}
    from jaxschools.core import models

    assert models.PRIORS == moments.PRIORS
    for prior in PRIORS:
        moments.tail_exponent(prior, 8)  # every name has a tail and a density
        assert models.make_prior(prior).kind == prior


@pytest.mark.parametrize(
    "prior, num_schools, fragments",
    [
        ("flat", 2, ["flat prior needs at least 3 schools", "J=2", "improper"]),
        ("flat", 1, ["J=1"]),
        ("half_cauchy", 1, ["half_cauchy prior needs at least 2 schools", "J=1", "chi-squared"]),
        ("half_normal", 1, ["half_normal prior needs at least 2 schools"]),
        ("uniform", 8, ["unknown prior 'uniform'", "'flat', 'half_cauchy', 'half_normal'"]),
    ],
)
def test_check_groups_rejects_too_few_schools(prior, num_schools, fragments):
    with pytest.raises(InputError) as raised:
        check_groups(num_schools, prior)
    for fragment in fragments:
        assert fragment in str(raised.value)


@pytest.mark.parametrize(
    "prior, num_schools, fragments",
    [
        ("flat", 3, ["mean(mu), mean(tau) and", "do not exist for the flat prior with J = 3 schools (need J >= 4)",
                     "sd(mu), sd(tau) and", "with J = 3 schools (need J >= 5)"]),
        ("flat", 4, ["sd(mu), sd(tau) and", "do not exist for the flat prior with J = 4 schools (need J >= 5)"]),
    ],
)
def test_check_groups_warns_about_moments_that_do_not_exist(prior, num_schools, fragments):
    with pytest.warns(UserWarning) as record:
        check_groups(num_schools, prior)
    message = " | ".join(str(warning.message) for warning in record)
    assert all(fragment in message for fragment in fragments), message
    assert "theta)" not in message and "log tau" not in message  # a school's theta and log tau keep them all


# The half-Cauchy's sd(tau) exists from J = 2 (tail tau^-(J + 2), issue #13 finding 14), so J = 2 is silent.
@pytest.mark.parametrize("prior, num_schools",
                         [("flat", 5), ("flat", 8), ("half_cauchy", 2), ("half_cauchy", 3), ("half_normal", 2)])
def test_check_groups_is_silent_when_every_moment_exists(prior, num_schools):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_groups(num_schools, prior)
