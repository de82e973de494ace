"""``python -m benchmarks [--smoke]``: run every benchmark, print the tables, rewrite benchmarks/RESULTS.md.

Figures come only from here, never from timed tests. ``--smoke`` runs each at a tiny size (part of the test
suite) and writes nothing. Needs the test and bench extras (``pip install -e '.[test,bench]'``); without
NumPyro its rows are left out.
"""

from __future__ import annotations

import argparse
import datetime
import os
import pathlib
import subprocess
import sys
import tempfile

# One XLA host device per core, set before JAX starts, so the benchmarks can also measure chains and datasets
# sharded over the cores (jax.sharding). The unsharded figures run on one device as before; on a GPU machine the
# GPUs are the local devices and this flag only shapes the (unused) host platform.
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={os.cpu_count() or 1}").strip()

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

from benchmarks import (  # noqa: E402
    common,
    datasets,
    exact_gradients,
    float32,
    learnbayes,
    rwmh_throughput,
    streaming_memory,
    sweep_vs_loop,
)

BENCHMARKS = [rwmh_throughput, learnbayes, float32, sweep_vs_loop, datasets, streaming_memory, exact_gradients]
RESULTS = pathlib.Path(__file__).with_name("RESULTS.md")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, nothing written")
    parser.add_argument("--only", help="comma-separated benchmark names (default: all), e.g. rwmh_throughput,float32")
    parser.add_argument("--output", type=pathlib.Path, default=RESULTS, help=f"results file (default {RESULTS})")
    parser.add_argument("--section", type=pathlib.Path, help=argparse.SUPPRESS)  # child: write one section here
    args = parser.parse_args(argv)
    names = {module.__name__.rsplit(".", 1)[-1]: module for module in BENCHMARKS}
    chosen = list(names) if not args.only else args.only.split(",")
    unknown = [name for name in chosen if name not in names]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(names)}")
    if args.section is not None:  # a child of a full run: one benchmark, its section to a file
        (module,) = (names[name] for name in chosen)
        args.section.write_text(module.markdown(module.run(smoke=args.smoke)))
        return 0
    sections = []
    for name in chosen:
        if args.smoke:  # tiny sizes: in this process, quickly
            section = names[name].markdown(names[name].run(smoke=True))
        else:
            section = _run_in_child(name)
        print(section, flush=True)
        sections.append(section)
    if args.smoke:
        return 0
    header = [
        "# Benchmark results",
        "",
        f"Written by `python -m benchmarks` on {datetime.date.today().isoformat()} at revision "
        f"{common.git_revision()}.",
        "",
        f"Machine: {common.machine()}.",
        "",
        f"Command: `python -m benchmarks` (XLA_FLAGS=`{os.environ.get('XLA_FLAGS', '')}`), "
        f"{len(jax.local_devices())} local device(s). The gradient kernels' benchmark is separate "
        "(`python -m benchmarks.gradient_kernels`, RESULTS_gradient_kernels.md).",
        "",
    ]
    args.output.write_text("\n".join(header + sections))
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


def _run_in_child(name: str) -> str:
    """One benchmark in a fresh process: no compiled code, caches or memory carried over from the others (a
    long run once exhausted the process's memory mappings), and a timing that only its own work affects."""
    with tempfile.TemporaryDirectory() as folder:
        section = pathlib.Path(folder) / "section.md"
        subprocess.run([sys.executable, "-m", "benchmarks", "--only", name, "--section", str(section)], check=True)
        return section.read_text()


if __name__ == "__main__":
    sys.exit(main())
