"""No lost results: DIR holds the previous complete results or the new complete ones, never a mix.

Two layers:

* In-process, with the analysis and the report replaced by instant stand-ins (what is under test is the
  command line's handling of files): a real SIGINT or SIGTERM is delivered, through the real handler, at
  each step of the write phase, including between the two renames of the swap, while the temporary folder
  is made, twice (a second signal during the clean-up), and inside a garbage-collector callback (where
  Python drops the exception); a disk-full error (writes to /dev/full), a failed swap and a NaN timing are
  met where they would be in a real run.
* Real processes, ``python -m jaxschools run --out DIR`` on the default config, killed with SIGINT or
  SIGTERM at seeded moments spread over a whole run (start-up, JAX import, analysis, figures, writes).
  The kill comes a seeded delay after a seeded progress line (or after the start), so every stage is hit
  on a machine of any speed. Before each kill DIR holds the complete results of another seed; afterwards
  DIR must be byte-identical to them, or hold the new run's whole result set (the same files, none cut
  short, byte-identical to any other completed trial's), and nothing else may be left beside DIR.
"""

import errno
import gc
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from jaxschools import cli

ROOT = Path(__file__).resolve().parents[1]
MARKER = "[jaxschools] 8 schools; results will go to"


def _files(folder: Path) -> dict:
    """Every file under ``folder`` (relative path -> bytes), timings.json aside (it holds wall-clock times)."""
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != "timings.json"
    }


def _check_timings(folder: Path):
    timings = json.loads((folder / "timings.json").read_text())
    assert isinstance(timings, dict) and timings


# --- in-process: every step of the write phase ------------------------------------------------------------


class _FakeResult:
    def __init__(self, seed):
        self.summary = {"seed": seed, "values": [float(seed)] * 100}
        self.timings = {"total_s": 0.5, "sweep": {"seconds_per_cell": math.nan}}  # NaN: every chunk was stored


@pytest.fixture
def stand_ins(monkeypatch):
    """Replace the analysis and the report with instant ones; ``hooks[step]()`` runs at each named step."""
    from jaxschools.app import experiments
    from jaxschools.presentation import report

    hooks = {}
    monkeypatch.setenv("JAXSCHOOLS_CACHE_DIR", "")  # leave this process's JAX configuration alone

    def hook(step):
        hooks.get(step, lambda: None)()

    def run(config, dataset, table=None, progress=None, store_dir=None, mesh=None, between=None):
        hook("analysis")
        return _FakeResult(config["sampler"]["seed"])

    def write_outputs(result, out_dir, figures=True):
        (out_dir / "figures").mkdir()
        (out_dir / "figures" / "a.png").write_bytes(b"\x89PNG" * 1000)
        hook("report")
        (out_dir / "report.html").write_text(f"<html>{result.summary['seed']}</html>" * 1000)

    real_write_json, real_rename, real_rmtree = cli._write_json, os.rename, shutil.rmtree

    def write_json(path, value):
        if path.name == "summary.json" and "summary" in hooks:
            path.write_text(json.dumps(value)[:50])  # a truncated file, as a kill mid-write would leave
            hook("summary")
        real_write_json(path, value)

    def rename(src, dst):
        real_rename(src, dst)
        hook("rename-out" if Path(dst).name == "previous" else "rename-in")

    def rmtree(path, *args, **kwargs):
        hook("remove-old" if ".old-" in str(path) else "remove-tmp")
        real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(experiments, "run", run)
    monkeypatch.setattr(report, "write_outputs", write_outputs)
    monkeypatch.setattr(cli, "_write_json", write_json)
    monkeypatch.setattr(cli.os, "rename", rename)
    monkeypatch.setattr(cli.shutil, "rmtree", rmtree)
    return hooks


def _send(signum):
    """Deliver ``signum`` to this process's main thread, as a terminal or ``kill`` would to the process."""
    def send():
        signal.pthread_kill(threading.main_thread().ident, signum)
    return send


def _previous_results(out):
    assert cli.main(["run", "--out", str(out), "--quiet", "--set", "sampler.seed=1"]) == 0
    return _files(out)


# The step the signal arrives at -> whether the new results are published (the swap, once begun, completes).
STEPS = {"analysis": False, "report": False, "summary": False, "rename-out": True, "rename-in": True,
         "remove-old": True}


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("step", list(STEPS))
def test_a_signal_at_any_step_of_the_write_phase_leaves_a_complete_result(tmp_path, capsys, stand_ins, step, signum):
    out = tmp_path / "run"
    previous = _previous_results(out)
    assert json.loads((out / "summary.json").read_text())["seed"] == 1
    capsys.readouterr()
    stand_ins[step] = _send(signum)
    code = cli.main(["run", "--out", str(out), "--quiet", "--set", "sampler.seed=2"])
    err = capsys.readouterr().err.splitlines()
    if STEPS[step]:
        assert code == 0 and err == []
        assert json.loads((out / "summary.json").read_text())["seed"] == 2
    else:
        assert code == (130 if signum == signal.SIGINT else 143)
        word = "interrupted" if signum == signal.SIGINT else "terminated"
        assert err == [f"error: {word}; no results were written"]
        assert _files(out) == previous
    _check_timings(out)
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no temporary or old folder left


@pytest.mark.parametrize("signals", [(signal.SIGTERM,), (signal.SIGTERM, signal.SIGINT)], ids=["one", "two"])
def test_a_signal_while_the_temporary_folder_is_made_does_not_leave_it_behind(tmp_path, capsys, stand_ins,
                                                                               monkeypatch, signals):
    """With two, both arrive while the step runs (their exception waits for its end): the first decides the exit
    (the later one used to win)."""
    real = cli._prepare_output

    def prepare(out_dir):
        folder = real(out_dir)
        for signum in signals:
            _send(signum)()
        return folder

    monkeypatch.setattr(cli, "_prepare_output", prepare)
    assert cli.main(["run", "--out", str(tmp_path / "run"), "--quiet"]) == 143
    assert capsys.readouterr().err == "error: terminated; no results were written\n"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("first, second", [(signal.SIGTERM, signal.SIGINT), (signal.SIGINT, signal.SIGTERM)],
                         ids=["SIGTERM-then-SIGINT", "SIGINT-then-SIGTERM"])
@pytest.mark.parametrize("chunks", [False, True], ids=["no-chunks", "stored-chunks"])
def test_the_first_signal_decides_the_outcome_and_a_second_during_clean_up_is_ignored(tmp_path, capsys, stand_ins,
                                                                                       first, second, chunks):
    """The second signal, raised from the clean-up, replaced the first one's outcome: its exit status, and with
    stored chunks of a sweep the message that they are kept (the user was told "no results were written")."""
    out = tmp_path / "run"
    previous = _previous_results(out)
    capsys.readouterr()
    store = tmp_path / ".run.cells"
    if chunks:
        stand_ins["analysis"] = lambda: (store.mkdir(), (store / "chunk-0.npz").write_bytes(b"stored"))
    stand_ins["report"] = _send(first)
    stand_ins["remove-tmp"] = _send(second)
    code = cli.main(["run", "--out", str(out), "--quiet", "--set", "sampler.seed=2"])
    word = "interrupted" if first == signal.SIGINT else "terminated"
    assert code == (130 if first == signal.SIGINT else 143)
    kept = f"the finished chunks are kept in {store}: run the same command again to resume"
    assert capsys.readouterr().err == f"error: {word}; {kept if chunks else 'no results were written'}\n"
    assert _files(out) == previous
    assert sorted(p.name for p in tmp_path.iterdir()) == ([".run.cells", "run"] if chunks else ["run"])


def test_a_signal_whose_exception_python_swallows_still_stops_the_run(tmp_path, capsys, stand_ins, monkeypatch):
    """A handler that runs inside a garbage-collector callback (JAX registers one) raises into the collector,
    which prints "Exception ignored" and carries on: the run must notice at its next checkpoint."""
    out = tmp_path / "run"
    previous = _previous_results(out)
    capsys.readouterr()
    swallowed, fired = [], []
    monkeypatch.setattr(sys, "unraisablehook", lambda unraisable: swallowed.append(unraisable.exc_type))

    def callback(phase, info):
        if phase == "start" and not fired:
            fired.append(True)
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
            for _ in range(1000):  # the handler runs here, inside the callback
                pass

    def collect():
        gc.callbacks.append(callback)
        try:
            gc.collect()
        finally:
            gc.callbacks.remove(callback)

    stand_ins["analysis"] = collect
    assert cli.main(["run", "--out", str(out), "--quiet", "--set", "sampler.seed=2"]) == 130
    assert swallowed == []  # the lost exception is not printed ("Exception ignored ..."): it is raised again
    assert capsys.readouterr().err == "error: interrupted; no results were written\n"
    assert fired
    assert _files(out) == previous and [p.name for p in tmp_path.iterdir()] == ["run"]


def test_disk_full_is_one_error_line_and_the_previous_results_stay(tmp_path, capsys, stand_ins, monkeypatch):
    """summary.json is written to /dev/full, a device on which every write fails with ENOSPC."""
    out = tmp_path / "run"
    previous = _previous_results(out)
    capsys.readouterr()

    def open_full(path, *args, **kwargs):
        return open("/dev/full" if Path(path).name == "summary.json" else path, *args, **kwargs)

    monkeypatch.setattr(cli, "open", open_full, raising=False)
    assert cli.main(["run", "--out", str(out), "--quiet", "--set", "sampler.seed=2"]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith("error: cannot write results") and "No space left on device" in captured.err
    assert len(captured.err.splitlines()) == 1 and "Traceback" not in captured.err
    assert _files(out) == previous and [p.name for p in tmp_path.iterdir()] == ["run"]


def test_a_swap_that_fails_puts_the_previous_results_back(tmp_path, capsys, stand_ins, monkeypatch):
    out = tmp_path / "run"
    previous = _previous_results(out)
    capsys.readouterr()
    rename = os.rename

    def failing_rename(src, dst):
        if Path(dst) == out and ".tmp-" in Path(src).name:
            raise OSError(errno.EIO, os.strerror(errno.EIO), str(src))
        rename(src, dst)

    monkeypatch.setattr(cli.os, "rename", failing_rename)
    assert cli.main(["run", "--out", str(out), "--quiet", "--set", "sampler.seed=2"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: cannot write results") and "Input/output error" in err[0]
    assert _files(out) == previous and [p.name for p in tmp_path.iterdir()] == ["run"]


def test_a_nan_timing_is_written_as_null_not_a_lost_run(tmp_path, stand_ins):
    """A resumed sweep whose chunks all came from the store has no time per cell (NaN); JSON has no NaN."""
    out = tmp_path / "run"
    assert cli.main(["run", "--out", str(out), "--quiet"]) == 0
    assert json.loads((out / "timings.json").read_text())["sweep"]["seconds_per_cell"] is None


def test_results_are_published_when_no_signal_comes(tmp_path, stand_ins):
    """The stand-ins themselves: with no hook, a rerun replaces the previous results whole."""
    out = tmp_path / "run"
    _previous_results(out)
    assert cli.main(["run", "--out", str(out), "--quiet", "--set", "sampler.seed=2"]) == 0
    assert json.loads((out / "summary.json").read_text())["seed"] == 2
    assert (out / "report.html").read_text().startswith("<html>2</html>")


# --- real processes killed at seeded moments ------------------------------------------------------------------


def subprocess_env():
    """The package on the path; the XLA cache is the command line's own (compiled code only, never results)."""
    return dict(os.environ, PYTHONPATH=str(ROOT))


class _Child:
    """``python -m jaxschools run --out DIR ARGS`` with stderr going to a file polled for its progress lines."""

    def __init__(self, cwd, out, *args):
        self.err_path = cwd / f"stderr-{time.monotonic_ns()}.txt"
        self.err_file = open(self.err_path, "w")
        self.start = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, "-m", "jaxschools", "run", "--out", str(out), *args],
                                     cwd=cwd, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=self.err_file)

    def progress_lines(self):
        return [line for line in self.err_path.read_text().splitlines() if line.startswith("[jaxschools] ")]

    def wait_for_progress(self, count, timeout=180):
        """The time the ``count``-th progress line appeared (None if the process ended first)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.progress_lines()) >= count:
                return time.monotonic()
            if self.proc.poll() is not None:
                return None
            time.sleep(0.01)
        raise AssertionError(f"fewer than {count} progress lines within {timeout} s")

    def finish(self, timeout=300):
        code = self.proc.wait(timeout=timeout)
        self.err_file.close()
        err = self.err_path.read_text()
        self.err_path.unlink()
        return code, err


def _differences(files: dict, other: dict) -> list:
    """The files that differ, and for summary.json the paths of the values that differ."""
    names = sorted(name for name in set(files) | set(other) if files.get(name) != other.get(name))
    if "summary.json" in names:
        def leaves(value, path=""):
            if isinstance(value, dict):
                for key, item in value.items():
                    yield from leaves(item, f"{path}.{key}")
            elif isinstance(value, list):
                for index, item in enumerate(value):
                    yield from leaves(item, f"{path}[{index}]")
            else:
                yield path, value
        a, b = (dict(leaves(json.loads(f["summary.json"]))) for f in (files, other))
        names += [(key, a.get(key), b.get(key)) for key in sorted(set(a) | set(b)) if a.get(key) != b.get(key)][:20]
    return names


def _complete(files: dict, like: dict, seed: int) -> bool:
    """Whether ``files`` is a whole result set: the same files as ``like``, none of them cut short."""
    if set(files) != set(like):
        return False
    try:
        summary = json.loads(files["summary.json"])
    except ValueError:
        return False
    return (summary["config"]["sampler"]["seed"] == seed
            and files["report.html"].rstrip().endswith(b"</html>")
            and all(content.endswith(b"IEND\xaeB`\x82") for name, content in files.items() if name.endswith(".png")))


@pytest.fixture(scope="module")
def previous_run(tmp_path_factory):
    """DIR holding a complete result of seed 1, and the number of progress lines a run prints before it ends."""
    work = tmp_path_factory.mktemp("kills")
    out = work / "runs" / "seed"
    child = _Child(work, out, "--set", "sampler.seed=1")
    code, err = child.finish()
    assert code == 0, err
    lines = [line for line in err.splitlines() if line.startswith("[jaxschools] ")]
    assert lines[0].startswith(MARKER) and lines[-1].startswith("[jaxschools] done")
    previous = _files(out)
    assert _complete(previous, previous, 1) and any(name.startswith("figures/") for name in previous)
    saved = work / "previous"
    shutil.copytree(out, saved)
    return work, out, saved, previous, len(lines) - 1  # the stages before "done"


def _moments(num_stages, count=7, seed=20251125):
    """(signal, stage, delay): the kill comes ``delay`` seconds after the ``stage``-th progress line (0: after
    the process starts). Every stage is drawn once before any twice; the last stage (figures, the report,
    summary.json, the swap) gets delays long enough to reach past the end of the run."""
    rng = random.Random(seed)
    stages = list(range(num_stages + 1))
    rng.shuffle(stages)
    moments = []
    for index in range(count):
        stage = stages[index % len(stages)]
        delay = rng.uniform(0.0, 5.0 if stage == num_stages else 1.5)
        moments.append(((signal.SIGINT, signal.SIGTERM)[index % 2], stage, delay))
    return moments


@pytest.mark.slow  # eight real runs (a complete one, then seven killed): ~45 s
def test_killing_real_runs_at_seeded_moments_never_leaves_a_partial_result(previous_run):
    work, out, saved, previous, num_stages = previous_run
    new = None  # the first complete new result, to which later ones must be byte-identical
    outcomes = []
    for signum, stage, delay in _moments(num_stages):
        if _files(out) != previous:
            shutil.rmtree(out)
            shutil.copytree(saved, out)
        child = _Child(work, out, "--set", "sampler.seed=0")
        reached = child.wait_for_progress(stage) if stage else child.start
        if reached is not None:
            time.sleep(max(0.0, reached + delay - time.monotonic()))
            child.proc.send_signal(signum)
        code, err = child.finish()
        state = _files(out)
        where = (signal.Signals(signum).name, stage, round(delay, 2), code, err)
        # Whole files of one complete result set: the previous one, or the new one.
        if state != previous:
            assert _complete(state, previous, 0), where
            assert new is None or state == new, (where, _differences(state, new))
            new = state
        _check_timings(out)
        assert sorted(p.name for p in out.parent.iterdir()) == ["seed"], where  # nothing left beside DIR
        if code == 0:
            assert state != previous, where
        elif code in (130, 143):
            assert state == previous and "Traceback" not in err, where
            word = "interrupted" if signum == signal.SIGINT else "terminated"
            assert [line for line in err.splitlines() if not line.startswith("[jaxschools] ")] == \
                [f"error: {word}; no results were written"], where
            assert code == (130 if signum == signal.SIGINT else 143), where
        else:
            # Ended by the signal itself: only before the command line set up its handlers (start-up,
            # nothing written yet) or after it put the results in place and handed them back.
            assert code == -signum, where
            assert stage == 0 or state != previous, where
        outcomes.append(where[:4])
    print(outcomes)
    # The schedule really cut runs in the middle: one whose every kill came too early or too late tests nothing.
    assert sum(code in (130, 143) for _, stage, _, code in outcomes if stage > 0) >= 4, outcomes
