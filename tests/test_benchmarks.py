"""The benchmark runner works at a tiny size (figures come from `python -m benchmarks`, never from tests)."""

import runpy
import sys

import pytest


@pytest.mark.slow  # every benchmark's programs compiled once, and a one-core child process: about a minute
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
