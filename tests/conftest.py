"""Shared fixtures. The suite runs in float64 (the CLI's setting); float32 tests ask for it explicitly."""

import os
import shutil
import tempfile

# Two thirds of the suite's time is XLA compiling programs that then run for milliseconds. XLA's CPU backend
# compiles them two to three times faster with its classic loop emitters and LLVM at -O0 (measured on one
# eight-school analysis: 8.6 s of compilation instead of 18-25 s); the programs compute the same operations in
# IEEE arithmetic either way (XLA's CPU fast-math is off), and only run slower. The flags are XLA's, set here
# before JAX starts its backend, and inherited by the command-line processes tests start. A caller who sets
# JAXSCHOOLS_TEST_XLA_FLAGS chooses instead (an empty value: XLA's own defaults, which .ci/run also runs the
# whole suite under, so production compilation is tested too).
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
    tests start still use the folder above). In the one-process run of the slow tests, after some hundreds of
    compilations, JAX's cache write (compilation_cache.put_executable_and_time) ended the process twice, with an
    abort and a segmentation fault, in different tests; a short process, which is what a user's run is, never
    did. The cache saves compilations only across processes, so nothing is lost in this one."""
    from jaxschools import cli

    patch = pytest.MonkeyPatch()
    patch.setattr(cli, "_use_compilation_cache", lambda jax: None)
    yield
    patch.undo()


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
