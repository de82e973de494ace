"""Project exceptions. Pure Python: importable before JAX, so input errors are instant."""

__all__ = ["JaxschoolsError", "InputError"]


class JaxschoolsError(Exception):
    """Base class of every error jaxschools raises on purpose."""


class InputError(JaxschoolsError, ValueError):
    """Bad user input (data file, config value, command-line option).

    The message names the problem and, where there is one, the row, column or key.
    The command line turns it into ``error: <message>`` on stderr and exit status 2.
    """


def __dir__():
    # The public names only, not the imports (``dir(js.diagnostics)`` lists no ``jax`` or ``jnp``).
    return list(__all__)
