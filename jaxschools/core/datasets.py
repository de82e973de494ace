"""Built-in datasets as plain Python tables (no JAX), in the shape ``validation.read_table`` returns."""

__all__ = ["EIGHT_SCHOOLS"]

# BDA3 Table 5.2 (Rubin 1981): estimated coaching effects on SAT-V scores and their standard errors.
EIGHT_SCHOOLS = {
    "names": ["A", "B", "C", "D", "E", "F", "G", "H"],
    "y": [28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0],
    "sigma": [15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0],
}


def __dir__():
    # The public names only, not the imports (``dir(js.diagnostics)`` lists no ``jax`` or ``jnp``).
    return list(__all__)
