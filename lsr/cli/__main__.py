"""``python -m lsr.cli``: the ``lsr`` command."""

import sys

from .app import main

sys.exit(main())
