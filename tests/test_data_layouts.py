"""Data files in every layout (jaxschools.core.data_layouts): the y and sigma they give equal metafor 3.8's escalc
(fixtures made by tests/fixtures/metafor_reference.R) to 1e-10, the covariates are kept, the built-in datasets are
selectable, and every bad file is refused with one line naming the problem. No JAX: the reading is pure Python."""

import json
import pathlib

import numpy as np
import pytest

from jaxschools.app import config as config_module
from jaxschools.core import data_layouts, datasets, effect_sizes, validation
from jaxschools.errors import InputError

FIXTURES = json.loads((pathlib.Path(__file__).parent / "fixtures" / "metafor_reference.json").read_text())
RAW, ESCALC = FIXTURES["raw"], FIXTURES["escalc"]


def csv_file(tmp_path, columns: dict, name="data.csv"):
    header = list(columns)
    rows = zip(*columns.values())
    path = tmp_path / name
    path.write_text(",".join(header) + "\n" + "".join(",".join(str(v) for v in row) + "\n" for row in rows))
    return path


def _close(table, measure):
    np.testing.assert_allclose(table["y"], ESCALC[measure]["yi"], rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(np.square(table["sigma"]), ESCALC[measure]["vi"], rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("measure", effect_sizes.MEASURES)
def test_raw_data_files_give_escalcs_effect_sizes(tmp_path, measure):
    """The counts (BCG plus a study with a zero cell) and the two-group summaries (Normand 1999), as a CSV
    with a covariate column, in every measure."""
    columns = {name: RAW[name] for name in effect_sizes.COLUMNS[measure]}
    count = len(next(iter(columns.values())))
    table = validation.read_table(csv_file(tmp_path, {**columns, "year": list(range(1950, 1950 + count))}),
                                  measure)
    _close(table, measure)
    assert table["measure"] == measure and table["covariates"] == {"year": [float(1950 + i) for i in range(count)]}
    if measure in effect_sizes.COUNT_MEASURES:
        assert table["layout"] == "counts"
        cells = np.stack([RAW[name] for name in ("ai", "bi", "ci", "di")])
        assert table["zero_cell_corrected"] == (cells == 0).any(axis=0).tolist()
    else:
        assert table["layout"] == "means" and table["zero_cell_corrected"] is None


@pytest.mark.parametrize("layout", ["yi_vi", "yi_sei"])
@pytest.mark.parametrize("suffix", ["csv", "json"])
def test_given_effects_in_metafors_names(tmp_path, layout, suffix):
    yi, vi = ESCALC["OR"]["yi"], ESCALC["OR"]["vi"]
    second = {"yi_vi": ("vi", vi), "yi_sei": ("sei", np.sqrt(vi).tolist())}[layout]
    columns = {"YI": yi, second[0].upper(): second[1]}  # any case in a CSV header
    if suffix == "csv":
        path = csv_file(tmp_path, columns)
    else:
        path = tmp_path / "data.json"
        path.write_text(json.dumps({"yi": yi, second[0]: second[1], "trial": [f"t{i}" for i in range(len(yi))]}))
    table = validation.read_table(path, "OR")  # the measure names the scale of given effects
    _close(table, "OR")
    assert table["layout"] == layout and table["measure"] == "OR" and table["names"][:2] == ["A", "B"]
    if suffix == "json":
        assert table["covariates"] == {"trial": [f"t{i}" for i in range(len(yi))]}
    assert validation.read_table(path)["measure"] is None


@pytest.mark.parametrize("name", ["bcg", "normand1999"])
def test_built_in_datasets_are_read_on_their_usual_measure(name):
    table = validation.read_data(dataset=name)
    fit = FIXTURES["fits"][name]
    np.testing.assert_allclose(table["y"], fit["yi"], rtol=1e-10)
    np.testing.assert_allclose(np.square(table["sigma"]), fit["vi"], rtol=1e-10)
    assert table["names"] == datasets.BUILT_IN[name]["names"] and name in datasets.CITATIONS
    assert validation.read_data(dataset="bcg", measure="OR")["measure"] == "OR"


def test_the_eight_schools_are_the_default_data():
    table = validation.read_data()
    assert table["y"] == datasets.EIGHT_SCHOOLS["y"] and table["layout"] == "y_sigma" and table["measure"] is None


def test_data_names_a_dataset_unless_a_file_has_that_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    resolved = config_module.load_config(data="bcg")
    assert (resolved["data"]["dataset"], resolved["data"]["path"]) == ("bcg", "")
    (tmp_path / "bcg").write_text("name,y,sigma\nA,1,1\nB,2,1\nC,3,1\n")
    resolved = config_module.load_config(data="bcg")
    assert (resolved["data"]["dataset"], resolved["data"]["path"]) == ("", str(tmp_path / "bcg"))
    # --data replaces the config's choice of data, a dataset or a file.
    resolved = config_module.load_config(sets=["data.dataset='normand1999'"], data="bcg")
    assert resolved["data"]["dataset"] == "" and resolved["data"]["path"].endswith("bcg")


def test_a_file_and_a_dataset_together_are_refused():
    with pytest.raises(InputError, match="data.path .* and data.dataset .* are both set"):
        config_module.load_config(sets=["data.path='x.csv'", "data.dataset='bcg'"])
    with pytest.raises(InputError, match="data.dataset"):
        config_module.load_config(sets=["data.dataset='bcgg'"])
    with pytest.raises(InputError, match="data.measure"):
        config_module.load_config(sets=["data.measure='HR'"])


COUNTS = "ai,bi,ci,di\n4,119,11,128\n6,300,29,274\n"
MEANS = "m1i,sd1i,n1i,m2i,sd2i,n2i\n55,47,155,75,64,156\n27,7,31,29,4,32\n"


@pytest.mark.parametrize("content, measure, expected", [
    (COUNTS, "", "2x2 counts (ai, bi, ci, di): set data.measure to 'RR', 'OR' or 'RD' (data.measure is not set)"),
    (COUNTS, "MD", "set data.measure to 'RR', 'OR' or 'RD' (data.measure = 'MD' is not one of them)"),
    (MEANS, "RR", "two-group means, sds and sizes (m1i, sd1i, n1i, m2i, sd2i, n2i): set data.measure to 'SMD' or 'MD'"),
    ("ai,bi,ci,di\n4,119,11,128\n-1,300,29,274\n", "RR", "line 3, column 'ai': ai is a count and must be >= 0"),
    ("ai,bi,ci,di\n4,119,11,128\n0,0,29,274\n", "OR", "line 3: group 1 has no participants (ai + bi = 0)"),
    ("ai,bi,ci,di\n4,119,11,128\n1,2,x,4\n", "OR", "line 3, column 'ci': 'x' is not a number"),
    ("m1i,sd1i,n1i,m2i,sd2i,n2i\n1,1,1,2,1,2\n", "SMD", "line 2: n1i + n2i = 3: Hedges' g needs at least 4"),
    ("m1i,sd1i,n1i,m2i,sd2i,n2i\n1,0,5,2,1,5\n", "MD", "line 2, column 'sd1i': sd1i must be positive, got 0"),
    ("yi,vi\n1,0\n", "", "line 2, column 'vi': vi must be positive, got 0"),
    ("yi,sei\n1,-2\n", "", "line 2, column 'sei': sei must be positive"),
    ("yi,vi\n1e300,1\n", "", "line 2, column 'yi': yi = 1e+300 exceeds 1e+150"),
    ("name,y,sigma,yi,vi\nA,1,1,1,1\n", "", "the columns give both effects and standard errors (y, sigma) and "
                                            "effects and sampling variances (yi, vi)"),
    ("ai,bi,ci\n1,2,3\n", "RR", "missing column 'di'; the header has 'ai', 'bi', 'ci' but needs ai, bi, ci and di"),
    ("yi,vi,vi\n1,1,1\n", "", "column 'vi' appears more than once"),
    ("yi,vi\n1,1e-310\n", "", "the computed sigma"),
    ("name,y,sigma\nA,1,2\n", "SMDX", "data.measure = 'SMDX' is not one of RR, OR, RD, SMD, MD"),
], ids=["counts-no-measure", "counts-wrong-measure", "means-wrong-measure", "negative-count", "empty-group",
        "not-a-number", "smd-too-small", "zero-sd", "zero-variance", "negative-se", "huge-yi", "two-layouts",
        "missing-count-column", "repeated-column", "computed-sigma-underflows", "unknown-measure"])
def test_bad_files_are_refused_with_one_line(tmp_path, content, measure, expected):
    path = tmp_path / "data.csv"
    path.write_text(content)
    with pytest.raises(InputError) as caught:
        validation.read_table(path, measure)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and expected in message and "\n" not in message


def test_json_columns_of_different_lengths_are_refused(tmp_path):
    path = tmp_path / "data.json"
    path.write_text(json.dumps({"ai": [1, 2], "bi": [3, 4], "ci": [5], "di": [7, 8]}))
    with pytest.raises(InputError, match="ai has 2 values but ci has 1"):
        validation.read_table(path, "OR")


def test_every_layout_is_documented_in_the_default_config():
    text = (pathlib.Path(config_module.__file__).parent.parent / "configs" / "default.toml").read_text()
    for layout in data_layouts.LAYOUTS.values():
        assert ",".join(layout.columns) in text
    for measure in data_layouts.MEASURES:
        assert f'"{measure}"' in text
