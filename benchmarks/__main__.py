"""``python -m benchmarks [--smoke]``: run every benchmark, print the tables, rewrite benchmarks/RESULTS.md.

Figures come only from here, never from timed tests. ``--smoke`` runs each at a tiny size (part of the test
suite) and writes nothing.
"""

from __future__ import annotations

import argparse
import datetime
import pathlib
import sys

import jax

jax.config.update("jax_enable_x64", True)

from benchmarks import common, datasets, rwmh_throughput, sweep_vs_loop  # noqa: E402

BENCHMARKS = [rwmh_throughput, sweep_vs_loop, datasets]
RESULTS = pathlib.Path(__file__).with_name("RESULTS.md")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, nothing written")
    args = parser.parse_args(argv)
    sections = []
    for module in BENCHMARKS:
        section = module.markdown(module.run(smoke=args.smoke))
        print(section)
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
    ]
    RESULTS.write_text("\n".join(header + sections))
    print(f"wrote {RESULTS}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
