"""Galley's front door: files and directories in, one validated `MeshConfig` out.

Bad input never raises: every problem becomes a `ConfigError` in the result,
and `config` is None whenever there is at least one error, so a server can
keep serving its last good config. The same input always gives an equal
`MeshConfig`: resources are sorted by namespace and name.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .crosscheck import cross_check
from .delegates import merge_delegates
from .documents import ParsedDoc
from .errors import ERROR, WARNING, ConfigError, ConfigInvalid
from .jwks import JwksFetcher
from .jwks_load import load_jwks
from .mesh_defaults import with_mesh_defaults
from .model import MeshConfig
from .names import trust_domain_problem
from .parse_cache import parse_file
from .registry import mesh_fields
from .tls_files import load_tls_files

__all__ = ["DEFAULT_TRUST_DOMAIN", "LoadResult", "load_directory", "load_paths", "parse_documents"]

DEFAULT_TRUST_DOMAIN = "cluster.local"
YAML_SUFFIXES = frozenset({".yaml", ".yml"})


@dataclass(frozen=True)
class LoadResult:
    config: MeshConfig | None  # None when there are errors
    errors: tuple[ConfigError, ...]
    warnings: tuple[ConfigError, ...]
    files: tuple[str, ...]  # files read, in the order they were read

    @property
    def ok(self) -> bool:
        return not self.errors

    def config_or_raise(self) -> MeshConfig:
        """The config, or `ConfigInvalid` carrying every error."""
        if self.config is None:
            raise ConfigInvalid(self.errors)
        return self.config


@dataclass
class _Collector:
    """Accumulates documents and findings across files, then builds the result."""

    trust_domain: str
    jwks: JwksFetcher | None = None  # fetches jwksUri URLs; None: a new one per load
    docs: list[ParsedDoc] = field(default_factory=list)
    errors: list[ConfigError] = field(default_factory=list)
    warnings: list[ConfigError] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def file_error(self, file: str, line: int, message: str, field: str = "") -> None:
        self.errors.append(ConfigError(file, line, "", "", field, message, ERROR))

    def add_text(self, text: str, file: str) -> None:
        docs, errors = parse_file(text, file)
        self.docs.extend(docs)
        self.errors.extend(errors)

    def add_file(self, path: Path) -> None:
        file = str(path)
        self.files.append(file)
        try:
            data = path.read_bytes()
        except OSError as exc:
            self.file_error(file, 0, f"cannot read: {exc.strerror or exc}")
            return
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = data[: exc.start].count(b"\n") + 1
            self.file_error(file, line, "not UTF-8 text")
            return
        self.add_text(text, file)

    def result(self) -> LoadResult:
        if (problem := trust_domain_problem(self.trust_domain)) is not None:
            self.file_error("", 0, f"{self.trust_domain!r} {problem}", field="trust_domain")
        errors = list(self.errors)
        warnings = list(self.warnings)
        for doc in self.docs:
            errors += doc.errors
            warnings += doc.warnings
        self.docs, file_errors = load_tls_files(self.docs)
        errors += file_errors
        self.docs, jwks_errors, jwks_warnings = load_jwks(self.docs, self.jwks)
        errors += jwks_errors
        warnings += jwks_warnings
        cross_errors, cross_warnings = cross_check(self.docs)
        errors = self._in_file_order(errors + cross_errors)
        warnings = self._in_file_order(warnings + cross_warnings)
        config = None if errors else self._config()
        return LoadResult(config, tuple(errors), tuple(warnings), tuple(self.files))

    def _in_file_order(self, findings: list[ConfigError]) -> list[ConfigError]:
        """Sorted by file (in reading order) and line; findings with no file read come first."""
        order = {file: i for i, file in enumerate(self.files)}
        return sorted(findings, key=lambda f: (order.get(f.file, -1), f.line))

    def _config(self) -> MeshConfig:
        resources = (d.resource for d in self.docs if d.resource is not None)
        fields = with_mesh_defaults(mesh_fields(resources))
        # Roots carry their delegates' routes from here on (Istio's merged VirtualServices).
        fields["virtual_services"] = merge_delegates(fields["virtual_services"])
        return MeshConfig(**fields, trust_domain=self.trust_domain)


def _yaml_files(directory: Path) -> list[Path]:
    """YAML files under `directory`, sorted, skipping hidden files and folders.

    Hidden entries are editor backups, `.git`, and the `..data` links of a
    Kubernetes ConfigMap volume (which would otherwise be read twice).
    """
    found = []
    for path in directory.rglob("*"):
        relative = path.relative_to(directory)
        if any(part.startswith(".") for part in relative.parts):
            continue
        if path.suffix in YAML_SUFFIXES and path.is_file():
            found.append(path)
    return sorted(found)


def load_paths(
    paths: Iterable[str | Path],
    *,
    trust_domain: str = DEFAULT_TRUST_DOMAIN,
    jwks: JwksFetcher | None = None,
) -> LoadResult:
    """Load files and directories (read recursively for *.yaml / *.yml, in sorted order).

    `jwks` fetches the key sets RequestAuthentications name by URL; a long-lived owner
    (the control plane) passes its own, so that fetched sets are kept and refreshed."""
    if isinstance(paths, str | Path):  # one path where a list was meant: not a list of letters
        paths = [paths]
    collector = _Collector(trust_domain, jwks)
    seen: set[Path] = set()

    def add(path: Path) -> None:
        resolved = path.resolve()
        if resolved not in seen:
            seen.add(resolved)
            collector.add_file(path)

    for given in paths:
        path = Path(given)
        try:
            if path.is_dir():
                files = _yaml_files(path)
                if not files:
                    collector.warnings.append(
                        ConfigError(str(path), 0, "", "", "", "no *.yaml or *.yml files", WARNING)
                    )
                for file in files:
                    add(file)
            elif path.exists():
                add(path)
            else:
                collector.file_error(str(path), 0, "no such file or directory")
        except (OSError, ValueError) as exc:  # unreadable folders, names the OS refuses
            collector.file_error(str(path), 0, f"cannot read: {exc}")
    return collector.result()


def load_directory(
    path: str | Path, *, trust_domain: str = DEFAULT_TRUST_DOMAIN, jwks: JwksFetcher | None = None
) -> LoadResult:
    return load_paths([path], trust_domain=trust_domain, jwks=jwks)


def parse_documents(
    text: str, file: str, *, trust_domain: str = DEFAULT_TRUST_DOMAIN
) -> LoadResult:
    """Validate YAML text as if it were the whole config (for tests and one-file checks)."""
    collector = _Collector(trust_domain)
    collector.files.append(file)
    collector.add_text(text, file)
    return collector.result()
