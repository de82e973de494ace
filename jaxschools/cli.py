"""The command line: ``jaxschools run [CONFIG.toml] [--out DIR] [--data FILE] [--set section.key=value ...]``.

Order of work, so that bad input is answered instantly and never leaves anything behind:

1. parse arguments, resolve the config and read the data with the pure-Python layer
   (:mod:`jaxschools.app.config`, :mod:`jaxschools.core.validation`), and check that DIR is a folder a run may
   write into (:mod:`jaxschools.app.output_folder`): no JAX import yet;
2. create a locked temporary folder beside DIR (which also proves DIR's parent is writable), after
   removing the temporary folders of dead runs into DIR;
3. import JAX, switch on float64 before any array exists, run the analysis, write every output
   into the temporary folder;
4. move it into place in one rename, so DIR holds either the previous complete results or the
   new complete ones, never a mix.

The output-folder rule: a run writes only into a DIR that does not exist, is empty, or holds an earlier
jaxschools result (its ``.jaxschools-result`` marker lists what the run wrote; a result from before the
marker is recognised by its names and its ``summary.json``). Anything else (a file, a symbolic link, the
root, the current folder or one above it, a folder holding the config or data file or anything a run did
not write) is refused with exit 2 before any work, and nothing is moved or deleted. Parents of DIR that
a run created are removed again if it publishes nothing; results get the umask's permissions.

Bad input exits 2 with one ``error: ...`` line on stderr; an interrupt exits 130 (Ctrl-C, SIGINT) or 143
(SIGTERM). Either way the temporary folder is removed and DIR is untouched. A signal is raised as an
exception between Python instructions, except during the steps that must not be cut in two (creating the
temporary folder, the swap into DIR, removing the temporary folder), which finish first. The first signal
decides the exit status and the message; later ones, until the run returns, are ignored.

How long a signal waits: Python acts on it between its own instructions. While the run waits for a result
that XLA computes asynchronously, jaxlib lets the signal through at once (measured on the 2-core CPU: 0.2 s from
SIGINT to exit 130 in the middle of one 3,000,000-step adaptive HMC warm-up, a single jitted call). What runs
synchronously finishes first: a compilation (seconds on a CPU), one figure, one file. The chains of the
analysis also run as a host loop over short jitted chunks (:func:`jaxschools.core.sampling.run_in_chunks`, each
sized to last about :data:`~jaxschools.core.sampling.CHUNK_SECONDS`, 0.25 s, and at most twice the one before), so
the run checks for signals, and the test hook below fires, between chunks on every backend; an adaptive
warm-up (HMC and NUTS tune their burn-in in one call) and one chunk of sweep cells or simulated datasets
(``sweep.chunk_size``, ``simulation.batch_size``) are single calls, interrupted only while waited on.
The ``jaxschools`` command then ends with ``os._exit`` (:func:`console`): XLA may still be computing on its own
threads, and a normal interpreter exit would tear down under them (a segmentation fault, exit 139).

Test-only hook: with ``JAXSCHOOLS_TEST_SIGNAL_AT=STAGE`` the run sends itself ``JAXSCHOOLS_TEST_SIGNAL``
(``SIGINT``, the default, or ``SIGTERM``) at STAGE: ``import`` (inside ``import jax``), ``compile`` (inside the
first compilation), ``sampling-chunk:K`` (after the K-th sampling chunk is dispatched, while it runs),
``figures`` (as the figures start) or ``writing`` (before summary.json is written). It exists so that tests
interrupt named stages instead of guessing timing windows; nothing else should set it.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import os
import shutil
import signal
import sys
import threading
import time
import warnings
from pathlib import Path

from jaxschools.app import config as config_module
from jaxschools.core import validation
from jaxschools.app import output_folder, resources
from jaxschools.errors import InputError, JaxschoolsError

__all__ = ["main", "console"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM, as a shell reports a process that SIGTERM ended


class InterruptedWithProgress(Exception):
    """An interrupt after some chunks of a sweep or simulation were stored (a rerun resumes from them)."""

    def __init__(self, store_dir, terminated: bool = False):
        super().__init__(str(store_dir))
        self.store_dir, self.terminated = store_dir, terminated  # SIGTERM, not Ctrl-C: exit 143, not 130


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C's KeyboardInterrupt so that the same clean-up runs."""


class _Signals:
    """SIGINT and SIGTERM as exceptions at the next Python instruction, except inside ``held()``.

    A step that must not be cut in two runs ``held()``: a signal that arrives meanwhile is raised when the
    step is done. Once ``done`` (the results are in place), signals are ignored: nothing is left to stop.
    (Blocking the signals with ``pthread_sigmask`` would not do: JAX's threads would still take them.)

    A signal stays ``received`` until the run's clean-up ``settle()``s the outcome, and ``check()`` raises it
    again: the exception a handler raises is lost when the handler happens to run inside a garbage-collector
    callback (JAX has one; Python would print "Exception ignored" and a traceback, and carry on), so the run
    checks before each stage and before the swap into DIR, and the lost exception is not printed.

    The first signal decides the outcome (exit 130 or 143): a later one, while the first is on its way or
    during the clean-up, is ignored, so that it can neither cut the clean-up short nor change the exit status
    or the message (the kept chunks of a sweep). ``settle()``, at the start of the clean-up, ends the run's
    interest in signals until it returns.
    """

    def __init__(self):
        self.depth, self.received, self.done = 0, None, False

    def handle(self, signum, frame=None):
        if not self.done and self.received is None:
            self.received = signum
            self.check()

    def check(self):
        if self.received and not self.depth and not self.done:
            raise _Terminated() if self.received == signal.SIGTERM else KeyboardInterrupt()

    def settle(self):
        """The clean-up has begun: its outcome is decided, and signals are ignored until the run returns."""
        self.received, self.done = None, True

    @contextlib.contextmanager
    def held(self):
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
        self.check()

    @contextlib.contextmanager
    def installed(self):
        """Route SIGINT and SIGTERM here for the duration (Python allows handlers in the main thread only)."""
        self.depth, self.received, self.done = 0, None, False
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {number: signal.signal(number, self.handle) for number in (signal.SIGINT, signal.SIGTERM)}
        unraisable = sys.unraisablehook

        def quiet_interrupts(info):
            if not isinstance(info.exc_value, KeyboardInterrupt):  # an interrupt is raised again by check()
                unraisable(info)

        sys.unraisablehook = quiet_interrupts
        try:
            yield
        finally:
            sys.unraisablehook = unraisable
            for number, handler in previous.items():
                signal.signal(number, handler)


_SIGNALS = _Signals()


class _TestSignal:
    """The test-only hook of the module docstring: the run sends itself a signal at a named stage."""

    def __init__(self):
        self.stage, self.signum, self.listener = None, signal.SIGINT, None

    def arm(self) -> None:
        """Read the stage from the environment; nothing is installed unless it names one."""
        self.stage = os.environ.get("JAXSCHOOLS_TEST_SIGNAL_AT") or None
        self.signum = signal.SIGTERM if os.environ.get("JAXSCHOOLS_TEST_SIGNAL") == "SIGTERM" else signal.SIGINT
        if self.stage == "import":
            sys.meta_path.insert(0, self)  # asked for JAX's first submodule, halfway through ``import jax``

    def disarm(self) -> None:
        """Undo :meth:`arm` and :meth:`after_import` once a run returns: the import hook stays in
        ``sys.meta_path`` when JAX was imported already (it is never asked), and JAX keeps its listeners."""
        self.stage = None
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self)
        listener, self.listener = self.listener, None
        if listener is not None:
            import jax

            unregister = getattr(jax.monitoring, "unregister_event_duration_listener", None)
            if unregister is not None:
                unregister(listener)
            else:  # an older JAX: only its private registry has the listener
                with contextlib.suppress(ImportError, AttributeError, ValueError):
                    from jax._src import monitoring

                    monitoring._event_duration_secs_listeners.remove(listener)

    def fire(self, stage: str) -> None:
        if stage == self.stage:
            self.stage = None
            os.kill(os.getpid(), self.signum)

    def find_spec(self, name, path=None, target=None):  # the import hook: never finds anything itself
        if name.startswith("jax.") and self.stage == "import":
            with contextlib.suppress(ValueError):
                sys.meta_path.remove(self)
            self.fire("import")
        return None

    def after_import(self, jax) -> None:
        if self.stage == "compile" and self.listener is None:  # reported between tracing and XLA's compilation
            def listener(event, duration, **kwargs):
                if event == "/jax/core/compile/jaxpr_to_mlir_module_duration":
                    self.fire("compile")

            self.listener = listener
            jax.monitoring.register_event_duration_secs_listener(listener)


_TEST_SIGNAL = _TestSignal()


def _between(stage: str) -> None:
    """Called between chunks of work: the test hook, then any signal whose exception was lost."""
    _TEST_SIGNAL.fire(stage)
    _SIGNALS.check()


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors become InputError (one ``error:`` line, exit 2)."""

    def error(self, message):
        raise InputError(message)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="jaxschools", description="Bayesian analysis of the normal-normal hierarchical model.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    run = commands.add_parser("run", help="run an analysis (default: the seed analysis of the eight schools)")
    run.add_argument("config", nargs="?", help="experiment config (TOML); default: the embedded seed analysis")
    run.add_argument("--out", metavar="DIR", help="output folder (default: runs/<config name>)")
    run.add_argument("--data", metavar="FILE", help="data file (CSV or JSON; headers name,y,sigma, yi,vi, yi,sei, "
                     "ai,bi,ci,di or m1i,sd1i,n1i,m2i,sd2i,n2i) replacing the config's; or, when no file of that "
                     "name exists, a built-in dataset: eight_schools, bcg, normand1999")
    run.add_argument(
        "--set", metavar="SECTION.KEY=VALUE", action="append", default=[], dest="sets",
        help="override a config value (TOML syntax; repeatable)",
    )
    run.add_argument("--quiet", action="store_true", help="no progress messages")
    return parser


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _read_inputs(args):
    """Resolve the config and read and validate the data: pure Python, before JAX."""
    resolved = config_module.load_config(args.config, sets=args.sets, data=args.data)
    if args.out is not None:  # an empty --out is refused, not taken for the default
        resolved["output"]["dir"] = output_folder.from_argument(args.out)
    # ArviZ is an optional extra: asking for its file without it is bad input, refused before any work.
    if resolved["output"]["netcdf"] and importlib.util.find_spec("arviz") is None:
        raise InputError("output.netcdf = true needs ArviZ: pip install 'jaxschools[arviz]'")
    path = resolved["data"]["path"]
    table = validation.read_data(path, resolved["data"]["dataset"], resolved["data"]["measure"])
    names = table["names"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        validation.check_groups(len(names), resolved["model"]["prior"])
    config_module.check_queries(resolved, names)
    with warnings.catch_warnings(record=True) as more:
        warnings.simplefilter("always")
        config_module.check_experiment(resolved, names)
    caught.extend(w for w in more if str(w.message) not in {str(c.message) for c in caught})
    # A run that cannot fit in memory is refused now, not killed by the kernel (or XLA) minutes later.
    resources.check(resolved, len(names))
    # Last, once the inputs are known good: a folder the run may not replace is refused before any work.
    output_folder.check(config_module.output_dir(resolved), inputs=(args.config, path))
    return resolved, table, [str(w.message) for w in caught]


def _prepare_output(out_dir: Path) -> Path:
    """A fresh, locked temporary folder beside ``out_dir`` (so the final rename stays on one filesystem)."""
    try:
        return output_folder.create_temporary(out_dir)
    except OSError as exc:
        raise InputError(f"cannot write results to {out_dir}: {exc.strerror or exc}") from None


def _use_compilation_cache(jax) -> None:
    """Keep compiled XLA programs on disk, so a second run of the same shapes skips compilation.

    ``JAXSCHOOLS_CACHE_DIR`` picks the folder (default ``~/.cache/jaxschools/xla``); an empty value turns
    the cache off. The cache holds compiled code only, never results: outputs are the same with or without.
    """
    folder = os.environ.get("JAXSCHOOLS_CACHE_DIR", str(Path.home() / ".cache" / "jaxschools" / "xla"))
    if folder:
        jax.config.update("jax_compilation_cache_dir", folder)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def _json_ready(value):
    """``value`` with every NaN and infinity as None: JSON has neither (a timing of no work is NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(item) for item in value]
    return value


def _write_json(path: Path, value) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(_json_ready(value), handle, indent=2, allow_nan=False)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())


def _discard(tmp_dir: Path | None) -> None:
    if tmp_dir is not None:
        with _SIGNALS.held():
            output_folder.discard(tmp_dir)


def _run(args) -> int:
    resolved, table, warning_messages = _read_inputs(args)
    for message in warning_messages:
        _log(f"warning: {message}")
    out_dir = output_folder.absolute(config_module.output_dir(resolved))  # a link is refused, never followed
    def progress(message):
        _SIGNALS.check()
        _log(f"[jaxschools] {message}")

    progress = None if args.quiet else progress
    store_dir = out_dir.parent / f".{out_dir.name}.cells"
    tmp_dir = None
    try:
        with _SIGNALS.held():  # a signal here must not leave the folder behind, created but unnamed
            tmp_dir = _prepare_output(out_dir)
        start = time.perf_counter()
        _TEST_SIGNAL.arm()
        # float64 before any array exists: the library itself never flips this flag.
        import jax

        _TEST_SIGNAL.after_import(jax)
        jax.config.update("jax_enable_x64", True)
        _use_compilation_cache(jax)
        from jaxschools.core import data, sharding
        from jaxschools.app import experiments
        from jaxschools.presentation import report

        dataset = data.from_table(table)
        # Sweeps and simulations split their cells over every local device (GPUs, or host devices forced by
        # XLA_FLAGS); one device runs them unsharded.
        devices = jax.local_devices()
        mesh = sharding.mesh(devices) if len(devices) > 1 else None
        if progress:
            progress(f"{len(dataset.names)} schools; results will go to {out_dir}")
            if mesh is not None:
                progress(f"sweeps and simulations split over {len(devices)} {devices[0].platform} devices")
        result = experiments.run(resolved, dataset, table=table, progress=progress, store_dir=store_dir,
                                 mesh=mesh, between=_between)
        if progress:
            progress("figures and report")
        _between("figures")
        report.write_outputs(result, tmp_dir, figures=resolved["output"]["figures"])
        if resolved["output"]["netcdf"]:
            from jaxschools.interop import inference_data

            if progress:
                progress("ArviZ InferenceData: posterior.nc")
            inference_data.write_netcdf(getattr(result, "analysis", result), tmp_dir / "posterior.nc")
        _between("writing")
        _write_json(tmp_dir / "summary.json", result.summary)
        timings = dict(result.timings, wall_s=time.perf_counter() - start)
        _write_json(tmp_dir / "timings.json", timings)
        _SIGNALS.check()
        with _SIGNALS.held():
            # DIR is checked again (with the same input files) and the new results swapped in; the previous
            # ones are removed only afterwards.
            output_folder.publish(tmp_dir, out_dir, inputs=(args.config, resolved["data"]["path"]))
            # The results are in place: a signal that came during the swap, or comes later, is ignored.
            _SIGNALS.done = True
    except KeyboardInterrupt as exc:
        _SIGNALS.settle()  # the first signal decided: a second one cannot cut the clean-up short or change it
        _discard(tmp_dir)
        if store_dir.exists():
            raise InterruptedWithProgress(store_dir, isinstance(exc, _Terminated)) from None
        raise
    except BaseException:
        _SIGNALS.settle()  # the failure decided: a signal now would only leave the temporary folder behind
        _discard(tmp_dir)
        raise
    # The stored chunks of a sweep or simulation are only for resuming an unfinished run.
    shutil.rmtree(store_dir, ignore_errors=True)
    if progress:
        progress(f"done in {time.perf_counter() - start:.1f} s: {out_dir / 'report.html'}")
    return EXIT_OK


def main(argv=None) -> int:
    """The command line on ``argv`` (default ``sys.argv[1:]``); returns the exit status (see :func:`console`)."""
    try:
        with _SIGNALS.installed():
            args = _parser().parse_args(argv)
            if args.command is None:
                raise InputError("missing command; try `jaxschools run`")
            try:
                return _run(args)
            finally:
                _TEST_SIGNAL.disarm()
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except InterruptedWithProgress as exc:
        print(f"error: {'terminated' if exc.terminated else 'interrupted'}; the finished chunks are kept in "
              f"{exc.store_dir}: run the same command again to resume", file=sys.stderr)
        return EXIT_TERMINATED if exc.terminated else EXIT_INTERRUPTED
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, _Terminated)
        print(f"error: {'terminated' if terminated else 'interrupted'}; no results were written", file=sys.stderr)
        return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
    except OSError as exc:
        print(f"error: cannot write results: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except JaxschoolsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def console() -> None:
    """Entry point of the ``jaxschools`` console script and of ``python -m jaxschools``: :func:`main`, then exit.

    An interrupted run ends with ``os._exit`` once its clean-up is done and its message printed: a chunk of
    sampling may still be running on XLA's threads, and the interpreter's normal exit would tear down the
    objects those threads use (a segmentation fault, exit 139 instead of 130 or 143). Nothing is left to do
    by then: the temporary folder is gone and DIR is as it was.
    """
    status = main()
    if status in (EXIT_INTERRUPTED, EXIT_TERMINATED):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    sys.exit(status)


if __name__ == "__main__":
    console()


def __dir__():
    # The public names only, not the imports (``dir(js.diagnostics)`` lists no ``jax`` or ``jnp``).
    return list(__all__)
