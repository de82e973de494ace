"""Shared fixtures. The suite runs in float64 (the CLI's setting); float32 tests ask for it explicitly."""

import jax
import pytest

jax.config.update("jax_enable_x64", True)


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
