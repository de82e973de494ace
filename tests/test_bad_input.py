"""The bad-input battery of `jaxschools run`: every malformed input is refused the same way.

Exit status 2, exactly one line on stderr, ``error: ...`` naming the problem (the line, column or key where
there is one), no traceback, nothing on stdout and nothing written anywhere, and all of it before JAX is
imported (so the answer is instant).

The messages themselves are the input layer's: ``tests/test_validation.py`` and ``tests/test_config.py`` check
their wording for every malformed data file, ``--set`` item and config file. Here each of those inputs goes
through the command line, and its one stderr line must be exactly ``error: `` plus the message the API gives
for the same input. The command-line-only cases (too few schools for the prior, unusable output folders,
argument errors, cross-checks of the config against the data) follow, with the fragments their line must name.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_config import BAD_FILES, BAD_SETS
from test_resources import SMALL_REFUSED
from test_validation import MALFORMED

from jaxschools.app import config as config_module
from jaxschools.core import validation
from jaxschools.cli import main
from jaxschools.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
EIGHT_CSV = "name,y,sigma\n" + "".join(
    f"{n},{y},{s}\n" for n, y, s in zip("ABCDEFGH", [28, 8, -3, 7, -1, 1, 18, 12], [15, 10, 16, 11, 9, 11, 10, 18])
)


class Case:
    """Input files (relative path -> text or bytes), the arguments (``{dir}`` is the case's folder), and
    either the API call whose InputError message the CLI must print (``api``) or fragments it must name."""

    def __init__(self, files, args, fragments=(), api=None):
        self.files, self.args, self.fragments, self.api = files, args, list(fragments), api

    def build(self, folder: Path):
        for name, content in self.files.items():
            path = folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if content is None:
                path.mkdir()
            else:
                path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
        args = [arg.replace("{dir}", str(folder)) for arg in self.args]
        if args[:1] == ["run"] and "--out" not in args:
            args += ["--out", str(folder / "out" / "run")]
        return args

    def expected(self, folder: Path):
        """The fragments the error line must contain: the API's whole message, or the listed fragments."""
        if self.api is None:
            return [fragment.replace("{dir}", str(folder)) for fragment in self.fragments]
        with pytest.raises(InputError) as raised:
            self.api(folder)
        return [f"error: {raised.value}"]


def _data_file_case(filename, content):
    return Case({filename: content}, ["run", "--data", "{dir}/" + filename],
                api=lambda folder: validation.read_table(str(folder / filename)))


def _set_case(item):
    return Case({}, ["run", "--set", item], api=lambda folder: config_module.load_config(sets=[item]))


def _config_file_case(content):
    files = {} if content is None else {"run.toml": content}
    return Case(files, ["run", "{dir}/run.toml"],
                api=lambda folder: config_module.load_config(str(folder / "run.toml")))


# Every malformed input the API-level tests know, now through the command line.
CASES = {f"data:{key}": _data_file_case(filename, content) for key, (filename, content, _) in MALFORMED.items()}
CASES.update({f"set:{key}": _set_case(item) for key, (item, _) in BAD_SETS.items()})
CASES.update({f"config:{key}": _config_file_case(content) for key, (content, _) in BAD_FILES.items()})

# What only the command line checks.
CASES.update({
    "data:file-does-not-exist": Case({}, ["run", "--data", "{dir}/nowhere.csv"], ["{dir}/nowhere.csv: no such file"]),
    "data:is-a-directory": Case({"folder": None}, ["run", "--data", "{dir}/folder"], ["{dir}/folder: is a directory"]),
    "data:path-in-config-does-not-exist": Case(
        {"conf/run.toml": "[data]\npath = 'trials.csv'\n"}, ["run", "{dir}/conf/run.toml"],
        ["{dir}/conf/trials.csv: no such file"],  # relative to the config file, and named in full
    ),
    "groups:flat-prior-two-schools": Case(
        {"two.csv": "name,y,sigma\nA,1,2\nB,3,1\n"}, ["run", "--data", "{dir}/two.csv"],
        ["the flat prior needs at least 3 schools, got J=2", "use a proper prior"],
    ),
    "groups:half-cauchy-one-school": Case(
        {"one.json": '{"y": [1.5], "sigma": [2]}'},
        ["run", "--data", "{dir}/one.json", "--set", "model.prior=half_cauchy"],
        ["the half_cauchy prior needs at least 2 schools, got J=1"],
    ),
    "groups:prior-in-config-file": Case(
        {"run.toml": "[model]\nprior = 'half_normal'\n", "one.csv": "name,y,sigma\nA,1,2\n"},
        ["run", "{dir}/run.toml", "--data", "{dir}/one.csv"],
        ["the half_normal prior needs at least 2 schools, got J=1"],
    ),
    "set:negative-num-samples": Case({}, ["run", "--set", "sampler.num_samples=-5"],
                                     ["sampler.num_samples = -5", "an integer >= 1"]),
    "set:without-equals-sign": Case({}, ["run", "--set", "sampler.scale"],
                                    ["--set 'sampler.scale'", "section.key=value"]),
    "set:num-samples-wrong-type-in-file": Case(
        {"run.toml": "[sampler]\nnum_samples = 'many'\n"}, ["run", "{dir}/run.toml"],
        ["{dir}/run.toml: sampler.num_samples = \"many\"", "expected an integer"],
    ),
    "set:query-school-not-in-data": Case(
        {"d.csv": EIGHT_CSV}, ["run", "--data", "{dir}/d.csv", "--set", "queries.school=Z"],
        ["queries.school = 'Z' is not a school in the data"],
    ),
    "set:sweep-school-not-in-data": Case(
        {}, ["run", "--set", "sweep.kind=set_y", "--set", "sweep.values=[1.0]", "--set", "sweep.school=Q"],
        ["sweep.school = 'Q' is not a school in the data"],
    ),
    "config:is-a-directory": Case({"conf.toml": None}, ["run", "{dir}/conf.toml"], ["{dir}/conf.toml: is a directory"]),
    # The tests run as root, which chmod cannot stop: a path below a regular file cannot be a folder for anyone.
    "out:below-a-regular-file": Case(
        {"file": "x"}, ["run", "--out", "{dir}/file/sub/out"], ["cannot write results to {dir}/file/sub/out"],
    ),
    "out:below-a-device": Case({}, ["run", "--out", "/dev/null/run"], ["cannot write results to /dev/null/run"]),
    # Output folders a run may not replace (jaxschools/app/output_folder.py; tests/test_output_safety.py has the rest).
    "out:empty-argument": Case({}, ["run", "--out", ""], ["--out is empty"]),
    "out:an-existing-file": Case({"precious.txt": "keep"}, ["run", "--out", "{dir}/precious.txt"],
                                 ["cannot write results to {dir}/precious.txt: it is an existing file"]),
    "out:a-users-folder": Case({"mine/important.txt": "keep"}, ["run", "--out", "{dir}/mine"],
                               ["cannot write results to {dir}/mine: it is not empty", "important.txt"]),
    "out:the-root-folder": Case({}, ["run", "--out", "/"], ["cannot write results to /: it is the root folder"]),
    "out:a-device": Case({}, ["run", "--out", "/dev/null"], ["cannot write results to /dev/null: it exists and is"]),
    "out:holds-the-data-file": Case({"d/d.csv": EIGHT_CSV}, ["run", "--data", "{dir}/d/d.csv", "--out", "{dir}/d"],
                                    ["cannot write results to {dir}/d: it holds the input file {dir}/d/d.csv"]),
    "out:holds-the-config-file": Case({"c/run.toml": ""}, ["run", "{dir}/c/run.toml", "--out", "{dir}/c"],
                                      ["cannot write results to {dir}/c: it holds the input file {dir}/c/run.toml"]),
    "out:a-nul-character": Case({}, ["run", "--out", "a\0b"], ["--out 'a\\x00b' holds a NUL character"]),
    # Names a run writes, but a summary.json with only a schema_version key: not one of ours (it lacks mcmc, ...).
    "out:a-json-file-with-a-schema-version": Case(
        {"mine/summary.json": '{"schema_version": 1}', "mine/report.html": "<p>mine</p>"},
        ["run", "--out", "{dir}/mine"], ["cannot write results to {dir}/mine: it has no .jaxschools-result marker"]),
    "args:missing-command": Case({}, [], ["missing command"]),
    "args:unknown-command": Case({}, ["frobnicate"], ["invalid choice: 'frobnicate'"]),
    "args:unknown-option": Case({}, ["run", "--bogus"], ["unrecognized arguments: --bogus"]),
    "args:option-without-value": Case({}, ["run", "--data"], ["--data", "expected one argument"]),
    "args:two-configs": Case({"a.toml": "", "b.toml": ""}, ["run", "{dir}/a.toml", "{dir}/b.toml"],
                             ["unrecognized arguments: {dir}/b.toml"]),
})
# Sizes the machine cannot hold or XLA cannot index (tests/test_resources.py has them all, the 10^5-school file
# included, and checks the memory estimate against measured peaks).
CASES.update({key: Case(*case) for key, case in SMALL_REFUSED.items()})


# Issue #13 findings 7 (add_school's new_sigma, simulation.num_ranks), 8 (control characters in school names)
# and 9 (input files read with a size limit): see tests/test_input_limits.py for the library-level checks.
class _SparseCase(Case):
    """A case whose file ``name`` is made ``size`` bytes long without writing them (a sparse file)."""

    def __init__(self, name, size, args, fragments):
        super().__init__({name: "name,y,sigma\n"}, args, fragments)
        self.name, self.size = name, size

    def build(self, folder: Path):
        args = super().build(folder)
        os.truncate(folder / self.name, self.size)
        return args


def _names_case(filename, content):
    return _data_file_case(filename, content.encode("utf-8"))


_NAMES = "name,y,sigma\nA,1,2\nB,3,4\n"
CASES.update({
    "data:dev-zero": Case({}, ["run", "--data", "/dev/zero"], ["/dev/zero: more than 32 MiB read from it"]),
    "config:dev-zero": Case({}, ["run", "/dev/zero"], ["/dev/zero: more than 1 MiB read from it"]),
    "data:over-the-size-limit": _SparseCase("big.csv", 200 * 10**6, ["run", "--data", "{dir}/big.csv"],
                                            ["{dir}/big.csv: the file is 190.7 MiB; a data file may hold at most"]),
    "config:over-the-size-limit": _SparseCase("big.toml", 2**20 + 1, ["run", "{dir}/big.toml"],
                                              ["{dir}/big.toml: the file is 1.0 MiB; a config file may hold"]),
    "names:nul-in-csv": _names_case("d.csv", _NAMES + "C\x00D,5,6\n"),
    "names:tab-inside-csv": _names_case("d.csv", _NAMES + "C\tD,5,6\n"),
    "names:newline-in-quoted-csv": _names_case("d.csv", _NAMES + '"C\nD",5,6\n'),
    "names:carriage-return-in-quoted-csv": _names_case("d.csv", _NAMES + '"C\rD",5,6\n'),
    "names:del-in-csv": _names_case("d.csv", _NAMES + "C\x7fD,5,6\n"),
    "names:c1-control-in-csv": _names_case("d.csv", _NAMES + "C\x85D,5,6\n"),
    "names:line-separator-in-csv": _names_case("d.csv", _NAMES + "C\u2028D,5,6\n"),
    "names:paragraph-separator-in-csv": _names_case("d.csv", _NAMES + "C\u2029D,5,6\n"),
    "names:bidi-override-in-csv": _names_case("d.csv", _NAMES + "C\u202eD,5,6\n"),
    "names:nul-in-json": _names_case("d.json", '{"name": ["A", "B", "C\\u0000"], "y": [1, 2, 3], "sigma": [1, 1, 1]}'),
    "names:lone-surrogate-in-json": _names_case("d.json", '{"name": ["A", "B", "\\ud800"], "y": [1, 2, 3], '
                                                          '"sigma": [1, 1, 1]}'),
    "names:query-school-with-nul": Case({}, ["run", "--set", 'queries.school="A\\u0000"'],
                                        ["queries.school = 'A\\x00' is not a school in the data"]),
    "sweep:new-sigma-underflows": Case(
        {}, ["run", "--set", "sweep.kind=add_school", "--set", "sweep.values=[1.0]", "--set", "sweep.new_sigma=1e-300"],
        ["sweep.new_sigma = 1e-300: expected a standard error from 1e-150 to 1e150"],
    ),
    "sweep:new-sigma-overflows": _set_case("sweep.new_sigma=1e200"),
    "simulation:num-ranks-beyond-draws": Case(
        {}, ["run", "--set", "simulation.num_datasets=10", "--set", "simulation.num_ranks=1000000"],
        ["simulation.num_ranks = 1000000 is more than the 8000 draws each simulated dataset keeps"],
    ),
})


def _snapshot(folder: Path) -> dict:
    return {
        str(path.relative_to(folder)): None if path.is_dir() else path.read_bytes()
        for path in sorted(folder.rglob("*"))
    }


def test_the_battery_is_large():
    assert len(CASES) >= 25


@pytest.mark.parametrize("key", list(CASES))
def test_bad_input_is_refused_with_one_error_line_and_nothing_written(key, tmp_path, monkeypatch, capsys):
    case = CASES[key]
    monkeypatch.chdir(tmp_path)  # where a run without --out would write runs/<name>
    args = case.build(tmp_path)
    expected = case.expected(tmp_path)
    before = _snapshot(tmp_path)
    assert main(args) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("error: ") and "Traceback" not in captured.err
    for fragment in expected:
        assert fragment in lines[0]
    assert captured.out == ""
    assert _snapshot(tmp_path) == before  # no output folder, no temporary folder, no runs/, inputs untouched


CHILD = """
import json, sys
from jaxschools.cli import main
cases = json.load(sys.stdin)
codes = []
for args in cases:
    codes.append(main(args))
print(json.dumps({"codes": codes,
                  "jax": sorted(m for m in sys.modules if m == "jax" or m.startswith(("jax.", "jaxlib")))}))
"""


def test_every_refusal_comes_before_jax_is_imported(tmp_path):
    """The whole battery in one fresh interpreter: every case exits 2, and JAX is never imported."""
    argvs = []
    for index, case in enumerate(CASES.values()):
        folder = tmp_path / str(index)
        folder.mkdir()
        argvs.append(case.build(folder))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    # No bound on the time taken (the machine may be loaded): the timeout only turns a hang into a failure.
    proc = subprocess.run([sys.executable, "-c", CHILD], input=json.dumps(argvs), capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["codes"] == [2] * len(CASES)
    assert result["jax"] == []
    assert "Traceback" not in proc.stderr and len(proc.stderr.splitlines()) == len(CASES)
