"""The benchmark runner works at a tiny size (figures come from `python -m benchmarks`, never from tests)."""

import re
import runpy
import sys

import pytest


# Every benchmark's programs compiled once, and a one-core child process: about a minute, and about one more for
# exact_gradients' J = 8 gradients, Jacobians and finite differences.
@pytest.mark.slow
def test_benchmarks_smoke(capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["benchmarks", "--smoke"])
    # The runner sets XLA_FLAGS for its own (and its children's) JAX; keep that out of later tests' subprocesses.
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
    try:
        runpy.run_module("benchmarks", run_name="__main__")
    except SystemExit as exit_:
        assert exit_.code == 0
    out = capsys.readouterr().out
    assert "loop / vmapped" in out and "ours / BlackJAX" in out and "datasets / s" in out
    assert "float32 against float64" in out and "peak RSS" in out and "LearnBayes" in out
    # exact_gradients: every gradient finite, the J = 8 Jacobian (27 inputs, 17 outputs) within 1e-6 of its
    # finite differences (the row's last cell), and no dataset with a non-finite Jacobian entry.
    assert "gradient / summary" in out and "Every gradient finite: yes" in out
    assert re.search(r"^\| 8 \| 1 \| 27 \| 17 \|.*\| yes \|$", out, re.MULTILINE)
    assert re.search(r"^\| 40 \| 1 \|.*\| 0 \|$", out, re.MULTILINE)
