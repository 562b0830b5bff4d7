"""Re-parse only what changed: files by their text, and documents within a file.

Parsing is most of a reload's cost, and an edit usually touches one document of one
file; yet operators keep hundreds of documents in a file (one per kind, as the demo
does). A changed file is split at its `---` markers and each document is looked up
by its own text. A cached document remembers the line it was parsed at and is moved
to where it stands now, so an edit above it does not re-parse it.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import OrderedDict
from typing import Any, TypeVar

from .documents import ParsedDoc, parse_document
from .errors import ERROR, ConfigError
from .model import ObjectMeta, ServiceEntry
from .yaml_lines import YamlSyntaxError, load_documents, split_documents

Parsed = tuple[tuple[ParsedDoc, ...], tuple[ConfigError, ...]]
V = TypeVar("V")


class _Lru(OrderedDict[tuple[str, bytes], V]):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def lookup(self, key: tuple[str, bytes]) -> V | None:
        found = self.get(key)
        if found is not None:
            self.move_to_end(key)
        return found

    def keep(self, key: tuple[str, bytes], value: V) -> V:
        self[key] = value
        while len(self) > self.size:
            self.popitem(last=False)
        return value


_FILES: _Lru[Parsed] = _Lru(4096)
# A document's text -> (the line it was parsed at, what it yielded).
_DOCUMENTS: _Lru[tuple[int, Parsed]] = _Lru(1 << 17)


def clear() -> None:
    """Forget every parse (benchmarks of a cold load)."""
    _FILES.clear()
    _DOCUMENTS.clear()


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


def parse_file(text: str, file: str) -> Parsed:
    """Every document of a file, checked; or its YAML syntax error (and no documents)."""
    key = (file, _digest(text))
    found = _FILES.lookup(key)
    if found is not None:
        return found
    chunks = split_documents(text)
    if chunks is None or len(chunks) < 2:
        return _FILES.keep(key, parse_text(text, file))
    keys = [(file, _digest(chunk)) for _, chunk in chunks]
    if sum(k not in _DOCUMENTS for k in keys) * 2 > len(keys):
        # Mostly new (a first load): one parser over the whole text is several times
        # faster than one per document. It fills the document cache as it goes.
        return _FILES.keep(key, _parse_whole(text, file, chunks, keys))
    docs: list[ParsedDoc] = []
    for (first_line, chunk), chunk_key in zip(chunks, keys, strict=True):
        found = _DOCUMENTS.lookup(chunk_key)
        if found is None:
            found = _DOCUMENTS.keep(chunk_key, (1, parse_text(chunk, file)))
        parsed_at, (chunk_docs, errors) = found
        offset = first_line - parsed_at
        if errors:  # a syntax error: the file yields nothing but it, as a whole parse does
            return _FILES.keep(key, ((), tuple(_moved_error(e, offset) for e in errors)))
        docs.extend(moved(d, offset) for d in chunk_docs)
    return _FILES.keep(key, (tuple(docs), ()))


def _parse_whole(
    text: str, file: str, chunks: list[tuple[int, str]], keys: list[tuple[str, bytes]]
) -> Parsed:
    loaded = load_documents(text)
    if isinstance(loaded, YamlSyntaxError):
        return parse_text(text, file)  # the same error, said the same way
    by_chunk: list[list[ParsedDoc]] = [[] for _ in chunks]
    starts = [first_line for first_line, _ in chunks]
    i = 0
    docs: list[ParsedDoc] = []
    for doc in loaded:
        while i + 1 < len(starts) and starts[i + 1] <= doc.line:
            i += 1
        parsed = parse_document(doc.value, doc.line, file)
        docs.extend(parsed)
        by_chunk[i].extend(parsed)
    for start, chunk_key, chunk_docs in zip(starts, keys, by_chunk, strict=True):
        _DOCUMENTS.keep(chunk_key, (start, (tuple(chunk_docs), ())))
    return tuple(docs), ()


def parse_text(text: str, file: str) -> Parsed:
    loaded = load_documents(text)
    if isinstance(loaded, YamlSyntaxError):
        message = f"invalid YAML: {loaded.message} (column {loaded.column})"
        return (), (ConfigError(file, loaded.line, "", "", "", message, ERROR),)
    docs: list[ParsedDoc] = []
    for doc in loaded:
        docs.extend(parse_document(doc.value, doc.line, file))
    return tuple(docs), ()


def moved(doc: ParsedDoc, offset: int) -> ParsedDoc:
    """`doc` as if its text began `offset` lines further down."""
    if offset == 0:
        return doc
    return dataclasses.replace(
        doc,
        meta=_moved_meta(doc.meta, offset),
        resource=_moved_resource(doc.resource, offset),
        lines={path: line + offset for path, line in doc.lines.items()},
        errors=tuple(_moved_error(e, offset) for e in doc.errors),
        warnings=tuple(_moved_error(w, offset) for w in doc.warnings),
    )


def _moved_meta(meta: ObjectMeta | None, offset: int) -> Any:
    if meta is None or meta.source.line == 0:
        return meta
    source = dataclasses.replace(meta.source, line=meta.source.line + offset)
    return dataclasses.replace(meta, source=source)


def _moved_resource(resource: Any, offset: int) -> Any:
    if resource is None:
        return None
    changes: dict[str, Any] = {"meta": _moved_meta(resource.meta, offset)}
    if isinstance(resource, ServiceEntry) and resource.endpoints:
        changes["endpoints"] = tuple(
            dataclasses.replace(ep, meta=_moved_meta(ep.meta, offset)) for ep in resource.endpoints
        )
    return dataclasses.replace(resource, **changes)


def _moved_error(error: ConfigError, offset: int) -> ConfigError:
    return error if error.line == 0 else dataclasses.replace(error, line=error.line + offset)
