"""YAML that remembers where things were written.

PyYAML's safe loader, with mappings and sequences built as `YamlMap` and
`YamlList`: plain `dict` and `list` subclasses that also carry the 1-based line
of the node and of each key or item. Scalars stay plain Python values; their
line is the line of the key or item that holds them. Duplicate keys, which
PyYAML silently collapses, are recorded so the validator can report them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.reader import ReaderError

__all__ = [
    "LineLoader",
    "PyLineLoader",
    "YamlDocument",
    "YamlList",
    "YamlMap",
    "YamlSyntaxError",
    "load_documents",
]

_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_INT_TAG = "tag:yaml.org,2002:int"


class YamlMap(dict[Any, Any]):
    """A mapping with the line of the node, of each key, and of any repeated key."""

    __slots__ = ("duplicate_keys", "key_lines", "line")

    def __init__(self, line: int) -> None:
        super().__init__()
        self.line = line
        self.key_lines: dict[Any, int] = {}
        self.duplicate_keys: list[tuple[Any, int]] = []


class YamlList(list[Any]):
    """A sequence with the line of the node and of each item."""

    __slots__ = ("item_lines", "line")

    def __init__(self, line: int, item_lines: list[int]) -> None:
        super().__init__()
        self.line = line
        self.item_lines = item_lines


@dataclass(frozen=True, slots=True)
class YamlDocument:
    value: object  # YamlMap, YamlList or a scalar
    line: int  # line of the document's root node


@dataclass(frozen=True, slots=True)
class YamlSyntaxError:
    """Why a text is not YAML, where PyYAML says so (1-based line and column)."""

    line: int
    column: int
    message: str


def _line(node: Node) -> int:
    return node.start_mark.line + 1


def _construct_map(loader: Any, node: MappingNode) -> Iterator[YamlMap]:
    result = YamlMap(_line(node))
    yield result
    # Keys written in this mapping (not pulled in by a `<<` merge) may not repeat;
    # merged keys may be overridden, as YAML's merge spec says.
    own = {id(k) for k, _ in node.value if k.tag != _MERGE_TAG}
    loader.flatten_mapping(node)
    own_seen: set[Any] = set()
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                "found unhashable key",
                key_node.start_mark,
            ) from None
        line = _line(key_node)
        if id(key_node) in own:
            if key in own_seen:
                result.duplicate_keys.append((key, line))
            own_seen.add(key)
        result[key] = loader.construct_object(value_node, deep=False)
        result.key_lines[key] = line


def _construct_seq(loader: Any, node: SequenceNode) -> Iterator[YamlList]:
    result = YamlList(_line(node), [_line(child) for child in node.value])
    yield result
    result.extend(loader.construct_object(child, deep=False) for child in node.value)


def _construct_int(loader: Any, node: ScalarNode) -> int:
    # Python refuses to convert integers of more than 4,300 digits (a DoS guard); the
    # ValueError would carry no position, so say where the number is written.
    try:
        return int(yaml.SafeLoader.construct_yaml_int(loader, node))
    except ValueError:
        digits = sum(c.isdigit() for c in str(node.value))
        problem = f"an integer of {digits} digits is too large"
        raise ConstructorError(None, None, problem, node.start_mark) from None


class PyLineLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader (pure Python) building `YamlMap` and `YamlList`."""


PyLineLoader.add_constructor(_MAP_TAG, _construct_map)
PyLineLoader.add_constructor(_SEQ_TAG, _construct_seq)
PyLineLoader.add_constructor(_INT_TAG, _construct_int)

# The same on libyaml's parser when PyYAML was built with it: about ten times
# faster, and it caps nesting at 1000 levels instead of recursing. Problem
# texts differ slightly between the two parsers; lines and columns do not.
LineLoader: type[Any] = PyLineLoader
if hasattr(yaml, "CSafeLoader"):

    class CLineLoader(yaml.CSafeLoader):
        """PyYAML's CSafeLoader (libyaml) building `YamlMap` and `YamlList`."""

    CLineLoader.add_constructor(_MAP_TAG, _construct_map)
    CLineLoader.add_constructor(_SEQ_TAG, _construct_seq)
    CLineLoader.add_constructor(_INT_TAG, _construct_int)
    LineLoader = CLineLoader


def load_documents(
    text: str, *, loader_class: type[Any] | None = None
) -> list[YamlDocument] | YamlSyntaxError:
    """Every non-empty document of a (multi-document) YAML text, or why it is not YAML.

    A text with a syntax error yields no documents at all: a half-read file is
    not a reliable picture of what its author meant. `loader_class` picks the
    parser (`PyLineLoader` or `CLineLoader`); the default is the fastest one.
    """
    docs: list[YamlDocument] = []
    loader: Any = None
    try:
        loader = (loader_class or LineLoader)(text)
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            value = loader.construct_document(node)
            if value is None:
                continue
            docs.append(YamlDocument(value, _line(node)))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        if mark is None:
            return YamlSyntaxError(1, 1, problem)
        return YamlSyntaxError(mark.line + 1, mark.column + 1, problem)
    except ReaderError as exc:  # a character YAML does not allow
        before = text[: exc.position]
        line = before.count("\n") + 1
        column = exc.position - (before.rfind("\n") + 1) + 1
        return YamlSyntaxError(line, column, f"unacceptable character #x{exc.character:04x}")
    except yaml.YAMLError as exc:
        return YamlSyntaxError(1, 1, str(exc) or "invalid YAML")
    except RecursionError:
        return YamlSyntaxError(1, 1, "YAML nested too deeply")
    finally:
        if loader is not None:
            loader.dispose()
    return docs


def split_documents(text: str) -> list[tuple[int, str]] | None:
    """The text cut at its `---` document markers: (first line, text) per piece.

    A marker at the start of a line always starts a document (YAML 1.2: content may
    not begin a line with one), so the cut needs no parse. None when the text uses
    what a cut could break: `%` directives and `...` document ends.
    """
    pieces: list[tuple[int, str]] = []
    start, current = 1, list[str]()
    for number, line in enumerate(text.splitlines(keepends=True), start=1):
        if line.startswith(("%", "...")):
            return None
        if line.startswith("---") and line[3:4] in ("", " ", "\t", "\n", "\r"):
            if current:
                pieces.append((start, "".join(current)))
            start, current = number, []
        current.append(line)
    if current:
        pieces.append((start, "".join(current)))
    return pieces
