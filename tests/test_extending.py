"""docs/extending.md is executable: its MALA kernel, run as the page runs it, matches the exact posterior."""

import pathlib
import re

import jax.numpy as jnp
import numpy as np
import pytest
from test_hmc import assert_matches_exact, oracle

import jaxschools as js

PAGE = pathlib.Path(__file__).resolve().parents[1] / "docs" / "extending.md"


@pytest.fixture(scope="module")
def page():
    """Every ```python block of the page, executed in order in one namespace (as a reader would paste them)."""
    blocks = re.findall(r"```python\n(.*?)```", PAGE.read_text(encoding="utf-8"), flags=re.S)
    assert len(blocks) >= 3, "the page lost its worked example"
    pytest.importorskip("blackjax")
    namespace = {"__name__": "extending_example"}
    for block in blocks:
        exec(compile(block, str(PAGE), "exec"), namespace)  # noqa: S102 - the page is part of this repository
    return namespace


def test_the_page_follows_the_protocol(page):
    algo = page["mala"](page["logdensity"], 0.5, page["metric"])
    state = algo.init(page["fit"].mode)
    assert isinstance(state, page["MALAState"])
    new, info = algo.step(js.sampling.chain_keys(page["key_sample"], 1)[0], state, step_size=0.1)
    assert set(info._fields) == {"acceptance_rate", "is_accepted"}
    assert 0.0 <= float(info.acceptance_rate) <= 1.0
    # Its own run and BlackJAX's loop both moved.
    assert float(jnp.mean(page["infos"].acceptance_rate)) > 0.3
    assert page["theirs"].positions.shape == (4, 200, 2)


def test_the_kernel_runs_in_blackjax_loop_from_a_position(page):
    """The page's BlackJAX run starts from ``initial_position=`` (BlackJAX calls ``init(position, rng_key)``):
    one chain, the mean of mu within 5 MCSE (ArviZ, from the draws' ESS) of the quadrature oracle's."""
    import arviz

    positions = np.asarray(page["states"].position)
    assert positions.shape == (2000, 2) and np.all(np.isfinite(positions))
    mu = positions[None, :, 0]
    ess = float(arviz.ess(mu))
    assert ess >= 100, f"ESS {ess:.0f} of mu is too small for its MCSE to be trusted"
    error = float(mu.mean()) - oracle("eight schools", "half_cauchy").mu_mean()
    mcse = float(arviz.mcse(mu, method="mean"))
    assert abs(error) < 5 * mcse, f"mean of mu off by {error:.4g} = {error / mcse:.2f} MCSE"


def test_the_worked_example_matches_the_exact_posterior(page):
    samples = page["samples"]
    assert_matches_exact(samples.positions, None, "eight schools", "half_cauchy")
    # Warm-up tuned each chain toward MALA's optimal acceptance of 0.574.
    rates = np.asarray(samples.acceptance_rate)
    assert np.all((rates > 0.4) & (rates < 0.75))
