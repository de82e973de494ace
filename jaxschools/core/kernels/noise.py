r"""Proposal noise for random-walk kernels: standard normals from 32 random bits each, exactly symmetric.

A random-walk Metropolis step is exact for any proposal increment whose law is symmetric,
:math:`P(\xi) = P(-\xi)`: the proposal densities cancel in the Hastings ratio (Metropolis et al. 1953;
Tierney 1994). The increment's resolution does not enter the target, only its symmetry does. So the normals
here are drawn for symmetry and speed, not for 53-bit resolution:

* the top 24 bits :math:`k` of a uniform 32-bit word give :math:`u_k = (2k + 1 - 2^{24})/2^{24}`, the midpoints
  of :math:`2^{24}` equal cells of :math:`(-1, 1)`. Each is exact in float32, and :math:`u_{2^{24}-1-k} = -u_k`;
* :math:`z = \sqrt 2\,\mathrm{erf}^{-1}(u)` in float32. XLA computes :math:`\mathrm{erf}^{-1}(u)` as :math:`u`
  times a function of :math:`\log(1 - u^2)`, so :math:`z(-u) = -z(u)` bit for bit (``tests/test_noise.py``
  checks all :math:`2^{24}` values). Hence :math:`z` and :math:`-z` are exactly equally likely, in float32 and after
  the exact cast to float64.

So :math:`z` takes :math:`2^{24}` equally likely, strictly increasing values: the normal quantiles at the cell
midpoints, :math:`\Phi^{-1}((2k+1)/2^{25})`, to within :math:`10^{-5}` relative (XLA's float32
:math:`\mathrm{erf}^{-1}`; :math:`5.8 \times 10^{-6}` measured on a CPU), with :math:`|z| \le 5.42`. A
continuous normal has mass :math:`6 \times 10^{-8}` beyond :math:`|z| = 5.42` (both tails together), which only
changes how often a tail proposal is made, never what the chain converges to.

Why: ``jax.random.normal`` in float64 spends 64 random bits and a float64 inverse error function on every
number, a large share of a random-walk step on a model this small (the measured share and gain are in
benchmarks/RESULTS.md and docs/architecture.md).
``jax.random.normal``'s own float32 uniform grid is shifted by :math:`2^{-24}` from symmetric, which this
construction also avoids.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["symmetric_normal", "normal_from_bits"]

_CELL = np.float32(2.0**-24)
_SQRT2 = np.float32(math.sqrt(2.0))


def normal_from_bits(bits, dtype=jnp.float32):
    """Standard normals from uint32 ``bits`` (any shape): the map described in the module docstring.

    ``normal_from_bits(b) == -normal_from_bits(b')`` exactly when ``b >> 8`` and ``b' >> 8`` sum to
    :math:`2^{24} - 1`.
    """
    top = (jnp.asarray(bits, jnp.uint32) >> 8).astype(jnp.int32)  # k in [0, 2^24)
    # 2k + 1 - 2^24: the odd integers of magnitude below 2^24, each exact in float32 (2k + 1 itself is not, above
    # 2^24), so u = (2k + 1 - 2^24) / 2^24 is exact and u(2^24 - 1 - k) = -u(k) holds bit for bit.
    uniform = (2 * top + (1 - 2**24)).astype(jnp.float32) * _CELL
    return (_SQRT2 * jax.lax.erf_inv(uniform)).astype(dtype)


def symmetric_normal(rng_key, shape, dtype=None):
    """Standard normals of ``shape`` from ``rng_key``, one 32-bit word each (:func:`normal_from_bits` of
    ``jax.random.bits``), cast to ``dtype`` (default: JAX's default float)."""
    dtype = jnp.dtype(dtype) if dtype is not None else jnp.result_type(float)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"symmetric_normal needs a floating dtype; got {dtype}")
    return normal_from_bits(jax.random.bits(rng_key, tuple(shape), jnp.uint32), dtype)


def __dir__():
    # The public names only, not the imports (``dir(js.diagnostics)`` lists no ``jax`` or ``jnp``).
    return list(__all__)
