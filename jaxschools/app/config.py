"""Run configuration: the schema, and its resolution from the default TOML, a config file and overrides.

A configuration is data. ``SCHEMA`` says which keys exist and what each accepts; the embedded
``configs/default.toml`` gives every default and documents every key for users. :func:`load_config`
layers the default, a config file, ``--set`` items and ``--data`` in that order, checks each layer against
the schema with one code path, and returns a plain nested dict: the resolved configuration written into
summary.json. Pure Python (no JAX), so the command line rejects a bad config before JAX is imported.

To add a section (``[sweep]``, ``[simulation]``, ...): add its keys to ``SCHEMA`` and their defaults,
with a comment each, to ``configs/default.toml`` (or mark them ``optional``). No code changes.
"""

import difflib
import importlib.resources
import json
import math
import os
import pathlib
import re
import tomllib
import types
from typing import Any, Callable, NamedTuple

from jaxschools.errors import InputError, JaxschoolsError
from jaxschools.core.input_files import MAX_CONFIG_BYTES
from jaxschools.core.moments import PARAMETERIZATIONS, PRIORS
from jaxschools.core import prior_families
from jaxschools.core.data_layouts import MEASURES
from jaxschools.core.datasets import BUILT_IN
from jaxschools.core.validation import MAX_MAGNITUDE, MIN_SIGMA, check_groups, read_text

__all__ = ["PRIORS", "PARAMETERIZATIONS", "KERNELS", "CLASSICAL_METHODS", "SWEEP_KINDS", "SWEEPABLE_KEYS", "SCHEMA", "Check", "Spec",
           "is_user_kernel", "parse_set", "load_config", "output_dir", "check_queries", "adapts", "check_sampler",
           "check_experiment", "check_sensitivity"]

# Allowed values of the enumerated keys. Extend a tuple here when a module gains an implementation. The priors
# are ``jaxschools.core.moments.PRIORS``: a new prior starts there, with the tail of its p(tau | y), from which
# ``validation.MIN_SCHOOLS`` and the moments' existence follow; the parameterizations are
# ``moments.PARAMETERIZATIONS``.
KERNELS = ("rwmh", "hmc", "nuts")
# The built-in datasets ``data.dataset`` names (``jaxschools.core.datasets.BUILT_IN``), "" for none.
BUILT_IN_DATASETS = tuple(BUILT_IN)
# The classical tau^2 estimators (``jaxschools.core.random_effects.METHODS``, which imports JAX; a test keeps the
# two equal): DerSimonian-Laird, REML, ML, Paule-Mandel, Sidik-Jonkman, Hedges, empirical Bayes.
CLASSICAL_METHODS = ("DL", "REML", "ML", "PM", "SJ", "HE", "EB")
# What a [sweep] varies: nothing, a numeric config value, a prior, or the data (see default.toml).
SWEEP_KINDS = ("none", "config", "prior", "set_y", "shift_y", "scale_sigma", "leave_one_out", "add_school")
# Numeric keys a "config" sweep can vmap over: they are array leaves of the model or the kernel, so every
# cell shares one compilation. Any other numeric key would change shapes or static structure.
SWEEPABLE_KEYS = ("sampler.scale", "sampler.step_size", "sampler.init_spread", "model.mu_loc", "model.mu_scale",
                  "model.tau_scale")


class Check(NamedTuple):
    """A test a (type-correct) value must pass, and the phrase an error uses for what it expects."""

    test: Callable[[Any], bool]
    expect: str


# A user's kernel: "module:function", a constructor returning a SamplingAlgorithm (docs/extending.md). Only its
# form is checked here (no import: that would start JAX); jaxschools.app.inference imports it when the run starts.
def _is_prior_kind(value: str) -> bool:
    try:
        spec = prior_families.spec(value)
    except ValueError:
        return False
    return not spec.tau.startswith("user")  # a user's density exists in Python only


# A prior kind string of jaxschools.core.prior_families ("normal+lomax:1.5"), besides the three names in PRIORS.
PRIOR_KIND = Check(_is_prior_kind, 'a prior kind "<mu>+<tau>[:<shape>]" (docs/configuration.md, Priors)')

USER_KERNEL = Check(lambda value: re.fullmatch(r"[^\W\d]\w*(\.[^\W\d]\w*)*:[^\W\d]\w*", value) is not None,
                    "a user kernel named 'module:function' (docs/extending.md)")


def is_user_kernel(name: str) -> bool:
    """Whether ``sampler.kernel`` names a user's kernel (``module:function``) rather than a built-in one."""
    return name not in KERNELS


class Spec(NamedTuple):
    """What one config key accepts.

    ``type`` is ``str``, ``bool``, ``int`` (a bool is not one), ``float`` (an int is converted) or a list
    of one of them, written ``list[float]``; ``choices`` and ``check`` then apply to each element.
    ``also`` accepts a value outside ``choices`` that passes it (a user's kernel ``module:function``).
    ``optional`` keys have no default and resolve to None until set. ``path`` marks a file path: a
    relative one is made absolute against the directory of the config file that sets it (the current
    directory for command-line overrides); the empty string stays empty ("use the built-in").
    """

    type: Any
    choices: tuple = ()
    check: Check | None = None
    optional: bool = False
    path: bool = False
    also: Check | None = None


# The largest count any integer key accepts: counts become int32 indices and shapes in XLA, and a larger
# number (10^20 chains, 10^12 steps) would fail there with a TypeError or an allocation error instead of here.
# (The memory a run needs is checked against the machine by jaxschools.app.resources once the data is read.)
MAX_COUNT = 2**31 - 1


def at_least(bound):
    """Check: an integer >= ``bound`` and at most :data:`MAX_COUNT`."""
    return Check(lambda value: bound <= value <= MAX_COUNT,
                 f"an integer >= {bound} and <= {MAX_COUNT:,} (2**31 - 1)")


FINITE = Check(math.isfinite, "a finite number")
POSITIVE = Check(lambda value: math.isfinite(value) and value > 0, "a finite number > 0")
NON_NEGATIVE = Check(lambda value: math.isfinite(value) and value >= 0, "a finite number >= 0")
OPEN_UNIT = Check(lambda value: 0 < value < 1, "a number in (0, 1)")
UNIT = Check(lambda value: 0 <= value <= 1, "a number in [0, 1]")
# The added school's standard error obeys the data's bounds (validation.MIN_SIGMA, MAX_MAGNITUDE): outside
# them its square under- or overflows float64 (1e-300 gave a cell of NaN and then a TypeError, issue #13).
NEW_SIGMA = Check(lambda value: MIN_SIGMA <= value <= MAX_MAGNITUDE,
                  f"a standard error from {MIN_SIGMA:.0e} to {MAX_MAGNITUDE:.0e}".replace("e+", "e")
                  + ", as the data's sigmas (its square must stay a normal float64 number)")
# jax.random.key keeps only the low 32 bits of a larger seed, so 2**32 would silently be seed 0.
SEED = Check(lambda value: 0 <= value < 2**32, "an integer in [0, 2**32)")
# The name becomes the directory runs/<name>, so it must be a single path component.
RUN_NAME = Check(
    lambda value: value.isprintable() and value.strip() not in ("", ".", "..") and not set("/\\") & set(value),
    "a non-empty printable name without / or \\ (it names the directory runs/<name>)",
)

# The prior-sensitivity curves' grid: at most this many points (each is one more exact posterior and its
# derivative, so the cost grows with them), spanning at most this factor either side of model.tau_scale.
MAX_GRID_POINTS, MAX_GRID_FACTOR = 201, 1e6

# Top-level keys map to a Spec, sections (TOML tables) to a dict of them. Sections appear in the
# resolved configuration in this order.
SCHEMA = {
    "name": Spec(str, check=RUN_NAME),
    "data": {
        "path": Spec(str, path=True),
        "dataset": Spec(str, choices=("",) + BUILT_IN_DATASETS),
        "measure": Spec(str, choices=("",) + MEASURES),
    },
    "model": {
        # model.prior, or its two parts mu_prior and tau_prior (with tau_shape): load_config resolves them into
        # model.prior, a kind string of jaxschools.core.prior_families.
        "prior": Spec(str, choices=PRIORS, also=PRIOR_KIND, optional=True),
        "mu_prior": Spec(str, choices=prior_families.MU_PRIORS, optional=True),
        "tau_prior": Spec(str, choices=tuple(prior_families.FAMILIES), optional=True),
        "tau_shape": Spec(float, check=POSITIVE, optional=True),
        "parameterization": Spec(str, choices=PARAMETERIZATIONS),
        "mu_loc": Spec(float, check=FINITE),
        "mu_scale": Spec(float, check=POSITIVE),
        "tau_scale": Spec(float, check=POSITIVE),
        "contrast": Spec(str, choices=PARAMETERIZATIONS, optional=True),
    },
    "classical": {
        # The classical random-effects section (jaxschools.app.classical_record); see default.toml.
        "methods": Spec(list[str], choices=CLASSICAL_METHODS),
        "level": Spec(float, check=OPEN_UNIT),
    },
    "laplace": {
        "max_iterations": Spec(int, check=at_least(1)),
    },
    "sampler": {
        "kernel": Spec(str, choices=KERNELS, also=USER_KERNEL),
        "scale": Spec(float, check=POSITIVE),
        "num_chains": Spec(int, check=at_least(1)),
        "num_samples": Spec(int, check=at_least(1)),
        "burn_in": Spec(int, check=at_least(0)),
        "seed": Spec(int, check=SEED),
        "init_spread": Spec(float, check=NON_NEGATIVE),
        # Warm-up adaptation and the gradient kernels (jaxschools.core.adaptation, kernels.hmc, kernels.nuts).
        "adapt": Spec(bool, optional=True),
        "target_accept": Spec(float, check=OPEN_UNIT, optional=True),
        "step_size": Spec(float, check=POSITIVE),
        "dense_mass": Spec(bool),
        "num_steps": Spec(int, check=at_least(1)),
        "jitter": Spec(float, check=UNIT),
        "max_depth": Spec(int, check=Check(lambda value: 1 <= value <= 16, "an integer from 1 to 16")),
    },
    "queries": {
        # Both derive from the data when absent; see check_queries and default.toml.
        "school": Spec(str, optional=True),
        "threshold": Spec(float, check=FINITE, optional=True),
    },
    "sweep": {
        "kind": Spec(str, choices=SWEEP_KINDS),
        "key": Spec(str),
        "values": Spec(list[float], check=FINITE),
        "priors": Spec(list[str], choices=PRIORS, also=PRIOR_KIND),
        "school": Spec(str, optional=True),
        "new_sigma": Spec(float, check=NEW_SIGMA, optional=True),
        "chunk_size": Spec(int, check=at_least(1)),
    },
    "simulation": {
        "num_datasets": Spec(int, check=at_least(0)),
        "priors": Spec(list[str], choices=PRIORS),
        "mu": Spec(float, check=FINITE),
        "tau": Spec(float, check=POSITIVE),
        "num_chains": Spec(int, check=at_least(1)),
        "num_samples": Spec(int, check=at_least(1)),
        "burn_in": Spec(int, check=at_least(0)),
        "num_ranks": Spec(int, check=at_least(1)),
        "levels": Spec(list[float], check=Check(lambda v: 0 < v < 1, "a number in (0, 1)")),
        "band_level": Spec(float, check=Check(lambda v: 0 < v < 1, "a number in (0, 1)")),
        "batch_size": Spec(int, check=at_least(1)),
    },
    "sensitivity": {
        # The report's Sensitivity section (jaxschools.app.sensitivity_record); see default.toml.
        "enabled": Spec(bool),
        "tau_scale_points": Spec(int, check=Check(lambda value: 2 <= value <= MAX_GRID_POINTS,
                                                  f"an integer from 2 to {MAX_GRID_POINTS}")),
        "tau_scale_factor": Spec(float, check=Check(lambda value: 1 < value <= MAX_GRID_FACTOR,
                                                    f"a number > 1 and <= {MAX_GRID_FACTOR:g}")),
    },
    "output": {
        "dir": Spec(str),
        "netcdf": Spec(bool),
        "figures": Spec(bool),
    },
    "run": {
        # The memory a run may plan to use (jaxschools.app.resources); default: a share of this machine's.
        "max_memory_gb": Spec(float, check=POSITIVE, optional=True),
    },
}

_TYPE_NAMES = {str: "a string", bool: "a boolean (true or false)", int: "an integer", float: "a number"}


def parse_set(item):
    """Split a ``--set`` item ``section.key=value`` (or a top-level ``key=value``) into ``(section, key, value)``.

    ``section`` is None for a top-level key. The value is read as a TOML value (``1`` an int, ``1.5`` a
    float, ``true`` a bool, ``"x"`` a string, ``[1, 2]`` an array), and anything that is not one is kept as
    the bare string, so ``--set sampler.kernel=hmc`` needs no quotes. A missing ``=`` or an empty section
    or key raises InputError.
    """
    dotted, equals, text = item.partition("=")
    dotted, text = dotted.strip(), text.strip()
    if not equals or not all(dotted.split(".")):
        raise InputError(f"--set {item!r}: expected section.key=value, e.g. sampler.scale=1.5")
    try:
        document = tomllib.loads(f"v = {text}")
    except tomllib.TOMLDecodeError:
        document = {}
    # A value with a newline in it could smuggle in more keys; only a lone value counts as TOML.
    value = document["v"] if document.keys() == {"v"} else text
    section, _, key = dotted.rpartition(".")
    return section or None, key, value


def load_config(path=None, sets=(), data=None):
    """Resolve the run configuration; return it as a plain nested dict, every schema key present.

    Layers, later winning: the embedded ``configs/default.toml``; the TOML file at ``path`` (a relative
    ``data.path`` in it is relative to the file's directory); each ``--set`` item of ``sets`` (see
    :func:`parse_set`; paths relative to the current directory); ``data``, the ``--data FILE`` override
    (relative to the current directory). Paths are stored absolute. The run's ``name`` is the file's
    ``name`` key, else the file's stem, else ``"eight_schools"``. Optional keys left unset are None.

    Raises InputError naming the file (or ``--set`` item) and the key for: a config file that is missing,
    a directory, not UTF-8 or not valid TOML; an unknown section or key (suggesting a close match); a
    value of the wrong type or outside what the key allows.
    """
    config = _skeleton(SCHEMA)
    cwd = pathlib.Path.cwd()
    default = importlib.resources.files("jaxschools").joinpath("configs", "default.toml")
    _merge(config, tomllib.loads(default.read_text(encoding="utf-8")), SCHEMA, "default config", cwd)

    if path is not None:
        document = _read_toml(path)
        base = pathlib.Path(path).absolute().parent
        _merge(config, document, SCHEMA, str(path), base)
        if "name" not in document:
            _merge(config, {"name": pathlib.Path(path).stem}, SCHEMA, str(path), base)

    for item in sets:
        section, key, value = parse_set(item)
        layer = {key: value}
        for part in reversed(section.split(".") if section else []):
            layer = {part: layer}
        _merge(config, layer, SCHEMA, "--set", cwd)

    if data is not None:
        # --data NAME: a file of that name if there is one, else a built-in dataset of that name; it replaces
        # the config's choice of data either way.
        data = os.fspath(data)
        if data in BUILT_IN_DATASETS and not (cwd / data).exists():
            _merge(config, {"data": {"path": "", "dataset": data}}, SCHEMA, "--data", cwd)
        else:
            _merge(config, {"data": {"path": data, "dataset": ""}}, SCHEMA, "--data", cwd)
    if config["data"]["path"] and config["data"]["dataset"]:
        raise InputError(f"data.path ({config['data']['path']}) and data.dataset ({config['data']['dataset']!r}) "
                         "are both set: give one (a data file or a built-in dataset)")

    _resolve_prior(config["model"])
    unset = [name for name, spec in _leaves(SCHEMA) if not spec.optional and _get(config, name) is None]
    if unset:
        raise JaxschoolsError(f"configs/default.toml gives no value for {', '.join(unset)}")
    return config


def _resolve_prior(model: dict) -> None:
    """model.prior from its parts: ``mu_prior`` (default flat, as bayesmeta's) and ``tau_prior`` (default
    uniform) with ``tau_shape``, into one kind string, the parts then cleared (so the resolved config, written
    back, means the same); model.prior alone is kept (default "flat"). Both at once is an error."""
    parts = {key: model[key] for key in ("mu_prior", "tau_prior", "tau_shape") if model[key] is not None}
    if model["prior"] is not None and parts:
        raise InputError(f"model.prior ({model['prior']!r}) and model.{' / model.'.join(parts)} are both set: "
                         "model.prior is a shorthand for the pair; give one or the other")
    if not parts:
        model["prior"] = model["prior"] or "flat"
        return
    try:
        model["prior"] = prior_families.kind_of(model["mu_prior"] or "flat", model["tau_prior"] or "uniform",
                                                model["tau_shape"])
    except ValueError as error:
        raise InputError(f"model: {error}") from None
    if model["tau_shape"] is not None and not prior_families.FAMILIES[model["tau_prior"] or "uniform"].shape:
        raise InputError(f"model.tau_shape is set, but the {model['tau_prior'] or 'uniform'} prior has no shape")
    model.update(mu_prior=None, tau_prior=None, tau_shape=None)


def output_dir(config):
    """The run's output directory: ``output.dir`` when set, else ``runs/<name>``."""
    return pathlib.Path(config["output"]["dir"] or pathlib.Path("runs", config["name"]))


def check_queries(config, names):
    """Check ``queries.school`` (when set) against the data's school ``names``; InputError listing them."""
    school = config["queries"]["school"]
    if school is None or school in names:
        return
    shown = ", ".join(repr(name) for name in list(names)[:20])
    if len(names) > 20:
        shown += f", ... ({len(names)} in all)"
    near = difflib.get_close_matches(school, list(names), n=1)
    hint = f"; did you mean {near[0]!r}?" if near else ""
    raise InputError(f"queries.school = {school!r} is not a school in the data (its schools: {shown}){hint}")


def adapts(sampler) -> bool:
    """Whether warm-up adapts the kernel: ``sampler.adapt`` when set, else on for every kernel but ``rwmh``
    (whose fixed scale is the seed's)."""
    return sampler["adapt"] if sampler["adapt"] is not None else sampler["kernel"] != "rwmh"


def check_sampler(config):
    """Check ``[sampler]``'s keys against each other; InputError naming the key.

    A user's kernel has no known acceptance target (0.574 suits MALA, 0.8 HMC, 0.234 a random walk in many
    dimensions), so adapting it needs ``sampler.target_accept``.
    """
    sampler = config["sampler"]
    if sampler["kernel"] in ("hmc", "nuts") and prior_families.spec(config["model"]["prior"]).tau == "uniform_bounded":
        # Its density jumps to 0 at the bound: leapfrog trajectories cross it into infinite energy and diverge.
        raise InputError(f"model.prior {config['model']['prior']!r}: the bounded uniform prior on tau has no gradient "
                         f"across its bound, so sampler.kernel = {sampler['kernel']!r} cannot sample it; use "
                         "'rwmh' (the exact posterior is unaffected)")
    if is_user_kernel(sampler["kernel"]) and adapts(sampler) and sampler["target_accept"] is None:
        raise InputError(
            f"sampler.target_accept is not set: warm-up adapts the user kernel {sampler['kernel']!r} toward it "
            "(e.g. 0.574 for MALA); set it, or sampler.adapt = false"
        )


def check_sensitivity(config):
    """Check ``[sensitivity]`` against ``[model]``; InputError naming the key.

    A proper prior's curves run over tau_scale from model.tau_scale / tau_scale_factor to model.tau_scale x
    tau_scale_factor: both ends must stay within the magnitudes the data may have (``validation.MIN_SIGMA`` to
    ``MAX_MAGNITUDE``), where their squares are still normal float64 numbers.
    """
    options, model = config["sensitivity"], config["model"]
    if not options["enabled"] or not prior_families.spec(model["prior"]).has_prior_scales:
        return
    low, high = model["tau_scale"] / options["tau_scale_factor"], model["tau_scale"] * options["tau_scale_factor"]
    if not (MIN_SIGMA <= low and high <= MAX_MAGNITUDE):
        raise InputError(
            f"sensitivity.tau_scale_factor = {_show(options['tau_scale_factor'])}: the prior-sensitivity grid from "
            f"model.tau_scale / factor = {low:.3g} to model.tau_scale x factor = {high:.3g} leaves "
            f"[{MIN_SIGMA:.0e}, {MAX_MAGNITUDE:.0e}]; lower the factor (or set sensitivity.enabled = false)"
            .replace("e+", "e")
        )


def check_experiment(config, names):
    """Check ``[sampler]``, ``[sweep]`` and ``[simulation]`` against each other and the data, and
    ``[sensitivity]`` against ``[model]`` (:func:`check_sensitivity`); InputError naming the key.

    Pure Python, so a sweep that cannot run is refused before JAX is imported: a "config" sweep needs a
    vmappable key (``SWEEPABLE_KEYS``) that the kernel uses (``sampler.scale`` is the random walk's,
    ``sampler.step_size`` that of every other kernel) and that warm-up does not tune, and values that key accepts; data sweeps need values
    (positive ones for scale_sigma) and a school in the data; every cell must keep enough schools for its prior;
    a simulation study ranks the truth among at most as many draws as it keeps (``num_ranks``).
    """
    check_sampler(config)
    check_sensitivity(config)
    sweep = config["sweep"]
    kind = sweep["kind"]
    kernel = config["sampler"]["kernel"]
    if kind == "config" and sweep["key"] in ("sampler.scale", "sampler.step_size"):
        used = "sampler.scale" if kernel == "rwmh" else "sampler.step_size"
        if sweep["key"] != used:
            raise InputError(
                f"sweep.key = {_show(sweep['key'])}: sampler.kernel = {_show(kernel)} does not use it, so every "
                f"cell would run the same inference; sweep {used} instead"
            )
        if adapts(config["sampler"]):
            raise InputError(
                f"sweep.key = {_show(sweep['key'])}: warm-up adapts it (sampler.adapt is on for sampler.kernel = "
                f"{_show(kernel)}), so the cells would differ only in where the tuning starts; set "
                "sampler.adapt = false to sweep it"
            )
    if sweep["school"] is not None and sweep["school"] not in names:
        raise InputError(f"sweep.school = {sweep['school']!r} is not a school in the data")
    if kind == "config":
        if sweep["key"] not in SWEEPABLE_KEYS:
            raise InputError(
                f"sweep.key = {_show(sweep['key'])}: expected one of {', '.join(SWEEPABLE_KEYS)} "
                "(numeric keys that every cell can share one compilation for)"
            )
        section, key = sweep["key"].split(".")
        spec = SCHEMA[section][key]
        for value in sweep["values"]:
            _value(spec, value, f"sweep.values: {sweep['key']} = {_show(value)}", ".")
    if kind in ("config", "set_y", "shift_y", "scale_sigma", "add_school") and not sweep["values"]:
        raise InputError(f"sweep.values is empty; a {kind!r} sweep needs at least one value")
    if kind == "scale_sigma":
        for value in sweep["values"]:
            _value(Spec(float, check=POSITIVE), value, f"sweep.values = {_show(value)} (a factor on sigma)", ".")
    if kind == "prior" and not sweep["priors"]:
        raise InputError("sweep.priors is empty; a 'prior' sweep needs at least one prior")
    priors = sweep["priors"] if kind == "prior" else [config["model"]["prior"]]
    num_schools = len(names) - (kind == "leave_one_out") + (kind == "add_school")
    for prior in priors:
        check_groups(num_schools, prior)
    if config["simulation"]["num_datasets"]:
        for prior in config["simulation"]["priors"]:
            check_groups(len(names), prior)
        sim = config["simulation"]
        draws = sim["num_chains"] * sim["num_samples"]
        if sim["num_ranks"] > draws:
            # The ranks are taken among num_ranks evenly thinned draws: more ranks than draws would repeat
            # draws, and the ranks of a correct sampler would then not be uniform (a false calibration failure).
            raise InputError(
                f"simulation.num_ranks = {sim['num_ranks']} is more than the {draws} draws each simulated "
                f"dataset keeps (simulation.num_chains x simulation.num_samples); lower num_ranks or raise "
                "num_samples"
            )


def _read_toml(path):
    # A config is small: read with input_files.MAX_CONFIG_BYTES, so /dev/zero or a data file given by
    # mistake is refused at once rather than read into memory and parsed.
    text = read_text(path, "config file", MAX_CONFIG_BYTES)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise InputError(f"{path}: malformed TOML: {error}") from None


def _skeleton(schema):
    """A config with every key None, in schema order."""
    return {name: _skeleton(spec) if isinstance(spec, dict) else None for name, spec in schema.items()}


def _merge(config, layer, schema, origin, base, prefix=""):
    """Check ``layer`` (a parsed TOML table) against ``schema`` and write its values into ``config``."""
    for name, value in layer.items():
        dotted = prefix + name
        spec = schema.get(name)
        if spec is None:
            raise InputError(f"{origin}: {_unknown(dotted, schema, isinstance(value, dict))}")
        if isinstance(spec, dict):
            if not isinstance(value, dict):
                raise InputError(f"{origin}: {dotted} is a section ([{dotted}]), not a value; got {_show(value)}")
            _merge(config[name], value, spec, origin, base, dotted + ".")
        else:
            config[name] = _value(spec, value, f"{origin}: {dotted} = {_show(value)}", base)


def _value(spec, value, where, base):
    """``value`` checked against ``spec`` and converted; ``where`` starts any error message."""
    if not isinstance(spec.type, types.GenericAlias):
        return _element(spec, spec.type, value, where, _TYPE_NAMES[spec.type], base)
    element_type = spec.type.__args__[0]
    expected = f"a list, each element {_TYPE_NAMES[element_type]}"
    if not isinstance(value, list):
        raise InputError(f"{where}: expected {expected}")
    return [_element(spec, element_type, element, where, expected, base) for element in value]


def _element(spec, type_, value, where, expected, base):
    # TOML has typed the value already, so nothing is parsed from strings here.
    if isinstance(value, bool) != (type_ is bool):
        # bool subclasses int, and true is not a number of chains.
        raise InputError(f"{where}: expected {expected}")
    if type_ is float and isinstance(value, int):
        value = float(value)
    if not isinstance(value, type_):
        raise InputError(f"{where}: expected {expected}")
    if spec.choices and value not in spec.choices and not (spec.also and spec.also.test(value)):
        near = difflib.get_close_matches(value, spec.choices, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        other = f", or {spec.also.expect}" if spec.also else ""
        raise InputError(f"{where}: expected one of {', '.join(repr(c) for c in spec.choices)}{other}{hint}")
    if spec.check and not spec.check.test(value):
        raise InputError(f"{where}: expected {spec.check.expect}")
    if spec.path and value:
        value = os.path.normpath(pathlib.Path(base, pathlib.Path(value).expanduser()))
    return value


def _unknown(dotted, table, is_section):
    """The message for a name not in ``table``, with the closest known name when there is one."""
    prefix = dotted.rpartition(".")[0]
    name = dotted.rpartition(".")[2]
    what = "section" if is_section and not prefix else "key"
    # A key put in the wrong section (sampler.prior) is found by its own name; a typo by similarity.
    near = [known for known, _ in _leaves(SCHEMA) if known.rpartition(".")[2] == name]
    similar = difflib.get_close_matches(name, list(table), n=1)
    near += [f"{prefix}.{known}" if prefix else known for known in similar]
    hint = f"; did you mean {near[0]}?" if near else ""
    scope = f"in [{prefix}]" if prefix else "at the top level"
    return f"unknown {what} {dotted}{hint} (known {scope}: {', '.join(table)})"


def _leaves(schema, prefix=""):
    """Every ``(dotted name, Spec)`` in ``schema``."""
    for name, spec in schema.items():
        if isinstance(spec, dict):
            yield from _leaves(spec, prefix + name + ".")
        else:
            yield prefix + name, spec


def _get(config, dotted):
    for part in dotted.split("."):
        config = config[part]
    return config


def _show(value):
    """``value`` as the user would write it in TOML."""
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return json.dumps(value, default=str)


def __dir__():
    # The public names only, not the imports (``dir(js.diagnostics)`` lists no ``jax`` or ``jnp``).
    return list(__all__)
