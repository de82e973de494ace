"""The random walk's proposal normals (jaxschools.core.kernels.noise): exactly symmetric, and normal quantiles.

Symmetry is what makes the random-walk Metropolis step exact, so it is checked on every one of the 2^24 values
the map can produce, not on a sample. Their values are checked against scipy's normal quantile function.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from jaxschools.core.kernels import noise

CELLS = 2**24


@pytest.fixture(scope="module")
def every_value():
    """(k, z_k) for every 24-bit k: the bits k << 8 (the low 8 bits are dropped by the map)."""
    k = np.arange(CELLS, dtype=np.uint32)
    return k, np.asarray(noise.normal_from_bits(k << 8, jnp.float64))


def test_every_value_has_its_negative_equally_likely(every_value):
    _, z = every_value
    # k and 2^24 - 1 - k are equally likely bit patterns; their normals must be exact negatives.
    np.testing.assert_array_equal(z[::-1], -z)
    assert np.all(np.isfinite(z))
    assert np.all(np.diff(z) > 0)  # 2^24 distinct values, in the order of the bits


def test_values_are_normal_quantiles_at_cell_midpoints(every_value):
    k, z = every_value
    quantiles = special.ndtri((2.0 * k.astype(np.float64) + 1.0) / (2.0 * CELLS))
    # The accuracy the module docstring states for XLA's float32 inverse error function (5.8e-6 measured on a CPU).
    assert np.max(np.abs(z - quantiles) / np.abs(quantiles)) < 1e-5
    assert np.abs(z).max() < 5.42


def test_low_bits_are_ignored():
    bits = jnp.array([0x12345600, 0x123456FF], jnp.uint32)
    z = noise.normal_from_bits(bits)
    assert z[0] == z[1]


def test_draws_follow_the_standard_normal():
    draws = np.asarray(noise.symmetric_normal(jax.random.key(0), (400_000,), jnp.float64))
    # Kolmogorov-Smirnov against scipy's normal at a fixed level: a false alarm 1 time in 10,000. The 2^24-value
    # discretisation moves the CDF by at most 3e-8, invisible at this sample size (KS resolution about 2e-3).
    assert stats.kstest(draws, "norm").pvalue > 1e-4


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_dtype_and_shape(dtype):
    draws = noise.symmetric_normal(jax.random.key(1), (3, 5), dtype)
    assert draws.shape == (3, 5) and draws.dtype == dtype
    assert noise.symmetric_normal(jax.random.key(1), (2,)).dtype == jnp.result_type(float)


def test_an_integer_dtype_is_refused():
    with pytest.raises(ValueError, match="floating dtype"):
        noise.symmetric_normal(jax.random.key(1), (2,), jnp.int32)
