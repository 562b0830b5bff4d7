"""Galley's findings: one value type for errors and warnings, one exception.

A `ConfigError` points at a file, a line and a field path, so a user can jump
straight to the mistake. The loader returns them; `ConfigInvalid` exists for
callers that would rather raise (see `LoadResult.config_or_raise`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

ERROR = "error"
WARNING = "warning"
SEVERITIES = frozenset({ERROR, WARNING})


@dataclass(frozen=True, slots=True)
class ConfigError:
    """One problem found in the config; with severity "warning" it does not block a load."""

    file: str
    line: int  # 1-based; 0 when there is no line (a missing file, a bad argument)
    kind: str  # "ServiceEntry", ... or "" when unknown
    name: str  # "namespace/name" or "" when unknown
    field: str  # dotted path like "spec.ports[0].number", or "" for the whole document
    message: str
    severity: str = ERROR

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be 'error' or 'warning', not {self.severity!r}")
        if self.line < 0:
            raise ValueError(f"line must be >= 0, not {self.line}")

    @property
    def is_warning(self) -> bool:
        return self.severity == WARNING

    def __str__(self) -> str:
        """`file:line: Kind namespace/name: field.path: message`, empty parts left out.

        Warnings say so after the location: `file:line: warning: Kind ns/name: ...`.
        """
        parts: list[str] = []
        location = f"{self.file}:{self.line}" if self.line > 0 else self.file
        if location:
            parts.append(location)
        if self.is_warning:
            parts.append(WARNING)
        subject = " ".join(p for p in (self.kind, self.name) if p)
        if subject:
            parts.append(subject)
        if self.field:
            parts.append(self.field)
        parts.append(self.message)
        return ": ".join(parts)


class ConfigInvalid(Exception):
    """The config has errors; `.errors` holds every one of them, in report order."""

    errors: tuple[ConfigError, ...]

    def __init__(self, errors: Iterable[ConfigError]) -> None:
        self.errors = tuple(errors)
        super().__init__(self._summary())

    def _summary(self) -> str:
        if not self.errors:
            return "invalid config"
        lines = [str(e) for e in self.errors]
        noun = "error" if len(lines) == 1 else "errors"
        return f"{len(lines)} config {noun}:\n" + "\n".join(lines)
