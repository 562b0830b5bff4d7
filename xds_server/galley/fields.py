"""The field tables: every field each kind accepts, and what pocketmesh does with it.

Each kind declares its spec once, as nested `Shape`s (field name -> `Field`); its
parser checks documents against the same tables (`DocChecker.fields`), the
field-coverage test enumerates them, and `docs/fields.md` is generated from them.
So a field exists for the checker exactly when it exists for the docs and the tests.

A field's `Status` says what happens when a document sets it:

- SUPPORTED: built into the Envoy config (the coverage test proves the output changes);
- DEPRECATED: built, with a warning that Istio deprecates it (and what replaces it);
- NO_EFFECT: Istio itself does nothing with it here: accepted with a warning saying so;
- LABEL: a name for people and tools, checked but shaping no traffic (as in Istio:
  "label assigned to the port");
- RESTRICTED: only the values that mean what pocketmesh always does are accepted (the
  note lists them); any other value is refused with a located error;
- NOT_YET: refused: `file:line: Kind ns/name: field: not supported by pocketmesh yet`.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = [
    "NOT_SUPPORTED_YET",
    "Field",
    "Shape",
    "Status",
    "deprecated",
    "each",
    "keyed",
    "label",
    "no_effect",
    "not_yet",
    "obj",
    "restricted",
    "shape",
    "supported",
    "walk",
]

NOT_SUPPORTED_YET = "not supported by pocketmesh yet"


class Status(enum.Enum):
    SUPPORTED = "supported"
    DEPRECATED = "deprecated"
    NO_EFFECT = "no effect"
    LABEL = "label"
    RESTRICTED = "restricted"
    NOT_YET = "not supported yet"


@dataclass(frozen=True, slots=True)
class Field:
    """One field: its status, a note for people, and the fields inside it, if any."""

    status: Status = Status.SUPPORTED
    note: str = ""
    fields: Shape | None = None  # an object (each item's, for a list; each value's, for a map)
    repeated: bool = False  # a list: its items are `fields` objects (or scalars)
    keyed: bool = False  # a map from user-chosen keys to `fields` objects

    @property
    def accepted(self) -> bool:
        """Read by the parser (not refused, not skipped)."""
        return self.status not in (Status.NOT_YET, Status.NO_EFFECT)


Shape = Mapping[str, Field]


def shape(**fields: Field) -> Shape:
    """An object's fields; read-only so that no parser changes another's table."""
    return MappingProxyType(dict(fields))


def supported(note: str = "") -> Field:
    return Field(Status.SUPPORTED, note)


def obj(fields: Shape, note: str = "") -> Field:
    return Field(Status.SUPPORTED, note, fields)


def each(fields: Shape | None = None, note: str = "") -> Field:
    """A list (of objects with `fields`, or of scalars)."""
    return Field(Status.SUPPORTED, note, fields, repeated=True)


def keyed(fields: Shape, note: str = "") -> Field:
    """A map from keys the user picks (port numbers, ...) to objects with `fields`."""
    return Field(Status.SUPPORTED, note, fields, keyed=True)


def deprecated(note: str, fields: Shape | None = None) -> Field:
    return Field(Status.DEPRECATED, note, fields)


def no_effect(note: str) -> Field:
    return Field(Status.NO_EFFECT, note)


def label(note: str = "a label; changes no Envoy config (as in Istio)") -> Field:
    return Field(Status.LABEL, note)


def restricted(note: str, fields: Shape | None = None) -> Field:
    return Field(Status.RESTRICTED, note, fields)


def not_yet(note: str = "") -> Field:
    return Field(Status.NOT_YET, note)


def walk(fields: Shape, prefix: str = "") -> Iterator[tuple[str, Field]]:
    """Every field path under `fields`, depth first, in declaration order.

    Lists show as `name[]`, maps as `name.<key>`: `spec.http[].match[].uri`.
    """
    for name, field in fields.items():
        path = f"{prefix}.{name}" if prefix else name
        yield path, field
        if field.fields is not None:
            inner = f"{path}[]" if field.repeated else f"{path}.<key>" if field.keyed else path
            yield from walk(field.fields, inner)
