"""Sub-commands of ``lsr`` beyond the core ones in :mod:`lsr.cli`.

Each module here defines ``register(subparsers) -> dict[str, callable]``: it
adds its sub-parsers and returns ``{command_name: handler(args) -> int}``.
Handlers import model or Java code inside the function, never at module level.
"""
