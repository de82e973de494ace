"""The presentation layer: the HTML report and the figures, rendered from the application's result.

No module here imports JAX (tests/test_layers.py).
"""
