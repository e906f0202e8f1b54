"""``python -m lsr``: the ``lsr`` command."""

import sys

from .cli import main

sys.exit(main())
