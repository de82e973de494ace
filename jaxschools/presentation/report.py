"""The run's outputs for people: ``figures/<name>.png`` and a self-contained ``report.html``.

The report reads like the seed analysis (BDA3 section 5.5): the data with separate intervals,
complete pooling and its chi-squared test, the Laplace approximation, the Metropolis chains and
their diagnostics (Vehtari et al. 2021), the posterior of (mu, log tau, tau) and of every theta_j,
the seed's probability question, and two checks against the exact posterior by quadrature: the
sampler's estimates as z-scores in units of their Monte Carlo standard error, and the Laplace
mode and curvature next to the exact mean and sd; then the posterior predictive check (BDA3
section 6.3) and a new school's predictive distribution.

The page is one file: figures are embedded as base64 PNG data URIs and the CSS is inline, so it
opens anywhere without a network. All text, school names from user files included, is escaped
with :func:`html.escape`. The page renders the typed result (:class:`jaxschools.app.results.Summary`,
summary.json's record) plus the figures, and computes nothing: every number on it is a field of the record,
read by attribute, so a missing one is an error, not a blank. :func:`render_html` also takes a loaded
summary.json, read strictly (:meth:`~jaxschools.app.results.Record.from_json`).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import pathlib
from typing import Iterable, Sequence

import numpy as np

from jaxschools.app import exact_check, results
from jaxschools.app.results import finite as _finite
from jaxschools.app.results import school_label as _school
from jaxschools.presentation import experiment_plots, meta_plots, plots, sensitivity_plots

__all__ = ["write_outputs", "render_html", "fmt", "DPI", "MAX_TABLE_ROWS"]

DPI = 110
# Per-school tables stop at this many rows (summary.json has every school).
MAX_TABLE_ROWS = 200
_DASH = "—"


# ----------------------------------------------------------------------------- formatting


class _Html(str):
    """Markup that is already safe; every other string is escaped when written."""


def _e(value) -> str:
    return value if isinstance(value, _Html) else html.escape(str(value), quote=True)


def _is_number(x) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


def fmt(x, spec: str = ".4g") -> str:
    """A number for people: ``format(x, spec)`` on any scale; None, NaN and inf as a dash."""
    if x is None:
        return _DASH
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, (int, np.integer)):
        return f"{int(x):,}"
    if _finite(x):
        text = format(float(x), spec)
        return "0" if text in ("-0", "-0.0") else text
    if _is_number(x):
        return _DASH
    return str(x)


def _pm(value, error) -> str:
    return fmt(value) if not _finite(error) else f"{fmt(value)} ± {fmt(error, '.2g')}"


def _interval(low, high) -> str:
    return f"[{fmt(low)}, {fmt(high)}]"


def _table(headers: Sequence, rows: Iterable[Sequence], cls: str = "") -> str:
    """An HTML table; a cell is a value (formatted, escaped) or ``(value, css_class)``."""
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    head = f"<thead><tr>{head}</tr></thead>" if any(headers) else ""
    body = []
    for row in rows:
        cells = []
        for cell in row:
            value, css = cell if isinstance(cell, tuple) else (cell, "")
            text = value if isinstance(value, str) else fmt(value)
            klass = f' class="{css}"' if css else ""
            cells.append(f"<td{klass}>{_e(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    klass = f' class="{cls}"' if cls else ""
    return f"<table{klass}>{head}<tbody>{''.join(body)}</tbody></table>"


def _section(anchor: str, title: str, *parts: str) -> str:
    return f'<section id="{anchor}"><h2>{_e(title)}</h2>{"".join(parts)}</section>'


def _p(text, cls: str = "") -> str:
    klass = f' class="{cls}"' if cls else ""
    return f"<p{klass}>{_e(text)}</p>"


def _capped(num_rows: int) -> tuple[int, str]:
    if num_rows <= MAX_TABLE_ROWS:
        return num_rows, ""
    note = f"Showing the first {MAX_TABLE_ROWS} of {num_rows} schools; summary.json has all of them."
    return MAX_TABLE_ROWS, _p(note, "note")


def _capitalised(text: str) -> str:
    return text[:1].upper() + text[1:]


def _extreme(values, pick) -> int | None:
    """Index of the smallest (``pick=min``) or largest finite value; None when there is none."""
    finite = [(v, j) for j, v in enumerate(values) if _finite(v)]
    return pick(finite)[1] if finite else None


def _theta_of(name) -> _Html:
    return _Html(f"θ<sub>{_e(name)}</sub>")


# ----------------------------------------------------------------------------- sections


def _overview(s: results.Summary) -> str:
    """The plain-language summary, worded from the record's numbers."""
    names, y, sigma = s.data.names, s.data.y, s.data.sigma
    num_schools = len(names)
    paragraphs = []
    if num_schools:
        lo, hi = _extreme(y, min), _extreme(y, max)
        text = (f"{num_schools} schools report estimated effects from {fmt(y[lo], '.3g')} ({_school(names, lo)}) "
                f"to {fmt(y[hi], '.3g')} ({_school(names, hi)}), with standard errors from "
                f"{fmt(min(sigma), '.3g')} to {fmt(max(sigma), '.3g')}.")
        pooled = s.pooled
        if _finite(pooled.mean):
            text += (f" Complete pooling gives a common effect of {fmt(pooled.mean, '.3g')} ± "
                     f"{fmt(pooled.sd, '.3g')}; the χ² test of homogeneity gives "
                     f"χ² = {fmt(pooled.chi2, '.3g')} on {fmt(pooled.df)} df "
                     f"(p = {fmt(pooled.p_value, '.2g')})")
            if _finite(pooled.p_value):
                text += (", so the data alone do not rule out a single common effect." if pooled.p_value > 0.05
                         else ", which rejects a single common effect.")
            else:
                text += "."
        paragraphs.append(_p(text))

    mu, tau = s.posterior.mu, s.posterior.tau
    text = (f"The hierarchical model puts the population mean μ at {fmt(mu.mean, '.3g')} "
            f"(95% interval {fmt(mu.q025, '.3g')} to {fmt(mu.q975, '.3g')}) and the between-school "
            f"standard deviation τ at {fmt(tau.mean, '.3g')} (95% interval {fmt(tau.q025, '.3g')} "
            f"to {fmt(tau.q975, '.3g')}).")
    shrink = s.shrinkage
    lo, hi = _extreme(shrink, min), _extreme(shrink, max)
    if lo is not None:
        text += (f" Each school's estimate is pulled toward μ by a factor E[B_j] between "
                 f"{fmt(shrink[lo], '.2g')} ({_school(names, lo)}, σ = {fmt(sigma[lo], '.3g')}) and "
                 f"{fmt(shrink[hi], '.2g')} ({_school(names, hi)}, σ = {fmt(sigma[hi], '.3g')}).")
    paragraphs.append(_p(text))

    query = s.queries.p_exceeds
    k = names.index(query.school)
    text = (f"{_e(_capitalised(_school(names, k)))}’s observed effect {_e(fmt(y[k], '.3g'))} shrinks to a "
            "posterior mean of "
            f"{_e(fmt(s.theta.mean[k], '.3g'))} (95% interval {_e(fmt(s.theta.q025[k], '.3g'))} to "
            f"{_e(fmt(s.theta.q975[k], '.3g'))}); "
            f"P({_theta_of(query.school)} &gt; {_e(fmt(query.threshold, '.3g'))} | y) = "
            f"{_e(fmt(query.p, '.2g'))} (MCSE {_e(fmt(query.mcse, '.1g'))}), where its own data alone would say "
            f"{_e(fmt(query.separate, '.2g'))}.")
    best = s.queries.p_best
    j = _extreme(best, max)
    if j is not None:
        text += (f" The school most likely to have the largest effect is {_e(str(names[j]))}, "
                 f"with probability only {_e(fmt(best[j], '.2g'))}.")
    paragraphs.append(f"<p>{text}</p>")

    mcmc = s.mcmc
    acceptance = [a for a in mcmc.acceptance_rate if _finite(a)]
    ess = [v for v in (mcmc.ess.mu, mcmc.ess.log_tau, mcmc.ess_tail.mu, mcmc.ess_tail.log_tau) if _finite(v)]
    rhat = [v for v in (mcmc.rhat.mu, mcmc.rhat.log_tau) if _finite(v)]
    chains = mcmc.num_chains
    text = (f"The sampler ({mcmc.kernel}) ran {fmt(chains)} chain{'s' if chains != 1 else ''} of "
            f"{fmt(mcmc.num_samples)} kept draws after {fmt(mcmc.burn_in)} burn-in")
    if acceptance:
        low, high = format(min(acceptance), ".1%"), format(max(acceptance), ".1%")
        text += f", accepting {low} of proposals" if low == high else f", accepting {low} to {high} of proposals"
    text += "."
    if ess:
        text += f" The smallest bulk or tail ESS is {min(ess):,.0f}"
        text += f" and the largest R-hat {fmt(max(rhat), '.4g')}." if rhat else " (R-hat needs two chains or more)."
    elif acceptance:
        text += " Its ESS and R-hat are undefined: the draws of μ and log τ do not vary within the chains."
    text += " See the warnings below." if _active_flags(mcmc) else " No convergence warnings."
    paragraphs.append(_p(text))

    verdict = s.exact_check
    if verdict.num_compared:
        flagged = verdict.num_beyond
        text = (f"Against the exact posterior by quadrature, {verdict.num_compared} sampler estimates have a "
                f"largest |z| of {fmt(verdict.max_abs_z, '.2g')} ({verdict.worst}); ")
        text += (f"{flagged} exceed{'s' if flagged == 1 else ''} {fmt(verdict.threshold, '.3g')} Monte Carlo "
                 "standard errors (see the warnings below)." if flagged
                 else "all agree within their Monte Carlo error.")
        paragraphs.append(_p(text))
    if verdict.num_undefined:
        paragraphs.append(_p(_undefined_text(verdict)))

    mode, exact_log_tau = s.laplace.mode[1], s.exact.log_tau
    if _finite(mode) and _finite(exact_log_tau.mean):
        text = (f"The Laplace approximation centres log τ at its mode {fmt(mode, '.3g')} with sd "
                f"{fmt(s.laplace.sd[1], '.3g')}; the exact posterior has mean "
                f"{fmt(exact_log_tau.mean, '.3g')} and sd {fmt(exact_log_tau.sd, '.3g')}.")
        if s.laplace_vs_exact.log_tau.off_centre:
            text += (" The posterior of log τ is skewed, so its mode is not its centre: the normal approximation "
                     "misplaces it, which is why the seed moved on from the Laplace approximation to MCMC.")
        paragraphs.append(_p(text))
    return "".join(paragraphs)


# Why estimates have no z-score (jaxschools.app.exact_check.REASONS), worded for people: (one, several).
_UNDEFINED_WORDS = {
    exact_check.NO_MOMENT: ("{n} posterior moment does not exist for this prior and number of schools, so "
                            "it is not estimated (see the exact comparison below)",
                            "{n} posterior moments do not exist for this prior and number of schools, so they "
                            "are not estimated (see the exact comparison below)"),
    exact_check.MCSE_NEEDS_MOMENT: ("{n} sampler estimate has no Monte Carlo standard error because it would "
                                    "need a higher moment that does not exist (an sd's MCSE needs E[x⁴], a "
                                    "mean's E[x²])",
                                    "{n} sampler estimates have no Monte Carlo standard error because it would "
                                    "need a higher moment that does not exist (an sd's MCSE needs E[x⁴], a "
                                    "mean's E[x²])"),
    exact_check.NO_VARIATION: ("{n} sampler estimate has no Monte Carlo standard error: its draws do not vary "
                               "within the chains (or are too few)",
                               "{n} sampler estimates have no Monte Carlo standard error: their draws do not "
                               "vary within the chains (or are too few)"),
    exact_check.MISSING: ("{n} sampler estimate or its exact value is missing",
                          "{n} sampler estimates or their exact values are missing"),
}


def _undefined_text(verdict: results.ExactCheck) -> str:
    """Why ``verdict.num_undefined`` estimates are not checked, by reason."""
    parts = [_UNDEFINED_WORDS[key][count != 1].format(n=fmt(count)) for key in exact_check.REASONS
             if (count := verdict.undefined[key])]
    return "Not checked against the exact posterior: " + "; ".join(parts) + "."


def _active_flags(mcmc: results.Mcmc) -> dict:
    return {key: value for key, value in mcmc.flags.to_json().items() if value}


def _chain_list(chains) -> str:
    return f"Chain{'s' if len(chains) > 1 else ''} {', '.join(str(int(c) + 1) for c in chains)}"


def _known(*groups) -> list:
    """The defined values of ``groups`` (records with ``mu`` and ``log_tau``)."""
    return [v for group in groups for v in (group.mu, group.log_tau) if _finite(v)]


# Why the chains are not shown to have mixed (jaxschools.app.results.NOT_MIXED_REASONS, the analysis's verdict),
# worded with the values concerned: every reason has words (a test ties the lists), so a new one fails (KeyError)
# instead of going unsaid.
_NOT_MIXED_WORDS = {
    "one_chain": lambda mcmc: "only one chain was run, so R-hat cannot check convergence",
    "undefined": lambda mcmc: "ESS or R-hat is undefined, because the draws do not vary within the chains",
    "rhat": lambda mcmc: (f"R-hat reaches {fmt(max(_known(mcmc.rhat)), '.4g')} "
                          f"(want < {fmt(mcmc.limits.rhat, 'g')})"),
    "ess": lambda mcmc: (f"the bulk or tail ESS of μ or log τ is as low as {min(_known(mcmc.ess, mcmc.ess_tail)):,.0f} "
                         f"(want ≥ {fmt(mcmc.limits.ess, 'g')})"),
}


def _warnings(s: results.Summary) -> str:
    mcmc, limits = s.mcmc, s.mcmc.limits
    messages = []
    # Frozen chains that rejected (nearly) everything are explained by that; the others get their own message.
    frozen = list(mcmc.frozen_accepting)
    for key, value in _active_flags(mcmc).items():
        if key == "stuck_chains":
            rest = [c for c in value if c not in frozen]
            if rest:
                messages.append(f"{_chain_list(rest)} accepted fewer than {limits.stuck_acceptance:.0%} of "
                                "proposals: stuck.")
        elif key == "frozen_chains":
            value = frozen
            if not value:
                continue
            their = "their" if len(value) > 1 else "its"
            why = (f" while accepting every proposal: {their} steps are below floating-point resolution (raise "
                   "sampler.scale or sampler.step_size)" if mcmc.frozen_accepted_every_proposal else "")
            messages.append(f"{_chain_list(value)} did not move: the within-chain sd of μ or log τ is at most "
                            f"{fmt(limits.frozen_rtol, 'g')} of the posterior's scale{why}. "
                            f"{'They are' if len(value) > 1 else 'It is'} stuck: {their} draws are not from the "
                            "posterior.")
        elif key == "exact_mismatch":
            continue  # worded below from the exact check's verdict
        elif key == "not_mixed":
            # The analysis's reasons, worded; none only in a summary written by hand.
            because = ("; ".join(_NOT_MIXED_WORDS[reason](mcmc) for reason in mcmc.not_mixed_reasons)
                       or f"R-hat ≥ {fmt(limits.rhat, 'g')} or ESS < {fmt(limits.ess, 'g')}")
            messages.append(f"The chains are not shown to have mixed: {because}. Treat the estimates below with "
                            "caution; run longer, or more chains.")
        elif key == "divergent_transitions":
            messages.append(f"{fmt(value)} transitions diverged: the step size could not resolve the posterior's "
                            "curvature somewhere (see the divergence figure), and estimates near there may be biased. "
                            "Raise sampler.target_accept or reparameterize (model.parameterization = noncentered).")
        elif key == "laplace_not_converged":
            messages.append("The Laplace optimiser did not converge: its mode and covariance are unreliable, and the "
                            "proposal used the identity covariance instead.")
        else:  # a flag this page has no words for yet: shown as it is, never dropped
            messages.append(f"{key}: {value if isinstance(value, str) else json.dumps(value)}")
    verdict = s.exact_check
    if verdict.flagged:
        listed = "; ".join(verdict.beyond[:5]) + ("; …" if verdict.num_beyond > 5 else "")
        messages.append(f"{verdict.num_beyond} of {verdict.num_compared} sampler estimates differ from the "
                        f"exact posterior by more than {fmt(verdict.threshold, '.3g')} Monte Carlo standard "
                        f"errors (largest |z| {fmt(verdict.max_abs_z, '.3g')}: {listed}). The threshold is "
                        f"Bonferroni's for {verdict.num_compared} comparisons at a family-wise rate of "
                        f"{fmt(verdict.alpha, 'g')}: the draws are not from the posterior.")
    if not messages:
        return ""
    items = "".join(f"<li>{_e(m)}</li>" for m in messages)
    return f'<div class="warn"><strong>Warning</strong><ul>{items}</ul></div>'


# metafor's measures, as the report names them.
MEASURE_NAMES = {"RR": "log risk ratios", "OR": "log odds ratios", "RD": "risk differences",
                 "MD": "mean differences", "SMD": "standardised mean differences (Hedges' g)"}
_LAYOUT_TEXT = {"counts": "2x2 counts (ai, bi events and non-events in group 1; ci, di in group 2)",
                "means": "the two groups' means, sds and sizes", "yi_vi": "the file's yi and vi (sigma = √vi)",
                "yi_sei": "the file's yi and sei"}


def _measure_text(data: results.Data) -> str:
    """What the effects are and how they were computed; "" for effects given without a measure."""
    parts = []
    if data.measure:
        parts.append(f"The effects y_j are {MEASURE_NAMES[data.measure]} ({data.measure}).")
    if data.layout in ("counts", "means"):
        parts.append(f"They were computed from {_LAYOUT_TEXT[data.layout]} as R's metafor escalc computes them, "
                     "and σ_j is the square root of its sampling variance.")
    elif data.layout in _LAYOUT_TEXT:
        parts.append(f"They are {_LAYOUT_TEXT[data.layout]}.")
    corrected = [name for name, flag in zip(data.names, data.zero_cell_corrected or ()) if flag]
    if corrected:
        parts.append(f"1/2 was added to every cell of the {fmt(len(corrected))} "
                     f"{'study' if len(corrected) == 1 else 'studies'} with a zero cell "
                     f"({', '.join(corrected[:10])}{', ...' if len(corrected) > 10 else ''}).")
    elif data.layout == "counts":
        parts.append("No study has a zero cell, so no continuity correction was needed.")
    if data.covariates:
        parts.append(f"Study-level covariates in the file: {', '.join(data.covariates)} (in summary.json).")
    return " ".join(parts)


def _data_section(s: results.Summary) -> str:
    names, y, sigma = s.data.names, s.data.y, s.data.sigma
    lower, upper = s.separate.lower, s.separate.upper
    shown, note = _capped(len(names))
    rows = [(str(names[j]), y[j], sigma[j], _interval(lower[j], upper[j])) for j in range(shown)]
    pooled = s.pooled
    pooled_rows = [
        ("precision-weighted mean ȳ", pooled.mean),
        ("sd of ȳ", pooled.sd),
        ("95% interval", _interval(pooled.q025, pooled.q975) if _finite(pooled.q025) else _DASH),
        ("χ² = Σ (y_j − ȳ)² / σ_j²", pooled.chi2),
        ("degrees of freedom", pooled.df),
        ("p-value", pooled.p_value),
    ]
    unit = "school" if s.data.layout == "y_sigma" else "study"
    measure = _measure_text(s.data)
    return (
        _section("data", "Data and separate estimates",
                 _p(measure) if measure else "",
                 _p(f"Each {unit} alone, with a flat prior: θ_j | y_j ~ N(y_j, σ_j²), 95% interval "
                    "y_j ± 1.96 σ_j."),
                 _table((unit, "y", "σ", "separate 95% interval"), rows), note)
        + _section("pooled", "Complete pooling",
                   _p("One common effect for every school (BDA3 eq. 5.13), and the χ² test of "
                      "homogeneity on J − 1 degrees of freedom."),
                   _table(("quantity", "value"), pooled_rows, "narrow"))
    )


# metafor's names of the tau^2 estimators, as the classical table spells them out.
_ESTIMATORS = {"DL": "DerSimonian-Laird", "REML": "REML", "ML": "maximum likelihood", "PM": "Paule-Mandel",
               "SJ": "Sidik-Jonkman", "HE": "Hedges", "EB": "empirical Bayes"}


def _classical_section(s: results.Summary) -> str:
    section = s.classical
    if section is None:
        return ""
    level = f"{100 * section.level:g}%"
    rows = []
    for method, fit in section.fits.items():
        rows.append((
            _ESTIMATORS.get(method, method), fit.tau2, fit.mu, fit.se,
            _interval(fit.ci.lower, fit.ci.upper), _interval(fit.ci_knha.lower, fit.ci_knha.upper),
            _interval(fit.pi.lower, fit.pi.upper), _interval(fit.tau2_ci.lower, fit.tau2_ci.upper),
            fit.i2, _interval(fit.i2_ci.lower, fit.i2_ci.upper),
        ))
    first = next(iter(section.fits.values()))
    test = (f"Cochran's Q = {fmt(first.q)} on {first.q_df} degrees of freedom, p = {fmt(first.q_p_value)} "
            "(the test of homogeneity; the same for every estimator).")
    intro = (f"The random-effects model y_j ~ N(μ, σ_j² + τ²) fitted as R's metafor (rma.uni, version 3.8) fits "
             f"it, by each estimator of τ² in classical.methods ({section.num_studies} studies). μ is the "
             "inverse-variance weighted mean with weights 1 / (σ_j² + τ²); the Wald interval uses the normal "
             "quantile, the Knapp-Hartung (HKSJ) interval the t quantile on k − 1 degrees of freedom and a "
             "standard error rescaled by the residual heterogeneity; the prediction interval is for the true "
             "effect of a new study, μ ± z √(se² + τ²). The τ² interval is the Q-profile interval "
             "(Viechtbauer 2007), and I² (in percent) the share of the variance that is between studies, with "
             "Higgins & Thompson's typical within-study variance. summary.json's classical section has each "
             "fit with each study left out in turn.")
    headers = ("estimator", "τ²", "μ", "se(μ)", f"{level} Wald", f"{level} Knapp-Hartung", f"{level} prediction",
               f"{level} τ² (Q-profile)", "I² (%)", f"{level} I²")
    egger = section.egger
    egger_text = "" if egger is None else _p(
        f"Egger's regression test of funnel-plot asymmetry (Egger et al. 1997): regressing y_j / σ_j on 1 / σ_j, "
        f"the intercept is {fmt(egger.intercept)} (se {fmt(egger.intercept_se)}), t = {fmt(egger.t)} on "
        f"{egger.df} degrees of freedom, p = {fmt(egger.p_value)}; a small p says the small studies report "
        "systematically different effects (publication bias is one cause; with few studies the test has little "
        "power). The funnel plot among the figures shows it.")
    return _section("classical", "Classical random-effects meta-analysis", _p(intro), _table(headers, rows),
                    _p(test), egger_text)


# Bayes factors' hypotheses, as the meta-analysis table words them.
_HYPOTHESES = (("tau0", "min_tau0", "τ = 0 (no heterogeneity: the common-effect model)"),
               ("mu0", "min_mu0", "μ = 0 (no effect on average)"))
_RATIO_MEASURES = ("RR", "OR")


def _bayes_factor_cell(value, key: str, undefined: dict) -> str:
    return fmt(value) if key not in undefined else f"undefined: {undefined[key]}"


def _meta_section(s: results.Summary) -> str:
    """The exact Bayesian meta-analysis: heterogeneity, prediction, shortest intervals, Bayes factors and
    predictive p-values (:mod:`jaxschools.core.bayes_factors`, :mod:`jaxschools.core.meta_quantities`)."""
    ex = s.exact
    het, pred, short = ex.heterogeneity, ex.prediction, ex.shortest
    level = f"{100 * short.level:g}%"

    def row(label, d, shortest=None):
        low, high = shortest if shortest is not None else (d.shortest_lower, d.shortest_upper)
        return (label, d.mean, d.sd, d.q50, _interval(d.q025, d.q975), _interval(low, high))

    rows = [
        row("μ", ex.mu, (short.mu.lower, short.mu.upper)),
        row("τ", ex.tau, (short.tau.lower, short.tau.upper)),
        row("I² = τ² / (τ² + s²)", het.i2),
        row("H² = 1 + τ² / s²", het.h2),
        row("θ_new, a new study's effect", pred.theta_new),
        row(f"y_new, its estimate (σ = {fmt(pred.sigma_new, '.3g')})", pred.y_new),
    ]
    intro = ("The exact posterior (one-dimensional quadrature over log τ) as a meta-analyst reads it, as R's "
             "bayesmeta reports it: the heterogeneity also as I², the share of the variance between studies, "
             f"with Higgins & Thompson's typical within-study variance s² = {fmt(het.typical_variance)}, and as "
             "H²; the prediction for a new study, θ_new ~ N(μ, τ²) and its estimate y_new ~ N(θ_new, σ²); the "
             "central interval beside the shortest one (the highest-density interval of a unimodal density, "
             "which for τ and I² starts at 0 when the density falls from there).")
    factors = ex.bayes_factors
    undefined = factors.undefined
    bf_rows = [(label, _bayes_factor_cell(getattr(factors, key), key, undefined),
                _bayes_factor_cell(getattr(factors, minimum), minimum, undefined))
               for key, minimum, label in _HYPOTHESES]
    evidence = (f"log p(y) = {fmt(factors.log_marginal_likelihood)}." if "log_marginal_likelihood" not in undefined
                else f"The marginal likelihood p(y) is undefined: {undefined['log_marginal_likelihood']}.")
    bf_text = ("A Bayes factor here is p(y | hypothesis) / p(y), the evidence for the hypothesis against the "
               "model with μ and τ free: below 1 the data favour the model, above 1 the hypothesis (Kass & "
               "Raftery 1995). It needs proper priors on both, and depends on them strongly (Lindley's "
               "paradox). The minimum Bayes factor is the smallest over all priors on the tested parameter, "
               "the most the data can say against the hypothesis (Spiegelhalter et al. 2004, section 4.4); it "
               "needs a proper prior on the other parameter. " + evidence)
    check = ex.predictive_check
    names = s.data.names
    shown, note = _capped(len(names))
    study_rows = []
    for j in range(shown):
        p = check.study_p_values[j]
        study_rows.append((str(names[j]), s.data.y[j], _flag_cell(fmt(p), _finite(p) and min(p, 1 - p) < 0.025)))
    ppp = (f"Cochran's Q = {fmt(check.q)}: P(Q(y_rep) ≥ Q(y) | y) = {_pm(check.q_p_value, check.q_mcse)} "
           f"(± its Monte Carlo sd, {fmt(check.num_draws)} exact draws), with y_rep_j ~ N(θ_j, σ_j²) the same "
           "studies measured again. Per study, P(y_rep_j ≥ y_j | y), exact (red beyond 0.025 or 0.975: a study "
           "the model rarely reproduces; conservative, as y_j is in the posterior too).")
    parts = [_p(intro),
             _table(("", "mean", "sd", "median", f"{level} central", f"{level} shortest"), rows),
             "<h3>Bayes factors</h3>", _p(bf_text),
             _table(("hypothesis", "Bayes factor", "minimum Bayes factor"), bf_rows)]
    if s.data.measure in _RATIO_MEASURES:
        parts += ["<h3>On the ratio scale</h3>", _ratio_scale(s)]
    parts += ["<h3>Posterior predictive p-values</h3>", _p(ppp),
              _table(("study", "y", "P(y_rep ≥ y | y)"), study_rows, "narrow"), note]
    return _section("meta", "Bayesian meta-analysis (exact)", *parts)


def _ratio_scale(s: results.Summary) -> str:
    """exp of the effects for a ratio measure: quantiles map through exp (the shortest intervals do not)."""

    def back(x):
        return math.exp(x) if _finite(x) and x < 709 else None

    ex, pred = s.exact, s.exact.prediction
    measure = "risk ratio" if s.data.measure == "RR" else "odds ratio"
    rows = [(f"exp(μ), the average {measure}", back(ex.mu.q50), _interval(back(ex.mu.q025), back(ex.mu.q975))),
            (f"exp(θ_new), a new study's {measure}", back(pred.theta_new.q50),
             _interval(back(pred.theta_new.q025), back(pred.theta_new.q975)))]
    shown, note = _capped(len(s.data.names))
    study_rows = []
    for j in range(shown):
        y, sigma = s.data.y[j], s.data.sigma[j]
        study_rows.append((str(s.data.names[j]), back(y),
                           _interval(back(y - results.Z975 * sigma), back(y + results.Z975 * sigma)),
                           back(ex.theta.q50[j]), _interval(back(ex.theta.q025[j]), back(ex.theta.q975[j]))))
    return (_p(f"The effects are log {measure}s; exponentiated, medians and central intervals carry over "
               "(exp is increasing), means and shortest intervals do not. Per study: the study's own "
               f"{measure} with its 95% interval, and the posterior median and central 95% interval of exp(θ_j).")
            + _table(("", "median", "central 95%"), rows, "narrow")
            + _table(("study", f"{measure}", "separate 95%", "exp(θ) median", "posterior 95%"), study_rows)
            + note)


def _laplace_section(s: results.Summary) -> str:
    fit = s.laplace
    mode, cov, sds = fit.mode, fit.cov, fit.sd
    rows = [
        ("μ", mode[0], sds[0], cov[0][0], cov[0][1]),
        ("log τ", mode[1], sds[1], cov[1][0], cov[1][1]),
    ]
    facts = [
        ("converged", fit.converged),
        ("Newton iterations", fit.iterations),
        ("correlation of μ and log τ", fit.corr),
        ("τ at the mode", fit.tau_at_mode),
        ("log evidence (Laplace)", fit.log_evidence),
    ]
    return _section(
        "laplace", "Laplace approximation",
        _p("Normal approximation to p(μ, log τ | y) at the posterior mode, with covariance the inverse of the "
           "negative Hessian (exact derivatives). The sampler's proposal uses this covariance."),
        _table(("", "mode", "sd", "cov[·, μ]", "cov[·, log τ]"), rows),
        _table(("", ""), facts, "narrow"),
        "" if fit.converged else _p("The optimiser did not converge.", "bad"),
    )


def _flag_cell(value, bad: bool):
    return (value, "bad") if bad else value


def _divergence_text(divergences, rate, below) -> str:
    where = f", {below:.0%} of them below the median τ" if _finite(below) else ""
    return f"{fmt(divergences)} ({rate:.3%}{where})" if _finite(rate) else fmt(divergences)


def _gradient_facts(mcmc: results.Mcmc) -> list:
    """MCMC table rows for the target, the tuned step size, divergences and their contrast run, where present."""
    rows = [("target", f"{mcmc.parameterization} density")]
    steps = [v for v in mcmc.step_size or () if _finite(v)]
    if steps:
        rows.append(("adapted step size (per chain)", f"{fmt(min(steps), '.3g')} to {fmt(max(steps), '.3g')}"))
    if _finite(mcmc.num_integration_steps):
        rows.append(("gradient evaluations per draw", fmt(mcmc.num_integration_steps, ".3g")))
    if _finite(mcmc.divergence_rate):
        below = mcmc.divergences_below_median_tau
        where = f", {below:.0%} of them below the median τ" if _finite(below) else ""
        rows.append(("divergence rate", f"{mcmc.divergence_rate:.3%}{where}"))
    contrast = mcmc.contrast
    if contrast is not None:
        rows.append((f"divergences, {contrast.parameterization} density (contrast run)",
                     _divergence_text(contrast.divergences, contrast.divergence_rate,
                                      contrast.divergences_below_median_tau)))
    return rows


def _mcmc_section(s: results.Summary) -> str:
    mcmc, limits = s.mcmc, s.mcmc.limits
    facts = [
        ("kernel", mcmc.kernel),
        ("chains", mcmc.num_chains),
        ("kept draws per chain", mcmc.num_samples),
        ("burn-in per chain (discarded)", mcmc.burn_in),
        ("divergences", mcmc.divergences),
    ]
    facts += _gradient_facts(mcmc)
    acceptance = mcmc.acceptance_rate
    stuck = set(mcmc.flags.stuck_chains)
    acceptance_row = [_flag_cell(_fmt_fixed(a), c in stuck) for c, a in enumerate(acceptance)]
    diagnostics, undefined = [], False
    for key, label in (("mu", "μ"), ("log_tau", "log τ"), ("tau", "τ")):
        post = getattr(s.posterior, key)
        bulk, tail, rhat = post.ess_bulk, post.ess_tail, post.rhat
        diagnostics.append((
            label,
            _flag_cell(fmt(bulk, ".4g"), _finite(bulk) and bulk < limits.ess),
            _flag_cell(fmt(tail, ".4g"), _finite(tail) and tail < limits.ess),
            _flag_cell(fmt(rhat, ".4f"), _finite(rhat) and rhat >= limits.rhat),
        ))
        # null in the record: too few draws, or draws that do not vary (jaxschools.core.diagnostics).
        for column, value in ((1, bulk), (2, tail), (3, rhat if mcmc.num_chains > 1 else 0.0)):
            if not _finite(value):
                undefined = True
                diagnostics[-1] = diagnostics[-1][:column] + (("undefined", "bad"),) + diagnostics[-1][column + 1:]
    return _section(
        "mcmc", "Markov chain Monte Carlo",
        _warnings(s),
        _table(("", ""), facts, "narrow"),
        "<h3>Acceptance rate per chain</h3>",
        _table([f"chain {c + 1}" for c in range(len(acceptance))], [acceptance_row]) if acceptance else _p(_DASH),
        "<h3>Convergence diagnostics</h3>",
        _p(f"Rank-normalised bulk and tail ESS and split R-hat (Vehtari et al. 2021); red: ESS < "
           f"{fmt(limits.ess, 'g')} or R-hat ≥ {fmt(limits.rhat, 'g')}. R-hat needs at least two chains."),
        _table(("", "ESS bulk", "ESS tail", "R-hat"), diagnostics),
        _p("Undefined: ESS and R-hat need at least 4 draws per chain that vary within the chains; draws that do "
           "not vary say nothing about mixing, so they are not reported as perfect.", "note") if undefined else "",
    )


def _fmt_fixed(x) -> str:
    return fmt(x, ".3f")


def _posterior_section(s: results.Summary) -> str:
    rows = []
    for key, label in (("mu", "μ"), ("log_tau", "log τ"), ("tau", "τ")):
        post = getattr(s.posterior, key)
        rows.append((label, _pm(post.mean, post.mcse_mean), post.sd, _interval(post.q025, post.q975)))
    return _section(
        "posterior", "Posterior of the population parameters",
        _p("Posterior mean ± Monte Carlo standard error, sd and central 95% interval from the draws."),
        _table(("", "mean ± MCSE", "sd", "95% interval"), rows),
    )


def _schools_section(s: results.Summary) -> str:
    names, y, sigma, theta = s.data.names, s.data.y, s.data.sigma, s.theta
    shown, note = _capped(len(names))
    rows = []
    for j in range(shown):
        rows.append((
            str(names[j]), y[j], sigma[j],
            _pm(theta.mean[j], theta.mean_mcse[j]),
            theta.sd[j],
            _interval(theta.q025[j], theta.q975[j]),
            _pm(s.shrinkage[j], s.shrinkage_mcse[j]),
            s.queries.p_best[j],
        ))
    return _section(
        "schools", "School effects",
        _p("E[θ_j | y] and E[B_j | y], B_j = σ_j² / (σ_j² + τ²) the shrinkage toward μ, "
           "are Rao-Blackwellised (averages of their closed forms given (μ, τ)), with their MCSE; sd and "
           "interval come from the θ draws. P(best) is the probability that the school has the largest effect."),
        _table(("school", "y", "σ", "E[θ | y] ± MCSE", "sd", "95% interval", "shrinkage E[B] ± MCSE",
                "P(best)"), rows),
        note,
    )


def _query_section(s: results.Summary) -> str:
    query = s.queries.p_exceeds
    rows = [
        ("hierarchical model (sampler)", _pm(query.p, query.mcse)),
        ("hierarchical model (exact)", query.exact),
        ("separate analysis of this school", query.separate),
        ("complete pooling", query.pooled),
    ]
    c = query.threshold
    title = _Html(f"P({_theta_of(query.school)} &gt; {_e(fmt(c))} | y)")
    return _section(
        "query", "Posterior question",
        f"<p>How likely is {_e(_school([query.school], 0))}'s true effect to exceed {_e(fmt(c))}? (By default the "
        "first school and its own observed effect: for the eight schools, the seed's P(θ<sub>A</sub> &gt; 28).) "
        f"{title} is Rao-Blackwellised (the average over draws of its closed form given (μ, τ)), with its "
        "MCSE, and set against what the separate and pooled analyses would say:</p>",
        _table(("model", "probability"), rows, "narrow"),
    )


# The z cell of an estimate without a z-score, by reason: every one of jaxschools.app.exact_check.REASONS (a
# test checks it), so a reason added there without words here fails (KeyError) instead of showing a blank.
_UNDEFINED_CELL = {exact_check.NO_MOMENT: "does not exist", exact_check.MCSE_NEEDS_MOMENT: "no MCSE (needs a higher moment)",
                   exact_check.NO_VARIATION: "undefined", exact_check.MISSING: "undefined"}


def _exact_section(s: results.Summary) -> str:
    verdict = s.exact_check
    limit = verdict.threshold
    table_rows = [
        (row.quantity, row.estimate, row.mcse, row.exact,
         _UNDEFINED_CELL[row.reason] if row.z is None else
         _flag_cell(fmt(row.z, ".2f" if abs(row.z) < 1e4 else ".3g"), abs(row.z) > limit))
        for row in verdict.rows if row.school is None or row.school < MAX_TABLE_ROWS
    ]
    note = _capped(len(s.data.names))[1]
    missing = s.exact.nonexistent_moments
    if missing:  # jaxschools.core.moments: these are null, exact and sampled alike
        note += _p(f"Left blank because they do not exist (p(τ | y) has a power tail): {missing}.", "note")
    return _section(
        "exact", "Sampler vs exact posterior",
        _p("The exact posterior by one-dimensional quadrature over log τ (μ and θ integrated in closed form) "
           f"against the sampler: z = (estimate − exact) / MCSE, red where |z| > {fmt(limit, '.3g')}, Bonferroni's "
           f"threshold Φ⁻¹(1 − α / 2m) for the m = {fmt(verdict.num_compared)} z-scores at a "
           f"family-wise false-alarm rate α = {fmt(verdict.alpha, 'g')}. z needs an MCSE: undefined where the "
           "draws do not vary, and not formed where the MCSE would need a moment that does not exist (an sd's "
           "MCSE needs E[x⁴], a mean's E[x²]); the MCSE of an sd is that of the draws' sd (Vehtari et al. 2021)."),
        _table(("quantity", "sampler", "MCSE", "exact", "z"), table_rows),
        note,
    )


def _laplace_exact_section(s: results.Summary) -> str:
    rows = []
    for d, (key, label) in enumerate((("mu", "μ"), ("log_tau", "log τ"))):
        exact, versus = getattr(s.exact, key), getattr(s.laplace_vs_exact, key)
        rows.append((label, s.laplace.mode[d], s.laplace.sd[d], exact.mean, exact.sd, versus.shift, versus.sd_ratio))
    evidence = [(name, value) for name, value in (("log p(y), Laplace", s.laplace.log_evidence),
                                                  ("log p(y), exact", s.exact.log_evidence)) if value is not None]
    return _section(
        "laplace-exact", "Laplace vs exact posterior",
        _p("The normal approximation's centre and spread next to the exact posterior mean and sd. Where the posterior "
           "of log τ is skewed (for the eight schools toward small τ: mode 1.84, mean about 1.44) the mode and "
           "curvature misdescribe it; this is why the seed moved on from the Laplace approximation to MCMC."),
        _table(("", "Laplace mode", "Laplace sd", "exact mean", "exact sd", "(mode − mean) / sd", "sd ratio"), rows),
        _table(("", ""), evidence, "narrow") if evidence else "",
    )


def _predictive_section(s: results.Summary) -> str:
    """The posterior predictive check (BDA3 section 6.3) and a new school's predictive distribution."""
    predictive = s.predictive
    rows = []
    for key, entry in predictive.ppc.items():
        p = entry.p_value
        extreme = _finite(p) and min(p, 1 - p) < 0.025
        rows.append((f"{key}: {entry.label}", entry.observed,
                     _interval(entry.replicated_q025, entry.replicated_q975),
                     _flag_cell(_pm(p, entry.mcse), extreme)))
    new = predictive.new_school
    new_rows = [(label, _pm(entry.mean, entry.mcse_mean), entry.sd, _interval(entry.q025, entry.q975))
                for label, entry in (("new school's effect θ̃ ~ N(μ, τ²)", new.theta),
                                     (f"its estimate ỹ ~ N(θ̃, σ²), σ = {fmt(new.sigma, '.3g')}", new.y))]
    return _section(
        "ppc", "Posterior predictive check",
        _p("Would the model reproduce the data? For each draw, every school is measured again, "
           "y_rep_j ~ N(θ_j, σ_j²), and a test statistic T of the replicated estimates is set against the "
           "observed T(y): p = P(T(y_rep) ≥ T(y) | y), with its Monte Carlo standard error (BDA3 section 6.3). "
           "A p-value near 0 or 1 (red: beyond 0.025 or 0.975) marks a feature the model rarely reproduces; "
           "a moderate one says only that this T finds no misfit."),
        _table(("statistic T", "observed T(y)", "95% interval of T(y_rep)", "p ± MCSE"), rows),
        "<h3>A new school</h3>",
        _p("The posterior predictive distribution of a school not in the data (BDA3 section 5.5), with the "
           "median standard error of the data; mean ± MCSE, sd and central 95% interval from one draw per "
           "posterior draw of (μ, τ)."),
        _table(("", "mean ± MCSE", "sd", "95% interval"), new_rows),
    )


# The headline scalars of the sensitivity section (the keys of results.SensitivitySection.headline), worded for people.
_HEADLINE_LABELS = (("mu_mean", "E[μ | y]"), ("mu_sd", "sd(μ | y)"), ("mu_q025", "μ: 2.5% quantile"),
                    ("mu_q975", "μ: 97.5% quantile"), ("tau_mean", "E[τ | y]"), ("tau_q025", "τ: 2.5% quantile"),
                    ("tau_q975", "τ: 97.5% quantile"), ("p_exceeds", "P(θ_k > c | y)"), ("log_evidence", "log p(y)"))


def _figure_link(name: str, label: str, drawn: set) -> str:
    """A link to figure ``name`` in the Figures section, or "" when it was not drawn."""
    return f' (<a href="#fig-{_e(name)}">figure: {_e(label)}</a>)' if name in drawn else ""


def _sensitivity_section(s: results.Summary, drawn: set) -> str:
    """The Sensitivity section: exact derivatives of the exact posterior (docs/sensitivity.md, "Reading the
    sensitivity section"), rendered from ``s.sensitivity``; ``drawn``: the figures drawn, to link to."""
    section = s.sensitivity
    if section is None:
        return _section("sensitivity", "Sensitivity",
                        _p("Not computed for this run (sensitivity.enabled = false in the configuration)."))
    names = s.data.names
    k = section.query_school
    parts = [_p(f"How much each answer depends on each input, by exact derivatives of the exact posterior (no "
                f"refits; quadrature with {fmt(section.num_nodes)} nodes). θ_k is school {k}'s effect and c = "
                f"{fmt(section.threshold, '.4g')} the threshold of the posterior question. Case weights w_j raise "
                "school j's likelihood term to the power w_j: w = 1 is the data as given, w_j = 0 leaves school j "
                "out.")]
    if section.note:
        parts.append(_p(f"The exact derivatives and leave-one-out analyses are {section.note}.", "note"))
    headline = section.headline
    if headline is not None:
        parts.append("<h3>Which data drive the answer</h3>")
        matrix = _figure_link("influence_matrix", "influence matrix", drawn)
        parts.append(f"<p>The influence matrix d E[θ_i | y] / d y_j{matrix} says how far each school's posterior "
                     "mean moves when another school's reported effect moves by one unit (summary.json: "
                     "sensitivity.theta.y). Per school, the derivatives of the population answers "
                     "with respect to its estimate y_j, its standard error σ_j and its case weight w_j:</p>")
        shown, note = _capped(len(names))
        mu, tau, p = headline["mu_mean"], headline["tau_mean"], headline["p_exceeds"]
        rows = [(str(names[j]), mu.y[j], mu.sigma[j], mu.case_weights[j], tau.y[j], tau.sigma[j],
                 tau.case_weights[j], p.y[j], p.case_weights[j]) for j in range(shown)]
        parts.append(_table(("school", "∂E[μ]/∂y_j", "∂E[μ]/∂σ_j", "∂E[μ]/∂w_j", "∂E[τ]/∂y_j", "∂E[τ]/∂σ_j",
                             "∂E[τ]/∂w_j", "∂P/∂y_j", "∂P/∂w_j"), rows))
        parts.append(note)
    influence = section.influence
    if influence is not None:
        parts.append("<h3>Dropping one school: derivative against exact leave-one-out</h3>")
        loo = _figure_link("influence_loo", "linear prediction against exact change", drawn)
        parts.append(f"<p>For each school, the change in the answer if it were left out: predicted to first order "
                     "by its influence, −∂Q/∂w_j at w = 1 (the infinitesimal jackknife), and computed exactly "
                     f"with w_j = 0. Where they differ, the linear approximation misleads{loo}. A dash: the "
                     "quantity does not exist without that school (a moment of the flat prior's posterior needs "
                     "enough schools, and the posterior itself needs 3).</p>")
        shown, note = _capped(len(names))
        rows = []
        for j in range(shown):
            row = [str(names[j])]
            for name in ("mu_mean", "tau_mean", "theta_mean", "p_exceeds"):
                entry = influence[name]
                row += [entry.linear[j], entry.change[j]]
            rows.append(row)
        parts.append(_table(("school left out", "E[μ]: linear", "E[μ]: exact", "E[τ]: linear", "E[τ]: exact",
                             "E[θ_k]: linear", "E[θ_k]: exact", "P(θ_k > c): linear", "P(θ_k > c): exact"), rows))
        parts.append(note)
        parts.append(_p(f"With every school: E[μ | y] = {fmt(influence['mu_mean'].full)}, E[τ | y] = "
                        f"{fmt(influence['tau_mean'].full)}, E[θ_k | y] = {fmt(influence['theta_mean'].full)}, "
                        f"P(θ_k > c | y) = {fmt(influence['p_exceeds'].full)}.", "note"))
    parts.append("<h3>The prior's hyperparameters</h3>")
    if headline is not None and section.prior_scales_note is None:
        rows = []
        for name, label in _HEADLINE_LABELS:
            entry = headline[name]
            prior = entry.prior
            rows.append((label, entry.value, prior.mu_loc, prior.mu_scale, prior.tau_scale))
        parts.append(_p("Derivatives of the headline quantities with respect to the prior's location and scale of μ "
                        "and its scale of τ, at the configured values. A derivative times a small change of the "
                        "hyperparameter is the change of the answer; a dash: the quantity does not exist."))
        parts.append(_table(("quantity", "value", "∂/∂mu_loc", "∂/∂mu_scale", "∂/∂tau_scale"), rows))
    elif section.prior_scales_note is not None:
        parts.append(_p(f"Derivatives with respect to the prior's scales are {section.prior_scales_note}."))
    if section.prior_curves is not None:
        curves = section.prior_curves
        link = _figure_link("prior_curves", "prior-sensitivity curves", drawn)
        parts.append(f"<p>Prior-sensitivity curves{link}: E[μ], E[τ] and the 95% interval ends of μ and τ at "
                     f"{len(curves.tau_scale)} values of tau_scale from {_e(fmt(curves.tau_scale[0], '.3g'))} to "
                     f"{_e(fmt(curves.tau_scale[-1], '.3g'))} (configured: {_e(fmt(curves.configured, '.3g'))}), "
                     "each with its exact derivative, drawn as a tangent (summary.json: "
                     "sensitivity.prior_curves).</p>")
    elif section.prior_curves_note is not None:
        parts.append(_p(f"Prior-sensitivity curves are {section.prior_curves_note}."))
    parts.append("<h3>Power-scaling</h3>")
    power = section.power_scaling
    if power is None:
        parts.append(_p(f"Power-scaling diagnostics are {section.power_scaling_note}."))
    else:
        parts.append(_p(f"priorsense's diagnostic (Kallioinen et al. 2024), computed exactly: the slope of the "
                        "cumulative Jensen-Shannon distance when the prior, or the likelihood "
                        f"({power.likelihood} form), is raised to a power alpha, in log2(alpha) at alpha = 1. At or "
                        f"above {fmt(power.threshold, 'g')} on both: potential prior-data conflict; on the prior "
                        "only: a strong prior / weak likelihood."
                        + (" The prior column is not applicable: the flat prior raised to a power is the same flat "
                           "prior." if any(row.prior is None for row in power.rows) else "")))
        rows = [(row.quantity, row.prior, row.likelihood,
                 _flag_cell(row.diagnosis, row.diagnosis not in ("-", "not applicable")))
                for row in power.rows[:MAX_TABLE_ROWS]]
        parts.append(_table(("quantity", "prior", "likelihood", "diagnosis"), rows))
    return _section("sensitivity", "Sensitivity", *parts)


def _figures_section(figures: Sequence[tuple[str, str, bytes]], drawn: bool,
                     not_drawn: Sequence[tuple[str, str]] = ()) -> str:
    if not drawn:
        return _section("figures", "Figures", _p("Figures were not drawn for this run (output.figures = false)."))
    parts = []
    if not_drawn:  # extreme data: the numbers above stand, these figures could not be drawn from them
        items = "; ".join(f"{name} ({why})" for name, why in not_drawn)
        parts.append(_p(f"{len(not_drawn)} figure{'s' if len(not_drawn) > 1 else ''} could not be drawn for these "
                        f"data and {'are' if len(not_drawn) > 1 else 'is'} left out: {items}. The numbers in the "
                        "tables above are unaffected.", "note"))
    for number, (name, caption, png) in enumerate(figures, start=1):
        data = base64.b64encode(png).decode("ascii")
        path = f"figures/{name}.png"
        parts.append(
            f'<figure id="fig-{_e(name)}"><img src="data:image/png;base64,{data}" alt="{_e(caption)}" '
            f'data-file="{_e(path)}"><figcaption><strong>Figure {number}.</strong> {_e(caption)} '
            f'<span class="file">{_e(path)}</span></figcaption></figure>'
        )
    return _section("figures", "Figures", *parts)


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)


def _toml_line(key, value) -> str:
    if value is None:
        return f"# {key} is unset (derived from the data)"
    return f"{key} = {_toml_value(value)}"


def _toml(config: dict) -> str:
    """The resolved configuration as TOML (unset optional keys as comments)."""
    lines = [_toml_line(key, value) for key, value in config.items() if not isinstance(value, dict)]
    for key, value in config.items():
        if isinstance(value, dict):
            lines.append(f"\n[{key}]")
            lines += [_toml_line(k, v) for k, v in value.items() if not isinstance(v, dict)]
    return "\n".join(lines)


def _footer(s: results.Summary) -> str:
    config = s.config
    # The run's versions, recorded when it ran (not those of whatever renders this page).
    run = s.provenance
    provenance = {"jaxschools": run.jaxschools, "jax": run.jax, "jaxlib": run.jaxlib, "python": run.python,
                  "platform": run.platform, "backend": run.backend, "x64": run.x64, "numpy": run.numpy,
                  "matplotlib": run.matplotlib, "summary schema": s.schema_version}
    seed = config["sampler"]["seed"]
    return (
        '<footer id="provenance"><h2>Configuration and provenance</h2>'
        f"{_p(f'Seed {fmt(seed)}. The resolved configuration (rerun it with jaxschools run CONFIG.toml):')}"
        f"<pre>{_e(_toml(config))}</pre>"
        + _table(("", ""), [(key, value if isinstance(value, (bool, int, float)) else str(value))
                            for key, value in provenance.items()], "narrow")
        + "</footer>"
    )


# BDA3 Table 5.2, to recognise the built-in dataset when no data file was given.
_EIGHT_SCHOOLS = (tuple("ABCDEFGH"), (28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0))


# How the report names the built-in datasets (their citations are the record's).
_DATASET_TITLES = {"eight_schools": "the eight schools", "bcg": "the BCG vaccine trials",
                   "normand1999": "Normand's stroke-care trials"}


def _dataset_label(s: results.Summary) -> str:
    if s.data.source == "file":
        return os.path.basename(s.config["data"]["path"])
    if s.data.source == "dataset":
        return f"{_DATASET_TITLES.get(s.data.dataset, s.data.dataset)} ({s.data.citation})"
    if (s.data.names, s.data.y) == _EIGHT_SCHOOLS:
        return "the eight schools (BDA3 §5.5, Rubin 1981)"
    return "a dataset given in Python"


_CSS = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:#1d1d1f;
max-width:980px;margin:2em auto;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}
h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
h3{font-size:1.02em;margin:1.2em 0 .4em}
.sub{color:#555;margin-top:0}.note{color:#666;font-size:.9em}
nav{font-size:.9em;color:#555}nav a{margin-right:.9em;color:#2456a4;text-decoration:none}
table{border-collapse:collapse;margin:.6em 0 1em;font-variant-numeric:tabular-nums;font-size:.92em}
th,td{padding:.25em .7em;border-bottom:1px solid #e6e6e6;text-align:right}
th{background:#f4f5f7;font-weight:600}td:first-child,th:first-child{text-align:left}
table.narrow td:last-child{min-width:8em}
.bad{color:#b00020;font-weight:700}
.warn{background:#fff4e5;border-left:5px solid #e07b00;padding:.6em 1em;margin:1em 0}
.warn ul{margin:.3em 0 0 1.2em;padding:0}
.summary{background:#f4f7fb;border-left:5px solid #2456a4;padding:.4em 1em}
figure{margin:1.5em 0}figure img{max-width:100%;height:auto;display:block}
figcaption{font-size:.9em;color:#333}.file{color:#888;font-family:ui-monospace,monospace;font-size:.85em}
pre{background:#f6f8fa;padding:.8em;overflow:auto;font-size:.85em}
footer{margin-top:2.5em;color:#444}
"""

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{css}</style>
</head>
<body>
<header>
<h1>{title}</h1>
<p class="sub">{subtitle}</p>
<nav>{nav}</nav>
</header>
<section id="overview" class="summary"><h2>In brief</h2>{overview}</section>
{warnings}
{body}
{footer}
</body>
</html>
"""

_NAV = (("data", "data"), ("pooled", "pooling"), ("classical", "classical"), ("meta", "meta-analysis"), ("laplace", "Laplace"), ("mcmc", "MCMC"), ("posterior", "posterior"),
        ("schools", "schools"), ("query", "question"), ("exact", "vs exact"), ("ppc", "predictive check"), ("sensitivity", "sensitivity"),
        ("sweep", "sweep"), ("simulation", "simulation"), ("figures", "figures"),
        ("provenance", "config"))


def render_html(summary: results.Summary | dict, figures: Sequence[tuple[str, str, bytes]] = (), *,
                drawn: bool | None = None, not_drawn: Sequence[tuple[str, str]] = ()) -> str:
    """The report page for a summary: the typed record, or summary.json as loaded (read strictly, so a summary
    of another schema is refused with :class:`~jaxschools.app.results.SchemaError` naming the key).

    ``figures``: (name, caption, PNG bytes) in report order, embedded as data URIs; ``drawn`` says whether
    figures were drawn at all (default: whether any are given or skipped). ``not_drawn``: (name, why) of
    figures that could not be drawn, listed in the figures section.
    """
    s = summary if isinstance(summary, results.Summary) else results.Summary.from_json(summary)
    drawn = bool(figures or not_drawn) if drawn is None else drawn
    title = f"jaxschools report: {s.config['name']}"
    chains = s.mcmc.num_chains
    subtitle = (f"Dataset: {_dataset_label(s)} · J = {len(s.data.names)} schools · prior: {s.config['model']['prior']} · "
                f"sampler: {s.mcmc.kernel}, {fmt(chains)} chain{'' if chains == 1 else 's'} "
                f"· seed {fmt(s.config['sampler']['seed'])}")
    body = "".join((
        _data_section(s),
        _classical_section(s),
        _meta_section(s),
        _laplace_section(s),
        _mcmc_section(s),
        _posterior_section(s),
        _schools_section(s),
        _query_section(s),
        _exact_section(s),
        _laplace_exact_section(s),
        _predictive_section(s),
        _sensitivity_section(s, {name for name, _, _ in figures}),
        _sweep_section(s),
        _simulation_section(s),
        _figures_section(figures, drawn, not_drawn),
    ))
    # The menu links only to the sections this report has (a run without a sweep has no sweep section).
    footer = _footer(s)
    nav = "".join(f'<a href="#{anchor}">{_e(label)}</a>' for anchor, label in _NAV
                  if f' id="{anchor}"' in body or f' id="{anchor}"' in footer)
    warnings = _warnings(s)
    return _PAGE.format(
        title=_e(title), subtitle=_e(subtitle), nav=nav, css=_CSS, overview=_overview(s),
        warnings=warnings.replace('class="warn"', 'class="warn" id="warnings"', 1) if warnings else "",
        body=body, footer=footer,
    )


def write_outputs(result, out_dir, figures: bool = True) -> pathlib.Path:
    """Write ``out_dir/figures/<name>.png`` (when ``figures``) and ``out_dir/report.html``; return the report's path.

    ``result``: what the application returns, an :class:`~jaxschools.app.analysis.Analysis` or an
    :class:`~jaxschools.app.experiments.Result`; its ``record`` (:class:`~jaxschools.app.results.RunRecord`) is
    what is rendered (the sweep and simulation figures follow the analysis's own).
    Each figure is rendered once at :data:`DPI` to PNG bytes that go both to its file and, base64-encoded,
    into the page, then released. With ``figures=False`` no figure is drawn and the report has tables only.
    """
    record = result.record
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    embedded, not_drawn = [], []
    if figures:
        figure_dir = out_dir / "figures"
        figure_dir.mkdir(exist_ok=True)
        for spec in (plots.make_figures(record) + meta_plots.make_figures(record) + sensitivity_plots.make_figures(record)
                     + experiment_plots.make_figures(record)):
            if spec.figure is None:  # could not be built for these data: listed in the report instead
                not_drawn.append((spec.name, spec.not_drawn))
                continue
            buffer = io.BytesIO()
            try:
                spec.figure.savefig(buffer, format="png", dpi=DPI)
            except Exception as error:  # noqa: BLE001 - drawing can fail only now (text, limits): skip it
                not_drawn.append((spec.name, plots.failure_note(error)))
                continue
            finally:
                spec.figure.clear()
            png = buffer.getvalue()
            (figure_dir / f"{spec.name}.png").write_bytes(png)
            embedded.append((spec.name, spec.caption, png))
    page = render_html(record.summary, embedded, drawn=figures, not_drawn=not_drawn)
    path = out_dir / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------------------
# Experiments: sweeps and simulation studies (present only when the run had them).


def _sweep_section(s: results.Summary) -> str:
    rows = s.sweep
    if not rows:
        return ""
    column = rows[0].swept
    has_loo = rows[0].loo is not None
    headers = [column, "kernel", "acceptance", "divergences", "ESS mu", "ESS log tau", "R-hat max", "E[mu]", "E[log tau]",
               "E[tau]", "P(exceeds)", "Laplace"] + (["elpd_loo (exact)"] if has_loo else [])
    table_rows = []
    for row in rows:
        cells = [
            str(row.value), f"{row.kernel} ({row.parameterization})", row.acceptance_rate, row.divergences, row.ess.mu,
            row.ess.log_tau, _flag_cell(row.rhat_max, _finite(row.rhat_max) and row.rhat_max >= s.mcmc.limits.rhat),
            row.posterior.mu.mean, row.posterior.log_tau.mean, row.posterior.tau.mean,
            row.queries.p_exceeds, "converged" if row.laplace_converged else ("not converged", "bad"),
        ]
        if has_loo:
            cells.append(row.loo.elpd_loo)
        table_rows.append(cells)
    ran = sorted({f"{row.kernel} on the {row.parameterization} target" for row in rows})
    intro = (f"{len(rows)} cells, varying {column}, each the whole inference (Laplace fit, "
             f"{s.mcmc.num_chains} chains of {' / '.join(ran)}, summaries), vmapped in one compiled computation "
             "per chunk and with common random numbers, so differences between cells come from what was varied.")
    return _section("sweep", "Sweep", _p(intro), _table(headers, table_rows), _priors_table(s))


def _priors_table(s: results.Summary) -> str:
    """A prior sweep's exact posteriors and Bayes factors, one row per prior, with the classical fits below: the
    whole sensitivity to the prior in one table."""
    rows = [row for row in s.sweep if row.exact is not None]
    if not rows:
        return ""
    table = []
    for row in rows:
        ex, bf = row.exact, row.exact.bayes_factors
        cell = lambda key: "undefined" if key in bf.undefined else fmt(getattr(bf, key))  # noqa: E731
        table.append((f"Bayes, prior {row.value}", ex.mu_median, _interval(ex.mu_lower, ex.mu_upper),
                      ex.tau_median, _interval(ex.tau_lower, ex.tau_upper),
                      None if ex.i2_median is None else 100 * ex.i2_median,
                      cell("tau0"), cell("mu0"), cell("min_tau0"), cell("min_mu0")))
    if s.classical is not None:
        for method, fit in s.classical.fits.items():
            table.append((f"classical, {_ESTIMATORS.get(method, method)}", fit.mu, _interval(fit.ci.lower, fit.ci.upper),
                          fit.tau, _interval(*(None if v is None else math.sqrt(max(v, 0.0))
                                               for v in (fit.tau2_ci.lower, fit.tau2_ci.upper))),
                          fit.i2, _DASH, _DASH, _DASH, _DASH))
    headers = ("analysis", "μ", "95% interval", "τ", "95% interval", "I² (%)", "BF τ = 0", "BF μ = 0",
               "min BF τ = 0", "min BF μ = 0")
    text = ("The same data under each prior, exactly (quadrature): the median and central 95% interval of μ and τ, "
            "the median of I², and the Bayes factors for τ = 0 and μ = 0 (p(y | hypothesis) / p(y): below 1 the "
            "data favour the model with the parameter free) with the minimum Bayes factors over all priors on the "
            "tested parameter; \"undefined\" where an improper prior leaves p(y) arbitrary. Below, the classical "
            "random-effects fits: the estimate of μ with its Wald interval, τ with its Q-profile interval.")
    return "<h3>The priors side by side</h3>" + _p(text) + _table(headers, table)


def _simulation_section(s: results.Summary) -> str:
    studies = s.simulation
    if not studies:
        return ""
    parts = [_p("Each study draws datasets with the data's sigmas and reruns the whole inference on each, vmapped "
                "in batches. Interval coverage per level (mean over parameters, and whether every parameter's "
                "coverage lies inside its Bonferroni-corrected binomial band); SBC ranks against simultaneous "
                "ECDF bands.")]
    headers = ["prior", "kernel", "datasets from", "datasets", "Laplace failures", "not mixed"] + [
        f"coverage {level}" for level in studies[0].coverage] + ["SBC inside bands", "verdict"]
    table_rows = []
    for study in studies:
        cells = [study.prior, f"{study.kernel} ({study.parameterization})", study.draws_from, study.num_datasets,
                 study.failures.laplace_not_converged, study.failures.not_mixed]
        for coverage in study.coverage.values():
            bad = coverage.inside is not None and not all(coverage.inside.values())
            cells.append(_flag_cell(coverage.mean_share, bad))
        if study.sbc is None:
            cells += ["n/a (improper prior)", "frequentist coverage, need not be nominal"]
        else:
            cells += [("yes", "") if study.sbc.all_inside else ("no", "bad"),
                      ("calibrated", "") if study.calibrated else ("NOT calibrated", "bad")]
        table_rows.append(cells)
    parts.append(_table(headers, table_rows))
    notes = [study.note for study in studies if study.note]
    if notes:
        parts.append(_p(notes[0], "note"))
    return _section("simulation", "Simulation study", *parts)


def __dir__():
    # The public names only, not the imports (``dir(js.diagnostics)`` lists no ``jax`` or ``jnp``).
    return list(__all__)
