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
