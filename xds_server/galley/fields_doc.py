"""docs/fields.md, generated from the registry of kinds and their field tables.

    python -m xds_server.galley.fields_doc > docs/fields.md

A test compares the file with `render()`, so the reference cannot drift from what
the validator accepts and the generators build.
"""

from __future__ import annotations

from collections import Counter

from .fields import Field, Status, walk
from .registry import KINDS, NOT_YET_KINDS, Kind

_STATUS = {
    Status.SUPPORTED: "supported",
    Status.DEPRECATED: "deprecated (warns)",
    Status.NO_EFFECT: "no effect (warns)",
    Status.LABEL: "label",
    Status.RESTRICTED: "restricted",
    Status.NOT_YET: "**not yet** (refused)",
}

_HEADER = """\
# Supported fields

Generated from pocketmesh's registry of kinds (`xds_server/galley/registry.py`) by
`python -m xds_server.galley.fields_doc`; a test fails when this file and the code
differ. Every field Istio's API defines for these kinds is listed with what
pocketmesh does when a document sets it:

- **supported**: built into the Envoy config; a test sets the field and proves the
  generated resources change (`tests/generators/test_field_coverage.py`).
- **deprecated (warns)**: built, with a warning that Istio deprecates it.
- **no effect (warns)**: Istio itself does nothing with it here; accepted with a warning.
- **label**: a name for people and tools; checked, shapes no traffic (as in Istio).
- **restricted**: only the values that mean what pocketmesh always does are accepted
  (see the note); any other value is refused with a located error.
- **not yet (refused)**: refused as
  `file:line: Kind ns/name: field: not supported by pocketmesh yet`.

Nothing is accepted and silently ignored: a field not listed here is an error
(`unknown field`, with a "did you mean" when one is close).

`metadata`: `name` and `namespace` (default `default`) identify a resource;
`labels` and `annotations` are kept for tools and shape no traffic, except a
WorkloadEntry's `metadata.labels`, which Istio merges into its `spec.labels` (the
metadata's win). The Kubernetes bookkeeping fields (`uid`, `resourceVersion`,
`creationTimestamp`, `managedFields`, ...) and a top-level `status` are accepted and
skipped, as `kubectl get -o yaml` writes them.

Lists are written `name[]`, maps with keys you choose `name.<key>`. A table used in
several places (a DestinationRule traffic policy at the top, per subset and per
port) is listed in each.
"""


def _kind_section(kind: Kind) -> list[str]:
    counts = Counter(f.status for _, f in walk(kind.spec))
    summary = ", ".join(
        f"{counts[s]} {_STATUS[s].split(' ')[0].strip('*')}" for s in Status if counts[s]
    )
    api = kind.api_versions()
    where = "its top-level fields" if kind.document_level else "`spec`"
    lines = [
        f"## {kind.kind}",
        "",
        f"`{api}`; {where}: {summary}. A change reaches {kind.reach.value}.",
        "",
        "| Field | Status | Notes |",
        "|---|---|---|",
    ]
    prefix = "" if kind.document_level else "spec"
    for path, field in walk(kind.spec, prefix):
        lines.append(f"| `{path}` | {_STATUS[field.status]} | {_note(field)} |")
    return [*lines, ""]


def _note(field: Field) -> str:
    return field.note.replace("|", "\\|")


def counts() -> dict[str, dict[str, int]]:
    """Per kind, how many field paths have each status (for reports)."""
    return {
        k.kind: {s.value: n for s, n in Counter(f.status for _, f in walk(k.spec)).items()}
        for k in KINDS
    }


def render() -> str:
    lines = [_HEADER]
    for kind in KINDS:
        lines += _kind_section(kind)
    lines.append("## Kinds not supported yet")
    lines.append("")
    lines.append(
        "Refused by name (`kind: 'X' is not supported by pocketmesh yet`): "
        + ", ".join(f"{name} (`{group}`)" for name, group in sorted(NOT_YET_KINDS.items()))
        + ". Any other kind is an `unknown kind` error."
    )
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(), end="")
