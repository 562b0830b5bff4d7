"""The mesh settings' defaults for other kinds' fields, applied once the config loads:
`defaultServiceExportTo`, `defaultVirtualServiceExportTo` and
`defaultDestinationRuleExportTo` become the `exportTo` of the resources that set none,
so everything downstream reads one field (Istio's meshConfig defaults)."""

from __future__ import annotations

import dataclasses
from typing import Any

from .model_mesh import MeshSettings

__all__ = ["with_mesh_defaults"]


def with_mesh_defaults(fields: dict[str, Any]) -> dict[str, Any]:
    """`fields` (MeshConfig's, by name) with the mesh settings' exportTo defaults filled in."""
    settings: tuple[MeshSettings, ...] = fields.get("mesh_settings", ())
    if not settings:
        return fields
    mesh = settings[0]
    for name, default in (
        ("service_entries", mesh.default_service_export_to),
        ("virtual_services", mesh.default_virtual_service_export_to),
        ("destination_rules", mesh.default_destination_rule_export_to),
    ):
        if default:
            fields[name] = tuple(
                r if r.export_to else dataclasses.replace(r, export_to=default)
                for r in fields[name]
            )
    return fields
