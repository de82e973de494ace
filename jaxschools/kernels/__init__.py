"""Markov kernels, each a BlackJAX-style ``SamplingAlgorithm(init, step)``.

One module per algorithm, each exposing its ``State``, ``Info``, ``init``, ``build_kernel`` and a
constructor; the Metropolis-Hastings accept step lives once in :mod:`jaxschools.kernels.base`.
"""

from jaxschools.kernels.base import SamplingAlgorithm, metropolis_accept
from jaxschools.kernels.rwmh import rwmh

__all__ = ["SamplingAlgorithm", "metropolis_accept", "rwmh"]
