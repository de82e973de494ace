"""Tests of jaxschools.app.config: the schema, --set parsing and the layered resolution of a run's configuration."""

import json
import math
import os
import pathlib
import re
import subprocess
import sys

import pytest

from jaxschools.app import config as config_module
from jaxschools.app.config import SCHEMA, check_queries, load_config, output_dir, parse_set
from jaxschools.errors import InputError

REPO = pathlib.Path(__file__).resolve().parents[1]

# The seed analysis (flat prior, Laplace, RWMH with scale 2 and the Laplace covariance, 4 chains,
# 5,000 burn-in + 5,000 kept draws, seed 0), spelled out independently of default.toml.
SEED_ANALYSIS = {
    "name": "eight_schools",
    "data": {"path": ""},
    "model": {"prior": "flat", "parameterization": "marginal", "mu_loc": 0.0, "mu_scale": 5.0, "tau_scale": 5.0},
    "laplace": {"max_iterations": 100},
    "sampler": {
        "kernel": "rwmh",
        "scale": 2.0,
        "num_chains": 4,
        "num_samples": 5000,
        "burn_in": 5000,
        "seed": 0,
        "init_spread": 2.0,
    },
    "queries": {"school": None, "threshold": None},
    "output": {"dir": "", "netcdf": False, "figures": True},
}


def write(tmp_path, filename, content):
    path = tmp_path / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def as_toml(config):
    """A config dict as TOML text; JSON spells these scalar types as TOML does."""
    lines = [f"{key} = {json.dumps(value)}" for key, value in config.items() if not isinstance(value, dict)]
    for section, table in config.items():
        if isinstance(table, dict):
            lines.append(f"[{section}]")
            lines += [f"{key} = {json.dumps(value)}" for key, value in table.items() if value is not None]
    return "\n".join(lines) + "\n"


# --- the default ------------------------------------------------------------------------------------------------


def test_default_config_is_the_seed_analysis():
    config = load_config()
    for section, values in SEED_ANALYSIS.items():  # later issues add keys; the seed's values stay
        if isinstance(values, dict):
            assert {key: config[section][key] for key in values} == values, section
        else:
            assert config[section] == values
    assert config["sweep"]["kind"] == "none" and config["simulation"]["num_datasets"] == 0  # neither runs
    assert list(config) == list(SCHEMA)  # sections in schema order
    assert isinstance(config["sampler"]["scale"], float) and isinstance(config["sampler"]["seed"], int)


def test_default_config_round_trips_through_json_and_toml(tmp_path):
    config = load_config()
    assert json.loads(json.dumps(config)) == config
    assert load_config(write(tmp_path, "again.toml", as_toml(config))) == config


def test_default_toml_documents_every_key():
    text = (REPO / "jaxschools" / "configs" / "default.toml").read_text(encoding="utf-8")
    lines = text.splitlines()
    keys = [index for index, line in enumerate(lines) if line and not line.startswith(("#", "["))]
    assert keys
    for index in keys:
        assert lines[index - 1].startswith("#"), f"default.toml: no comment above {lines[index]!r}"


def test_loading_does_not_change_the_result_of_a_later_load():
    before = load_config()
    load_config(sets=["sampler.scale=9"])
    assert load_config() == before


# --- --set ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "item, expected",
    [
        ("sampler.num_chains=8", ("sampler", "num_chains", 8)),
        ("sampler.scale=1.5", ("sampler", "scale", 1.5)),
        ("sampler.scale=1e-3", ("sampler", "scale", 0.001)),
        ("sampler.seed=1_000", ("sampler", "seed", 1000)),
        ("output.netcdf=true", ("output", "netcdf", True)),
        ("output.figures = false", ("output", "figures", False)),
        ('model.prior="half_cauchy"', ("model", "prior", "half_cauchy")),
        ("model.prior='half_normal'", ("model", "prior", "half_normal")),
        ("sampler.kernel=hmc", ("sampler", "kernel", "hmc")),
        ("name=my run", (None, "name", "my run")),
        ("data.path=../data/trials.csv", ("data", "path", "../data/trials.csv")),
        ("data.path=", ("data", "path", "")),
        ("sweep.scales=[0.5, 1, 2]", ("sweep", "scales", [0.5, 1, 2])),
        ("queries.threshold=-inf", ("queries", "threshold", -math.inf)),
        ("a.b=x=y", ("a", "b", "x=y")),
        ("name=x\nextra = 1", (None, "name", "x\nextra = 1")),
    ],
)
def test_parse_set(item, expected):
    assert parse_set(item) == expected


@pytest.mark.parametrize("item", ["sampler.scale", "=1.5", "sampler.=1", ".scale=1", "sampler..scale=1", ""])
def test_parse_set_rejects_malformed_items(item):
    with pytest.raises(InputError, match="expected section.key=value"):
        parse_set(item)


def test_sets_override_in_order_and_ints_become_floats():
    config = load_config(sets=["sampler.scale=3", "sampler.num_chains=2", "sampler.scale=1.5", "model.mu_loc=-1"])
    assert config["sampler"]["scale"] == 1.5 and config["sampler"]["num_chains"] == 2
    assert config["model"]["mu_loc"] == -1.0 and isinstance(config["model"]["mu_loc"], float)
    assert isinstance(load_config(sets=["sampler.scale=3"])["sampler"]["scale"], float)


def test_optional_keys_take_values():
    config = load_config(sets=["queries.school=C", "queries.threshold=10"])
    assert config["queries"] == {"school": "C", "threshold": 10.0}


BAD_SETS = {
    # id: (item, fragments)
    "unknown-key-typo": ("sampler.scal=1", ["unknown key sampler.scal", "did you mean sampler.scale?"]),
    "unknown-key-wrong-section": (
        "sampler.prior=flat",
        ["unknown key sampler.prior", "did you mean model.prior?"],
    ),
    "unknown-top-level-key": ("seed=1", ["unknown key seed", "did you mean sampler.seed?"]),
    "unknown-section": ("sampling.scale=1", ["unknown section sampling", "did you mean sampler?"]),
    "unknown-no-suggestion": ("zzz.qqq=1", ["unknown section zzz", "known at the top level: name, data, model"]),
    "section-as-value": ("sampler=3", ["sampler is a section ([sampler])"]),
    "bool-is-not-int": ("sampler.num_chains=true", ["sampler.num_chains = true", "expected an integer"]),
    "float-is-not-int": ("sampler.num_samples=2.5", ["sampler.num_samples = 2.5", "expected an integer"]),
    "string-is-not-float": ("sampler.scale=big", ['sampler.scale = "big"', "expected a number"]),
    "bare-decimal-is-a-string": ("sampler.scale=.5", ['sampler.scale = ".5"', "expected a number"]),
    "bool-is-not-float": ("model.mu_loc=false", ["model.mu_loc = false", "expected a number"]),
    "number-is-not-string": ("model.prior=1", ["model.prior = 1", "expected a string"]),
    "string-is-not-bool": ("output.netcdf=yes", ['output.netcdf = "yes"', "expected a boolean"]),
    "array-is-not-float": ("sampler.scale=[1, 2]", ["sampler.scale = [1, 2]", "expected a number"]),
    "unknown-prior": ("model.prior=flatt", ['model.prior = "flatt"', "'flat', 'half_cauchy'", "did you mean 'flat'"]),
    "unknown-parameterization": ("model.parameterization=centred", ["did you mean 'centered'"]),
    "unknown-kernel": ("sampler.kernel=mala", ['sampler.kernel = "mala"', "one of 'rwmh', 'hmc', 'nuts'"]),
    "zero-scale": ("sampler.scale=0", ["sampler.scale = 0", "a finite number > 0"]),
    "negative-scale": ("sampler.scale=-1.5", ["sampler.scale = -1.5", "> 0"]),
    "infinite-scale": ("sampler.scale=inf", ["sampler.scale = inf", "a finite number > 0"]),
    "nan-scale": ("sampler.scale=nan", ["sampler.scale = nan", "finite"]),
    "zero-mu-scale": ("model.mu_scale=0", ["model.mu_scale = 0", "> 0"]),
    "negative-tau-scale": ("model.tau_scale=-5", ["model.tau_scale = -5", "> 0"]),
    "infinite-mu-loc": ("model.mu_loc=inf", ["model.mu_loc = inf", "a finite number"]),
    "zero-chains": ("sampler.num_chains=0", ["sampler.num_chains = 0", "an integer >= 1"]),
    "zero-samples": ("sampler.num_samples=0", ["sampler.num_samples = 0", "an integer >= 1"]),
    "negative-burn-in": ("sampler.burn_in=-1", ["sampler.burn_in = -1", "an integer >= 0"]),
    "negative-seed": ("sampler.seed=-1", ["sampler.seed = -1", "[0, 2**32)"]),
    "seed-too-large": ("sampler.seed=4294967296", ["[0, 2**32)"]),
    "zero-iterations": ("laplace.max_iterations=0", ["laplace.max_iterations = 0", "an integer >= 1"]),
    "negative-spread": ("sampler.init_spread=-0.1", ["sampler.init_spread = -0.1", "a finite number >= 0"]),
    "nan-threshold": ("queries.threshold=nan", ["queries.threshold = nan", "a finite number"]),
    "name-with-slash": ("name=a/b", ['name = "a/b"', "without / or"]),
    "name-dot-dot": ("name=..", ["name = \"..\"", "runs/<name>"]),
    "name-empty": ("name=", ['name = ""', "non-empty"]),
    "name-newline": ("name=x\nextra = 1", ["printable"]),
    "sensitivity-typo": ("sensitivity.enable=false", ["unknown key sensitivity.enable",
                                                      "did you mean sensitivity.enabled?"]),
    "sensitivity-enabled-not-bool": ("sensitivity.enabled=1", ["sensitivity.enabled = 1", "expected a boolean"]),
    "sensitivity-one-point": ("sensitivity.tau_scale_points=1", ["sensitivity.tau_scale_points = 1",
                                                                 "an integer from 2 to 201"]),
    "sensitivity-too-many-points": ("sensitivity.tau_scale_points=202", ["an integer from 2 to 201"]),
    "sensitivity-fractional-points": ("sensitivity.tau_scale_points=2.5", ["expected an integer"]),
    "sensitivity-factor-one": ("sensitivity.tau_scale_factor=1", ["sensitivity.tau_scale_factor = 1",
                                                                  "a number > 1 and <= 1e+06"]),
    "sensitivity-factor-below-one": ("sensitivity.tau_scale_factor=0.5", ["a number > 1"]),
    "sensitivity-factor-huge": ("sensitivity.tau_scale_factor=1e7", ["a number > 1 and <= 1e+06"]),
    "sensitivity-factor-inf": ("sensitivity.tau_scale_factor=inf", ["sensitivity.tau_scale_factor = inf"]),
    "sensitivity-factor-nan": ("sensitivity.tau_scale_factor=nan", ["sensitivity.tau_scale_factor = nan"]),
}


@pytest.mark.parametrize("item, fragments", BAD_SETS.values(), ids=BAD_SETS.keys())
def test_bad_set(item, fragments):
    with pytest.raises(InputError) as raised:
        load_config(sets=[item])
    message = str(raised.value)
    assert message.startswith("--set: ")
    for fragment in fragments:
        assert fragment in message


def test_sensitivity_defaults():
    options = load_config()["sensitivity"]
    assert options == {"enabled": True, "tau_scale_points": 25, "tau_scale_factor": 10.0}


@pytest.mark.parametrize("prior, tau_scale, factor, refused", [
    ("half_cauchy", 1e140, 1e6, False),  # the grid reaches 1e146
    ("half_cauchy", 1e145, 1e6, True),  # 1e151: beyond the data's largest magnitude
    ("half_normal", 1e-145, 1e6, True),  # 1e-151: below the smallest
    ("half_normal", 1e-144, 1e6, False),
    ("flat", 1e145, 1e6, False),  # the flat prior has no scale: no curves, nothing to refuse
])
def test_the_prior_grid_stays_within_the_datas_magnitudes(prior, tau_scale, factor, refused):
    """check_sensitivity (through check_experiment, which the command line runs before JAX starts) refuses a
    prior-sensitivity grid whose ends leave [1e-150, 1e150], naming the key; not with the flat prior or the
    section off."""
    sets = [f"model.prior={prior}", f"model.tau_scale={tau_scale!r}", f"sensitivity.tau_scale_factor={factor!r}"]
    config = load_config(sets=sets)
    if refused:
        with pytest.raises(InputError, match=r"^sensitivity\.tau_scale_factor = 1000000\.0: the prior-sensitivity grid"):
            config_module.check_experiment(config, list("ABCDEFGH"))
        config_module.check_experiment(load_config(sets=sets + ["sensitivity.enabled=false"]), list("ABCDEFGH"))
    else:
        config_module.check_experiment(config, list("ABCDEFGH"))


# --- config files -----------------------------------------------------------------------------------------------


def test_config_file_overrides_defaults_and_sets_override_the_file(tmp_path):
    path = write(tmp_path, "scales.toml", 'name = "s"\n[sampler]\nscale = 1.0\nnum_chains = 2\n')
    config = load_config(path, sets=["sampler.scale=0.5"])
    assert config["name"] == "s"
    assert config["sampler"]["scale"] == 0.5 and config["sampler"]["num_chains"] == 2
    assert config["sampler"]["num_samples"] == SEED_ANALYSIS["sampler"]["num_samples"]


def test_run_name_is_the_name_key_else_the_file_stem(tmp_path):
    assert load_config(write(tmp_path, "priors.toml", "[model]\nprior = 'half_cauchy'\n"))["name"] == "priors"
    assert load_config(write(tmp_path, "p.toml", "name = 'mine'\n"))["name"] == "mine"
    assert load_config(write(tmp_path, "p.toml", "name = 'mine'\n"), sets=["name=other"])["name"] == "other"
    assert load_config()["name"] == "eight_schools"


def test_relative_data_path_is_relative_to_the_config_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, "experiments/run.toml", "[data]\npath = '../data/trials.csv'\n")
    config = load_config(pathlib.Path("experiments/run.toml"))
    assert config["data"]["path"] == str(tmp_path / "data" / "trials.csv")
    assert pathlib.Path(config["data"]["path"]).is_absolute()
    assert load_config(path)["data"] == config["data"]


def test_absolute_and_empty_data_paths_are_kept(tmp_path):
    absolute = tmp_path / "elsewhere" / "x.json"
    path = write(tmp_path, "a.toml", f"[data]\npath = '{absolute}'\n")
    assert load_config(path)["data"]["path"] == str(absolute)
    assert load_config(write(tmp_path, "b.toml", "[data]\npath = ''\n"))["data"]["path"] == ""


def test_data_override_and_set_paths_are_relative_to_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, "experiments/run.toml", "[data]\npath = 'from_file.csv'\n")
    assert load_config(path, data="mine.csv")["data"]["path"] == str(tmp_path / "mine.csv")
    assert load_config(path, data=pathlib.Path("d/mine.csv"))["data"]["path"] == str(tmp_path / "d" / "mine.csv")
    assert load_config(path, sets=["data.path=set.csv"])["data"]["path"] == str(tmp_path / "set.csv")
    # --data is applied after --set
    config = load_config(path, sets=["data.path=set.csv"], data="mine.csv")
    assert config["data"]["path"] == str(tmp_path / "mine.csv")


BAD_FILES = {
    # id: (content, fragments); None content means: no file at all
    "missing": (None, ["no such file"]),
    "not-utf8": (b"name = 'caf\xe9'\n", ["not UTF-8", "byte 0xe9"]),
    "malformed-toml": ("[sampler]\nscale = \n", ["malformed TOML", "line 2, column 9"]),
    "unclosed-table": ("[sampler\nscale = 1\n", ["malformed TOML", "line 1"]),
    "unknown-key": ("[sampler]\nnum_chain = 2\n", ["unknown key sampler.num_chain", "mean sampler.num_chains?"]),
    "unknown-section": ("[sampling]\nscale = 1.0\n", ["unknown section sampling", "did you mean sampler?"]),
    "nested-table": ("[model.extra]\nx = 1\n", ["unknown key model.extra"]),
    "section-as-value": ("model = 'flat'\n", ["model is a section ([model])", '"flat"']),
    "value-as-table": ("[name]\nx = 1\n", ["name = a table", "expected a string"]),
    "wrong-type": ("[sampler]\nnum_chains = '4'\n", ['sampler.num_chains = "4"', "expected an integer"]),
    "bad-value": ("[model]\nprior = 'cauchy'\n", ["model.prior = \"cauchy\"", "did you mean 'half_cauchy'"]),
}


@pytest.mark.parametrize("content, fragments", BAD_FILES.values(), ids=BAD_FILES.keys())
def test_bad_config_file(tmp_path, content, fragments):
    path = tmp_path / "run.toml"
    if content is not None:
        write(tmp_path, "run.toml", content)
    with pytest.raises(InputError) as raised:
        load_config(path)
    message = str(raised.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_config_path_that_is_a_directory(tmp_path):
    with pytest.raises(InputError, match="is a directory"):
        load_config(tmp_path)


def test_empty_config_file_is_the_default_under_its_own_name(tmp_path):
    assert load_config(write(tmp_path, "empty.toml", "")) == {**load_config(), "name": "empty"}


# --- output directory and queries --------------------------------------------------------------------------------


def test_output_dir():
    assert output_dir(load_config()) == pathlib.Path("runs/eight_schools")
    assert output_dir(load_config(sets=["name=trial"])) == pathlib.Path("runs/trial")
    assert output_dir(load_config(sets=["output.dir=out/here"])) == pathlib.Path("out/here")


def test_check_queries_accepts_a_known_or_absent_school():
    check_queries(load_config(), ["A", "B"])
    check_queries(load_config(sets=["queries.school=B"]), ("A", "B"))


def test_check_queries_rejects_an_unknown_school():
    config = load_config(sets=["queries.school=Bee"])
    with pytest.raises(InputError) as raised:
        check_queries(config, ("A", "Be", "C"))
    message = str(raised.value)
    assert "queries.school = 'Bee' is not a school in the data" in message
    assert "'A', 'Be', 'C'" in message and "did you mean 'Be'?" in message


def test_check_queries_shortens_a_long_list_of_names():
    names = [f"s{index}" for index in range(100)]
    with pytest.raises(InputError, match=r"'s19', \.\.\. \(100 in all\)"):
        check_queries(load_config(sets=["queries.school=zzz"]), names)


# --- the schema as data ---------------------------------------------------------------------------------------


def test_a_new_section_needs_only_schema_entries(monkeypatch):
    scales = config_module.Spec(list[float], check=config_module.POSITIVE, optional=True)
    schema = {**SCHEMA, "extra": {"scales": scales}}
    monkeypatch.setattr(config_module, "SCHEMA", schema)
    assert load_config()["extra"] == {"scales": None}
    assert load_config(sets=["extra.scales=[0.5, 1, 2]"])["extra"]["scales"] == [0.5, 1.0, 2.0]
    with pytest.raises(InputError, match=r"extra.scales = \[1, -2\]: expected a finite number > 0"):
        load_config(sets=["extra.scales=[1, -2]"])
    with pytest.raises(InputError, match="extra.scales = 1: expected a list, each element a number"):
        load_config(sets=["extra.scales=1"])


# --- no JAX before input is checked ------------------------------------------------------------------------------


def test_input_layer_does_not_import_jax():
    code = (
        "import jaxschools.app.config, jaxschools.core.validation, sys; "
        "assert not any(m == 'jax' or m.startswith('jax.') for m in sys.modules)"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("sets, kind", [
    ([], "flat"),
    (["model.prior='half_cauchy'"], "half_cauchy"),
    (["model.mu_prior='normal'", "model.tau_prior='half_normal'"], "half_normal"),  # the shorthand's pair
    (["model.mu_prior='normal'", "model.tau_prior='lomax'", "model.tau_shape=1.5"], "normal+lomax:1.5"),
    (["model.tau_prior='jeffreys'"], "flat+jeffreys"),  # mu flat by default, as bayesmeta's
    (["model.prior='normal+log_t5:2.59'"], "normal+log_t5:2.59"),  # a resolved config reads back
])
def test_the_prior_in_two_parts_resolves_to_one_kind(sets, kind):
    model = load_config(sets=sets)["model"]
    assert model["prior"] == kind and model["mu_prior"] is None and model["tau_prior"] is None


@pytest.mark.parametrize("sets, message", [
    (["model.prior='flat'", "model.tau_prior='sqrt'"], "model.prior ('flat') and model.tau_prior are both set"),
    (["model.tau_prior='lomax'"], "the lomax prior needs tau_shape"),
    (["model.tau_prior='sqrt'", "model.tau_shape=2"], "model.tau_shape is set, but the sqrt prior has no shape"),
    (["model.tau_prior='gamma'"], "model.tau_prior"),
    (["model.prior='normal+gamma'"], "a prior kind"),
    (["model.mu_prior='normal'", "model.tau_prior='uniform_bounded'", "sampler.kernel='nuts'"],
     "no gradient across its bound"),
])
def test_bad_prior_parts_are_refused(sets, message):
    from jaxschools.app.config import check_sampler

    with pytest.raises(InputError, match=re.escape(message)):
        check_sampler(load_config(sets=sets))


@pytest.mark.parametrize("kind, num_schools", [("flat", 2), ("flat+sqrt", 1), ("flat+jeffreys", 1)])
def test_an_improper_prior_with_too_few_studies_is_refused(kind, num_schools):
    """One study fewer than the prior's tail allows (moments.min_schools): refused before JAX, naming the rule."""
    from jaxschools.core.validation import check_groups

    with pytest.raises(InputError, match=f"the {re.escape(kind)} prior needs at least .* the posterior is improper"):
        check_groups(num_schools, kind)
    check_groups(num_schools + 1, kind)
