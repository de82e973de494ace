"""The package's layers (docs/architecture.md): which module may import which, and where JAX may be imported.

- ``jaxschools.core`` (the library) imports only itself and ``jaxschools.errors`` (and, lazily, the ArviZ
  converter it re-exports);
- ``jaxschools.interop`` imports only the library and ``errors``;
- ``jaxschools.app`` never imports ``jaxschools.presentation`` or ``jaxschools.cli``;
- ``jaxschools.presentation`` imports only itself, ``errors`` and the application's result modules (``results``,
  ``exact_check``), never JAX, the library or the command line: it renders the result and computes nothing;
- ``app.config`` and ``core.validation`` (the input checks that run before JAX starts) never load JAX.

Imports are read from the source (every ``import`` statement, including those inside functions, relative ones,
``importlib.import_module`` strings and ``import jaxschools``), so a lazy import cannot hide a dependency; the
"never loads JAX" rules are also checked by importing in a fresh process.
"""

import ast
import pathlib
import subprocess
import sys

import pytest

import jaxschools

PACKAGE = pathlib.Path(jaxschools.__file__).parent

ALLOWED = {
    "core": {"core", "errors"},
    "interop": {"core", "interop", "errors"},
    "app": {"core", "interop", "app", "errors"},
    "presentation": {"presentation", "errors"},
}
# Single modules a layer may import beyond whole layers: the application modules that hold the result and
# import no JAX (the presentation renders them), and the library's one lazy re-export of the ArviZ converter.
ALLOWED_MODULES = {
    "core": {"jaxschools.interop.inference_data"},
    "presentation": {"jaxschools.app.results", "jaxschools.app.exact_check"},
}


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).with_suffix("")
        yield ".".join(("jaxschools",) + relative.parts).removesuffix(".__init__"), path


def _absolute(name):
    """``jaxschools.exact`` (a short name of ``import jaxschools as js``) as its module's full name."""
    parts = name.split(".")
    if len(parts) >= 2 and parts[0] == "jaxschools" and jaxschools._LAYER_OF.get(parts[1]):
        return ".".join(["jaxschools", jaxschools._LAYER_OF[parts[1]]] + parts[1:])
    return name


def _imports(path, module_name):
    """Every module an import of ``path`` can reach: ``import a.b``, ``from a import b`` (``a`` and ``a.b``),
    relative imports resolved against the module's package, and the string argument of
    ``importlib.import_module(...)`` / ``__import__(...)``; lazy (inside a function) or not."""
    package = module_name if path.name == "__init__.py" else module_name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (_absolute(alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base != "jaxschools":  # ``from jaxschools import x`` reaches x (checked below), not every layer
                yield _absolute(base)
            yield from (_absolute(f"{base}.{alias.name}") for alias in node.names)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            function = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if function in ("import_module", "__import__"):
                yield _absolute(node.args[0].value)


def _layer(module_name):
    parts = module_name.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "jaxschools" else None


def _breaks(layer, imported):
    if imported == "jaxschools":  # the whole package, so every layer through js.<name>
        return True
    layer_package = f"jaxschools.{_layer(imported)}"  # only a docstring; what is imported from it is checked
    if _layer(imported) is None or imported in ("jaxschools.__version__", layer_package):
        return False
    return _layer(imported) not in ALLOWED[layer] and not any(
        imported == allowed or imported.startswith(allowed + ".") for allowed in ALLOWED_MODULES.get(layer, ()))


@pytest.mark.parametrize("name,path", [pytest.param(name, path, id=name) for name, path in _modules()])
def test_a_module_imports_only_the_layers_below_it(name, path):
    layer = _layer(name)
    if layer not in ALLOWED:
        return
    imports = set(_imports(path, name))
    bad = sorted(imported for imported in imports if _breaks(layer, imported))
    assert not bad, f"{name} ({layer}) imports {bad}"
    if layer == "presentation":
        jax = sorted(imported for imported in imports if imported.split(".")[0] in ("jax", "jaxlib"))
        assert not jax, f"{name} imports {jax}"


@pytest.mark.parametrize("source, layer, breaks", [
    ("from jaxschools.app import analysis", "presentation", True),
    ("from ..app import analysis", "presentation", True),
    ("def f():\n    import jax.numpy", "presentation", True),
    ("import importlib\nimportlib.import_module('jaxschools.app._record')", "presentation", True),
    ("import jaxschools as js", "presentation", True),
    ("from jaxschools import exact", "presentation", True),
    ("from jaxschools.app import results", "presentation", False),
    ("from . import plots", "presentation", False),
    ("from jaxschools.app import config", "core", True),
    ("from jaxschools.core import exact", "core", False),
])
def test_the_layering_check_sees_every_form_of_import(tmp_path, source, layer, breaks):
    """The rule engine above catches the imports that could hide a dependency (relative, lazy, by string, through
    the package), so a passing layering test means something."""
    path = tmp_path / "module.py"
    path.write_text(source + "\n")
    imports = set(_imports(path, f"jaxschools.{layer}.module"))
    found = any(_breaks(layer, imported) for imported in imports) or (
        layer == "presentation" and any(imported.split(".")[0] == "jax" for imported in imports))
    assert found == breaks, sorted(imports)


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
