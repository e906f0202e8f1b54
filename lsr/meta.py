"""Metadata: one JSON object with a ``format`` tag, in a file written atomically or in an engine's schema.

The vector directory (``lsr-vectors.json``), the impact index
(``lsr-index.json``), the embedding store (``lsr-embeddings.json``), a Milvus
collection's description and an OpenSearch/Elasticsearch mapping's ``_meta``
are dataclasses derived from :class:`Meta`; the STAIR model directory
(``lsr-stair.json``) uses :func:`write_meta` and :func:`read_meta` directly.

The tag is ``"<name>/<version>"`` (``"lsr-vectors/1"``). A reader accepts its
own name at its own version or an older one (:meth:`Meta.upgrade` converts an
older object); another name, or a newer version (metadata written by a newer
release of the project), is refused with an error that names the file and
says what to do.

``to_dict`` and ``from_dict`` follow the dataclass fields: the JSON key is
the field name. A field whose value is not plain JSON (a
:class:`~lsr.quantize.Quantizer`) declares how to convert it with
:func:`meta_field` (``dump`` and ``load``); plain fields are converted to
their annotated type (``int``, ``float``, ``bool``, ``str``, ``dict``, or that
type or ``None``) when read. A key that is absent or ``null`` takes the field's
``absent`` value, else its default, else ``None``; a ``required`` field must
be present. One field may collect the keys the class does not know
(``rest=True``): they are read into it and written back beside the others.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import types
import typing
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping

from .errors import InputError

_RULE = "lsr.meta"
_UNSET: Any = object()  # no ``absent`` value given


def write_meta(path: str | os.PathLike, data: dict) -> None:
    """Write ``data`` as indented JSON to ``path`` through a temporary file, so a reader never sees half of it."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_meta(path: str | os.PathLike, fmt: str | None = None) -> dict:
    """The JSON object in ``path``; raises ``ValueError`` when it is unreadable, not an object, or (with
    ``fmt``) of another format."""
    d = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(d, dict):
        raise ValueError("not a JSON object")
    if fmt is not None and d.get("format") != fmt:
        raise ValueError(f"unknown format {d.get('format')!r}")
    return d


@dataclass(frozen=True)
class _Rule:
    dump: Callable[[Any], Any] | None = None
    load: Callable[[Any], Any] | None = None
    required: bool = False
    absent: Any = _UNSET
    rest: bool = False


_PLAIN = _Rule()


def meta_field(*, default: Any = MISSING, default_factory: Any = MISSING, dump: Callable[[Any], Any] | None = None,
               load: Callable[[Any], Any] | None = None, required: bool = False, absent: Any = _UNSET,
               rest: bool = False):
    """A :class:`Meta` dataclass field with its conversion rules.

    ``dump`` turns a value (never ``None``) into JSON and ``load`` turns it
    back; ``required`` refuses metadata without the key; ``absent`` is what a
    missing key reads as when that differs from the default; ``rest`` makes
    the field (a dict) collect the keys no other field names.
    """
    return dataclasses.field(default=default, default_factory=default_factory,
                             metadata={_RULE: _Rule(dump, load, required, absent, rest)})


def _converter(hint) -> Callable[[Any], Any] | None:
    """How a plain annotated value is read: ``int``, ``float``, ``bool``, ``str`` or ``dict``, optionally ``| None``."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) != 1:
            return None
        hint = args[0]
    if hint in (int, float, bool, str):
        return hint
    if hint is dict or typing.get_origin(hint) is dict:
        return lambda v: dict(v or {})
    return None


class Meta:
    """Base of the metadata dataclasses; a subclass is a ``@dataclass`` and names its format in the class
    statement::

        @dataclass
        class IndexMeta(Meta, format="lsr-impact-index", what="index metadata", remedy="rebuild the index"):
            ...

    ``format`` and ``version`` (default 1) make the tag (:attr:`FORMAT`,
    :attr:`VERSION`); ``what`` names the metadata and ``remedy`` says how to
    make it anew, for error messages (``"<source>: corrupted <what> (...); <remedy>"``).
    """

    FORMAT: ClassVar[str]
    VERSION: ClassVar[int] = 1
    WHAT: ClassVar[str] = "metadata"
    REMEDY: ClassVar[str] = "write it again"

    def __init_subclass__(cls, format: str | None = None, version: int | None = None, what: str | None = None,
                          remedy: str | None = None, **kwargs):
        super().__init_subclass__(**kwargs)
        for name, value in (("FORMAT", format), ("VERSION", version), ("WHAT", what), ("REMEDY", remedy)):
            if value is not None:
                setattr(cls, name, value)

    @classmethod
    def tag(cls) -> str:
        """The ``format`` value this class writes, ``"<FORMAT>/<VERSION>"``."""
        return f"{cls.FORMAT}/{cls.VERSION}"

    # ------------------------------------------------------------- writing
    def to_dict(self) -> dict:
        """The metadata as a JSON object, ``format`` first."""
        out: dict[str, Any] = {"format": self.tag()}
        rest: dict = {}
        for f in dataclasses.fields(self):
            rule = f.metadata.get(_RULE, _PLAIN)
            value = getattr(self, f.name)
            if rule.rest:
                rest = value or {}
            else:
                out[f.name] = rule.dump(value) if rule.dump is not None and value is not None else value
        out.update((k, v) for k, v in rest.items() if k not in out)
        return out

    def write(self, path: str | os.PathLike) -> None:
        """Write :meth:`to_dict` to ``path`` atomically."""
        write_meta(path, self.to_dict())

    # ------------------------------------------------------------- reading
    @classmethod
    def owns(cls, d: Any) -> bool:
        """Whether ``d`` is an object tagged with this class's format name, at any version."""
        return isinstance(d, Mapping) and _split_tag(d.get("format"))[0] == cls.FORMAT

    @classmethod
    def upgrade(cls, d: dict, version: int) -> dict:
        """Convert an object of an older ``version`` to the current one (by default nothing: no format has a
        version 2 yet)."""
        return d

    @classmethod
    def from_dict(cls, d: Any, source: str = "metadata"):
        """Read an object written by :meth:`to_dict` (this version or an older one); ``source`` names it in errors."""
        if not isinstance(d, Mapping):
            raise cls._corrupted(source, f"expected a JSON object, got {type(d).__name__}")
        d = cls.upgrade(dict(d), cls._version(d, source))
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        known = {"format"}
        for f in dataclasses.fields(cls):
            rule = f.metadata.get(_RULE, _PLAIN)
            if rule.rest:
                continue
            known.add(f.name)
            raw = d.get(f.name)
            if raw is None:
                if rule.required:
                    raise cls._corrupted(source, f"{f.name!r} is missing")
                if rule.absent is not _UNSET:
                    values[f.name] = copy.copy(rule.absent)
                elif f.default is MISSING and f.default_factory is MISSING:
                    values[f.name] = None
                continue
            convert = rule.load or _converter(hints[f.name])
            if convert is None:
                raise TypeError(f"{cls.__name__}.{f.name}: a {hints[f.name]} field needs load and dump in meta_field")
            try:
                values[f.name] = convert(raw)
            except (ValueError, TypeError) as e:
                raise cls._corrupted(source, f"{f.name}: {e}") from None
        for f in dataclasses.fields(cls):
            if f.metadata.get(_RULE, _PLAIN).rest:
                values[f.name] = {k: v for k, v in d.items() if k not in known}
        return cls(**values)

    @classmethod
    def read(cls, path: str | os.PathLike):
        """The metadata in the JSON file ``path``; every problem is an :class:`~lsr.errors.InputError` naming it."""
        try:
            d = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise cls._corrupted(path, str(e)) from None
        return cls.from_dict(d, str(path))

    @classmethod
    def _version(cls, d: Mapping, source) -> int:
        tag = d.get("format")
        name, version = _split_tag(tag)
        if name != cls.FORMAT or version is None:
            raise InputError(f"{source}: format {tag!r} is not {cls.WHAT} (expected {cls.tag()!r}); {cls.REMEDY}")
        if version > cls.VERSION:
            raise InputError(f"{source}: format {tag!r} was written by a newer version of lsr than this one, which "
                             f"reads {cls.FORMAT} up to version {cls.VERSION}; upgrade lsr to read it, or "
                             f"{cls.REMEDY} with this version")
        return version

    @classmethod
    def _corrupted(cls, source, detail: str) -> InputError:
        return InputError(f"{source}: corrupted {cls.WHAT} ({detail}); {cls.REMEDY}")


def _split_tag(tag: Any) -> tuple[str | None, int | None]:
    """``"name/3"`` -> ``("name", 3)``; anything else -> ``(None, None)`` or ``(name, None)``."""
    if not isinstance(tag, str) or "/" not in tag:
        return None, None
    name, _, version = tag.rpartition("/")
    return name, int(version) if version.isdigit() else None
