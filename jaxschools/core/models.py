r"""Log-densities of the normal-normal hierarchical model (BDA3 sections 5.4-5.5).

Model::

    y_j | theta_j       ~ N(theta_j, sigma_j^2)      (sigma_j known)
    theta_j | mu, tau   ~ N(mu, tau^2)                j = 1..J
    (mu, tau)           ~ p(mu, tau)                  (see :class:`Prior`)

Every density here is a function of an unconstrained position on which ``log tau`` replaces ``tau``,
so each includes the Jacobian ``+ log tau`` of ``tau -> log tau``, exactly as the seed analysis
does. Every normalising constant is kept (so a proper prior gives a log-density whose integral is
the marginal likelihood p(y), which the Laplace approximation estimates).

* :func:`marginal_logdensity`: theta integrated out (BDA3 eq. 5.20),
  ``y_j | mu, tau ~ N(mu, sigma_j^2 + tau^2)``; position ``[mu, log_tau]``.
* :func:`joint_logdensity`: the full posterior of ``(mu, log_tau, theta_1..J)``, in the
  centered form (position ``[mu, log_tau, theta]``) or the non-centered form (position
  ``[mu, log_tau, eta]`` with ``theta = mu + tau * eta``, ``eta ~ N(0, 1)``), for gradient kernels.

The returned log-densities are :class:`LogDensity` pytrees: the data and prior scales are leaves,
not constants baked into a compiled function, so one compilation serves every dataset of the
same size and every prior scale, and a log-density can itself be an argument of ``jit``/``vmap``.

**Case weights** (optional, ``case_weights=`` of the constructors; issue 15), as
:mod:`jaxschools.core.exact` defines them: school j's *marginal* likelihood term is raised to the power w_j,
and theta_j given (mu, tau) is the tempered conditional of y_j | theta_j ~ N(theta_j, sigma_j^2 / w_j)
(:func:`tempered_conditional`), so that

.. math:: p_w(\mu, \tau, \theta \mid y) \propto p(\mu, \tau) \prod_j N(y_j \mid \mu, \sigma_j^2 + \tau^2)^{w_j}
          \, N(\theta_j \mid \hat\theta_j(w), V_j(w)).

The marginal density gains :math:`\sum_j (w_j - 1) \log N(y_j \mid \mu, \sigma_j^2 + \tau^2)`; a joint
density gains that and :math:`\sum_j [\log N(\theta_j \mid \hat\theta_j(w), V_j(w)) - \log N(\theta_j \mid
\hat\theta_j(1), V_j(1))]` (p(theta_j, y_j | mu, tau) = p(y_j | mu, tau) p(theta_j | mu, tau, y_j)). w_j = 1 is
the data as given, w_j = 0 leaves school j out exactly (theta_j | mu, tau ~ N(mu, tau^2)). Weighting the
conditional term N(y_j | theta_j, sigma_j^2)^w_j instead agrees at w = 0 and 1 but not in its derivative.
Without weights (None, the default) every density is exactly what it was.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp

from jaxschools.core import prior_families, tau_priors
from jaxschools.core.data import Schools
from jaxschools.core.moments import PARAMETERIZATIONS, PRIORS  # the one list of each

__all__ = [
    "PRIORS",
    "PARAMETERIZATIONS",
    "Prior",
    "LogDensity",
    "make_prior",
    "sample_prior",
    "marginal_loglik",
    "marginal_loglik_terms",
    "tempered_conditional",
    "marginal_logdensity",
    "joint_logdensity",
    "logdensity_for",
]

_LOG_2PI = math.log(2.0 * math.pi)


def _normal_logpdf(x, loc, log_scale):
    """log N(x | loc, exp(log_scale)^2), written with log_scale so tiny and huge scales stay finite."""
    z = (x - loc) * jnp.exp(-log_scale)
    return -0.5 * _LOG_2PI - log_scale - 0.5 * z * z


@jax.tree_util.register_pytree_node_class
class Prior:
    r"""The prior p(mu, tau) = p(mu) p(tau) on the natural (mu, tau) scale (the log-tau Jacobian is added by the
    models).

    ``kind`` names it (:mod:`jaxschools.core.prior_families`): mu flat or N(mu_loc, mu_scale^2), and a tau family
    with its static shape, e.g. ``"normal+lomax:1.5"``. The first releases' three names are kept:

    * ``flat``: p(mu, tau) \propto 1, the seed's (BDA3 eq. 5.18 with a uniform prior on tau).
      Improper; the posterior is proper for J >= 3.
    * ``half_cauchy``: mu ~ N(mu_loc, mu_scale^2), tau ~ HalfCauchy(0, tau_scale): the posteriordb /
      Stan / NumPyro eight schools with mu_loc = 0, mu_scale = 5, tau_scale = 5.
    * ``half_normal``: mu ~ N(mu_loc, mu_scale^2), tau ~ HalfNormal(tau_scale).

    :meth:`pair` builds any other from its parts, :meth:`custom` from a user's ``jnp`` log-density of tau.
    ``kind`` (and a user's function) are static metadata; mu_loc, mu_scale and tau_scale are array leaves (sweeps
    can vmap over them, and everything differentiates in them). Families that depend on the studies' sigmas
    (``jeffreys``, ``dumouchel``, ``uniform_shrinkage``, ``uniform_i2``) read them from the data the density is
    evaluated on (the studies in the likelihood, ``Schools.mask``), so they follow every perturbation of sigma.
    """

    __slots__ = ("kind", "mu_loc", "mu_scale", "tau_scale", "tau_log_density")

    def __init__(self, kind="flat", mu_loc=0.0, mu_scale=5.0, tau_scale=5.0, *, tau_log_density=None):
        spec = prior_families.spec(kind)  # ValueError naming an unknown kind
        if spec.tau.startswith("user") != (tau_log_density is not None):
            raise ValueError(f"prior {kind!r}: a user's tau family needs tau_log_density, and only it takes one "
                             "(use Prior.custom)")
        self.kind = kind
        self.mu_loc = mu_loc
        self.mu_scale = mu_scale
        self.tau_scale = tau_scale
        self.tau_log_density = tau_log_density

    @classmethod
    def pair(cls, mu_prior: str = "normal", tau_prior: str = "half_normal", *, mu_loc=0.0, mu_scale=5.0,
             tau_scale=1.0, tau_shape=None) -> "Prior":
        """p(mu) p(tau) from its parts: ``mu_prior`` ``flat`` or ``normal`` (mu_loc, mu_scale), ``tau_prior`` a
        family of :data:`jaxschools.core.prior_families.FAMILIES` with its ``tau_scale`` and ``tau_shape``."""
        return cls(prior_families.kind_of(mu_prior, tau_prior, tau_shape), mu_loc, mu_scale, tau_scale)

    @classmethod
    def custom(cls, tau_log_density: Callable, *, mu_prior: str = "normal", proper: bool = True,
               tail_exponent: float = 0.0, mu_loc=0.0, mu_scale=5.0) -> "Prior":
        """A prior on tau written by the user: ``tau_log_density(tau)``, a ``jnp`` function returning log p(tau)
        (normalised if ``proper``, else up to a constant), elementwise and traceable. ``tail_exponent``: a with
        p(tau) ~ tau^-a at infinity (``math.inf`` for a faster tail), from which the fewest studies for a proper
        posterior and the moments that exist follow (0, the default, assumes the worst, a flat tail)."""
        tau = "user_proper" if proper else "user_improper"
        return cls(prior_families.kind_of(mu_prior, tau, tail_exponent), mu_loc, mu_scale, 1.0,
                   tau_log_density=tau_log_density)

    @property
    def spec(self) -> prior_families.Spec:
        return prior_families.spec(self.kind)

    @property
    def proper(self) -> bool:
        """Whether p(mu, tau) integrates to one (so p(y) exists): a normal prior on mu and a proper tau family."""
        return self.spec.joint_proper

    @property
    def mu_normal(self) -> bool:
        """Whether mu has the N(mu_loc, mu_scale^2) prior (else flat)."""
        return self.spec.mu == "normal"

    def log_prob(self, mu, log_tau, data: Schools | None = None):
        """log p(mu, tau) with respect to d mu d tau, evaluated at tau = exp(log_tau). ``data``: the studies
        whose sigmas a sigma-dependent family reads (required by those families only)."""
        spec = self.spec
        log_mu = _normal_logpdf(mu, self.mu_loc, jnp.log(self.mu_scale)) if spec.mu == "normal" else 0.0
        if spec.tau.startswith("user"):
            log_tau_prior = self.tau_log_density(jnp.exp(log_tau))
        else:
            log_tau_prior = tau_priors.log_density(spec, log_tau, self.tau_scale, data)
        return jnp.zeros_like(mu + log_tau) + log_mu + log_tau_prior

    def tree_flatten(self):
        aux = self.kind if self.tau_log_density is None else (self.kind, self.tau_log_density)
        return (self.mu_loc, self.mu_scale, self.tau_scale), aux

    @classmethod
    def tree_unflatten(cls, aux, leaves):
        obj = object.__new__(cls)
        obj.kind, obj.tau_log_density = (aux, None) if isinstance(aux, str) else aux
        obj.mu_loc, obj.mu_scale, obj.tau_scale = leaves
        return obj

    def __repr__(self) -> str:
        if self.kind == "flat":
            return "Prior('flat')"
        return f"Prior({self.kind!r}, mu_loc={self.mu_loc}, mu_scale={self.mu_scale}, tau_scale={self.tau_scale})"


def sample_prior(rng_key, prior: Prior, shape=(), dtype=None, data: Schools | None = None):
    """Draws (mu, tau) from a proper prior, each shaped ``shape``.

    mu ~ N(mu_loc, mu_scale^2), and tau from its family (s = tau_scale, c = the shape, U uniform on (0, 1)):
    uniform(0, s): s U; half-normal, half-Cauchy, half-Student-t(c): s |Z|, s |C|, s |T_c|; exponential:
    s E; log-normal and log-t_5 on tau^2: tau = s exp(c Z / 2), s exp(c T_5 / 2); Lomax(c, s): s (U^(-1/c) - 1);
    DuMouchel (a Lomax with shape 1 and the data's scale s0): s0 (1 / U - 1); uniform shrinkage and uniform I^2
    (B = s0^2 / (s0^2 + tau^2) uniform): s0 sqrt(U / (1 - U)), s0 from ``data`` (required by those three). An
    improper prior (flat mu or an improper tau family) has nothing to draw (ValueError), nor does a user's
    density (NotImplementedError).
    """
    spec = prior.spec
    if not prior.proper:
        raise ValueError(f"the {prior.kind} prior is improper: nothing can be drawn from it")
    if spec.tau.startswith("user"):
        raise NotImplementedError(f"drawing from a user's tau density ({prior.kind}) is not implemented")
    dtype = dtype or jnp.result_type(float)
    key_mu, key_tau = jax.random.split(rng_key)
    mu = prior.mu_loc + prior.mu_scale * jax.random.normal(key_mu, shape, dtype)
    family, c = spec.tau, spec.shape
    if spec.uses_sigma:
        if data is None:
            raise ValueError(f"the {family} prior takes its scale from the studies' sigmas: pass data=")
        scale = jnp.exp(tau_priors.reference_scale(spec, data)).astype(dtype)
    else:
        scale = jnp.asarray(prior.tau_scale, dtype)
    u = jax.random.uniform(key_tau, shape, dtype, minval=jnp.finfo(dtype).tiny)
    if family == "uniform_bounded":
        magnitude = u
    elif family == "half_normal":
        magnitude = jnp.abs(jax.random.normal(key_tau, shape, dtype))
    elif family == "half_cauchy":
        magnitude = jnp.abs(jax.random.cauchy(key_tau, shape, dtype))
    elif family == "half_student_t":
        magnitude = jnp.abs(jax.random.t(key_tau, c, shape, dtype))
    elif family == "exponential":
        magnitude = jax.random.exponential(key_tau, shape, dtype)
    elif family == "lognormal":
        magnitude = jnp.exp(0.5 * c * jax.random.normal(key_tau, shape, dtype))
    elif family == "log_t5":
        magnitude = jnp.exp(0.5 * c * jax.random.t(key_tau, 5.0, shape, dtype))
    elif family == "lomax":
        magnitude = jnp.expm1(-jnp.log(u) / c)
    elif family == "dumouchel":
        magnitude = 1.0 / u - 1.0
    elif family in ("uniform_shrinkage", "uniform_i2"):
        magnitude = jnp.sqrt(u / (1.0 - u))
    else:
        raise NotImplementedError(f"drawing from the {family} prior on tau is not implemented")
    return mu, scale * magnitude


def make_prior(prior="flat", *, mu_loc=0.0, mu_scale=5.0, tau_scale=5.0) -> Prior:
    """A :class:`Prior` from its name (a ``Prior`` passes through unchanged)."""
    if isinstance(prior, Prior):
        return prior
    return Prior(prior, mu_loc=mu_loc, mu_scale=mu_scale, tau_scale=tau_scale)


@jax.tree_util.register_pytree_node_class
class LogDensity:
    """A log-density ``position -> scalar`` bound to a dataset and a prior.

    A pytree: ``data`` and ``prior`` are children, the underlying pure function
    ``fn(position, data, prior)`` and the parameterization name are static. Calling it is
    calling ``fn``; it is what BlackJAX calls a ``logdensity_fn``.

    ``case_weights``: None (the default: the density ``fn`` alone), or an array (J,) of per-school weights
    w_j (see the module docstring), a third child whose terms are added to ``fn``: for any position that starts
    with (mu, log tau), as every density here does, and for theta (the ``centered`` and ``noncentered``
    parameterizations) after them.
    """

    __slots__ = ("fn", "data", "prior", "parameterization", "case_weights")

    def __init__(self, fn: Callable, data: Schools, prior: Prior, parameterization: str, case_weights=None):
        self.fn = fn
        self.data = data
        self.prior = prior
        self.parameterization = parameterization
        self.case_weights = case_weights

    def __call__(self, position):
        value = self.fn(position, self.data, self.prior)
        if self.case_weights is None:
            return value
        return value + _case_weight_term(position, self.data, self.case_weights, self.parameterization)

    def with_case_weights(self, case_weights) -> "LogDensity":
        """The same density with case weights w (J,) on the marginal likelihood terms (None: none)."""
        return LogDensity(self.fn, self.data, self.prior, self.parameterization, case_weights)

    @property
    def proper(self) -> bool:
        """Whether the prior is proper, so the density integrates to p(y)."""
        return self.prior.proper

    @property
    def dim(self) -> int:
        """Length of a position: 2 for the marginal, 2 + J for the joint densities."""
        return 2 if self.parameterization == "marginal" else 2 + self.data.num_schools

    def tree_flatten(self):
        return (self.data, self.prior, self.case_weights), (self.fn, self.parameterization)

    @classmethod
    def tree_unflatten(cls, aux, children):
        obj = object.__new__(cls)
        obj.fn, obj.parameterization = aux
        obj.data, obj.prior, obj.case_weights = children
        return obj


def marginal_loglik_terms(mu, log_tau, data: Schools):
    """log N(y_j | mu, sigma_j^2 + tau^2) per school, shape ``mu.shape + (J,)`` (masked schools included)."""
    variance = data.sigma**2 + jnp.exp(2.0 * jnp.asarray(log_tau))[..., None]
    residual = data.y - jnp.asarray(mu)[..., None]
    return -0.5 * (_LOG_2PI + jnp.log(variance) + residual * residual / variance)


def marginal_loglik(mu, log_tau, data: Schools):
    """log p(y | mu, tau) = sum_j log N(y_j | mu, sigma_j^2 + tau^2), masked schools excluded.

    This is the hot loop of every sampler on the marginal, so it costs one exp in all and one log and one
    division per school. tau -> 0 is exact (v_j -> sigma_j^2); where tau^2 overflows (log tau > 354 in
    float64, > 44 in float32) v_j is inf and the log-likelihood -inf, i.e. zero density, which a
    Metropolis step rejects and the Laplace line search steps back from.
    """
    return jnp.sum(jnp.where(data.mask, marginal_loglik_terms(mu, log_tau, data), 0.0), axis=-1)


def tempered_conditional(mu, log_tau, data: Schools, case_weights):
    r"""(theta_hat, V): theta_j | mu, tau, y when y_j | theta_j ~ N(theta_j, sigma_j^2 / w_j) (BDA3 eq. 5.17
    with precision w_j / sigma_j^2), shapes ``mu.shape + (J,)``:

    .. math:: \hat\theta_j = (1 - B_j) y_j + B_j \mu, \quad V_j = \tau^2 B_j, \quad
              B_j = \frac{\sigma_j^2}{\sigma_j^2 + w_j \tau^2} = \frac{1}{1 + w_j r_j}, \; r_j = \tau^2 / \sigma_j^2.

    w_j = 1 is :func:`jaxschools.core.posterior.conditional_theta`; w_j = 0 (or a masked school) is N(mu, tau^2),
    with the derivative dB_j / dw_j = -r_j B_j^2 finite there. r_j is capped at the square root of the
    dtype's largest number (tau / sigma_j > 1e77 in float64), where the marginal terms overflow anyway.
    """
    log_tau = jnp.asarray(log_tau)[..., None]
    log_ratio = 2.0 * (log_tau - jnp.log(data.sigma))
    ratio = jnp.exp(jnp.minimum(log_ratio, 0.5 * math.log(jnp.finfo(log_ratio.dtype).max)))
    weight = jnp.where(data.mask, case_weights, 0.0)
    b = 1.0 / (1.0 + weight * ratio)
    theta_hat = (weight * ratio * b) * data.y + b * jnp.asarray(mu)[..., None]
    return theta_hat, data.sigma**2 * ratio * b


def _case_weight_term(position, data: Schools, case_weights, parameterization: str):
    """The log-density's change under case weights (module docstring), over the schools in the likelihood.

    A marginal term of -inf (tau^2 overflowed) is clamped to the dtype's most negative number, so that
    w_j = 1 adds exactly 0 (not 0 * -inf = NaN) and the density stays -inf through the unweighted part.
    """
    mu, log_tau = position[0], position[1]
    terms = marginal_loglik_terms(mu, log_tau, data)
    terms = jnp.maximum(terms, jnp.finfo(terms.dtype).min)
    change = jnp.where(data.mask, (case_weights - 1.0) * terms, 0.0)
    if parameterization in ("centered", "noncentered"):
        theta = position[2:] if parameterization == "centered" else mu + jnp.exp(log_tau) * position[2:]
        weighted = tempered_conditional(mu, log_tau, data, case_weights)
        unweighted = tempered_conditional(mu, log_tau, data, jnp.ones_like(case_weights))
        # Each is the conditional density of theta_j itself (the eta Jacobian is common and cancels).
        change = change + jnp.where(
            data.mask,
            _normal_logpdf(theta, weighted[0], 0.5 * jnp.log(weighted[1]))
            - _normal_logpdf(theta, unweighted[0], 0.5 * jnp.log(unweighted[1])),
            0.0,
        )
    return jnp.sum(change, axis=-1)


def _marginal(position, data: Schools, prior: Prior):
    mu, log_tau = position[0], position[1]
    return marginal_loglik(mu, log_tau, data) + prior.log_prob(mu, log_tau, data) + log_tau


def _joint_centered(position, data: Schools, prior: Prior):
    mu, log_tau, theta = position[0], position[1], position[2:]
    log_population = jnp.sum(_normal_logpdf(theta, mu, log_tau))
    log_lik = jnp.sum(jnp.where(data.mask, _normal_logpdf(data.y, theta, jnp.log(data.sigma)), 0.0))
    return log_population + log_lik + prior.log_prob(mu, log_tau, data) + log_tau


def _joint_noncentered(position, data: Schools, prior: Prior):
    mu, log_tau, eta = position[0], position[1], position[2:]
    theta = mu + jnp.exp(log_tau) * eta
    log_population = jnp.sum(-0.5 * _LOG_2PI - 0.5 * eta * eta)
    log_lik = jnp.sum(jnp.where(data.mask, _normal_logpdf(data.y, theta, jnp.log(data.sigma)), 0.0))
    return log_population + log_lik + prior.log_prob(mu, log_tau, data) + log_tau


_DENSITIES = {
    "marginal": _marginal,
    "centered": _joint_centered,
    "noncentered": _joint_noncentered,
}


def marginal_logdensity(data: Schools, prior="flat", *, case_weights=None, **prior_scales) -> LogDensity:
    r"""log p(mu, log tau | y) + const: theta integrated out, the seed's ``logpost`` with constants.

    .. math::
        \sum_j \log N(y_j \mid \mu, \sigma_j^2 + \tau^2) + \log p(\mu, \tau) + \log \tau

    (BDA3 eq. 5.20-5.21). Position ``[mu, log_tau]``. ``case_weights`` (J,): each term raised to w_j
    (module docstring); None, the default, is w = 1 without the extra term.
    """
    return LogDensity(_marginal, data, make_prior(prior, **prior_scales), "marginal", case_weights)


def joint_logdensity(data: Schools, prior="flat", parameterization="noncentered", *, case_weights=None,
                     **prior_scales) -> LogDensity:
    r"""log p(mu, log tau, theta | y) + const (centered) or of (mu, log tau, eta) (non-centered).

    Centered, position ``[mu, log_tau, theta_1..J]``:

    .. math:: \sum_j [\log N(\theta_j \mid \mu, \tau^2) + \log N(y_j \mid \theta_j, \sigma_j^2)]
              + \log p(\mu, \tau) + \log \tau

    Non-centered, position ``[mu, log_tau, eta_1..J]``, :math:`\theta_j = \mu + \tau \eta_j`:

    .. math:: \sum_j [\log N(\eta_j \mid 0, 1) + \log N(y_j \mid \mu + \tau\eta_j, \sigma_j^2)]
              + \log p(\mu, \tau) + \log \tau

    The centered form has the funnel geometry that makes HMC diverge at small tau
    (Betancourt & Girolami 2015); the non-centered form removes it. ``case_weights`` (J,): the marginal
    term p(y_j | mu, tau) raised to w_j (module docstring); None, the default, adds nothing.
    """
    if parameterization not in ("centered", "noncentered"):
        raise ValueError(f"unknown joint parameterization {parameterization!r}; expected centered or noncentered")
    return LogDensity(_DENSITIES[parameterization], data, make_prior(prior, **prior_scales), parameterization,
                      case_weights)


def logdensity_for(data: Schools, prior="flat", parameterization="marginal", *, case_weights=None,
                   **prior_scales) -> LogDensity:
    """The log-density a config names: ``model.parameterization`` picks marginal or a joint form."""
    if parameterization == "marginal":
        return marginal_logdensity(data, prior, case_weights=case_weights, **prior_scales)
    return joint_logdensity(data, prior, parameterization, case_weights=case_weights, **prior_scales)


def __dir__():
    # The public names only, not the imports (``dir(js.diagnostics)`` lists no ``jax`` or ``jnp``).
    return list(__all__)
