"""The command line: ``jaxschools run [CONFIG.toml] [--out DIR] [--data FILE] [--set section.key=value ...]``.

Order of work, so that bad input is answered instantly and never leaves anything behind:

1. parse arguments, resolve the config and read the data with the pure-Python layer
   (:mod:`jaxschools.config`, :mod:`jaxschools.validation`): no JAX import yet;
2. create a private temporary folder beside DIR (which also proves DIR's parent is writable);
3. import JAX, switch on float64 before any array exists, run the analysis, write every output
   into the temporary folder;
4. move it into place in one rename, so DIR holds either the previous complete results or the
   new complete ones, never a mix.

Bad input exits 2 with one ``error: ...`` line on stderr; an interrupt exits 130. Either way the
temporary folder is removed and DIR is untouched.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

from jaxschools import config as config_module
from jaxschools import datasets, validation
from jaxschools.errors import InputError, JaxschoolsError

__all__ = ["main"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


class InterruptedWithProgress(Exception):
    """An interrupt after some chunks of a sweep or simulation were stored (a rerun resumes from them)."""

    def __init__(self, store_dir):
        super().__init__(str(store_dir))
        self.store_dir = store_dir


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
    run.add_argument("--data", metavar="FILE", help="data file (CSV name,y,sigma or JSON) replacing the config's")
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
    if args.out:
        resolved["output"]["dir"] = str(Path(args.out).resolve())
    path = resolved["data"]["path"]
    table = validation.read_table(path) if path else datasets.EIGHT_SCHOOLS
    names = table["names"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        validation.check_groups(len(names), resolved["model"]["prior"])
    config_module.check_queries(resolved, names)
    with warnings.catch_warnings(record=True) as more:
        warnings.simplefilter("always")
        config_module.check_experiment(resolved, names)
    caught.extend(w for w in more if str(w.message) not in {str(c.message) for c in caught})
    return resolved, table, [str(w.message) for w in caught]


def _prepare_output(out_dir: Path) -> Path:
    """A fresh temporary folder beside ``out_dir`` (so the final rename stays on one filesystem)."""
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    except OSError as exc:
        raise InputError(f"cannot write results to {out_dir}: {exc.strerror or exc}") from None


def _publish(tmp_dir: Path, out_dir: Path) -> None:
    """Swap the complete new results into place; the previous ones are removed only afterwards."""
    old = None
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        os.rename(out_dir, old / "previous")
    os.rename(tmp_dir, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _write_json(path: Path, value) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(value, handle, indent=2, allow_nan=False)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())


def _run(args) -> int:
    resolved, table, warning_messages = _read_inputs(args)
    for message in warning_messages:
        _log(f"warning: {message}")
    out_dir = config_module.output_dir(resolved).resolve()
    progress = None if args.quiet else (lambda message: _log(f"[jaxschools] {message}"))
    tmp_dir = _prepare_output(out_dir)
    store_dir = out_dir.parent / f".{out_dir.name}.cells"
    try:
        start = time.perf_counter()
        # float64 before any array exists: the library itself never flips this flag.
        import jax

        jax.config.update("jax_enable_x64", True)
        from jaxschools import data, experiments, report

        dataset = data.from_table(table)
        if progress:
            progress(f"{len(dataset.names)} schools; results will go to {out_dir}")
        result = experiments.run(resolved, dataset, progress=progress, store_dir=store_dir)
        if progress:
            progress("figures and report")
        report.write_outputs(result, tmp_dir, figures=resolved["output"]["figures"])
        _write_json(tmp_dir / "summary.json", result.summary)
        timings = dict(result.timings, wall_s=time.perf_counter() - start)
        _write_json(tmp_dir / "timings.json", timings)
        _publish(tmp_dir, out_dir)
    except KeyboardInterrupt:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        if store_dir.exists():
            raise InterruptedWithProgress(store_dir) from None
        raise
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    # The stored chunks of a sweep or simulation are only for resuming an unfinished run.
    shutil.rmtree(store_dir, ignore_errors=True)
    if progress:
        progress(f"done in {time.perf_counter() - start:.1f} s: {out_dir / 'report.html'}")
    return EXIT_OK


def main(argv=None) -> int:
    """Entry point of the ``jaxschools`` console script; returns the exit status."""
    try:
        args = _parser().parse_args(argv)
        if args.command is None:
            raise InputError("missing command; try `jaxschools run`")
        return _run(args)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except InterruptedWithProgress as exc:
        print(f"error: interrupted; the finished chunks are kept in {exc.store_dir}: run the same command again "
              "to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print("error: interrupted; no results were written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as exc:
        print(f"error: cannot write results: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except JaxschoolsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
