"""Read-only protobuf messages: what a generator shares between proxies cannot be changed.

Protobuf messages cannot be frozen, and a resource built once is handed to every
proxy that sees it (the push context memoizes it; the cache serializes it once, by
identity). One proxy's generator editing it in place would silently change what
every other proxy is sent. So a shared resource is handed out only as a `Frozen`:
it reads like the message (attributes, `HasField`, `Unpack`, `isinstance`), every
sub-message it gives out is read-only too, and any attempt to change it raises
`FrozenMessageError`. Whoever needs a changed version asks for `copy()`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping, MutableSequence
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from google.protobuf.message import Message

__all__ = ["Frozen", "FrozenMessageError", "FrozenResources", "freeze", "peek", "thaw"]

M = TypeVar("M", bound=Message)

# Methods that only read: everything else a message has changes it.
_READERS = frozenset(
    {
        "ByteSize",
        "DESCRIPTOR",
        "FindInitializationErrors",
        "HasField",
        "Is",
        "IsInitialized",
        "SerializePartialToString",
        "SerializeToString",
        "ToDatetime",
        "ToJsonString",
        "ToMilliseconds",
        "ToNanoseconds",
        "ToSeconds",
        "ToTimedelta",
        "TypeName",
        "Unpack",  # writes into its argument, not into this message
        "WhichOneof",
    }
)


class FrozenMessageError(TypeError):
    """Something tried to change a resource shared between proxies."""


def _refuse(what: str) -> FrozenMessageError:
    return FrozenMessageError(
        f"{what}: this resource is shared between proxies and read-only; change a copy()"
    )


class _FrozenList(tuple[Any, ...]):
    """A repeated field, read-only: the list methods of protobuf containers raise."""

    __slots__ = ()

    def _changes(self, *args: object, **kwargs: object) -> None:
        raise _refuse("changing a repeated field")

    append = extend = add = insert = remove = pop = sort = reverse = MergeFrom = _changes
    __setitem__ = __delitem__ = __iadd__ = _changes


_PLAIN, _MESSAGE, _REPEATED, _MAP = range(4)
_KIND: dict[type, int] = {}  # the kind of each value type met, so isinstance runs once


def _kind(value: Any) -> int:
    kind = _KIND.get(type(value))
    if kind is None:
        if isinstance(value, Message):
            kind = _MESSAGE
        elif isinstance(value, MutableSequence):  # repeated fields
            kind = _REPEATED
        elif isinstance(value, MutableMapping):  # map fields
            kind = _MAP
        else:
            kind = _PLAIN  # str, int, bytes, ...: immutable already
        _KIND[type(value)] = kind
    return kind


def _wrap(value: Any) -> Any:
    kind = _kind(value)
    if kind == _PLAIN:
        return value
    if kind == _MESSAGE:
        return Frozen(value)
    if kind == _REPEATED:
        return _FrozenList(_wrap(v) for v in value)
    return MappingProxyType({k: _wrap(v) for k, v in value.items()})  # refuses writes


def _wrap_result(result: Any) -> Any:
    if isinstance(result, (list, tuple)) or type(result).__name__.endswith("View"):
        return _FrozenList(_wrap(v) for v in result)
    return _wrap(result)


class Frozen(Generic[M]):
    """A read-only view of a protobuf message (and of everything inside it)."""

    __slots__ = ("_message",)

    def __init__(self, message: M) -> None:
        object.__setattr__(self, "_message", message)

    def __getattr__(self, name: str) -> Any:
        message = object.__getattribute__(self, "_message")
        value = getattr(message, name)
        kind = _kind(value)
        if kind == _PLAIN:
            if name in _READERS or not callable(value):
                return value
            if name == "ListFields":
                return lambda: [(fd, _wrap(v)) for fd, v in message.ListFields()]
            if name in ("items", "values", "get", "keys"):  # Struct and ListValue readers
                return lambda *args: _wrap_result(value(*args))
            raise _refuse(f"{type(message).__name__}.{name}()")
        return _wrap(value)

    # Struct / ListValue read like containers; dunders bypass __getattr__.
    def __getitem__(self, key: Any) -> Any:
        return _wrap(object.__getattribute__(self, "_message")[key])

    def __contains__(self, key: object) -> bool:
        return key in object.__getattribute__(self, "_message")

    def __len__(self) -> int:
        return len(object.__getattribute__(self, "_message"))

    def __iter__(self) -> Iterator[Any]:
        return (_wrap(v) for v in object.__getattribute__(self, "_message"))

    def __setitem__(self, key: Any, value: object) -> None:
        raise _refuse(f"setting [{key!r}]")

    def __delitem__(self, key: Any) -> None:
        raise _refuse(f"deleting [{key!r}]")

    def __setattr__(self, name: str, value: object) -> None:
        raise _refuse(f"setting {name}")

    def __delattr__(self, name: str) -> None:
        raise _refuse(f"deleting {name}")

    # isinstance(frozen, cluster_pb2.Cluster) holds: it stands for one.
    @property  # type: ignore[misc]
    def __class__(self) -> type:
        return type(object.__getattribute__(self, "_message"))

    def __eq__(self, other: object) -> bool:
        if type(other) is Frozen:
            other = object.__getattribute__(other, "_message")
        return bool(object.__getattribute__(self, "_message") == other)

    __hash__ = None  # type: ignore[assignment]  # like the messages themselves

    def __repr__(self) -> str:
        message = object.__getattribute__(self, "_message")
        return f"Frozen({type(message).__name__}: {str(message)[:200]!r})"

    def copy(self) -> M:
        """A new, changeable message with the same content."""
        message: M = object.__getattribute__(self, "_message")
        clone = type(message)()
        clone.CopyFrom(message)
        return clone

    def serialize(self) -> bytes:
        """Deterministic wire bytes (what the cache sends and hashes)."""
        message: Message = object.__getattribute__(self, "_message")
        return message.SerializeToString(deterministic=True)


def freeze(message: M | Frozen[M]) -> Frozen[M]:
    """`message` as a read-only view; a view stays itself."""
    if type(message) is Frozen:
        return message
    return Frozen(message)  # type: ignore[arg-type]


def peek(message: Message | Frozen[Any]) -> Message:
    """The message behind a view, for code that only reads it where the view's cost
    shows (the cache's consistency check runs over every resource of a snapshot)."""
    if isinstance(message, Frozen):
        inner: Message = object.__getattribute__(message, "_message")
        return inner
    return message


def thaw(message: Message | Frozen[Any]) -> Message:
    """A new, changeable copy of a message, frozen or not."""
    if isinstance(message, Frozen):  # type() would be the message's own (see __class__)
        copied: Message = message.copy()
        return copied
    clone = type(message)()
    clone.CopyFrom(message)
    return clone


class FrozenResources(Mapping[str, Any]):
    """A name -> resource mapping handed to many proxies as is (a scope's endpoints):
    read-only, so the cache can convert it once for all of them."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, Any]) -> None:
        self._items = dict(items)

    def __getitem__(self, name: str) -> Any:
        return self._items[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"FrozenResources({list(self._items)})"
