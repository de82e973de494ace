"""jaxschools: the normal-normal hierarchical model (BDA3 section 5.5, "eight schools") on JAX.

The package is layered (``docs/architecture.md`` draws it):

- :mod:`jaxschools.core`, the library: data, model, exact posterior, Laplace, kernels, the sampling driver,
  streaming, sharding, diagnostics. It never imports the layers above it.
- :mod:`jaxschools.interop`: conversion to ArviZ.
- :mod:`jaxschools.app`, the application: config, analysis, experiments, the typed result and the output
  folder.
- :mod:`jaxschools.presentation`: the report and figures, pure renderers of the typed result (no JAX).
- :mod:`jaxschools.cli`: the command line, the entry layer on top.

``import jaxschools as js`` gives every public module by its short name (``js.exact``, ``js.sampling``,
``js.report``...), imported lazily, so ``import jaxschools`` (and the command line's input validation) does not
import JAX until a numerical module is first used. The module paths of version 0.1 (``jaxschools.exact``...)
still import, with a ``DeprecationWarning`` naming the new path.
"""

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

__version__ = "0.1.0"

# Every public module by its short name and the layer that holds it; tests/test_layers.py checks the list
# against the files.
_LAYER_OF = {
    **dict.fromkeys(
        (
            "adaptation", "bayes_factors", "calibration", "classical", "data", "data_layouts", "datasets", "design", "diagnostics", "draw_sensitivity",
            "effect_sizes", "empirical_bayes", "exact", "input_files", "kernels", "laplace", "meta_quantities", "models", "moments",
            "posterior", "power_scaling", "predictive", "prior_families", "random_effects", "sampling", "sensitivity", "sharding",
            "streaming", "tau_priors", "validation",
        ),
        "core",
    ),
    "inference_data": "interop",
    **dict.fromkeys(
        ("analysis", "classical_record", "config", "exact_check", "experiments", "inference", "meta_record", "output_folder", "resources", "results",
         "sensitivity_record"),
        "app",
    ),
    **dict.fromkeys(("experiment_plots", "meta_plots", "plots", "report", "sensitivity_plots"), "presentation"),
    "cli": None,
    "errors": None,
}
_SUBMODULES = tuple(sorted(_LAYER_OF))


def _full_name(name: str) -> str:
    layer = _LAYER_OF[name]
    return f"{__name__}.{layer}.{name}" if layer else f"{__name__}.{name}"


__all__ = list(_SUBMODULES) + ["__version__"]


def __getattr__(name):
    if name in _LAYER_OF:
        module = importlib.import_module(_full_name(name))
        globals()[name] = module
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(__all__)


class _OldPathFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Import ``jaxschools.<module>[.<sub>]`` (the flat layout of 0.1) as the module's new home, with a warning."""

    def find_spec(self, fullname, path=None, target=None):
        parts = fullname.split(".")
        if len(parts) < 2 or parts[0] != __name__ or _LAYER_OF.get(parts[1]) is None:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        parts = spec.name.split(".")
        new = ".".join([_full_name(parts[1])] + parts[2:])
        warnings.warn(
            f"{spec.name} moved to {new} (jaxschools 0.2); `import jaxschools as js; js.{parts[1]}` works in both",
            DeprecationWarning,
            stacklevel=2,
        )
        return importlib.import_module(new)

    def exec_module(self, module):
        pass


# First, so that a submodule of an old path (jaxschools.kernels.base) is not found again by the path finder
# through the new package's __path__ and executed a second time.
sys.meta_path.insert(0, _OldPathFinder())
