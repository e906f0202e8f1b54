"""Loading from the Hugging Face hub without a retry storm when it cannot be reached.

Asked for a hub id while offline, the Hugging Face libraries retry every file
with back-off, printing a warning each time, for about a minute before they
give up. The loaders in this package ask :func:`hub_unavailable` first: when
``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set, or the hub endpoint
does not answer within a few seconds, they load from the local cache only
(``local_files_only=True``), which succeeds at once for a cached model and
fails at once otherwise; :func:`hub_error` then says so in one line.
"""

from __future__ import annotations

import logging
import os
import sys
import urllib.error
import urllib.request
from contextlib import contextmanager
from functools import lru_cache

from lsr.errors import EnvironmentProblem, first_line

_TRUE = {"1", "on", "yes", "true"}
#: Seconds to wait for the hub endpoint to answer before treating it as unreachable.
PROBE_TIMEOUT = 5.0


def endpoint() -> str:
    """The hub the Hugging Face libraries would use (``HF_ENDPOINT``, default https://huggingface.co)."""
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def offline_variable() -> str | None:
    """The environment variable that puts the Hugging Face libraries offline, if one is set."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(name, "").strip().lower() in _TRUE:
            return name
    constants = sys.modules.get("huggingface_hub.constants")  # also when set in code after import
    if constants is not None and getattr(constants, "HF_HUB_OFFLINE", False):
        return "HF_HUB_OFFLINE"
    return None


@lru_cache(maxsize=None)
def _probe(url: str) -> str | None:
    request = urllib.request.Request(url, method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=PROBE_TIMEOUT):
            return None
    except urllib.error.HTTPError:
        return None  # it answered: reachable, whatever the status
    except urllib.error.URLError as e:
        reason = e.reason
        return f"{url} cannot be reached ({getattr(reason, 'strerror', None) or reason})"
    except (OSError, ValueError) as e:
        return f"{url} cannot be reached ({getattr(e, 'strerror', None) or e})"


def hub_unavailable() -> str | None:
    """Why models cannot be downloaded from the hub now (offline mode, or no answer), or None when they can."""
    var = offline_variable()
    if var:
        return f"{var} is set"
    return _probe(endpoint())


def cache_dir() -> str:
    """Where the Hugging Face libraries keep downloaded models."""
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except (ImportError, AttributeError):
        return os.path.join(os.path.expanduser("~"), ".cache", "huggingface", "hub")


def hub_error(what: str, model: str, hub_id: str, offline: str | None, error: BaseException) -> EnvironmentProblem:
    """The one-line error for a hub model that could not be loaded (``offline``: from :func:`hub_unavailable`)."""
    read_as = "" if model.startswith("hf:") else \
        f" ({model!r} is not an alias or an existing directory, so it was read as a hub id)"
    if offline:
        return EnvironmentProblem(
            f"cannot load {what} {model!r}: {offline}, and {hub_id} is not in the local Hugging Face cache "
            f"({cache_dir()}){read_as}; download it where the hub is reachable (`hf download {hub_id}`), or pass "
            "the path of a local copy")
    return EnvironmentProblem(f"cannot load {what} {model!r} from the hub id {hub_id}: {first_line(error)} (hub "
                              "models need network access or a local copy: pass a directory)")


@contextmanager
def cache_only():
    """``huggingface_hub`` in offline mode while the block runs, for libraries without a ``local_files_only``
    flag (open_clip's pretrained tags): cached files load, missing ones fail at once instead of retrying.

    Their own error log lines are held back meanwhile: the caller replaces a failure with one message.
    """
    try:
        from huggingface_hub import constants
    except ImportError:
        constants = None
    before = constants.HF_HUB_OFFLINE if constants else None
    if constants:
        constants.HF_HUB_OFFLINE = True
    logging.disable(logging.ERROR)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)
        if constants:
            constants.HF_HUB_OFFLINE = before
