"""Killing a sweep midway and running it again finishes it without redoing the finished cells (and redoes a
stored chunk that was damaged meanwhile)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_interrupted_sweep_resumes_from_stored_chunks(tmp_path):
    out = tmp_path / "sweep"
    store = tmp_path / ".sweep.cells"
    command = [
        sys.executable, "-m", "jaxschools", "run", "--out", str(out), "--set", "output.figures=false",
        "--set", "sweep.kind='scale_sigma'", "--set", "sweep.values=[0.5, 0.75, 1, 1.5, 2, 3]",
        "--set", "sweep.chunk_size=1", "--set", "sampler.num_samples=40000", "--set", "sampler.burn_in=1000",
    ]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list(store.glob("*/sweep-*.npz"))) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the sweep finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert "resume" in err and not out.exists()
    finished = len(list(store.glob("*/sweep-*.npz")))
    assert 2 <= finished < 6
    assert not list(store.glob("*/*.tmp"))  # no half-written chunk
    # Random bytes in one stored chunk (issue #13 finding 10): never trusted, computed again with a note.
    (first,) = store.glob("*/sweep-00000.npz")
    first.write_bytes(os.urandom(4096))

    rerun = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert "sweep: stored chunk 0 is unusable" in rerun.stderr and "computing it again" in rerun.stderr
    timing = json.loads((out / "timings.json").read_text())["sweep"]
    assert timing["chunks_loaded"] == finished - 1 and timing["chunks_computed"] == 6 - finished + 1
    assert len(json.loads((out / "summary.json").read_text())["sweep"]) == 6
    assert not store.exists()  # kept only while the run was unfinished
