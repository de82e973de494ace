"""One inference path (jaxschools.app.inference): sweeps and simulation studies run the kernel, parameterization and
warm-up the config names, a user's kernel included; what cannot run is refused with one error line."""

import json
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

from jaxschools.app import config, experiments, inference
from jaxschools.cli import main

PAGE = pathlib.Path(__file__).resolve().parents[1] / "docs" / "extending.md"


def test_the_kernel_names_are_one_list():
    """The built-in names a config accepts are the ones inference builds and names."""
    assert tuple(inference.LABELS) == config.KERNELS


@pytest.fixture
def mala_folder(tmp_path, monkeypatch):
    """docs/extending.md's MALA (its first code block) saved as mala_kernel.py and its TOML as mala_study.toml in
    a folder the test runs from, as the page tells a user to; the module is forgotten afterwards."""
    text = PAGE.read_text(encoding="utf-8")
    (tmp_path / "mala_kernel.py").write_text(re.findall(r"```python\n(.*?)```", text, flags=re.S)[0])
    (tmp_path / "mala_study.toml").write_text(re.findall(r"```toml\n(.*?)```", text, flags=re.S)[0])
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    sys.modules.pop("mala_kernel", None)


@pytest.mark.slow  # over 9 s of the default suite on the 2-core machine; CI runs it (-m slow)
def test_the_guides_mala_runs_in_a_sweep_and_an_sbc_study_from_toml(mala_folder):
    """The page's TOML, run by the command line (in-process), with small sizes and the step size fixed (no
    warm-up), so that what ran can be told from its numbers:

    * sweep over sampler.step_size: MALA accepts almost every proposal as h -> 0 (1 - acceptance = O(h^(3/2)),
      Roberts & Rosenthal 1998) and far fewer at h = 4 metric units; the random walk, which has no step size,
      would accept the same share in both cells (common random numbers);
    * SBC study at h = 1e-10 with one chain: the chain cannot move (steps of 1e-5 posterior sds), so every 50%
      interval is a point and covers no true mu, where any mixing sampler covers about half of them.

    The single analysis has test_cli.py's prior and sizes, so in one test session it reuses their compilations.
    """
    out = mala_folder / "out"
    sets = ["model.prior=flat", "sampler.adapt=false", "sampler.step_size=1e-10", "sampler.num_samples=400",
            "sampler.burn_in=200", "sweep.key='sampler.step_size'", "sweep.values=[1e-4, 4.0]",
            "simulation.num_datasets=8", "simulation.num_chains=1", "simulation.num_samples=100",
            "simulation.burn_in=0", "simulation.num_ranks=9", "simulation.batch_size=8", "output.figures=false"]
    argv = ["run", "mala_study.toml", "--out", str(out), "--quiet"]
    for item in sets:
        argv += ["--set", item]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    name = "mala_kernel:mala"
    assert summary["mcmc"]["kernel"] == name
    rows = summary["sweep"]
    assert [(row["kernel"], row["parameterization"]) for row in rows] == [(name, "marginal")] * 2
    small, large = (row["acceptance_rate"] for row in rows)
    assert small > 0.99 and large < 0.9, (small, large)
    (study,) = summary["simulation"]
    assert (study["kernel"], study["parameterization"]) == (name, "marginal")
    assert study["coverage"]["0.5"]["share"]["mu"] == 0.0
    # The report states the kernel of every cell: each sweep row and the study.
    report = (out / "report.html").read_text()
    assert report.count(f"<td>{name} (marginal)</td>") == len(rows) + 1


@pytest.mark.slow  # over 9 s of the default suite on the 2-core machine; CI runs it (-m slow)
def test_a_sweep_and_a_simulation_study_run_nuts_on_the_noncentered_target(eight):
    """sampler.kernel = "nuts" and model.parameterization = "noncentered" reach every cell: each row and the study
    say so, and the cells' chains are NUTS's on the joint target (theta from the chains, finite summaries)."""
    resolved = config.load_config(None, sets=[
        "sampler.kernel=nuts", "model.parameterization=noncentered", "model.prior=half_normal",
        "sampler.num_chains=2", "sampler.num_samples=30", "sampler.burn_in=30", "sampler.max_depth=4",
        "sweep.kind='config'", "sweep.key='model.tau_scale'", "sweep.values=[1.0, 10.0]",
        "simulation.num_datasets=2", "simulation.num_chains=2", "simulation.num_samples=30", "simulation.burn_in=30",
        "simulation.num_ranks=9", "simulation.priors=['half_normal']", "simulation.batch_size=2",
    ])
    store = experiments.ChunkStore(None)
    rows, _, _ = experiments._run_sweep(resolved, eight, store, None, 0, 28.0)
    assert [(row["kernel"], row["parameterization"]) for row in rows] == [("nuts", "noncentered")] * 2
    for row in rows:
        assert 0 < row["acceptance_rate"] <= 1
        assert np.all(np.isfinite(row["theta"]["mean"])) and np.isfinite(row["posterior"]["mu"]["mean"])
        assert isinstance(row["divergences"], int) and 0 <= row["divergences"] <= 2 * 30  # counted, of 2 x 30
    studies, _, _ = experiments._run_simulation(resolved, eight, store, None)
    assert [(s["kernel"], s["parameterization"]) for s in studies] == [("nuts", "noncentered")]


REFUSALS = [
    (["sampler.kernel='my_kernels:mala'"], "sampler.target_accept"),
    (["sampler.kernel=nuts", "sweep.kind='config'", "sweep.key='sampler.scale'", "sweep.values=[1.0]"],
     'sweep.key = "sampler.scale"'),
    (["sweep.kind='config'", "sweep.key='sampler.step_size'", "sweep.values=[1.0]"],
     'sweep.key = "sampler.step_size"'),
    (["sampler.kernel=nuts", "sweep.kind='config'", "sweep.key='sampler.step_size'", "sweep.values=[0.1, 0.5]"],
     "set sampler.adapt = false"),
    (["sampler.adapt=true", "sweep.kind='config'", "sweep.key='sampler.scale'", "sweep.values=[1.0, 2.0]"],
     "warm-up adapts it"),
]


def test_combinations_that_cannot_run_are_refused_before_jax(tmp_path):
    """Each refusal is one ``error:`` line naming the key, exit 2, nothing written, and JAX never imported: the
    command line runs them all in one fresh process that then reports whether JAX was loaded."""
    cases = [[*(arg for item in sets for arg in ("--set", item)), "--out", str(tmp_path / f"out{i}"), "--quiet"]
             for i, (sets, _) in enumerate(REFUSALS)]
    code = ("import contextlib, io, json, sys\nfrom jaxschools.cli import main\nresults = []\n"
            "for argv in json.loads(sys.argv[1]):\n    err = io.StringIO()\n"
            "    with contextlib.redirect_stderr(err):\n        results.append((main(['run', *argv]), err.getvalue()))\n"
            "print(json.dumps([results, any(m == 'jax' or m.startswith('jax.') for m in sys.modules)]))")
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(cases)], capture_output=True, text=True,
                          check=True, cwd=tmp_path)
    results, loaded_jax = json.loads(proc.stdout)
    assert not loaded_jax
    for (status, stderr), (_, fragment) in zip(results, REFUSALS):
        assert status == 2 and stderr.startswith("error: ") and stderr.count("\n") == 1, stderr
        assert fragment in stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == []


@pytest.mark.parametrize("kernel, fragment", [
    ("no_such_module_for_jaxschools:mala", "cannot import 'no_such_module_for_jaxschools'"),
    ("math:pi", "module 'math' has no function 'pi'"),
    ("json:dumps", "cannot run here: TypeError"),
])
def test_a_user_kernel_that_cannot_run_is_one_error_line_and_nothing_written(tmp_path, capsys, kernel, fragment):
    out = tmp_path / "out"
    argv = ["run", "--out", str(out), "--quiet", "--set", f"sampler.kernel='{kernel}'", "--set", "sampler.adapt=false"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "sampler.kernel" in err[0] and fragment in err[0], err
    assert list(tmp_path.iterdir()) == []
