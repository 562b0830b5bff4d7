"""The protocol's error tree. Turned into gRPC status codes only at the servicer."""


class XdsError(Exception):
    """Base of every error the xDS layer raises."""


class ProtocolError(XdsError):
    """The client broke the xDS protocol (no node, wrong type for the service, ...)."""


class UnknownProxy(XdsError):
    """The node id names no workload pocketmesh knows."""


class PermissionDenied(XdsError):
    """The client asked for something its identity does not allow."""


class LimitExceeded(XdsError):
    """The client asked for more than one stream may hold (names per subscription, ...)."""
