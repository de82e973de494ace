"""Chains over several processes (hosts) with ``jax.distributed``: a runnable example.

Every process runs this same script. ``jax.distributed.initialize`` connects them; ``jax.devices()`` then lists
the devices of all processes, the mesh spans them, and ``sampling.run(..., mesh=mesh)`` splits the chains over
every device of every process. Chain c still draws from ``fold_in(key, c)``, so the result is the one a single
device gives. Here each process keeps only running summaries (``stream=``), which come back replicated on
every process; with draws kept, ``jax.experimental.multihost_utils.process_allgather`` collects them.

On one machine, two processes on the CPU (``--devices-per-process`` host devices each)::

    python examples/distributed_chains.py --process-id 0 --num-processes 2 &
    python examples/distributed_chains.py --process-id 1 --num-processes 2

On a cluster, start one process per host with the first host's address as ``--coordinator`` (under SLURM or
Open MPI, ``jax.distributed.initialize()`` with no arguments finds them itself).
"""

from __future__ import annotations

import argparse
import json
import os


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coordinator", default="localhost:12355", help="host:port of process 0")
    parser.add_argument("--num-processes", type=int, default=2)
    parser.add_argument("--process-id", type=int, required=True)
    parser.add_argument("--devices-per-process", type=int, default=2, help="CPU only: host devices per process")
    parser.add_argument("--chains", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--json", action="store_true", help="print the summaries as one JSON line (for tests)")
    args = parser.parse_args()
    # Host devices must be fixed before JAX starts (CPU only; GPUs are found as they are).
    os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count={args.devices_per_process}")

    import jax

    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # cross-process reductions on CPUs
    jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id)

    import jaxschools as js

    data = js.data.eight_schools()
    logdensity = js.models.marginal_logdensity(data)
    fit = js.laplace.fit(logdensity, js.laplace.default_init(data))
    mesh = js.sharding.mesh()  # every device of every process
    summary = js.sampling.run(jax.random.key(0), js.kernels.rwmh(logdensity, fit.cov, 2.0), fit.mode,
                              num_samples=args.steps, num_chains=args.chains, burn_in=500, mesh=mesh,
                              stream=js.streaming.Stream())
    mean, ess, rhat = (jax.device_get(x) for x in (summary.mean, summary.ess, summary.rhat))
    if args.json:
        print(json.dumps({"process": jax.process_index(), "devices": jax.device_count(), "mean": mean.tolist(),
                          "ess": ess.tolist(), "rhat": rhat.tolist()}), flush=True)
    print(f"process {jax.process_index()} of {jax.process_count()}, {jax.device_count()} devices in all: "
          f"E[mu] = {mean[0]:.4f}, E[log tau] = {mean[1]:.4f}, ESS = {ess[0]:.0f}, {ess[1]:.0f}, "
          f"R-hat = {rhat[0]:.4f}, {rhat[1]:.4f}", flush=True)
    jax.distributed.shutdown()


if __name__ == "__main__":
    main()
