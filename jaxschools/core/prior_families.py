r"""The prior families of (mu, tau): their names, parameters and tails, as pure Python (no JAX).

A prior is p(mu, tau) = p(mu) p(tau): mu flat (improper) or normal(mu_loc, mu_scale^2), and tau from one of the
families below. Each family is a scale family in ``tau_scale`` (where it has a scale), with at most one shape
parameter ``tau_shape``, which is static: it fixes the tail, so the existence of moments and the fewest studies
for a proper posterior (:mod:`jaxschools.core.moments`) follow from the family and its shape alone.

=====================  ==========================================================  ========  ==================
family                 p(tau)                                                       proper    tail p(tau) ~
=====================  ==========================================================  ========  ==================
``uniform``            1 (improper; BDA3's and the seed's)                          no        tau^0
``uniform_bounded``    1 / s on (0, s), s = tau_scale                               yes       (none: bounded)
``half_normal``        2 N(tau | 0, s^2)                                            yes       Gaussian
``half_cauchy``        2 / (pi s (1 + (tau/s)^2))                                   yes       tau^-2
``half_student_t``     2 t_nu(tau / s) / s, nu = tau_shape                          yes       tau^-(nu + 1)
``exponential``        exp(-tau / s) / s (s the mean)                               yes       exponential
``lognormal``          log tau^2 ~ N(2 log s, c^2), c = tau_shape (Turner 2015)     yes       faster than powers
``log_t5``             log tau^2 ~ 2 log s + c t_5, c = tau_shape (Rhodes 2015)     yes       tau^-1 log^-6 tau
``lomax``              (a / s) (1 + tau/s)^-(a + 1), a = tau_shape                  yes       tau^-(a + 1)
``sqrt``               tau^(-1/2) (uniform on sqrt(tau))                            no        tau^-1/2
``jeffreys``           sqrt(sum_j (tau / (sigma_j^2 + tau^2))^2) (Tibshirani 1989)  no        tau^-1
``dumouchel``          s0 / (s0 + tau)^2, s0^2 = k / sum_j sigma_j^-2               yes       tau^-2
``uniform_shrinkage``  2 s0^2 tau / (s0^2 + tau^2)^2 (uniform on s0^2/(s0^2+tau^2))  yes       tau^-3
``uniform_i2``         2 s^2 tau / (s^2 + tau^2)^2, s^2 Higgins & Thompson's        yes       tau^-3
=====================  ==========================================================  ========  ==================

For the lognormal and log-t_5 families s = exp(m / 2) is the prior median of tau, where m is the location of
log tau^2 that Turner et al. and Rhodes et al. tabulate (:data:`TURNER_2015`, :data:`RHODES_2015`;
:func:`from_table` converts). ``jeffreys`` is the Berger-Bernardo reference prior for tau (Bodnar et al. 2017),
and the last four depend on the sigmas of the studies in the likelihood (recomputed from each dataset, and
differentiable in sigma); ``uniform_i2``'s s^2 is the typical within-study variance (k - 1) S1 / (S1^2 - S2),
S_r = sum_j sigma_j^(-2r) (a uniform prior on I^2 = tau^2 / (tau^2 + s^2)).

A prior is named by a *kind* string: ``"<mu>+<tau>"`` or ``"<mu>+<tau>:<shape>"`` (``"normal+lomax:1.5"``),
with the three names of the first releases kept as they were: ``flat`` (= ``flat+uniform``), ``half_cauchy``
(= ``normal+half_cauchy``) and ``half_normal`` (= ``normal+half_normal``). A user's ``jnp`` log-density of tau
(Python API, :meth:`jaxschools.core.models.Prior.custom`) is ``<mu>+user_proper:<a>`` or
``<mu>+user_improper:<a>``, a its declared tail exponent.

References: Röver (2020), J. Statistical Software 93(6) (bayesmeta); Röver et al. (2021), Research Synthesis
Methods 12(4); Turner et al. (2015), Statistics in Medicine 34(6); Rhodes et al. (2015), J. Clinical
Epidemiology 68(1); Spiegelhalter, Abrams & Myles (2004), sec. 5.7.3 (DuMouchel, uniform shrinkage).
"""

from __future__ import annotations

import math
from typing import NamedTuple

__all__ = ["Family", "FAMILIES", "MU_PRIORS", "LEGACY", "Spec", "spec", "kind_of", "from_table", "TURNER_2015",
           "RHODES_2015", "TURNER_COMPARISONS", "RHODES_COMPARISONS", "RHODES_AREAS"]

MU_PRIORS = ("flat", "normal")


class Family(NamedTuple):
    proper: bool
    has_scale: bool  # tau_scale enters the density
    shape: str  # what tau_shape is ("" when the family has none)
    uses_sigma: bool  # depends on the studies' sigmas
    tail: float  # a with p(tau) ~ tau^-a at infinity (math.inf: faster than any power, or bounded support)
    tail_log: bool  # a further log factor makes tail exponent 1 integrable (the log-t_5)


FAMILIES = {
    "uniform": Family(False, False, "", False, 0.0, False),
    "uniform_bounded": Family(True, True, "", False, math.inf, False),
    "half_normal": Family(True, True, "", False, math.inf, False),
    "half_cauchy": Family(True, True, "", False, 2.0, False),
    "half_student_t": Family(True, True, "degrees of freedom nu", False, math.nan, False),
    "exponential": Family(True, True, "", False, math.inf, False),
    "lognormal": Family(True, True, "sd of log tau^2", False, math.inf, False),
    "log_t5": Family(True, True, "scale of log tau^2", False, 1.0, True),
    "lomax": Family(True, True, "shape a", False, math.nan, False),
    "sqrt": Family(False, False, "", False, 0.5, False),
    "jeffreys": Family(False, False, "", True, 1.0, False),
    "dumouchel": Family(True, False, "", True, 2.0, False),
    "uniform_shrinkage": Family(True, False, "", True, 3.0, False),
    "uniform_i2": Family(True, False, "", True, 3.0, False),
}
_USER = {"user_proper": True, "user_improper": False}
# The first releases' names, kept as shorthands.
LEGACY = {"flat": ("flat", "uniform"), "half_cauchy": ("normal", "half_cauchy"), "half_normal": ("normal", "half_normal")}
_LEGACY_OF = {pair: name for name, pair in LEGACY.items()}


class Spec(NamedTuple):
    """What a kind string says: the mu prior, the tau family, its shape (NaN for none), whether it is proper,
    and the tail exponent a of p(tau) (with ``tail_log``: the log-t_5's integrable log factor)."""

    mu: str
    tau: str
    shape: float
    proper: bool
    tail: float
    tail_log: bool
    has_scale: bool
    uses_sigma: bool

    @property
    def mu_flat(self) -> bool:
        return self.mu == "flat"

    @property
    def has_prior_scales(self) -> bool:
        """Whether the prior has the scales mu_loc, mu_scale and tau_scale that sensitivities vary: a normal mu and
        a tau family with a scale."""
        return self.mu == "normal" and self.has_scale

    @property
    def joint_proper(self) -> bool:
        """Whether p(mu, tau) integrates to one (a normal mu and a proper tau family): p(y) exists."""
        return self.mu == "normal" and self.proper


def _shape_text(shape: float) -> str:
    text = repr(float(shape))
    return text[:-2] if text.endswith(".0") else text


def kind_of(mu: str, tau: str, shape=None) -> str:
    """The canonical kind string of a (mu prior, tau family, shape); checks them (ValueError naming the
    problem)."""
    if mu not in MU_PRIORS:
        raise ValueError(f"unknown mu prior {mu!r}; expected one of {', '.join(MU_PRIORS)}")
    if tau in _USER:
        return f"{mu}+{tau}:{_shape_text(0.0 if shape is None else shape)}"
    if tau not in FAMILIES:
        raise ValueError(f"unknown tau prior {tau!r}; expected one of {', '.join(FAMILIES)}")
    family = FAMILIES[tau]
    if family.shape:
        if shape is None or not (math.isfinite(shape) and shape > 0):
            raise ValueError(f"the {tau} prior needs tau_shape, its {family.shape}, a finite number > 0; got {shape}")
        return f"{mu}+{tau}:{_shape_text(shape)}"
    if (mu, tau) in _LEGACY_OF:
        return _LEGACY_OF[(mu, tau)]
    return f"{mu}+{tau}"


def spec(kind) -> Spec:
    """The :class:`Spec` of a kind string (or of an object with a ``kind`` attribute, a ``Prior``)."""
    kind = getattr(kind, "kind", kind)
    if not isinstance(kind, str):
        raise ValueError(f"a prior kind is a string, got {kind!r}")
    if kind in LEGACY:
        mu, tau = LEGACY[kind]
        shape_text = ""
    else:
        mu, _, rest = kind.partition("+")
        tau, _, shape_text = rest.partition(":")
        if mu not in MU_PRIORS or (tau not in FAMILIES and tau not in _USER):
            names = ", ".join([*map(repr, LEGACY), *(f"<mu>+{name}" for name in FAMILIES)])
            raise ValueError(f"unknown prior {kind!r}; expected one of {names} (<mu>: flat or normal)")
    try:
        shape = float(shape_text) if shape_text else math.nan
    except ValueError:
        raise ValueError(f"prior {kind!r}: {shape_text!r} is not a number") from None
    if tau in _USER:
        return Spec(mu, tau, shape, _USER[tau], 0.0 if math.isnan(shape) else shape, False, False, False)
    family = FAMILIES[tau]
    if family.shape and not (shape > 0):
        raise ValueError(f"prior {kind!r}: the {tau} family needs its {family.shape} after ':'")
    # The half-Student-t's tail is tau^-(nu + 1), the Lomax's tau^-(a + 1).
    tail = shape + 1.0 if tau in ("half_student_t", "lomax") else family.tail
    return Spec(mu, tau, shape, family.proper, tail, family.tail_log, family.has_scale, family.uses_sigma)


# Turner et al. (2015), Table IV: log tau^2 ~ N(m, c^2) for log odds ratios, by outcome type (rows) and type of
# comparison (columns, TURNER_COMPARISONS); each entry (m, c).
TURNER_COMPARISONS = (
    "pharmacological vs. placebo / control",
    "pharmacological vs. pharmacological",
    "non-pharmacological vs. placebo / control",
    "non-pharmacological vs. pharmacological",
    "non-pharmacological vs. non-pharmacological",
)
_TURNER_OUTCOMES = (
    "all-cause mortality", "obstetric outcomes",
    "cause-specific mortality / major morbidity event / composite (mortality or morbidity)",
    "resource use / hospital stay / process", "surgical / device related success / failure",
    "withdrawals / drop-outs", "internal / structure-related outcomes", "general physical health indicators",
    "adverse events", "infection / onset of new disease",
    "signs / symptoms reflecting continuation / end of condition", "pain",
    "quality of life / functioning (dichotomized)", "mental health indicators",
    "biological markers (dichotomized)", "subjective outcomes (various)",
)
_TURNER_M = (
    (3.95, 3.52, 3.71, 2.34, 2.14, 2.99, 2.71, 2.29, 1.87, 2.49, 2.06, 1.83, 2.54, 2.12, 1.77, 2.70),
    (4.18, 3.75, 3.95, 2.58, 2.37, 3.23, 2.94, 2.53, 2.10, 2.73, 2.29, 2.06, 2.78, 2.35, 2.00, 2.93),
    (4.17, 3.74, 3.93, 2.56, 2.36, 3.21, 2.93, 2.51, 2.10, 2.71, 2.28, 2.05, 2.77, 2.34, 1.99, 2.92),
    (2.92, 2.49, 2.68, 1.31, 1.11, 1.96, 1.67, 1.26, 0.84, 1.46, 1.03, 0.80, 1.51, 1.09, 0.74, 1.67),
    (3.50, 3.08, 3.27, 1.90, 1.69, 2.55, 2.26, 1.85, 1.43, 2.05, 1.61, 1.38, 2.10, 1.67, 1.33, 2.26),
)
_TURNER_C = (
    (1.34, 1.74, 1.74, 1.74, 1.74, 1.74, 1.74, 1.53, 1.52, 1.52, 1.51, 1.52, 1.54, 1.53, 1.52, 1.52),
    (1.41, 1.79, 1.79, 1.79, 1.79, 1.79, 1.79, 1.58, 1.58, 1.58, 1.58, 1.58, 1.60, 1.60, 1.58, 1.58),
    (1.55, 1.91, 1.91, 1.91, 1.91, 1.91, 1.92, 1.72, 1.71, 1.71, 1.71, 1.71, 1.73, 1.72, 1.71, 1.71),
    (1.02, 1.50, 1.51, 1.50, 1.50, 1.51, 1.51, 1.25, 1.24, 1.24, 1.24, 1.25, 1.27, 1.27, 1.24, 1.25),
    (1.26, 1.68, 1.68, 1.68, 1.68, 1.68, 1.68, 1.46, 1.45, 1.45, 1.45, 1.45, 1.47, 1.47, 1.45, 1.45),
)
TURNER_2015 = {outcome: {comparison: (-_TURNER_M[c][o], _TURNER_C[c][o])
                         for c, comparison in enumerate(TURNER_COMPARISONS)}
               for o, outcome in enumerate(_TURNER_OUTCOMES)}

# Rhodes et al. (2015), Table 3 (and Tables A.3.1, A.3.2 for respiratory diseases and cancer): log tau^2 ~ m + c t_5
# for standardised mean differences, by medical area, outcome type and comparison; each entry (m, c). Their
# marginal prior (any outcome) is m = -3.44, c = 2.59.
RHODES_COMPARISONS = ("pharmacological vs. placebo / control", "pharmacological vs. pharmacological",
                      "non-pharmacological (any)")
RHODES_AREAS = ("other", "respiratory", "cancer")
_RHODES_OUTCOMES = (
    "obstetric outcome", "resource use and hospital stay / process",
    "internal and external structure-related outcome",
    "general physical health and adverse event and pain and quality of life / functioning",
    "signs / symptoms reflecting continuation / end of condition and infection / onset of new acute / chronic disease",
    "mental health outcome", "biological marker", "various subjectively measured outcomes",
)
_RHODES_M = {
    "other": ((4.13, 2.55, 2.43, 3.16, 3.00, 2.99, 3.41, 2.76), (4.40, 2.83, 2.70, 3.44, 3.27, 3.27, 3.68, 3.03),
              (3.99, 2.41, 2.29, 3.02, 2.86, 3.85, 3.27, 2.62)),
    "respiratory": ((6.03, 4.46, 4.33, 5.07, 4.90, 4.90, 5.31, 4.66), (6.31, 4.73, 4.61, 5.34, 5.18, 5.17, 5.59, 4.94),
                    (5.89, 4.32, 4.19, 4.93, 4.76, 4.76, 5.17, 4.52)),
    "cancer": ((1.57, -0.01, 0.13, 0.60, 0.44, 0.43, 0.85, 0.20), (1.85, 0.27, 0.14, 0.88, 0.71, 0.71, 1.13, 0.48),
               (1.43, -0.15, -0.27, 0.46, 0.30, 0.29, 0.71, 0.06)),
}
_RHODES_C = {
    "other": ((2.34, 2.73, 2.50, 2.50, 2.50, 2.16, 2.83, 2.58), (2.31, 2.70, 2.46, 2.44, 2.47, 2.14, 2.78, 2.59),
              (2.11, 2.57, 2.32, 2.27, 2.33, 1.93, 2.66, 2.41)),
    "respiratory": ((2.36, 2.74, 2.51, 2.51, 2.50, 2.17, 2.83, 2.59), (2.31, 2.70, 2.46, 2.45, 2.47, 2.14, 2.78, 2.59),
                    (2.21, 2.57, 2.33, 2.28, 2.33, 1.94, 2.66, 2.41)),
    "cancer": ((2.45, 2.83, 2.61, 2.61, 2.60, 2.28, 2.93, 2.68), (2.41, 2.79, 2.56, 2.55, 2.57, 2.25, 2.87, 2.68),
               (2.24, 2.68, 2.45, 2.40, 2.46, 2.08, 2.78, 2.53)),
}
RHODES_2015 = {area: {outcome: {comparison: (-_RHODES_M[area][c][o], _RHODES_C[area][c][o])
                                for c, comparison in enumerate(RHODES_COMPARISONS)}
                      for o, outcome in enumerate(_RHODES_OUTCOMES)}
               for area in RHODES_AREAS}
RHODES_2015["any"] = {"any": {"any": (-3.44, 2.59)}}


def from_table(m: float, c: float) -> dict:
    """``tau_scale`` and ``tau_shape`` of the lognormal or log-t_5 family from a table's (m, c): the location
    and scale of log tau^2 (s = exp(m / 2), the prior median of tau; shape c)."""
    return {"tau_scale": math.exp(m / 2.0), "tau_shape": c}


def __dir__():
    # The public names only, not the imports (``dir(js.diagnostics)`` lists no ``jax`` or ``jnp``).
    return list(__all__)
