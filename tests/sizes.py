"""One sampler size for every test that runs a whole analysis (the CLI, analysis.analyze, sweeps).

The compiled chains, diagnostics and Rao-Blackwellised summaries are keyed by the number of draws and of
burn-in steps (static scan lengths), so tests that agree on them share one compilation per dataset shape for
the whole session, across test files. 400 kept draws a chain after 200 burn-in steps is enough for every
whole-analysis assertion (the statistical claims are tested elsewhere, on long runs).
"""

SAMPLER_SETS = ["sampler.num_samples=400", "sampler.burn_in=200"]
# The whole-analysis tests on three schools (the report's hostile names, the moments that do not exist) share
# one compiled J = 3 analysis: one chain, which also exercises the single-chain paths (R-hat undefined).
THREE_SCHOOL_SETS = SAMPLER_SETS + ["sampler.num_chains=1"]


def cli_sets(*extra: str) -> list:
    """``SAMPLER_SETS`` (and ``extra``) as ``--set`` arguments of the command line."""
    return [arg for item in [*SAMPLER_SETS, *extra] for arg in ("--set", item)]
