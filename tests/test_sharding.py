"""Chains and datasets split over devices with jax.sharding give the draws of a single-device run.

The multi-device checks need ``XLA_FLAGS=--xla_force_host_platform_device_count=4``, which must be set before
JAX starts: they run in one subprocess (``_SCRIPT``), which prints the largest differences it finds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxschools as js
from jaxschools.core import sharding

TOLERANCE = 1e-10  # the bar; identical keys make the runs equal up to XLA's rounding differences

_SCRIPT = textwrap.dedent(
    """
    import json
    import jax, jax.numpy as jnp, numpy as np
    jax.config.update("jax_enable_x64", True)
    import jaxschools as js
    from jaxschools.app import experiments
    from jaxschools.core import sharding

    assert jax.device_count() == 4, jax.devices()
    mesh = sharding.mesh()
    data = js.data.eight_schools()
    logdensity = js.models.marginal_logdensity(data)
    fit = js.laplace.fit(logdensity, js.laplace.default_init(data))
    key = jax.random.key(11)
    report = {}

    def compare(name, make, **kwargs):
        single = make(**kwargs)
        split = make(mesh=mesh, **kwargs)
        shards = len(split.positions.sharding.device_set)
        diff = float(np.max(np.abs(np.asarray(single.positions) - np.asarray(split.positions))))
        acc = float(np.max(np.abs(np.asarray(single.acceptance_rate) - np.asarray(split.acceptance_rate))))
        report[name] = {"positions": diff, "acceptance": acc, "shape": list(split.positions.shape),
                        "devices": shards}

    rwmh = js.kernels.rwmh(logdensity, fit.cov, 2.0)
    # 6 chains: padded to 8 over the 4 devices, two of them dropped.
    compare("rwmh-6", lambda **kw: js.sampling.run(
        key, rwmh, fit.mode, num_samples=500, num_chains=6, burn_in=130, **kw))
    # 10 chains in groups of at most 2 per device: 3 per device padded to 2 groups of 2, run one group after
    # another on each of the 4 devices (the layout of runs with more chains per device than CHAINS_PER_GROUP).
    compare("rwmh-grouped", lambda mesh=None: js.sampling._run(
        key, rwmh, fit.mode, 300, 10, 40, None, mesh, 2 if mesh is not None else 10 ** 6))
    edges = np.stack([np.linspace(-20, 30, 11), np.linspace(-4, 5, 11)])
    stream = js.streaming.Stream(num_batches=4, histogram_edges=edges)
    summaries = [js.sampling.run(key, rwmh, fit.mode, num_samples=700, num_chains=6, burn_in=50, stream=stream,
                                 mesh=m) for m in (None, mesh)]
    report["streaming"] = {
        field: float(np.max(np.abs(np.asarray(getattr(summaries[0], field)) - np.asarray(getattr(summaries[1], field)))))
        for field in ("mean", "variance", "chain_mean", "ess", "rhat", "histogram")}
    # A kernel without blocked noise (one key per step). Few steps: a gradient kernel's dynamics amplify the
    # last-bit differences that XLA's batch-shape-dependent reductions make in the log-density (seen on one
    # device too, between 1 and 4 chains), so after a long warm-up the draws agree only statistically.
    hmc = js.kernels.hmc(logdensity, 0.5, jnp.diag(fit.cov), 4)
    compare("hmc", lambda **kw: js.sampling.run(key, hmc, fit.mode, num_samples=40, num_chains=4, **kw))

    config = js.config.load_config(None, sets=[
        "simulation.num_datasets=10", "simulation.num_samples=200", "simulation.burn_in=100",
        "simulation.batch_size=6", "simulation.priors=['half_normal']", "simulation.num_ranks=9",
    ])
    single = experiments._run_simulation(config, data, experiments.ChunkStore(None), None)[1]
    split = experiments._run_simulation(config, data, experiments.ChunkStore(None), None, mesh)[1]
    below = [a["half_normal"]["below"] for a in (single["arrays"], split["arrays"])]
    ranks = [a["half_normal"]["rank"] for a in (single["arrays"], split["arrays"])]
    report["simulation"] = {"below": float(np.max(np.abs(below[0] - below[1]))),
                            "ranks_equal": bool(np.array_equal(ranks[0], ranks[1])),
                            "shape": list(below[1].shape)}
    print("REPORT" + json.dumps(report))
    """
)


@pytest.fixture(scope="module")
def four_devices():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(line for line in done.stdout.splitlines() if line.startswith("REPORT"))
    return json.loads(line[len("REPORT"):])


# The tests that use ``four_devices`` or start processes are slow (`pytest -m slow`): a fresh JAX with forced
# host devices compiles every program again (~50 s on two cores), and the multi-process example ~15 s.
@pytest.mark.slow
@pytest.mark.parametrize("name", ["rwmh-6", "rwmh-grouped", "hmc"])
def test_sharded_chains_draw_what_one_device_draws(four_devices, name):
    result = four_devices[name]
    assert result["devices"] == 4, result  # really split, not replicated on one device
    assert result["positions"] <= TOLERANCE and result["acceptance"] <= TOLERANCE, result


@pytest.mark.slow
def test_padding_chains_to_the_devices_keeps_the_requested_number(four_devices):
    assert four_devices["rwmh-6"]["shape"] == [6, 500, 2]
    assert four_devices["rwmh-grouped"]["shape"] == [10, 300, 2]


@pytest.mark.slow
def test_sharded_streaming_summaries_match_one_device(four_devices):
    """Six chains padded to eight: the two padding chains must stay out of the pooled summaries too."""
    result = four_devices["streaming"]
    assert max(result.values()) <= TOLERANCE * 1e3, result  # ESS ~ 1e3: relative 1e-10
    assert result["histogram"] == 0.0


@pytest.mark.slow
def test_sharded_simulation_study_matches_one_device(four_devices):
    result = four_devices["simulation"]
    assert result["shape"] == [10, 10]  # 10 datasets; mu, tau and 8 school effects
    assert result["below"] <= TOLERANCE and result["ranks_equal"], result


@pytest.mark.slow  # over 9 s of the default suite on the 2-core machine; CI runs it (-m slow)
def test_one_device_mesh_and_bad_meshes():
    data = js.data.eight_schools()
    logdensity = js.models.marginal_logdensity(data)
    algo = js.kernels.rwmh(logdensity, jnp.eye(2), 1.0)
    key = jax.random.key(0)
    plain = js.sampling.run(key, algo, jnp.zeros(2), num_samples=70, num_chains=3)
    meshed = js.sampling.run(key, algo, jnp.zeros(2), num_samples=70, num_chains=3, mesh=sharding.mesh())
    np.testing.assert_allclose(np.asarray(meshed.positions), np.asarray(plain.positions), rtol=0, atol=TOLERANCE)
    with pytest.raises(ValueError, match="one-dimensional"):
        js.sampling.run(key, algo, jnp.zeros(2), num_samples=5, num_chains=3, mesh="gpu")
    with pytest.raises(ValueError, match="at least one device"):
        sharding.mesh([])


@pytest.mark.slow
def test_the_multi_process_example_matches_one_device(tmp_path):
    """examples/distributed_chains.py in two processes (jax.distributed, two host devices each) summarises the
    chains a single device runs: same keys, so the same summaries up to rounding."""
    import socket

    with socket.socket() as probe:  # a free port for the coordinator
        probe.bind(("localhost", 0))
        port = probe.getsockname()[1]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    command = [sys.executable, os.path.join(root, "examples", "distributed_chains.py"), "--coordinator",
               f"localhost:{port}", "--num-processes", "2", "--chains", "6", "--steps", "1300", "--json"]
    processes = [subprocess.Popen(command + ["--process-id", str(i)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, env=env) for i in range(2)]
    outputs = [process.communicate(timeout=300) for process in processes]
    for process, (out, err) in zip(processes, outputs):
        assert process.returncode == 0, err[-3000:]
    results = [json.loads(next(line for line in out.splitlines() if line.startswith("{"))) for out, _ in outputs]
    assert [r["devices"] for r in results] == [4, 4]

    data = js.data.eight_schools()
    logdensity = js.models.marginal_logdensity(data)
    fit = js.laplace.fit(logdensity, js.laplace.default_init(data))
    single = js.sampling.run(jax.random.key(0), js.kernels.rwmh(logdensity, fit.cov, 2.0), fit.mode,
                             num_samples=1300, num_chains=6, burn_in=500, stream=js.streaming.Stream())
    for result in results:  # six chains padded to eight over four devices in two processes
        np.testing.assert_allclose(result["mean"], np.asarray(single.mean), rtol=1e-10)
        np.testing.assert_allclose(result["rhat"], np.asarray(single.rhat), rtol=1e-10)
        np.testing.assert_allclose(result["ess"], np.asarray(single.ess), rtol=1e-9)
