r"""Random-walk Metropolis with a Gaussian proposal N(x, scale^2 cov).

The proposal is :math:`x' = x + \text{scale}\, L z` with :math:`L L^T = \text{cov}` and
:math:`z \sim N(0, I)`: the semantics of LearnBayes' ``rwmetrop(logpost, list(var = cov, scale = s))``
used in the seed analysis (Albert 2009, section 6.4). The proposal is symmetric, so the log
Metropolis ratio is the difference of log-densities (Metropolis et al. 1953). With cov the Laplace
covariance, a scale near 2.4 / sqrt(d) is the classical optimum (Roberts, Gelman & Gilks 1997);
the seed uses 2 in d = 2 and accepts about a third of proposals.

The normals :math:`z` come from :func:`jaxschools.core.kernels.noise.symmetric_normal`: 32 random bits each, a
normal discretised to :math:`2^{24}` equally likely values whose law is exactly symmetric, which is all that
the Metropolis ratio needs (see that module). The accept test compares :math:`\log u`, with :math:`u` a
uniform of the position's dtype (52 bits in float64), to the log ratio.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from jaxschools.core.kernels.base import BlockedSamplingAlgorithm, BoundInit, accept_given_uniform
from jaxschools.core.kernels.noise import symmetric_normal

__all__ = ["RWMHState", "RWMHInfo", "RWMHNoise", "init", "build_kernel", "rwmh"]


class RWMHState(NamedTuple):
    """position (d,) and its cached log-density."""

    position: jax.Array
    logdensity: jax.Array


class RWMHInfo(NamedTuple):
    """Per-step facts: min(1, ratio), the accept decision, and the proposed position."""

    acceptance_rate: jax.Array
    is_accepted: jax.Array
    proposal: jax.Array


def init(position, logdensity_fn: Callable) -> RWMHState:
    position = jnp.asarray(position)
    return RWMHState(position, logdensity_fn(position))


class RWMHNoise(NamedTuple):
    """The randomness of one transition: a standard normal vector and the log of a uniform."""

    normal: jax.Array
    log_uniform: jax.Array


def _draw(rng_key, num_steps: int, state: RWMHState, logdensity_fn: Callable, scale_tril) -> RWMHNoise:
    key_normal, key_uniform = jax.random.split(rng_key)
    dtype = state.position.dtype
    normal = symmetric_normal(key_normal, (num_steps,) + state.position.shape, dtype)
    log_uniform = jnp.log(jax.random.uniform(key_uniform, (num_steps,), dtype=dtype))
    return RWMHNoise(normal, log_uniform)


def _apply(noise: RWMHNoise, state: RWMHState, logdensity_fn: Callable, scale_tril) -> tuple[RWMHState, RWMHInfo]:
    proposal = state.position + scale_tril @ noise.normal
    # +inf is never a real density value here: treat it as zero density, so it is rejected.
    proposal_logdensity = logdensity_fn(proposal)
    proposal_logdensity = jnp.where(proposal_logdensity == jnp.inf, -jnp.inf, proposal_logdensity)
    new_state, is_accepted, acceptance_rate = accept_given_uniform(
        noise.log_uniform,
        proposal_logdensity - state.logdensity,
        state,
        RWMHState(proposal, proposal_logdensity),
    )
    return new_state, RWMHInfo(acceptance_rate, is_accepted, proposal)


def _step(rng_key, state: RWMHState, logdensity_fn: Callable, scale_tril) -> tuple[RWMHState, RWMHInfo]:
    noise = _draw(rng_key, 1, state, logdensity_fn, scale_tril)
    return _apply(jax.tree_util.tree_map(lambda x: x[0], noise), state, logdensity_fn, scale_tril)


def build_kernel():
    """The transition ``kernel(rng_key, state, logdensity_fn, scale_tril) -> (state, info)``.

    The proposal is ``position + scale_tril @ z``, so ``scale_tril = scale * chol(cov)``.
    """
    return _step


def rwmh(logdensity_fn: Callable, cov, scale=1.0) -> BlockedSamplingAlgorithm:
    """Random-walk Metropolis with proposal N(x, scale^2 cov), as a ``SamplingAlgorithm``.

    Args:
      logdensity_fn: position (d,) -> scalar log-density (unnormalised is fine).
      cov: (d, d) proposal covariance, e.g. the Laplace covariance ``fit.cov``; a (d,) vector is a
        diagonal.
      scale: multiplies the proposal's standard deviations (LearnBayes' ``scale``).

    ``init`` (``init(position, rng_key=None)``, a :class:`~jaxschools.core.kernels.base.BoundInit`), ``step``, ``draw``
    and ``apply`` (see :class:`~jaxschools.core.kernels.base.BlockedSamplingAlgorithm`) are pytrees over module-level
    functions (``jax.tree_util.Partial`` for the last three): the log-density and the proposal factor are pytree
    leaves, so the driver compiles once for every dataset and scale of the same shapes.
    """
    cov = jnp.asarray(cov)
    if cov.ndim == 1:
        cov = jnp.diag(cov)
    scale_tril = scale * jnp.linalg.cholesky(cov)
    bound = dict(logdensity_fn=logdensity_fn, scale_tril=scale_tril)
    return BlockedSamplingAlgorithm(
        BoundInit(init, logdensity_fn),
        jax.tree_util.Partial(build_kernel(), **bound),
        jax.tree_util.Partial(_draw, **bound),
        jax.tree_util.Partial(_apply, **bound),
    )


def __dir__():
    # The public names only, not the imports (``dir(js.diagnostics)`` lists no ``jax`` or ``jnp``).
    return list(__all__)
