"""The Istio kinds Galley reads, one module each: its field table (`SPEC`) and parser.

`galley.registry` declares each kind once (group, versions, model, parser, field
table, MeshConfig field, reach); this package holds only the per-kind code.
"""
