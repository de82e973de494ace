"""BlackJAX's protocol as BlackJAX's own loop calls it: ``init(position, rng_key)``.

``blackjax.util.run_inference_algorithm(key, algorithm, n, initial_position=x)`` splits off a key and calls
``algorithm.init(x, init_key)``; our driver calls ``algorithm.init(x)``. Every kernel of ours (random walk,
HMC, NUTS) and the MALA kernel of docs/extending.md take both, and give the same state.

Where each runs in BlackJAX's loop from ``initial_position=`` (XLA compilation is most of a run's cost, so
the runs the suite already makes are the ones started that way): the random walk here, on the eight schools
against the quadrature oracle; HMC in test_hmc.py::test_our_hmc_runs_in_blackjax_loop and NUTS in
test_nuts.py's ``gaussian_run``, against a Gaussian's known moments; MALA in test_extending.py, from the
guide's own example. BlackJAX's kernels in our driver: test_hmc.py::test_blackjax_hmc_runs_in_our_driver,
test_nuts.py::test_blackjax_nuts_runs_in_our_driver_with_our_adaptation and the guide's last example.
"""

import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from oracle import eight_schools_oracle

import jaxschools as js
from jaxschools.core.kernels.base import BoundInit
from jaxschools.core.kernels.rwmh import RWMHState

blackjax = pytest.importorskip("blackjax")

PAGE = pathlib.Path(__file__).resolve().parents[1] / "docs" / "extending.md"
PRIOR = "half_cauchy"  # the extension guide's target
Z = 5.0


@pytest.fixture(scope="module")
def mala():
    """The guide's kernel: its first python block (the definitions only, not the page's runs)."""
    block = re.findall(r"```python\n(.*?)```", PAGE.read_text(encoding="utf-8"), flags=re.S)[0]
    namespace = {"__name__": "extending_kernel"}
    exec(compile(block, str(PAGE), "exec"), namespace)  # noqa: S102 - the page is part of this repository
    return namespace["mala"]


@pytest.fixture(scope="module")
def target(eight):
    logdensity = js.models.marginal_logdensity(eight, prior=PRIOR)
    return logdensity, js.laplace.fit(logdensity, js.laplace.default_init(eight))


def kernels(logdensity, fit, mala):
    """Every kernel, preconditioned by the Laplace fit."""
    metric = jnp.diag(fit.cov)
    return {
        "rwmh": js.kernels.rwmh(logdensity, fit.cov, 2.0),
        "hmc": js.kernels.hmc(logdensity, 0.5, metric, num_integration_steps=5),
        "nuts": js.kernels.nuts(logdensity, 0.5, metric),
        "mala": mala(logdensity, 0.5, metric),
    }


def test_init_takes_a_key_ignores_it_and_keeps_the_data_traced(eight, target, mala):
    """``init(x)``, ``init(x, key)`` and ``init(x, rng_key=key)`` are the same state, for every kernel; and
    ``init`` is a pytree whose leaves are the log-density's data, so one trace serves every dataset."""
    fit = target[1]
    traces = []

    @jax.jit
    def states(algorithms, position, key):
        traces.append(1)
        return {name: (algo.init(position), algo.init(position, key), algo.init(position, rng_key=key))
                for name, algo in algorithms.items()}

    for shift in range(2):
        data = js.data.Schools(eight.y + shift, eight.sigma * (1 + shift))
        logdensity = js.models.marginal_logdensity(data, prior=PRIOR)
        algorithms = kernels(logdensity, fit, mala)
        for name in ("rwmh", "hmc", "nuts"):
            assert isinstance(algorithms[name].init, BoundInit), name
        for name, (plain, *keyed) in states(algorithms, fit.mode, jax.random.key(7)).items():
            np.testing.assert_allclose(plain.logdensity, logdensity(fit.mode), rtol=1e-12, err_msg=name)
            for state in keyed:
                assert type(state) is type(plain), name
                for ours, reference in zip(state, plain):
                    np.testing.assert_array_equal(ours, reference, err_msg=name)
    assert len(traces) == 1


def test_random_walk_runs_in_blackjax_loop_from_a_position(target, mala):
    """The call that raised ``TypeError: init() got multiple values for argument 'logdensity_fn'``; the mean
    of mu within 5 MCSE (ArviZ, from the draws' ESS) of the quadrature oracle's."""
    import arviz

    logdensity, fit = target
    algo = kernels(logdensity, fit, mala)["rwmh"]
    final, (states, infos) = blackjax.util.run_inference_algorithm(
        rng_key=jax.random.key(11), inference_algorithm=algo, num_steps=2000, initial_position=fit.mode
    )
    assert isinstance(final, RWMHState)
    assert states.position.shape == (2000, 2) and bool(jnp.all(jnp.isfinite(states.position)))
    assert 0.2 < float(jnp.mean(infos.acceptance_rate)) < 0.6  # about a third, as in the seed
    mu = np.asarray(states.position[:, 0])[None]
    ess = float(arviz.ess(mu))
    assert ess >= 100, f"ESS {ess:.0f} of mu is too small for its MCSE to be trusted"  # 230 to 370 over 20 keys
    error, mcse = float(mu.mean()) - eight_schools_oracle(PRIOR).mu_mean(), float(arviz.mcse(mu, method="mean"))
    assert abs(error) < Z * mcse, f"mean of mu off by {error:.4g} = {error / mcse:.2f} MCSE"
