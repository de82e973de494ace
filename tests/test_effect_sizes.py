"""escalc's effect sizes against R's metafor 3.8 (fixtures made by tests/fixtures/metafor_reference.R): the BCG
trials' 2x2 counts and one made-up study with a zero cell (RR, OR, RD), Normand 1999's two-group summaries
(SMD, MD), to 1e-10 relative."""

import json
import pathlib

import numpy as np
import pytest

from jaxschools.core import effect_sizes

FIXTURES = json.loads((pathlib.Path(__file__).parent / "fixtures" / "metafor_reference.json").read_text())


@pytest.mark.parametrize("measure", effect_sizes.MEASURES)
def test_effect_sizes_equal_escalc(measure):
    columns = {name: FIXTURES["raw"][name] for name in effect_sizes.COLUMNS[measure]}
    got = effect_sizes.compute(measure, **columns)
    ref = FIXTURES["escalc"][measure]
    np.testing.assert_allclose(np.asarray(got.y), ref["yi"], rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(np.asarray(got.v), ref["vi"], rtol=1e-10, atol=1e-14)


def test_only_the_study_with_a_zero_cell_is_corrected():
    columns = {name: FIXTURES["raw"][name] for name in effect_sizes.COLUMNS["OR"]}
    corrected = np.asarray(effect_sizes.compute("OR", **columns).zero_cell_corrected)
    cells = np.stack([columns[name] for name in ("ai", "bi", "ci", "di")])
    np.testing.assert_array_equal(corrected, (cells == 0).any(axis=0))
    assert corrected.sum() == 1


def test_missing_columns_and_unknown_measures_are_named():
    with pytest.raises(ValueError, match="needs the columns.*missing: di"):
        effect_sizes.compute("RR", ai=[1], bi=[2], ci=[3])
    with pytest.raises(ValueError, match="'HR'"):
        effect_sizes.compute("HR")


@pytest.mark.parametrize("name", ["BCG", "NORMAND1999"])
def test_the_built_in_raw_datasets_give_metafor_s_effect_sizes(name):
    """The built-in tables are the public data metafor ships (dat.bcg, dat.normand1999): their effect sizes by
    the dataset's usual measure equal the ones metafor fitted in the fixtures."""
    from jaxschools.core import datasets

    table = getattr(datasets, name)
    measure = table["measure"]
    got = effect_sizes.compute(measure, **{column: table[column] for column in effect_sizes.COLUMNS[measure]})
    ref = FIXTURES["fits"]["bcg" if name == "BCG" else "normand1999"]
    assert len(table["names"]) == len(ref["yi"])
    np.testing.assert_allclose(np.asarray(got.y), ref["yi"], rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(np.asarray(got.v), ref["vi"], rtol=1e-10, atol=1e-14)
