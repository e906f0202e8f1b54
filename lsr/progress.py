"""Progress bars that also work in logs.

On a terminal, :class:`tqdm` is the ordinary redrawn bar. When standard error
is not a terminal (a log file, CI, ``nohup``, a pipe), an ordinary tqdm bar
either writes carriage-return-separated redraws that show up as one endless
line, or (where callers turned it off for that reason) nothing at all. This
``tqdm`` then prints one plain line every ``LSR_PROGRESS_INTERVAL`` seconds
(default 30), plus the final state::

    stage 1: 120/300 (40%) [01:02<01:33, 1.93step/s]

Use it wherever ``tqdm.auto.tqdm`` would be used; arguments are the same.
"""

from __future__ import annotations

import os
import sys

from tqdm.auto import tqdm as _tqdm

# In a notebook tqdm.auto draws a widget, which is already fine.
_NOTEBOOK = any("notebook" in cls.__module__ for cls in _tqdm.__mro__)
_LOG_FORMAT = "{desc}: {n_fmt}/{total_fmt} ({percentage:.0f}%) [{elapsed}<{remaining}, {rate_fmt}]{postfix}"
_LOG_FORMAT_NO_TOTAL = "{desc}: {n_fmt} [{elapsed}, {rate_fmt}]{postfix}"


def log_interval() -> float:
    """Seconds between progress lines when standard error is not a terminal (``LSR_PROGRESS_INTERVAL``)."""
    try:
        value = float(os.environ.get("LSR_PROGRESS_INTERVAL", "30"))
    except ValueError:
        return 30.0
    return value if value > 0 else 30.0


def stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class _LineWriter:
    """A file for tqdm that turns each redraw into one newline-terminated line."""

    def __init__(self, stream):
        self._stream = stream
        self._last = ""

    def write(self, s: str) -> None:
        line = s.replace("\r", "").replace("\x1b[A", "").strip()
        count = line.split(" [", 1)[0]
        if line and count != self._last:  # one line per count: closing redraws the last one
            self._last = count
            self._stream.write(line + "\n")
            self._stream.flush()

    def flush(self) -> None:
        self._stream.flush()


def _known_total(args, kwargs) -> bool:
    if kwargs.get("total") is not None:
        return True
    iterable = args[0] if args else kwargs.get("iterable")
    try:
        return iterable is not None and len(iterable) >= 0
    except TypeError:
        return False


class tqdm(_tqdm):  # noqa: N801  (a drop-in for tqdm.tqdm)
    """``tqdm.auto.tqdm`` on a terminal; periodic log lines when standard error is not one."""

    def __init__(self, *args, **kwargs):
        if kwargs.get("file") is None and not _NOTEBOOK and not stderr_is_terminal():
            kwargs["file"] = _LineWriter(sys.stderr)
            kwargs.setdefault("mininterval", log_interval())
            kwargs["miniters"] = 1  # time decides, not a count learnt from the first updates
            kwargs["maxinterval"] = max(kwargs["mininterval"], 10.0)
            if kwargs.get("bar_format") is None:
                kwargs["bar_format"] = _LOG_FORMAT if _known_total(args, kwargs) else _LOG_FORMAT_NO_TOTAL
        super().__init__(*args, **kwargs)
