"""One YAML document in, one checked resource out (or several, for a `List`).

This is where `apiVersion` and `kind` are read and the spec is handed to its
kind's parser. Nothing here looks across documents; `crosscheck` does that.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .errors import ConfigError
from .fields import supported
from .kinds.common import parse_meta
from .model import DEFAULT_NAMESPACE, ObjectMeta, Source
from .registry import BY_KIND, NOT_YET_KINDS, Resource
from .schema import DocChecker, Located
from .yaml_lines import YamlMap

ROOT_FIELDS = frozenset({"apiVersion", "kind", "metadata", "spec"})
ROOT_IGNORED = frozenset({"status"})
LIST_FIELDS = frozenset({"apiVersion", "kind", "items"})
LIST_IGNORED = frozenset({"metadata"})


@dataclass(frozen=True, slots=True)
class ParsedDoc:
    """What one document yielded: its identity, its resource, and what was wrong."""

    file: str
    kind: str
    meta: ObjectMeta | None  # set when the document names itself validly
    resource: Resource | None  # None when invalid, or of a kind that is ignored
    lines: Mapping[str, int]  # field path -> line, for findings across documents
    errors: tuple[ConfigError, ...]
    warnings: tuple[ConfigError, ...]


def parse_document(value: object, line: int, file: str) -> list[ParsedDoc]:
    """Check one YAML document (a resource or a `List` of them)."""
    if isinstance(value, YamlMap) and value.get("kind") == "List":
        return _parse_list(value, line, file)
    return [_parse_resource(value, line, file)]


def _done(
    ck: DocChecker, meta: ObjectMeta | None = None, resource: Resource | None = None
) -> ParsedDoc:
    if ck.errors:
        resource = None
    return ParsedDoc(
        ck.file, ck.kind, meta, resource, ck.lines, tuple(ck.errors), tuple(ck.warnings)
    )


def _parse_list(value: YamlMap, line: int, file: str) -> list[ParsedDoc]:
    ck = DocChecker(file, "List")
    root = Located(value, "", line)
    fields = ck.fields(root, LIST_FIELDS, ignored=LIST_IGNORED) or {}
    version_at = ck.required(fields, "apiVersion", root)
    if version_at is not None and ck.string(version_at) not in (None, "v1"):
        ck.error(version_at, "a List must have apiVersion v1")
    results: list[ParsedDoc] = []
    if (items_at := fields.get("items")) is not None:
        for item in ck.items(items_at) or ():
            if isinstance(item.value, YamlMap) and item.value.get("kind") == "List":
                ck.error(item, "a List may not contain a List")
                continue
            results.append(_parse_resource(item.value, item.line, file))
    return [_done(ck), *results]


def _parse_resource(value: object, line: int, file: str) -> ParsedDoc:
    ck = DocChecker(file)
    root = Located(value, "", line)
    if not isinstance(value, YamlMap):
        ck.mapping(root)
        return _done(ck)
    _identify(ck, value)
    kind_at = _scalar_at(value, "kind")
    version_at = _scalar_at(value, "apiVersion")
    if kind_at is None or version_at is None:
        fields = ck.fields(root, ROOT_FIELDS, ignored=ROOT_IGNORED) or {}
        ck.required(fields, "apiVersion", root)
        ck.required(fields, "kind", root)
        return _done(ck)
    kind = ck.string(kind_at)
    api_version = ck.string(version_at)
    if kind is None or api_version is None:
        return _done(ck)
    info = BY_KIND.get(kind)
    if info is None:
        known = ", ".join(sorted(BY_KIND))
        if kind in NOT_YET_KINDS:
            ck.not_yet(kind_at, repr(kind))
        else:
            ck.error(kind_at, f"unknown kind {kind!r}: pocketmesh reads {known}")
        return _done(ck)
    if not info.accepts(api_version):
        ck.error(version_at, f"{kind} has apiVersion {info.api_versions()}, not {api_version!r}")
        return _done(ck)
    if info.document_level:  # its fields sit beside apiVersion, kind and metadata
        table = {**{name: supported() for name in ROOT_FIELDS - {"spec"}}, **info.spec}
        doc_fields = ck.fields(root, table, ignored=ROOT_IGNORED)
    else:
        doc_fields = ck.fields(root, ROOT_FIELDS, ignored=ROOT_IGNORED)
    if doc_fields is None:
        return _done(ck)
    meta = parse_meta(ck, doc_fields.get("metadata"), root)
    spec = root if info.document_level else doc_fields.get("spec")
    if spec is None and info.spec_required:
        ck.required(doc_fields, "spec", root)
    # Without a valid name the spec is still checked, so every mistake shows at once.
    stand_in = ObjectMeta(kind, "", DEFAULT_NAMESPACE, Source(file, line))
    resource = info.parser(ck, meta or stand_in, spec)
    return _done(ck, meta, resource)


def _scalar_at(mapping: YamlMap, key: str) -> Located | None:
    if mapping.get(key) is None:
        return None
    return Located(mapping[key], key, mapping.key_lines.get(key, mapping.line))


def _identify(ck: DocChecker, root: YamlMap) -> None:
    """Name the document in its findings from the start, as best we can read it."""
    kind = root.get("kind")
    if isinstance(kind, str):
        ck.kind = kind
    metadata = root.get("metadata")
    if isinstance(metadata, YamlMap) and isinstance(name := metadata.get("name"), str):
        namespace = metadata.get("namespace")
        if not isinstance(namespace, str) or not namespace:
            namespace = DEFAULT_NAMESPACE
        ck.name = f"{namespace}/{name}"
