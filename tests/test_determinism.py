"""Determinism: the same config and seed give the same draws and a byte-identical summary.json.

* the driver: the same key gives identical draws, another key different ones;
* a chain's draws do not depend on how many chains run beside it (chain c's key is fold_in(key, c), and so
  is its overdispersed start): equal to 1e-10 with the same accept decisions;
* the default config, run in this process and again in a fresh interpreter (another hash seed, its own
  compilations or the XLA cache's), gives byte-identical summary.json; timings live in timings.json only;
  the summary records the jax and jaxlib versions and the platform.
"""

import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import jax
import jaxlib
import numpy as np
import pytest

import jaxschools as js
from jaxschools.core import laplace, models, sampling
from jaxschools.cli import main
from jaxschools.core.kernels import rwmh
from sizes import SAMPLER_SETS, cli_sets

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def seed_target(eight):
    logdensity = models.marginal_logdensity(eight)
    fit = laplace.fit(logdensity, laplace.default_init(eight))
    return logdensity, fit


def _run(target, key, num_chains, starts=None):
    logdensity, fit = target
    init_key, sample_key = jax.random.split(key)
    if starts is None:
        starts = sampling.overdispersed_positions(init_key, fit.mode, fit.cov, num_chains, 2.0)
    return starts, sampling.run(sample_key, rwmh(logdensity, fit.cov, 2.0), starts, num_samples=1500,
                                num_chains=num_chains, burn_in=500)


def test_same_key_same_draws_other_key_other_draws(seed_target):
    _, first = _run(seed_target, jax.random.key(7), 2)
    _, again = _run(seed_target, jax.random.key(7), 2)
    _, other = _run(seed_target, jax.random.key(8), 2)
    np.testing.assert_array_equal(first.positions, again.positions)
    np.testing.assert_array_equal(first.acceptance_rate, again.acceptance_rate)
    assert not np.any(np.all(np.asarray(first.positions) == np.asarray(other.positions), axis=-1))


def _accepted(positions):
    """Per step, whether the chain moved: a rejected random-walk proposal repeats the position exactly."""
    positions = np.asarray(positions)
    return np.any(positions[:, 1:] != positions[:, :-1], axis=-1)


def test_a_chain_does_not_depend_on_how_many_chains_run_beside_it(seed_target):
    key = jax.random.key(3)
    alone_start, alone = _run(seed_target, key, 1)
    crowd_start, crowd = _run(seed_target, key, 5)
    # Starts and draws of chain 0 are the same whether it runs alone or with four others (vmapped, so the
    # arithmetic may be batched differently: equal to 1e-10, with every accept decision the same).
    np.testing.assert_allclose(crowd_start[:1], alone_start, rtol=0, atol=1e-10)
    np.testing.assert_allclose(crowd.positions[:1], alone.positions, rtol=0, atol=1e-10)
    np.testing.assert_array_equal(_accepted(crowd.positions[:1]), _accepted(alone.positions))
    assert 0.1 < _accepted(alone.positions).mean() < 0.9  # the comparison covers both kinds of decision
    # And the other chains are other chains, not copies.
    assert not np.allclose(crowd.positions[1], crowd.positions[0])


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """The default config (the seed analysis), run in this process (for the slow tests: its sizes are the
    seed's, so its chains compile on their own)."""
    out = tmp_path_factory.mktemp("determinism") / "eight_schools"
    assert main(["run", "--out", str(out), "--quiet"]) == 0
    return out


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """The default config at the suite's shared sampler size (tests/sizes.py), so it reuses test_cli.py's
    compiled analysis: what the record says about its own production does not depend on the number of draws."""
    out = tmp_path_factory.mktemp("determinism") / "small"
    assert main(["run", "--out", str(out), "--quiet"] + cli_sets()) == 0
    return out


@pytest.mark.slow  # over 9 s of the default suite on the 2-core machine; CI runs it (-m slow)
def test_two_runs_of_the_default_config_give_byte_identical_summaries(default_run):
    """The second run is a real process, as a user runs it (``python -m jaxschools run``, progress shown), a
    fresh interpreter with another hash seed, writing over the first's folder. (The default output folder,
    runs/<config name>, is test_output_safety.py's.)"""
    first = (default_run / "summary.json").read_bytes()
    report = (default_run / "report.html").stat().st_ino
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONHASHSEED="12345")
    proc = subprocess.run([sys.executable, "-m", "jaxschools", "run", "--out", str(default_run)],
                          env=env, cwd=default_run.parent, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "[jaxschools]" in proc.stderr  # progress is shown
    assert (default_run / "report.html").stat().st_ino != report  # the second run's own report
    assert (default_run / "summary.json").read_bytes() == first


def test_timings_live_in_their_own_file(small_run):
    summary = json.loads((small_run / "summary.json").read_text())
    timings = json.loads((small_run / "timings.json").read_text())
    assert timings["wall_s"] > 0

    def keys(tree):
        if isinstance(tree, dict):
            for key, value in tree.items():
                yield key
                yield from keys(value)
        elif isinstance(tree, list):
            for value in tree:
                yield from keys(value)

    assert not [key for key in keys(summary) if "time" in key.lower() or key.endswith("_s")]


def test_the_summary_records_what_produced_it(small_run):
    summary = json.loads((small_run / "summary.json").read_text())
    provenance = summary["provenance"]
    assert provenance["jax"] == jax.__version__ and provenance["jaxlib"] == jaxlib.__version__
    assert platform.system() in provenance["platform"] and platform.machine() in provenance["platform"]
    assert provenance["x64"] is True
    # The versions of the run itself, which the report's footer shows (not those of whatever renders it later).
    assert provenance["jaxschools"] == js.__version__ and provenance["numpy"] == np.__version__
    assert provenance["matplotlib"] == importlib.metadata.version("matplotlib")
    assert summary["config"]["sampler"]["seed"] == 0
    assert f'sampler.num_samples={summary["config"]["sampler"]["num_samples"]}' in SAMPLER_SETS


@pytest.mark.slow  # the seed's sizes compile chains of their own (about 15 s); CI runs it (-m slow)
def test_the_default_run_mixes_and_is_not_flagged(default_run):
    """The flags of test_extreme.py's stuck and unconverged runs, cleared where nothing is wrong."""
    mcmc = json.loads((default_run / "summary.json").read_text())["mcmc"]
    assert mcmc["flags"]["stuck_chains"] == [] and not mcmc["flags"]["not_mixed"]
    assert not mcmc["flags"]["laplace_not_converged"]
    assert max(mcmc["rhat"].values()) < 1.01 and min(mcmc["ess"].values()) >= 400
    assert "not shown to have mixed" not in (default_run / "report.html").read_text()
