"""The ``lsr`` command line: the one part of :mod:`lsr` that imports ``encoders`` and ``anserini_bridge``.

:mod:`lsr.cli.app` holds the parser and :func:`main`; every other public
module here is one command (``encode``, ``index``, ``search``, ``eval``,
``eval_mbeir`` for ``lsr eval-mbeir``, ...) and defines
``register(subparsers) -> dict[str, callable]``: it adds its sub-parsers and
returns ``{command_name: handler(args) -> int}``. Handlers import model or
Java code inside the function, never at module level, so ``lsr eval`` and
``lsr --help`` start fast and work without them. Flags that several commands
share are in :mod:`lsr.cli._options`.
"""

from .app import main

__all__ = ["main"]
