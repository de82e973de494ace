"""Markov kernels, each a BlackJAX-style ``SamplingAlgorithm(init, step)``.

One module per algorithm, each exposing its ``State``, ``Info``, ``init``, ``build_kernel`` and a
constructor (NUTS's state and ``init`` are HMC's, imported from :mod:`jaxschools.core.kernels.hmc`). The
Metropolis-Hastings accept step and :class:`~jaxschools.core.kernels.base.BoundInit` (a module's ``init`` with its
log-density bound, called ``init(position, rng_key=None)`` as BlackJAX calls it) live once in
:mod:`jaxschools.core.kernels.base`, the leapfrog integrator and kinetic energy of the gradient kernels in
:mod:`jaxschools.core.kernels.integrators`.
"""

from jaxschools.core.kernels.base import SamplingAlgorithm, metropolis_accept
from jaxschools.core.kernels.hmc import hmc
from jaxschools.core.kernels.nuts import nuts
from jaxschools.core.kernels.rwmh import rwmh

__all__ = ["SamplingAlgorithm", "metropolis_accept", "rwmh", "hmc", "nuts"]


def __dir__():
    # The public names only, not the imports (``dir(js.diagnostics)`` lists no ``jax`` or ``jnp``).
    return list(__all__)
