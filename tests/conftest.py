"""Shared fixtures. The suite runs in float64 (the CLI's setting); float32 tests ask for it explicitly."""

import os
import shutil
import tempfile

# Two thirds of the suite's time is XLA compiling programs that then run for milliseconds. XLA's CPU backend
# compiles them two to three times faster with its classic loop emitters and LLVM at -O0 (measured on one
# eight-school analysis: 8.6 s of compilation instead of 18-25 s); the programs compute the same operations in
# IEEE arithmetic either way (XLA's CPU fast-math is off), and only run slower. The flags are XLA's, set here
# before JAX starts its backend, and inherited by the command-line processes tests start. A caller who sets
# JAXSCHOOLS_TEST_XLA_FLAGS chooses instead (an empty value: XLA's own defaults, which .ci/run runs the slow
# tests under, so production compilation is tested too).
FAST_COMPILE_FLAGS = "--xla_cpu_use_fusion_emitters=false --xla_backend_optimization_level=0"
_test_flags = os.environ.get("JAXSCHOOLS_TEST_XLA_FLAGS", FAST_COMPILE_FLAGS)
if _test_flags:
    os.environ["XLA_FLAGS"] = f'{os.environ.get("XLA_FLAGS", "")} {_test_flags}'.strip()

import jax  # noqa: E402
import pytest

jax.config.update("jax_enable_x64", True)

# In-process CLI runs switch on JAX's persistent compilation cache in JAXSCHOOLS_CACHE_DIR (default: a folder in
# the user's home) for the rest of the session. Point it at a fresh folder of this run, set here at import time
# so that subprocesses started by tests inherit it, and removed when the session ends. A caller who sets the
# variable (an empty value turns the cache off) keeps their choice.
_OWN_CACHE_DIR = None
if "JAXSCHOOLS_CACHE_DIR" not in os.environ:
    _OWN_CACHE_DIR = tempfile.mkdtemp(prefix="jaxschools-test-xla-")
    os.environ["JAXSCHOOLS_CACHE_DIR"] = _OWN_CACHE_DIR


def pytest_sessionfinish(session, exitstatus):
    if _OWN_CACHE_DIR is not None:
        shutil.rmtree(_OWN_CACHE_DIR, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def _no_compilation_cache_in_this_process():
    """In-process command-line runs leave JAX's persistent cache off in the test process itself (the processes
    tests start still use the folder above): it saves compilations only across processes, and in this one it
    would only add a disk write to each of the suite's thousands of compilations."""
    from jaxschools import cli

    patch = pytest.MonkeyPatch()
    patch.setattr(cli, "_use_compilation_cache", lambda jax: None)
    yield
    patch.undo()


def _memory_map_count():
    try:
        with open("/proc/self/maps", "rb") as maps:
            return sum(1 for _ in maps)
    except OSError:  # not Linux: no such limit to keep under
        return 0


def _memory_map_limit():
    try:
        with open("/proc/sys/vm/max_map_count") as limit:
            return int(limit.read())
    except (OSError, ValueError):
        return None


_MAP_LIMIT = _memory_map_limit()


@pytest.fixture(autouse=True)
def _keep_under_the_memory_map_limit():
    """Each program XLA's CPU backend compiles keeps about three memory mappings for its code until JAX's caches
    drop it, and Linux ends a process with more than vm.max_map_count of them (65,530 by default): XLA aborts
    when its next allocation fails. One process running all the slow tests after each other compiles enough to
    reach that (CI aborted in three different tests, each time inside XLA's compiler). A user's run compiles a
    few dozen programs; a test session compiles thousands. So when the count passes half the limit, the
    compiled programs are dropped (jax.clear_caches: later tests compile again what they need)."""
    yield
    if _MAP_LIMIT and _memory_map_count() > _MAP_LIMIT // 2:
        jax.clear_caches()


@pytest.fixture(scope="session")
def eight():
    import jaxschools as js

    return js.data.eight_schools()


@pytest.fixture(scope="session")
def log_risk_ratios():
    """A dataset on another scale: ten log risk ratios with standard errors 0.06 to 0.3."""
    import jax.numpy as jnp
    import jaxschools as js

    return js.data.Schools(
        y=jnp.array([-0.21, 0.12, 0.05, -0.33, 0.02, -0.11, 0.17, -0.05, 0.0, 0.31]),
        sigma=jnp.array([0.06, 0.10, 0.21, 0.30, 0.08, 0.12, 0.15, 0.25, 0.10, 0.19]),
    )
