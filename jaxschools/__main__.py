"""``python -m jaxschools`` is the ``jaxschools`` command."""

import sys

from jaxschools.cli import main

sys.exit(main())
