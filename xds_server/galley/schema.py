"""Typed access to one YAML document, reporting every mistake with its line.

`DocChecker` is the validator's toolbox: each accessor checks one value's type
(and optionally a rule), records an error naming the field path and line when
it is wrong, and returns the value or None. The kinds' parsers are written in
terms of these accessors and never look at lines themselves.

Null values count as absent, as Kubernetes treats them: `labels:` with nothing
after it is the same as no `labels` at all.
"""

from __future__ import annotations

import datetime
import difflib
import json
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

from .errors import ERROR, WARNING, ConfigError
from .fields import NOT_SUPPORTED_YET, Shape, Status
from .yaml_lines import YamlList, YamlMap

Rule = Callable[[str], str | None]  # None when fine, else a phrase: "must be ..."

_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")


@dataclass(frozen=True, slots=True)
class Located:
    """A value, the path of the field holding it, and the line that field is on."""

    value: object
    path: str
    line: int


def child_path(parent: str, key: object) -> str:
    if isinstance(key, str) and _PLAIN_KEY.match(key):
        return f"{parent}.{key}" if parent else key
    return f"{parent}[{json.dumps(str(key))}]"


def index_path(parent: str, index: int) -> str:
    return f"{parent}[{index}]"


def type_name(value: object) -> str:
    names: tuple[tuple[type | tuple[type, ...], str], ...] = (
        (bool, "boolean"),
        (int, "integer"),
        (float, "number"),
        (str, "string"),
        (dict, "mapping"),
        (list, "list"),
        (bytes, "binary"),
        ((datetime.date, datetime.datetime), "timestamp"),
        (set, "set"),
    )
    if value is None:
        return "null"
    for types, name in names:
        if isinstance(value, types):
            return name
    return type(value).__name__


class DocChecker:
    """Checks one document, collecting errors, warnings, and the line of every field read."""

    def __init__(self, file: str, kind: str = "", name: str = "") -> None:
        self.file = file
        self.kind = kind
        self.name = name  # "namespace/name" once known
        self.errors: list[ConfigError] = []
        self.warnings: list[ConfigError] = []
        self.lines: dict[str, int] = {}

    # --- reporting ---------------------------------------------------------

    def _finding(self, line: int, path: str, message: str, severity: str) -> ConfigError:
        return ConfigError(self.file, line, self.kind, self.name, path, message, severity)

    def error(self, at: Located, message: str, *, path: str | None = None) -> None:
        path = at.path if path is None else path
        self.errors.append(self._finding(at.line, path, message, ERROR))

    def warn(self, at: Located, message: str, *, path: str | None = None) -> None:
        path = at.path if path is None else path
        self.warnings.append(self._finding(at.line, path, message, WARNING))

    def _expected(self, at: Located, expected: str) -> None:
        self.error(at, f"expected {expected}, got {type_name(at.value)}")

    # --- containers --------------------------------------------------------

    def mapping(self, at: Located) -> YamlMap | None:
        """The mapping at `at` (repeated keys reported), or None after an error."""
        if not isinstance(at.value, YamlMap):
            self._expected(at, "mapping")
            return None
        for key, line in at.value.duplicate_keys:
            self.error(Located(None, child_path(at.path, key), line), "duplicate key")
        return at.value

    def children(self, at: Located) -> dict[object, Located] | None:
        """Every entry of the mapping at `at`, each with its own path and line."""
        mapping = self.mapping(at)
        if mapping is None:
            return None
        result: dict[object, Located] = {}
        for key, value in mapping.items():
            path = child_path(at.path, key)
            line = mapping.key_lines.get(key, mapping.line)
            self.lines[path] = line
            result[key] = Located(value, path, line)
        return result

    def fields(
        self,
        at: Located,
        allowed: Shape | Collection[str],
        *,
        unsupported: Collection[str] = (),
        ignored: Collection[str] = (),
    ) -> dict[str, Located] | None:
        """The known fields of an object; unknown ones are errors, nulls are dropped.

        `allowed` is the object's field table (`galley.fields`): a NOT_YET field is
        refused ("not supported by pocketmesh yet"), a NO_EFFECT one skipped with a
        warning, a DEPRECATED one read with a warning. A plain collection of names
        allows them all; `unsupported` and `ignored` then name refused and skipped ones
        (Kubernetes bookkeeping such as `metadata.uid`).
        """
        entries = self.children(at)
        if entries is None:
            return None
        table = allowed if isinstance(allowed, Mapping) else None
        result: dict[str, Located] = {}
        for key, child in entries.items():
            field = table.get(key) if table is not None and isinstance(key, str) else None
            if field is not None:
                if child.value is None:
                    continue
                if field.status is Status.NOT_YET:
                    self.error(child, _not_yet(field.note))
                elif field.status is Status.NO_EFFECT:
                    self.warn(child, f"has no effect: {field.note}")
                else:
                    if field.status is Status.DEPRECATED:
                        self.warn(child, f"deprecated: {field.note}")
                    result[str(key)] = child
            elif table is None and isinstance(key, str) and key in allowed:
                if child.value is not None:
                    result[key] = child
            elif isinstance(key, str) and key in ignored:
                continue
            elif isinstance(key, str) and key in unsupported:
                self.error(child, NOT_SUPPORTED_YET)
            else:
                self.error(child, _unknown_field(key, allowed))
        return result

    def not_yet(self, at: Located, what: str = "") -> None:
        """Refuse a value pocketmesh does not build yet: "'X' is not supported ... yet"."""
        self.error(at, f"{what} is {NOT_SUPPORTED_YET}" if what else NOT_SUPPORTED_YET)

    def required(self, fields: dict[str, Located], key: str, parent: Located) -> Located | None:
        found = fields.get(key)
        if found is None:
            self.error(parent, "required field missing", path=child_path(parent.path, key))
        return found

    def items(self, at: Located, *, non_empty: bool = False) -> list[Located] | None:
        """The items of the list at `at`, each with its own path and line."""
        if not isinstance(at.value, YamlList):
            self._expected(at, "list")
            return None
        if non_empty and not at.value:
            self.error(at, "must not be empty")
        result = []
        for i, (item, line) in enumerate(zip(at.value, at.value.item_lines, strict=True)):
            path = index_path(at.path, i)
            self.lines[path] = line
            result.append(Located(item, path, line))
        return result

    # --- scalars -----------------------------------------------------------

    def string(self, at: Located, rule: Rule | None = None) -> str | None:
        if not isinstance(at.value, str):
            self._expected(at, "string")
            return None
        if rule is not None and (problem := rule(at.value)) is not None:
            self.error(at, f"{at.value!r} {problem}")
            return None
        return at.value

    def integer(self, at: Located, low: int, high: int) -> int | None:
        value = at.value
        if not isinstance(value, int) or isinstance(value, bool):
            self._expected(at, "integer")
            return None
        if not low <= value <= high:
            self.error(at, f"{value} must be between {low} and {high}")
            return None
        return value

    def enum(self, at: Located, choices: Collection[str], *, fold_case: bool = False) -> str | None:
        """One of `choices`; with `fold_case`, matched case-insensitively and upper-cased."""
        value = self.string(at)
        if value is None:
            return None
        candidate = value.upper() if fold_case else value
        if candidate not in choices:
            self.error(at, f"{value!r} must be one of {', '.join(sorted(choices))}")
            return None
        return candidate

    # --- composites --------------------------------------------------------

    def strings(
        self, at: Located, rule: Rule | None = None, *, non_empty: bool = False
    ) -> list[tuple[str, Located]] | None:
        """A list of strings, each checked; returns the good ones with their locations."""
        items = self.items(at, non_empty=non_empty)
        if items is None:
            return None
        result = []
        for item in items:
            value = self.string(item, rule)
            if value is not None:
                result.append((value, item))
        return result

    def string_map(
        self, at: Located, key_rule: Rule | None = None, value_rule: Rule | None = None
    ) -> dict[str, str] | None:
        """A mapping of string to string, e.g. labels."""
        entries = self.children(at)
        if entries is None:
            return None
        result: dict[str, str] = {}
        for key, child in entries.items():
            if not isinstance(key, str):
                self.error(child, f"key must be a string, got {type_name(key)}")
                continue
            if key_rule is not None and (problem := key_rule(key)) is not None:
                self.error(child, f"{key!r} {problem}")
                continue
            value = self.string(child, value_rule)
            if value is not None:
                result[key] = value
        return result


def _not_yet(note: str) -> str:
    return f"{NOT_SUPPORTED_YET} ({note})" if note else NOT_SUPPORTED_YET


def _unknown_field(key: object, allowed: Collection[str]) -> str:
    message = "unknown field"
    if isinstance(key, str):
        close = difflib.get_close_matches(key, sorted(allowed), n=1)
        if close:
            message += f" (did you mean {close[0]!r}?)"
    return message
