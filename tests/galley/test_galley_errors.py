"""ConfigError's text form and ConfigInvalid."""

from __future__ import annotations

import pytest

from xds_server.galley.errors import ConfigError, ConfigInvalid


def test_full_error_text() -> None:
    error = ConfigError(
        "mesh/se.yaml", 12, "ServiceEntry", "default/httpbin", "spec.ports[0].number", "bad"
    )
    assert str(error) == "mesh/se.yaml:12: ServiceEntry default/httpbin: spec.ports[0].number: bad"


@pytest.mark.parametrize(
    ("error", "text"),
    [
        (ConfigError("a.yaml", 3, "", "", "", "invalid YAML"), "a.yaml:3: invalid YAML"),
        (ConfigError("a.yaml", 0, "", "", "", "no such file"), "a.yaml: no such file"),
        (ConfigError("a.yaml", 4, "Foo", "", "kind", "unknown"), "a.yaml:4: Foo: kind: unknown"),
        (
            ConfigError("a.yaml", 4, "Sidecar", "ns/x", "", "clash"),
            "a.yaml:4: Sidecar ns/x: clash",
        ),
        (ConfigError("", 0, "", "", "trust_domain", "bad"), "trust_domain: bad"),
        (
            ConfigError("a.yaml", 2, "Gateway", "ns/gw", "", "ignored", severity="warning"),
            "a.yaml:2: warning: Gateway ns/gw: ignored",
        ),
    ],
)
def test_empty_parts_are_left_out(error: ConfigError, text: str) -> None:
    assert str(error) == text


def test_constructor_validates() -> None:
    with pytest.raises(ValueError, match="severity"):
        ConfigError("a", 1, "", "", "", "m", severity="fatal")
    with pytest.raises(ValueError, match="line"):
        ConfigError("a", -1, "", "", "", "m")


def test_config_invalid_carries_every_error() -> None:
    errors = (ConfigError("a", 1, "", "", "", "one"), ConfigError("b", 2, "", "", "", "two"))
    exc = ConfigInvalid(errors)
    assert exc.errors == errors
    assert str(exc) == "2 config errors:\na:1: one\nb:2: two"
    assert ConfigInvalid([]).errors == ()
