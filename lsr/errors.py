"""The project's own error types.

Every failure a user can cause (bad input files, mismatched indexes, a missing
Java runtime) raises a subclass of :class:`LsrError` whose message names the
input and says how to fix it. The command line prints the message and exits
with status 2 instead of showing a traceback.
"""


class LsrError(Exception):
    """Base class of every error the project raises on purpose."""


class InputError(LsrError, ValueError):
    """A user-supplied file, record or argument is invalid."""


class IndexMismatchError(LsrError):
    """An index is used with an encoder, vocabulary or quantization it was not built with."""


class EnvironmentProblem(LsrError, RuntimeError):
    """A runtime requirement (Java, the Anserini jar, an optional package) is missing."""


_command_line = False


def first_line(error: BaseException | str, limit: int | None = None) -> str:
    """The first line of an error's message (at most ``limit`` characters), or the error type's name when the
    message is empty: what messages quote of an exception raised by another library."""
    text = str(error).strip()
    if not text:
        return type(error).__name__ if isinstance(error, BaseException) else ""
    line = text.splitlines()[0]
    return line[:limit] if limit else line


def use_command_line_wording(on: bool = True) -> None:
    """Make :func:`option` name command-line flags (the ``lsr`` command calls this) instead of keywords."""
    global _command_line
    _command_line = on


def option(keyword: str, flag: str) -> str:
    """How an error message names a setting: ``flag`` (``--overwrite``) inside the ``lsr`` command,
    ``keyword`` (``overwrite=True``) for a Python caller."""
    return flag if _command_line else keyword
