"""jaxschools: the normal-normal hierarchical model (BDA3 section 5.5, "eight schools") on JAX.

Submodules are imported lazily, so ``import jaxschools`` (and the command line's input
validation) does not import JAX until a numerical module is first used.
"""

import importlib

__version__ = "0.1.0"

# Every public module (a module whose name starts with "_" is private); tests/test_moments.py checks the list.
_SUBMODULES = (
    "adaptation",
    "analysis",
    "calibration",
    "classical",
    "cli",
    "config",
    "data",
    "datasets",
    "diagnostics",
    "errors",
    "exact",
    "exact_check",
    "experiment_plots",
    "experiments",
    "inference_data",
    "input_files",
    "kernels",
    "laplace",
    "models",
    "moments",
    "output_folder",
    "plots",
    "posterior",
    "predictive",
    "report",
    "resources",
    "sampling",
    "sharding",
    "streaming",
    "validation",
)

__all__ = list(_SUBMODULES) + ["__version__"]


def __getattr__(name):
    if name in _SUBMODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
