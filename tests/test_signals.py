"""SIGINT and SIGTERM at every stage of a run exit 130 and 143 (issue #13, signals).

The command line's test-only hook (``JAXSCHOOLS_TEST_SIGNAL_AT``, :mod:`jaxschools.cli`) makes a run send
itself the signal at a named stage, so each stage is hit on a machine of any speed without timing windows:
inside ``import jax``, inside the first compilation, after the K-th chunk of a sampling phase of 3 * 10^7
steps (minutes if it ran to its end) is dispatched, as the figures start, before summary.json is written.
The exit status, the one ``error:`` line, the absence of a crash (a segmentation fault, exit 139, was the
bug: the interpreter tore down while XLA still ran the one giant sampling call) and an untouched output
folder are asserted. In-process, on a real analysis computed once, a real signal also arrives inside the real
figure drawing (plots.plot_contour) and midway through json.dump of summary.json.

The chunked sampler behind it must draw what one ``sampling.run`` call draws, bit for bit: checked here for
chains in several groups with padding, blocks split across chunks of every size, and an adaptive burn-in.
"""

import os
import signal
import subprocess
import sys
import threading
import types
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxschools import cli
from jaxschools.app import inference
from jaxschools.core import adaptation, laplace, models, sampling
from sizes import cli_sets

ROOT = Path(__file__).resolve().parents[1]


def _same(a: sampling.Samples, b: sampling.Samples) -> None:
    for name in a._fields:
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        for left, right in zip(jax.tree_util.tree_leaves(x), jax.tree_util.tree_leaves(y)):
            np.testing.assert_array_equal(np.asarray(left), np.asarray(right), err_msg=name)


@pytest.fixture(scope="module")
def marginal(eight):
    logdensity = models.marginal_logdensity(eight, "flat")
    return logdensity, laplace.fit(logdensity, laplace.default_init(eight))


def _sampler(marginal, kind, adapt):
    logdensity, fit = marginal
    # The sizes are run's arguments here, not the plan's (build does not read them).
    plan = inference.Plan(kernel=kind, parameterization="marginal", adapt=adapt,
                          target_accept=adaptation.DEFAULT_TARGET_ACCEPT[kind], dense_mass=False, num_steps=5,
                          jitter=0.0, max_depth=5, num_chains=1, num_samples=1, burn_in=0, max_iterations=100)
    return inference.build(plan, inference.Knobs(scale=2.0, step_size=0.3, init_spread=0.0), logdensity,
                           fit.cov), fit


@pytest.mark.slow  # over 9 s of the default suite on the 2-core machine; CI runs it (-m slow)
def test_chunked_sampling_draws_exactly_what_one_call_draws(marginal, monkeypatch):
    """10 chains in groups of 4 (3 groups, 2 padded chains); 200 burn-in and 150 kept steps are 3 and 2 whole
    blocks plus a shorter one each; chunks of one block, and chunks doubling (1, 2, ... blocks)."""
    monkeypatch.setattr(sampling, "CHAINS_PER_GROUP", 4)
    (algorithm, _), fit = _sampler(marginal, "rwmh", False)
    starts = sampling.overdispersed_positions(jax.random.key(1), fit.mode, fit.cov, 10)
    kwargs = dict(num_samples=150, num_chains=10, burn_in=200)
    key = jax.random.key(3)
    whole = sampling.run(key, algorithm, starts, **kwargs)
    stages = []
    _same(whole, sampling.run_in_chunks(key, algorithm, starts, chunk_seconds=0, between=stages.append, **kwargs))
    assert stages == [f"sampling-chunk:{k}" for k in range(1, 3 + 1 + 2 + 1 + 1)]
    _same(whole, sampling.run_in_chunks(key, algorithm, starts, chunk_seconds=1e9, **kwargs))
    assert whole.positions.shape == (10, 150, 2)


@pytest.mark.slow  # over 9 s of the default suite on the 2-core machine; CI runs it (-m slow)
def test_chunked_sampling_with_an_adaptive_burn_in_draws_what_one_call_draws(marginal):
    (algorithm, warmup), fit = _sampler(marginal, "rwmh", True)
    starts = sampling.overdispersed_positions(jax.random.key(1), fit.mode, fit.cov, 3)
    kwargs = dict(num_samples=140, num_chains=3, burn_in=130, adaptation=warmup)
    key = jax.random.key(3)
    whole = sampling.run(key, algorithm, starts, **kwargs)
    stages = []
    _same(whole, sampling.run_in_chunks(key, algorithm, starts, chunk_seconds=0, between=stages.append, **kwargs))
    assert len(stages) == 1 + 2 + 1  # the adaptive burn-in in one call, 2 kept blocks, 12 steps more
    assert whole.parameters is not None


# --- the command line ---------------------------------------------------------------------------------------


def _expect(code, err, signum, out):
    word = "interrupted" if signum == signal.SIGINT else "terminated"
    assert code == (130 if signum == signal.SIGINT else 143), (code, err)
    assert "Segmentation fault" not in err and "Traceback" not in err, err
    assert [line for line in err.splitlines() if not line.startswith("[jaxschools] ")] == \
        [f"error: {word}; no results were written"], err
    runs = out.parent
    assert not runs.exists() or list(runs.iterdir()) == [], list(runs.iterdir())  # nothing partial, no temp


# (stage, signal, how the command is started, kernel). The two sampling stages interrupt 3 * 10^7 burn-in steps:
# random-walk chunks, and HMC's adaptive warm-up, which is one jitted call (its chunk 1): the signal comes while
# the run waits on it, and without os._exit the interpreter's exit under XLA's threads was a segfault (139).
REAL_RUNS = [
    ("sampling-chunk:2", signal.SIGINT, "script", "rwmh"),
    ("sampling-chunk:1", signal.SIGTERM, "module", "hmc"),
    ("import", signal.SIGTERM, "script", "rwmh"),
    ("compile", signal.SIGINT, "module", "rwmh"),
]


@pytest.mark.slow  # a fresh interpreter each (JAX started, the default run's programs compiled): ~10 s each
@pytest.mark.parametrize("stage, signum, how, kernel", REAL_RUNS,
                         ids=[f"{s}-{n.name}-{k}" for s, n, _, k in REAL_RUNS])
def test_a_signal_at_a_named_stage_of_a_real_run_exits_with_its_status(tmp_path, stage, signum, how, kernel):
    out = tmp_path / "runs" / "long"
    command = ([str(Path(sys.executable).parent / "jaxschools")] if how == "script"
               else [sys.executable, "-m", "jaxschools"])
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAXSCHOOLS_TEST_SIGNAL_AT=stage,
               JAXSCHOOLS_TEST_SIGNAL=signal.Signals(signum).name)
    child = subprocess.run([*command, "run", "--out", str(out), "--set", "sampler.burn_in=30000000",
                            "--set", "sampler.num_samples=10", "--set", f'sampler.kernel="{kernel}"'], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=240)
    _expect(child.returncode, child.stderr, signum, out)


@pytest.fixture
def instant_analysis(monkeypatch):
    """The analysis and the report replaced by instant stand-ins: the stages after sampling, in-process."""
    from jaxschools.app import experiments
    from jaxschools.presentation import report

    monkeypatch.setenv("JAXSCHOOLS_CACHE_DIR", "")

    def run(config, dataset, table=None, progress=None, store_dir=None, mesh=None, between=None):
        return types.SimpleNamespace(summary={"schema_version": 1}, timings={})

    def write_outputs(result, out_dir, figures=True):
        (out_dir / "report.html").write_text("<html></html>")

    monkeypatch.setattr(experiments, "run", run)
    monkeypatch.setattr(report, "write_outputs", write_outputs)


@pytest.mark.parametrize("stage, signum", [("figures", signal.SIGINT), ("writing", signal.SIGTERM)])
def test_a_signal_as_figures_or_files_are_written_exits_with_its_status(tmp_path, capsys, monkeypatch,
                                                                        instant_analysis, stage, signum):
    monkeypatch.setenv("JAXSCHOOLS_TEST_SIGNAL_AT", stage)
    monkeypatch.setenv("JAXSCHOOLS_TEST_SIGNAL", signal.Signals(signum).name)
    out = tmp_path / "runs" / "r"
    code = cli.main(["run", "--out", str(out)])
    _expect(code, capsys.readouterr().err, signum, out)


@pytest.mark.parametrize("stage", ["import", "compile"])
def test_the_test_hook_leaves_nothing_installed_once_a_run_returns(tmp_path, capsys, monkeypatch, instant_analysis,
                                                                   stage):
    """In-process JAX is imported already, so the import hook is never asked, and the stand-in analysis compiles
    nothing: neither stage fires. The hook used to stay in ``sys.meta_path`` (it would have fired at the next
    import of a JAX submodule, in whatever came next), and every run left a JAX listener registered."""
    from jax._src import monitoring

    monkeypatch.setenv("JAXSCHOOLS_TEST_SIGNAL_AT", stage)
    meta_path, listeners = list(sys.meta_path), list(monitoring.get_event_duration_listeners())
    assert cli.main(["run", "--out", str(tmp_path / "r"), "--quiet"]) == 0
    assert capsys.readouterr().err == ""
    assert sys.meta_path == meta_path
    assert list(monitoring.get_event_duration_listeners()) == listeners


# --- a signal inside the real figure drawing and the real JSON writer ---------------------------------------

SMALL_RUN = cli_sets()  # tests/sizes.py


@pytest.fixture(scope="module")
def real_result():
    """A real analysis (experiments.run on the command line's resolved config; the sizes of tests/test_cli.py's
    runs, whose compilations it shares in a whole-suite run), computed once for the tests below."""
    from jaxschools.core import data
    from jaxschools.app import experiments

    resolved, table, _ = cli._read_inputs(cli._parser().parse_args(["run", *SMALL_RUN]))
    return experiments.run(resolved, data.from_table(table))


def _main_thread_signal(signum):
    signal.pthread_kill(threading.main_thread().ident, signum)


def test_a_signal_during_real_figure_drawing_exits_130(tmp_path, capsys, monkeypatch, real_result):
    """SIGINT arrives inside plots.plot_contour (real matplotlib drawing, inside plots.attempt, which catches
    every Exception of a figure): the interrupt passes through, the run exits 130 with one error line and
    nothing is published. Only the analysis is the precomputed real one."""
    from jaxschools.app import experiments
    from jaxschools.presentation import plots

    monkeypatch.setenv("JAXSCHOOLS_CACHE_DIR", "")  # leave this process's JAX configuration alone
    monkeypatch.setattr(experiments, "run", lambda *args, **kwargs: real_result)
    real_figure, drawn = plots._figure, []

    def figure_then_signal(width, height):
        figure = real_figure(width, height)
        drawn.append(figure)
        _main_thread_signal(signal.SIGINT)  # the handler runs at the next instruction, mid-figure
        return figure

    monkeypatch.setattr(plots, "_figure", figure_then_signal)
    out = tmp_path / "runs" / "r"
    code = cli.main(["run", "--out", str(out), *SMALL_RUN])
    _expect(code, capsys.readouterr().err, signal.SIGINT, out)
    assert len(drawn) == 1  # the first figure was being drawn when the signal came; no other was started


def test_a_signal_while_summary_json_is_being_written_exits_143(tmp_path, capsys, monkeypatch, real_result):
    """SIGTERM arrives after the first piece of summary.json is written by the real ``cli._write_json``
    (json.dump of the real summary, through a file whose write() sends it once): exit 143, one error line,
    no partial summary.json published."""
    from jaxschools.app import experiments

    monkeypatch.setenv("JAXSCHOOLS_CACHE_DIR", "")
    monkeypatch.setattr(experiments, "run", lambda *args, **kwargs: real_result)
    written = []

    class SignallingFile:
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            self.handle.__enter__()
            return self

        def __exit__(self, *exc):
            return self.handle.__exit__(*exc)

        def write(self, text):
            self.handle.write(text)
            written.append(text)
            if len(written) == 1:
                _main_thread_signal(signal.SIGTERM)

        def __getattr__(self, name):
            return getattr(self.handle, name)

    def open_signalling(path, *args, **kwargs):
        handle = open(path, *args, **kwargs)
        return SignallingFile(handle) if Path(path).name == "summary.json" else handle

    monkeypatch.setattr(cli, "open", open_signalling, raising=False)
    out = tmp_path / "runs" / "r"
    code = cli.main(["run", "--out", str(out), "--set", "output.figures=false", *SMALL_RUN])
    _expect(code, capsys.readouterr().err, signal.SIGTERM, out)
    assert 1 <= len(written) < 100  # cut short: the whole summary is thousands of pieces
