"""Interrupting a sweep midway and running it again finishes it without redoing the finished cells (and redoes
a stored chunk that was damaged meanwhile).

In-process (``cli.main``), with the interrupt at a known point rather than in a timing window: a real SIGINT is
delivered to the main thread, through the command line's real handler, right after the second chunk of cells
is stored. (Signals in real processes at named stages are tests/test_signals.py's.)"""

import json
import os
import signal
import threading

from jaxschools import cli
from jaxschools.app import experiments
from sizes import cli_sets

# Three chunks of three cells, at the suite's shared sampler size (tests/sizes.py, as test_experiments.py's
# sweeps), so that a suite run reuses the compiled programs.
SWEEP = cli_sets("output.figures=false", "sweep.kind='scale_sigma'", "sweep.values=[0.5, 0.75, 1, 1.25, 1.5, 2, 2.5, 3, 4]",
                 "sweep.chunk_size=3")


def test_interrupted_sweep_resumes_from_stored_chunks(tmp_path, capsys, monkeypatch):
    out = tmp_path / "sweep"
    store = tmp_path / ".sweep.cells"
    argv = ["run", "--out", str(out), *SWEEP]
    real_save, saved = experiments.ChunkStore.save, []

    def save_then_interrupt(self, label, index, tree):
        real_save(self, label, index, tree)
        saved.append(index)
        if len(saved) == 2:  # the handler runs at the next instruction, with two chunks stored
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    monkeypatch.setattr(experiments.ChunkStore, "save", save_then_interrupt)
    assert cli.main(argv) == 130
    err = capsys.readouterr().err
    assert "resume" in err and not out.exists()
    assert saved == [0, 1] and len(list(store.glob("*/sweep-*.npz"))) == 2
    assert not list(store.glob("*/*.tmp"))  # no half-written chunk
    monkeypatch.setattr(experiments.ChunkStore, "save", real_save)
    # Random bytes in one stored chunk (issue #13 finding 10): never trusted, computed again with a note.
    (first,) = store.glob("*/sweep-00000.npz")
    first.write_bytes(os.urandom(4096))

    assert cli.main(argv) == 0
    err = capsys.readouterr().err
    assert "sweep: stored chunk 0 is unusable" in err and "computing it again" in err
    timing = json.loads((out / "timings.json").read_text())["sweep"]
    assert timing["chunks_loaded"] == 1 and timing["chunks_computed"] == 2  # chunk 0 again, and chunk 2
    assert len(json.loads((out / "summary.json").read_text())["sweep"]) == 9
    assert not store.exists()  # kept only while the run was unfinished
