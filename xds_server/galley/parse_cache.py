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
from typing import Any

from .documents import ParsedDoc, parse_document
from .errors import ERROR, ConfigError
from .model import ObjectMeta, ServiceEntry
from .yaml_lines import YamlSyntaxError, load_documents, split_documents

Parsed = tuple[tuple[ParsedDoc, ...], tuple[ConfigError, ...]]


# The last version of each file: its text's digest and what it yielded; and the
# documents of that version by their text's digest, with the line each was parsed at.
# Only the last version is kept, so a long-running server's cache stays the size of
# its config however often files change.
_MAX_FILES = 4096
_FILES: OrderedDict[str, tuple[bytes, Parsed]] = OrderedDict()
_DOCUMENTS: dict[str, dict[bytes, tuple[int, Parsed]]] = {}


def clear() -> None:
    """Forget every parse (benchmarks of a cold load)."""
    _FILES.clear()
    _DOCUMENTS.clear()


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


def parse_file(text: str, file: str) -> Parsed:
    """Every document of a file, checked; or its YAML syntax error (and no documents)."""
    digest = _digest(text)
    last = _FILES.get(file)
    if last is not None and last[0] == digest:
        _FILES.move_to_end(file)
        return last[1]
    known = _DOCUMENTS.get(file, {})
    chunks = split_documents(text)
    if chunks is None or len(chunks) < 2:
        parsed, documents = parse_text(text, file), dict[bytes, tuple[int, Parsed]]()
    else:
        digests = [_digest(chunk) for _, chunk in chunks]
        documents = {}
        if sum(d not in known for d in digests) * 2 > len(digests):
            # Mostly new (a first load): one parser over the whole text is several times
            # faster than one per document. It fills the document cache as it goes.
            parsed = _parse_whole(text, file, chunks, digests, documents)
        else:
            parsed = _parse_chunks(file, chunks, digests, known, documents)
        if parsed[1]:  # a syntax error: keep what was known for the fixed version
            documents = {**known, **documents}
    _FILES[file] = (digest, parsed)
    _FILES.move_to_end(file)
    _DOCUMENTS[file] = documents
    while len(_FILES) > _MAX_FILES:
        gone, _ = _FILES.popitem(last=False)
        _DOCUMENTS.pop(gone, None)
    return parsed


def _parse_chunks(
    file: str,
    chunks: list[tuple[int, str]],
    digests: list[bytes],
    known: dict[bytes, tuple[int, Parsed]],
    documents: dict[bytes, tuple[int, Parsed]],
) -> Parsed:
    docs: list[ParsedDoc] = []
    for (first_line, chunk), digest in zip(chunks, digests, strict=True):
        found = known.get(digest) or documents.get(digest)
        if found is None:
            found = (1, parse_text(chunk, file))
        documents[digest] = found
        parsed_at, (chunk_docs, errors) = found
        offset = first_line - parsed_at
        if errors:  # a syntax error: the file yields nothing but it, as a whole parse does
            return (), tuple(_moved_error(e, offset) for e in errors)
        docs.extend(moved(d, offset) for d in chunk_docs)
    return tuple(docs), ()


def _parse_whole(
    text: str,
    file: str,
    chunks: list[tuple[int, str]],
    digests: list[bytes],
    documents: dict[bytes, tuple[int, Parsed]],
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
    for start, digest, chunk_docs in zip(starts, digests, by_chunk, strict=True):
        documents.setdefault(digest, (start, (tuple(chunk_docs), ())))
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
