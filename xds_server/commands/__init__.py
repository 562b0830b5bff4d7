"""The `pocketmesh` subcommands: one module per command (or group), each with
`register(subparsers)` adding its parser and setting `func`."""
