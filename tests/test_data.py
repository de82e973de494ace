"""The Schools pytree: validation on construction, names as metadata, jit/vmap, loading."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxschools as js
from jaxschools.errors import InputError


def test_eight_schools(eight):
    assert eight.names == tuple("ABCDEFGH")
    np.testing.assert_array_equal(eight.y, [28, 8, -3, 7, -1, 1, 18, 12])
    np.testing.assert_array_equal(eight.sigma, [15, 10, 16, 11, 9, 11, 10, 18])
    assert eight.y.dtype == jnp.float64 and bool(jnp.all(eight.mask))


@pytest.mark.parametrize(
    "y, sigma, names, fragment",
    [
        ([1.0, np.nan, 2.0], [1.0, 1.0, 1.0], None, "finite"),
        ([1.0, 2.0, 3.0], [1.0, 0.0, 1.0], None, "positive"),
        ([1.0, 2.0, 3.0], [1.0, -1.0, 1.0], None, "positive"),
        ([1.0, 2.0, 3.0], [1.0, np.inf, 1.0], None, "finite"),
        ([1.0, 2.0, 3.0], [1.0, 1.0], None, "3"),
        ([1.0, 2.0], [1.0, 1.0], ("a", "a"), "twice"),
    ],
)
def test_construction_validates_concrete_values(y, sigma, names, fragment):
    with pytest.raises(InputError, match=fragment):
        js.data.Schools(y=np.array(y), sigma=np.array(sigma), names=names)


def test_names_are_metadata_not_leaves(eight):
    leaves = jax.tree_util.tree_leaves(eight)
    assert len(leaves) == 3 and all(isinstance(leaf, jax.Array) for leaf in leaves)

    @jax.jit
    def shifted(data):
        return data.replace(y=data.y + 1.0)

    out = shifted(eight)
    assert out.names == eight.names
    np.testing.assert_array_equal(out.y, eight.y + 1.0)


def test_vmap_over_a_batch_of_datasets(eight):
    batch = js.data.Schools(jnp.stack([eight.y, -eight.y]), jnp.stack([eight.sigma, eight.sigma]), eight.names)
    means = jax.vmap(lambda d: js.classical.pooled(d)["mean"])(batch)
    np.testing.assert_allclose(means, [7.68561672495604, -7.68561672495604], rtol=1e-12)


def test_float32_follows_input():
    data = js.data.Schools(y=np.array([1.0, 2.0, 3.0], np.float32), sigma=np.array([1.0, 1.0, 2.0], np.float32))
    assert data.y.dtype == jnp.float32 and data.sigma.dtype == jnp.float32


def test_load_csv_and_json_agree(tmp_path):
    (tmp_path / "t.csv").write_text("name,y,sigma\nP,0.1,0.05\nQ,-0.2,0.1\nR,0.3,0.2\n")
    (tmp_path / "t.json").write_text('{"name": ["P", "Q", "R"], "y": [0.1, -0.2, 0.3], "sigma": [0.05, 0.1, 0.2]}')
    a, b = js.data.load(tmp_path / "t.csv"), js.data.load(tmp_path / "t.json")
    assert a.names == b.names == ("P", "Q", "R")
    np.testing.assert_array_equal(a.y, b.y)
    np.testing.assert_array_equal(a.sigma, b.sigma)


def test_load_refuses_bad_file(tmp_path):
    (tmp_path / "bad.csv").write_text("name,y,sigma\nP,0.1,0\n")
    with pytest.raises(InputError, match="sigma"):
        js.data.load(tmp_path / "bad.csv")
