"""Progress bars that also read well when stderr is not a terminal.

On a terminal this is tqdm as usual. Redirected to a file or a CI log, a bar
becomes one plain line every ``interval`` seconds (and one at the end), instead
of carriage-return redraws that show as one long line or nothing at all.
"""

from __future__ import annotations

import sys

from tqdm.auto import tqdm


class _Lines:
    """A file-like object that turns tqdm's carriage-return redraws into separate lines."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, s: str) -> None:
        s = s.replace("\r", "").replace("\x1b[A", "")
        if s.strip():
            self.stream.write(s.rstrip("\n") + "\n")

    def flush(self) -> None:
        self.stream.flush()


def progress_bar(*, total=None, desc: str = "", unit: str = "it", disable: bool = False, interval: float = 10.0,
                 **kwargs) -> tqdm:
    """A tqdm bar on stderr; a line every ``interval`` seconds when stderr is not a terminal."""
    stream = sys.stderr
    if disable or stream is None:
        return tqdm(total=total, desc=desc, unit=unit, disable=True, **kwargs)
    if hasattr(stream, "isatty") and stream.isatty():
        return tqdm(total=total, desc=desc, unit=unit, file=stream, **kwargs)
    return tqdm(total=total, desc=desc, unit=unit, file=_Lines(stream), mininterval=interval, maxinterval=interval,
                ascii=True, dynamic_ncols=False, ncols=100, **kwargs)


__all__ = ["progress_bar"]
