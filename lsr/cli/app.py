"""The ``lsr`` entry point: the argument parser and the dispatch to one command module per command.

Every other module of :mod:`lsr.cli` except the ``_``-prefixed helpers is a
command module with ``register(subparsers) -> {command_name: handler}``;
:func:`build_parser` finds them, so adding a command means adding a module.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..errors import LsrError

# listed first in ``lsr --help``, in this order; the other commands follow alphabetically
CORE_COMMANDS = ("encode", "index", "search", "eval")

#: command name -> handler(args) -> exit status, filled by :func:`build_parser`
COMMANDS: dict = {}


def package_version() -> str:
    """The installed ``lsr-search`` version; from a source tree that is not installed, setup.py's."""
    import re
    from importlib import metadata

    setup_py = Path(__file__).resolve().parents[2] / "setup.py"
    try:
        installed = metadata.distribution("lsr-search")
    except metadata.PackageNotFoundError:
        installed = None
    if installed is not None:
        return installed.version
    try:
        m = re.search(r"""\bversion\s*=\s*["']([^"']+)["']""", setup_py.read_text(encoding="utf-8"))
    except OSError:
        m = None
    if m:
        return m.group(1)
    from .. import __version__

    return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lsr", description="Learned sparse retrieval with Lucene impact indexes.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in _command_modules():
        COMMANDS.update(module.register(sub))
    return parser


def _command_modules():
    import importlib
    import pkgutil

    from .. import cli

    this = __name__.rpartition(".")[2]
    names = [m.name for m in pkgutil.iter_modules(cli.__path__)
             if not m.name.startswith("_") and m.name != this]  # helpers (e.g. _options), this module
    order = {name: i for i, name in enumerate(CORE_COMMANDS)}
    for name in sorted(names, key=lambda n: (order.get(n, len(order)), n)):
        yield importlib.import_module(f"{cli.__name__}.{name}")


def main(argv=None) -> int:
    try:
        return _run(argv)
    except BrokenPipeError:
        # whoever read standard output went away (`lsr search ... | head`): stop quietly, as Unix tools do,
        # and keep Python from reporting the pipe again when it flushes standard output at exit
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        return 141  # 128 + SIGPIPE, the status of a Unix tool stopped by a closed pipe


def _run(argv) -> int:
    from ..errors import use_command_line_wording

    args = build_parser().parse_args(argv)
    use_command_line_wording()
    try:
        return COMMANDS[args.command](args)
    except LsrError as e:
        print(f"lsr {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lsr {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        use_command_line_wording(False)
