"""The application layer: from a config to a typed result.

``config`` (TOML, defaults, ``--set``), ``analysis`` (the single analysis), ``experiments`` (sweeps and
simulation studies), ``exact_check`` (sampler versus exact), ``resources`` (the memory estimate) and
``output_folder`` (the safe result folder). It builds on :mod:`jaxschools.core` and never imports
:mod:`jaxschools.presentation` or :mod:`jaxschools.cli`; ``config`` never imports JAX.
"""
