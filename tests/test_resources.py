"""Resource limits known before running (issue #13, findings 3 and 7): the memory estimate and its refusals.

Every size the machine cannot hold (10^5 schools with the default draws, 10^12 draws, 10^9 chains, a count beyond
int32) is refused by `jaxschools run` with exit status 2, one ``error:`` line naming the estimate or the key, and
nothing written, before JAX is imported; the estimate itself is checked against the measured peak memory of real
runs, and the limit against the machine's memory and ``run.max_memory_gb``.
"""

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from jaxschools.app import config as config_module
from jaxschools.app import resources
from jaxschools.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
# The advice of the draws' terms (the error line must say this, not "use fewer schools" or "lower sweep.kind").
DRAWS = ": lower sampler.num_samples or sampler.num_chains"
RAISE = ", or raise the limit with --set run.max_memory_gb="


def _schools_csv(num_schools: int) -> str:
    """A CSV of ``num_schools`` schools (2.6 MB for 10^5), the size that was OOM-killed at 18 GB."""
    rows = (f"s{j},{(j * 7919) % 41 - 20}.5,{5 + j % 11}\n" for j in range(num_schools))
    return "name,y,sigma\n" + "".join(rows)


BIG = _schools_csv(100_000)
MEDIUM = _schools_csv(2_000)

# Refused inputs: (files, argv, fragments the one error line must contain). ``{dir}`` is the case's folder.
# Where the refusal depends on the limit, the limit is set, so the case holds on any machine (a machine with
# 200 GB would otherwise accept 10^5 schools with the default draws, and this test would run them).
REFUSED = {
    "resources:100000-schools-default-draws": (
        {"big.csv": BIG}, ["run", "--data", "{dir}/big.csv", "--set", "run.max_memory_gb=16"],
        ["estimated", "limit of 16.0 GB (run.max_memory_gb)", "theta draws", "100,000 schools",
         DRAWS + RAISE],
    ),
    "resources:100000-schools-few-draws": (
        {"big.csv": BIG},
        ["run", "--data", "{dir}/big.csv", "--set", "sampler.num_samples=20", "--set", "run.max_memory_gb=16"],
        ["estimated", "exact quadrature", "100,000 schools", ": use fewer schools" + RAISE],
    ),
    "resources:num-samples-10^12": (
        {}, ["run", "--set", "sampler.num_samples=1000000000000"],
        ["sampler.num_samples = 1000000000000", "(2**31 - 1)"],
    ),
    "resources:burn-in-10^12": (
        {}, ["run", "--set", "sampler.burn_in=1000000000000"], ["sampler.burn_in = 1000000000000", "(2**31 - 1)"],
    ),
    "resources:num-chains-10^9": (
        {}, ["run", "--set", "sampler.num_chains=1000000000"],
        ["estimated", "TB of memory", "1,000,000,000 chains", DRAWS + RAISE],
    ),
    "resources:num-chains-beyond-int64": (
        {}, ["run", "--set", "sampler.num_chains=99999999999999999999"],
        ["sampler.num_chains = 99999999999999999999", "(2**31 - 1)"],
    ),
    "resources:num-samples-just-under-int32": (
        {}, ["run", "--set", "sampler.num_samples=2147483647"], ["estimated", DRAWS + RAISE],
    ),
    "resources:adaptive-burn-in-2^31": (
        {}, ["run", "--set", "sampler.kernel=hmc", "--set", "sampler.burn_in=2147483647", "--set",
             "run.max_memory_gb=16"],
        ["estimated", "warm-up schedule", ": lower sampler.burn_in" + RAISE],
    ),
    "resources:laplace-iterations-10^20": (
        {}, ["run", "--set", "laplace.max_iterations=100000000000000000000"], ["laplace.max_iterations", "(2**31 - 1)"],
    ),
    "resources:leapfrog-steps-10^12": (
        {}, ["run", "--set", "sampler.num_steps=1000000000000"], ["sampler.num_steps", "(2**31 - 1)"],
    ),
    "resources:sweep-chunk-of-2000-cells": (
        {"medium.csv": MEDIUM},
        ["run", "--data", "{dir}/medium.csv", "--set", "sweep.kind=leave_one_out", "--set", "sweep.chunk_size=2000",
         "--set", "run.max_memory_gb=16"],
        ["estimated", "sweep (2,000 cells per chunk", ": a smaller sweep.chunk_size, or" + DRAWS[1:] + RAISE],
    ),
    "resources:prior-sweep-loo-of-2000-schools": (
        {"medium.csv": MEDIUM},
        ["run", "--data", "{dir}/medium.csv", "--set", "sweep.kind=prior", "--set", "sampler.num_samples=100",
         "--set", "run.max_memory_gb=16"],
        ["estimated", "exact leave-one-out", ': use fewer schools, or another sweep.kind than "prior"'],
    ),
    "resources:simulation-batch-of-10^6": (
        {}, ["run", "--set", "simulation.num_datasets=1000000", "--set", "simulation.batch_size=1000000",
             "--set", "run.max_memory_gb=16"],
        ["estimated", "simulation (1,000,000 datasets per batch",
         ": lower simulation.batch_size, simulation.num_samples or simulation.num_chains" + RAISE],
    ),
    "resources:simulation-datasets-beyond-int32": (
        {}, ["run", "--set", "simulation.num_datasets=10000000000"], ["simulation.num_datasets", "(2**31 - 1)"],
    ),
    "resources:limit-below-the-runtime": (
        {}, ["run", "--set", "run.max_memory_gb=0.01"],
        ["estimated", "limit of 10.0 MB (run.max_memory_gb)", "the largest part is the runtime",
         ": it does not depend on the configuration, so raise the limit with --set run.max_memory_gb="],
    ),
    "resources:limit-zero": ({}, ["run", "--set", "run.max_memory_gb=0"], ["run.max_memory_gb = 0", "> 0"]),
    "resources:limit-not-a-number": (
        {}, ["run", "--set", "run.max_memory_gb=lots"], ["run.max_memory_gb", "expected a number"],
    ),
}
# The cases without the 10^5-school file (which takes seconds to read) run in-process in tests/test_bad_input.py's
# battery (exit 2, one error line with these fragments, nothing written); the capped interpreter below runs them all.
SMALL_REFUSED = {key: case for key, case in REFUSED.items() if BIG not in case[0].values()}


def _build(folder: Path, files: dict, argv: list) -> list:
    for name, text in files.items():
        (folder / name).write_text(text)
    argv = [arg.replace("{dir}", str(folder)) for arg in argv]
    return argv + ["--out", str(folder / "out" / "run")]


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): None if p.is_dir() else p.stat().st_size for p in sorted(folder.rglob("*"))}


REFUSE_CHILD = """
import json, sys
from jaxschools.cli import main
codes = [main(args) for args in json.load(sys.stdin)]
print(json.dumps({"codes": codes, "jax": sorted(m for m in sys.modules if m == "jax" or m.startswith("jax."))}))
"""


def test_every_resource_refusal_comes_before_jax_under_a_memory_cap(tmp_path):
    """All the refusals in one fresh interpreter whose address space is capped at 2 GB and time at 60 s: the
    10^5-school file is read and refused without JAX, in bounded memory, and leaves nothing behind."""
    argvs = []
    for index, (files, argv, _) in enumerate(REFUSED.values()):
        folder = tmp_path / str(index)
        folder.mkdir()
        argvs.append(_build(folder, files, argv))
    before = _snapshot(tmp_path)

    def cap():  # JAX is never imported here, so an address-space limit cannot trip XLA's reservations
        resource.setrlimit(resource.RLIMIT_AS, (2 * 2**30, 2 * 2**30))

    proc = subprocess.run([sys.executable, "-c", REFUSE_CHILD], input=json.dumps(argvs), capture_output=True,
                          text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=tmp_path, timeout=60,
                          preexec_fn=cap)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result == {"codes": [2] * len(REFUSED), "jax": []}
    lines = proc.stderr.splitlines()
    assert len(lines) == len(REFUSED) and "Traceback" not in proc.stderr
    for line, (_, _, fragments) in zip(lines, REFUSED.values()):
        assert line.startswith("error: ") and all(fragment in line for fragment in fragments), (fragments, line)
    assert _snapshot(tmp_path) == before


# --------------------------------------------------------------------------------------------------------------
# The limit.


def test_the_limit_is_the_key_when_set_else_a_share_of_the_machine(monkeypatch):
    config = config_module.load_config(sets=["run.max_memory_gb=64"])
    assert resources.memory_limit(config) == (64e9, "run.max_memory_gb")
    config = config_module.load_config()
    physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    limit, source = resources.memory_limit(config)
    cgroup = resources._cgroup_limit()
    assert limit == resources.DEFAULT_FRACTION * min(physical, cgroup or physical)
    assert "80%" in source
    # A cgroup limit below the machine's memory wins.
    monkeypatch.setattr(resources, "_cgroup_limit", lambda: 2 * 10**9)
    assert resources.memory_limit(config) == (resources.DEFAULT_FRACTION * 2e9, pytest.approx(
        "80% of this process's cgroup limit of 2.0 GB"))


def test_the_cgroup_limit_is_read_from_v2_and_v1_files(tmp_path, monkeypatch):
    real_read = Path.read_text
    files = {"/proc/self/cgroup": "0::/jobs/a\n4:memory:/jobs/b\n",
             "/sys/fs/cgroup/jobs/a/memory.max": "3000000000\n",
             "/sys/fs/cgroup/memory/jobs/b/memory.limit_in_bytes": "9223372036854771712\n"}

    def fake_read(self, *args, **kwargs):
        if str(self) in files:
            return files[str(self)]
        if str(self).startswith(("/sys/fs/cgroup", "/proc/self/cgroup")):
            raise FileNotFoundError(str(self))
        return real_read(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", fake_read)
    assert resources._cgroup_limit() == 3_000_000_000  # v1's "no limit" (about 2^63) is ignored
    files["/sys/fs/cgroup/jobs/a/memory.max"] = "max\n"
    assert resources._cgroup_limit() is None


def test_the_estimate_grows_with_every_size_it_names():
    """Each key the error line can name does shrink the estimate (so following the advice helps)."""
    base = config_module.load_config()
    reference = resources.total(resources.estimate(base, 1000))
    for item in ["sampler.num_samples=10000", "sampler.num_chains=8", "model.contrast='noncentered'",
                 "output.netcdf=true", "simulation.num_datasets=100", "sweep.kind='leave_one_out'"]:
        bigger = config_module.load_config(sets=[item])
        assert resources.total(resources.estimate(bigger, 1000)) > reference, item
    assert resources.total(resources.estimate(base, 2000)) > reference


# Configurations that between them give every term of the estimate.
EVERY_TERM = [
    [],
    ["model.contrast='noncentered'", "output.netcdf=true", "simulation.num_datasets=10"],
    ["sweep.kind='prior'"],
    ["sweep.kind='leave_one_out'"],
    ["sweep.kind='config'", "sweep.key='sampler.scale'", "sweep.values=[1.0, 2.0]"],
]


def _advised_keys(advice: str) -> dict:
    """{key: verb} for every config key the advice names, with the last verb before it ("lower a, b or c")."""
    import re

    found, verb = {}, None
    for token in re.findall(r"a smaller|[a-z_]+\.[a-z_]+|[a-z]+", advice):
        if token in ("lower", "a smaller", "fewer", "set", "another", "leave"):
            verb = token
        elif "." in token:
            found[token] = verb
    return found


def test_every_terms_advice_fits_its_keys():
    """Each term's advice names real keys and says the right thing for each: "lower" or "a smaller" only a
    number, "fewer" only a list, "set ... = false" a boolean, another value of a choice; terms no key shrinks
    (the runtime, P(best)'s draws) say to raise the limit, never "use fewer schools"."""
    from jaxschools.app.config import SCHEMA

    seen = set()
    for sets in EVERY_TERM:
        for term in resources.estimate(config_module.load_config(sets=sets), 50):
            seen.add(term.what.split(" (")[0])
            if term.what.startswith(("runtime", "exact draws for P(best)")):
                assert term.advice == resources.RAISE_LIMIT, term
                continue
            assert term.advice != resources.RAISE_LIMIT, term
            keys = _advised_keys(term.advice)
            assert keys or term.advice.startswith(resources.FEWER_SCHOOLS), term
            for key, verb in keys.items():
                section, name = key.split(".")
                spec = SCHEMA[section][name]
                kind = spec.type if isinstance(spec.type, type) else getattr(spec.type, "__origin__", None)
                expected = {"lower": (int, float), "a smaller": (int, float), "fewer": (list,), "set": (bool,),
                            "another": (str,), "leave": (str,)}[verb]
                assert kind in expected, (term, key, verb, kind)
                if verb in ("another", "leave"):
                    assert spec.choices or spec.optional, (term, key)
    assert len(seen) == 15, sorted(seen)  # every term above was produced


def test_a_limit_below_the_runtime_asks_for_a_higher_limit_only():
    with pytest.raises(InputError) as error:
        resources.check(config_module.load_config(sets=["run.max_memory_gb=0.01"]), 8)
    message = str(error.value)
    assert "the largest part is the runtime" in message and "raise the limit with --set run.max_memory_gb" in message
    assert "fewer schools" not in message and "lower" not in message


def test_the_library_sizes_the_estimate_repeats_are_the_librarys():
    """resources cannot import jaxschools.core.exact (JAX), so it repeats these; they must stay equal."""
    from jaxschools.core import exact, posterior

    assert resources.EXACT_RULE_NODES == exact._DEFAULT_NODES
    assert resources.P_GREATER_MAX_SCHOOLS == exact.P_GREATER_MAX_SCHOOLS == posterior.P_GREATER_MAX_SCHOOLS


def test_the_default_run_of_the_eight_schools_fits_in_a_few_gigabytes():
    """What every machine the project supports can run: the default must not be refused for want of memory."""
    assert resources.total(resources.estimate(config_module.load_config(), 8)) < 2e9
    resources.check(config_module.load_config(sets=["run.max_memory_gb=2"]), 8)
    with pytest.raises(InputError, match="run.max_memory_gb"):
        resources.check(config_module.load_config(sets=["run.max_memory_gb=0.5"]), 8)


# --------------------------------------------------------------------------------------------------------------
# The estimate against measured peaks.

# VmHWM, the peak resident memory of this process's own address space (ru_maxrss can carry the peak of the
# process that forked it across exec).
MEASURE_CHILD = """
import sys
from jaxschools.cli import main
code = main(sys.argv[1:])
peak = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:")).split()[1]
print(code, int(peak) * 1024)
"""

# Real runs whose variable terms are a good share of the estimate: theta draws and the exact quadrature (J =
# 5,000), and the P(theta_i > theta_j) matrix and the sampler's (J = 200).
MEASURED = {
    "5000-schools": (5000, ["sampler.num_chains=2", "sampler.num_samples=100", "sampler.burn_in=100"]),
    "200-schools": (200, ["sampler.num_samples=2000", "sampler.burn_in=100"]),
}


@pytest.mark.slow  # a whole run in a fresh interpreter (JAX started, every program compiled): ~15-25 s each
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="VmHWM is Linux's")
@pytest.mark.parametrize("key", list(MEASURED))
def test_the_estimate_bounds_the_measured_peak_of_a_real_run(key, tmp_path):
    """Peak resident memory of a whole run (figures off) in its own interpreter: the estimate is an upper bound
    and no more than 5 times the measurement (a safe estimate that is not absurdly so)."""
    num_schools, sets = MEASURED[key]
    (tmp_path / "d.csv").write_text(_schools_csv(num_schools))
    sets = sets + ["output.figures=false"]
    argv = ["run", "--quiet", "--data", str(tmp_path / "d.csv"), "--out", str(tmp_path / "out")]
    for item in sets:
        argv += ["--set", item]
    proc = subprocess.run([sys.executable, "-c", MEASURE_CHILD, *argv], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr
    code, peak = map(int, proc.stdout.split())
    assert code == 0, proc.stderr
    estimate = resources.total(resources.estimate(config_module.load_config(sets=sets), num_schools))
    assert peak <= estimate <= 5 * peak, (peak / 1e9, estimate / 1e9)
