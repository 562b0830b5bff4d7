"""Name and address rules shared by the kinds: pure predicates, no error reporting.

Each `*_problem` function returns None when the value is fine, or else a
phrase that reads after the value ("'Foo' must be a DNS-1123 label ..."), so
callers can say *why* a value was rejected.
"""

from __future__ import annotations

import ipaddress
import re

_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")
# Hostname labels: DNS is case-insensitive, and Istio accepts either case.
_HOST_LABEL = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?\Z")
_LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?\Z")
_TRUST_DOMAIN = re.compile(r"[a-z0-9._-]+\Z")

MAX_LABEL = 63
MAX_SUBDOMAIN = 253


def dns1123_label_problem(value: str) -> str | None:
    """Kubernetes' DNS-1123 label: namespaces, port names."""
    if not value:
        return "must not be empty"
    if len(value) > MAX_LABEL:
        return f"must be at most {MAX_LABEL} characters"
    if not _DNS1123_LABEL.match(value):
        return (
            "must be a DNS-1123 label: lower-case letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    return None


def dns1123_subdomain_problem(value: str) -> str | None:
    """Kubernetes' DNS-1123 subdomain: object names, service accounts."""
    if not value:
        return "must not be empty"
    if len(value) > MAX_SUBDOMAIN:
        return f"must be at most {MAX_SUBDOMAIN} characters"
    if not all(_DNS1123_LABEL.match(part) for part in value.split(".")):
        return (
            "must be a DNS-1123 subdomain: lower-case letters, digits, '-' and '.', "
            "starting and ending with a letter or digit"
        )
    return None


def hostname_problem(value: str) -> str | None:
    """A DNS name (no wildcard): dot-separated labels of letters, digits and '-'."""
    if not value:
        return "must not be empty"
    name = value[:-1] if value.endswith(".") else value
    if name.rsplit(".", 1)[-1].isdigit():
        # An all-numeric top label is never a DNS name (RFC 3696): a mistyped IP.
        return "is not a valid IP address, and an all-numeric name is not a DNS name"
    if len(name) > MAX_SUBDOMAIN:
        return f"must be at most {MAX_SUBDOMAIN} characters"
    for part in name.split("."):
        if len(part) > MAX_LABEL:
            return f"has a label longer than {MAX_LABEL} characters"
        if not _HOST_LABEL.match(part):
            return "must be a DNS name: labels of letters, digits and '-', separated by '.'"
    return None


def wildcard_host_problem(value: str) -> str | None:
    """A DNS name, or one with a leading `*.` (or the bare `*` for everything)."""
    if value == "*":
        return None
    if value.startswith("*."):
        return hostname_problem(value[2:])
    if "*" in value:
        return "may use '*' only as its whole first label, like '*.example.com'"
    return hostname_problem(value)


def is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def ip_or_cidr_problem(value: str) -> str | None:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        return "must be an IP address or a CIDR range"
    return None


UNIX_PREFIX = "unix://"


def unix_path_problem(path: str) -> str | None:
    """Istio's ValidateUnixAddress: an absolute file path, or `@name` (abstract)."""
    if not path:
        return "must name a socket: unix:///path or unix://@name"
    if path.startswith("@"):
        return None
    if not path.startswith("/") or path.endswith("/") or "\0" in path:
        return f"{path!r} is not an absolute path to a file"
    return None


def is_unix(address: str) -> bool:
    return address.startswith(UNIX_PREFIX)


def address_problem(value: str) -> str | None:
    """A workload address: an IP, a DNS name, or `unix:///path` (a local socket)."""
    if is_ip(value):
        return None
    if is_unix(value):
        return unix_path_problem(value.removeprefix(UNIX_PREFIX))
    problem = hostname_problem(value)
    if problem is None:
        return None
    if problem.startswith("is not a valid IP"):
        return problem
    return "must be an IP address or a DNS name"


def san_problem(value: str) -> str | None:
    """A subject alternative name: a URI (`spiffe://...`), an IP, or a DNS name."""
    if not value or any(c.isspace() for c in value):
        return "must be a URI, an IP address or a DNS name, without spaces"
    if "://" in value or is_ip(value):
        return None
    if wildcard_host_problem(value) is not None:
        return "must be a URI (like spiffe://td/ns/x/sa/y), an IP address or a DNS name"
    return None


def host_port_problem(value: str) -> str | None:
    """`host:port` or `[v6]:port`, with port 1..65535 and host an IP or a DNS name."""
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or not rest.startswith(":"):
            return "must be host:port (an IPv6 host in brackets)"
        port = rest[1:]
        if not is_ip(host):
            return "has a bracketed host that is not an IPv6 address"
    else:
        host, sep, port = value.rpartition(":")
        if not sep or not host:
            return "must be host:port, like 127.0.0.1:8080"
        if address_problem(host) is not None:
            return "has a host that is not an IP address or a DNS name"
    if not port.isascii() or not port.isdigit():
        return "has a port that is not a number"
    if not 1 <= int(port) <= 65535:
        return "has a port outside 1..65535"
    return None


def label_key_problem(key: str) -> str | None:
    """Kubernetes label key: `[prefix/]name`, prefix a DNS subdomain, name <= 63."""
    prefix, sep, name = key.rpartition("/")
    if sep and dns1123_subdomain_problem(prefix) is not None:
        return "has a prefix that is not a DNS-1123 subdomain"
    if not name or len(name) > MAX_LABEL or not _LABEL_NAME.match(name):
        return (
            f"is not a valid label key: at most {MAX_LABEL} letters, digits, "
            "'-', '_' and '.', starting and ending with a letter or digit"
        )
    return None


def label_value_problem(value: str) -> str | None:
    if value == "":
        return None
    if len(value) > MAX_LABEL or not _LABEL_NAME.match(value):
        return (
            f"is not a valid label value: at most {MAX_LABEL} letters, digits, "
            "'-', '_' and '.', starting and ending with a letter or digit"
        )
    return None


def trust_domain_problem(value: str) -> str | None:
    """SPIFFE trust domain: `[a-z0-9._-]`, at most 255 bytes."""
    if not value:
        return "must not be empty"
    if len(value.encode()) > 255:
        return "must be at most 255 bytes"
    if not _TRUST_DOMAIN.match(value):
        return "may only contain lower-case letters, digits, '.', '-' and '_'"
    return None
