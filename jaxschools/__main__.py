"""``python -m jaxschools`` is the ``jaxschools`` command."""

from jaxschools.cli import console

console()
