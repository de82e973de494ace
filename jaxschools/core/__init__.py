"""The library layer: everything numerical about the normal-normal hierarchical model.

Data (``data``, ``datasets``, ``validation``, ``input_files``), the model and its priors (``models``,
``moments``), the exact posterior and its Laplace approximation (``exact``, ``laplace``, ``classical``),
posterior and predictive draws (``posterior``, ``predictive``), Markov kernels (``kernels``), warm-up
(``adaptation``), the sampling driver (``sampling``, with ``streaming`` and ``sharding``) and diagnostics
(``diagnostics``, ``calibration``). Nothing here imports :mod:`jaxschools.app`, :mod:`jaxschools.presentation`
or :mod:`jaxschools.cli` (tests/test_layers.py).
"""
