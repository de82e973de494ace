"""The package's layers (docs/architecture.md): which module may import which, and where JAX may be imported.

- ``jaxschools.core`` (the library) imports only itself, ``jaxschools.interop`` and ``jaxschools.errors``;
- ``jaxschools.interop`` imports only the library and ``errors``;
- ``jaxschools.app`` never imports ``jaxschools.presentation`` or ``jaxschools.cli``;
- ``jaxschools.presentation`` never imports JAX, the library's numerical modules or the command line: it renders
  the application's result and computes nothing;
- ``app.config`` and ``core.validation`` (the input checks that run before JAX starts) never load JAX.

Imports are read from the source (every ``import`` statement, including those inside functions), so a lazy
import cannot hide a dependency; the "never loads JAX" rules are also checked by importing in a fresh process.
"""

import ast
import pathlib
import subprocess
import sys

import pytest

import jaxschools

PACKAGE = pathlib.Path(jaxschools.__file__).parent

ALLOWED = {
    "core": {"core", "interop", "errors"},
    "interop": {"core", "interop", "errors"},
    "app": {"core", "interop", "app", "errors"},
    "presentation": {"app", "presentation", "errors"},
}


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).with_suffix("")
        yield ".".join(("jaxschools",) + relative.parts).removesuffix(".__init__"), path


def _imports(path):
    """Every module name an import statement of ``path`` names (``from a import b`` gives ``a`` and ``a.b``)."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def _layer(module_name):
    parts = module_name.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "jaxschools" else None


# Modules that still break the rules (none: the report and figures render the typed result, issue 14).
_RECOMPUTES = set()


@pytest.mark.parametrize("name,path", [
    pytest.param(name, path, id=name,
                 marks=[pytest.mark.xfail(strict=True, reason="recomputes")] if name in _RECOMPUTES else [])
    for name, path in _modules()])
def test_a_module_imports_only_the_layers_below_it(name, path):
    layer = _layer(name)
    if layer not in ALLOWED:
        return
    bad = sorted({imported for imported in _imports(path)
                  if _layer(imported) is not None and _layer(imported) not in ALLOWED[layer]
                  and imported != "jaxschools.__version__"})
    assert not bad, f"{name} ({layer}) imports {bad}"
    if layer == "presentation":
        jax = sorted({imported for imported in _imports(path) if imported.split(".")[0] in ("jax", "jaxlib")})
        assert not jax, f"{name} imports {jax}"


def test_every_public_module_is_listed_once_and_reachable_from_the_package():
    """The short names of ``import jaxschools as js`` (``js.exact``...) are one list, and it names every public
    module (a name with a leading underscore is private) of every layer."""
    found = {path.stem: None for path in PACKAGE.glob("*.py") if not path.name.startswith("_")}
    for layer in ALLOWED:
        for path in (PACKAGE / layer).iterdir():
            if not path.name.startswith("_") and (path.suffix == ".py" or (path / "__init__.py").is_file()):
                found[path.stem] = layer
    assert jaxschools._LAYER_OF == found
    assert jaxschools.moments.PRIORS == ("flat", "half_cauchy", "half_normal")


def _loads_jax(statement):
    code = f"import sys; {statement}; print(any(m == 'jax' or m.startswith('jax.') for m in sys.modules))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_the_input_checks_and_the_pure_python_modules_do_not_load_jax():
    # The presentation layer renders the typed result (js.results) without starting JAX either.
    statement = ("import jaxschools as js; js.config, js.validation, js.moments, js.exact_check, js.resources, "
                 "js.output_folder, js.input_files, js.results, js.report, js.plots, js.experiment_plots")
    assert _loads_jax(statement) == "False"


@pytest.mark.parametrize("short_name", jaxschools._SUBMODULES)
def test_a_module_shows_its_public_names_only(short_name):
    """``dir()`` of a public module is its ``__all__``, and everything ``__all__`` names exists: imports
    (``jax``, ``jnp``, ``betainc``...) do not leak into what a user sees with ``dir`` or tab completion."""
    module = getattr(jaxschools, short_name)
    assert sorted(dir(module)) == sorted(module.__all__)
    assert [name for name in module.__all__ if not hasattr(module, name)] == []


def test_every_name_list_has_one_source():
    """Prior families and parameterizations are defined once (``core.moments``, pure Python, so the config can be
    checked before JAX starts), and every built-in kernel name of the config is a constructor of ``js.kernels``."""
    assert jaxschools.config.PRIORS is jaxschools.models.PRIORS is jaxschools.moments.PRIORS
    assert (jaxschools.config.PARAMETERIZATIONS is jaxschools.models.PARAMETERIZATIONS
            is jaxschools.moments.PARAMETERIZATIONS)
    assert all(callable(getattr(jaxschools.kernels, name)) for name in jaxschools.config.KERNELS)
