"""Static configuration of the internal services and the access log."""

from __future__ import annotations

import os
import tomllib

import pytest

from portside.master.errors import ConfigError
from portside.master.observability_config import AccessLogConfig, ApiConfig
from portside.master.static_config import parse_static

SOURCE = "static.toml"
WEB = '[entryPoints.web]\naddress = ":8000"\n'


def parse(text: str):
    return parse_static(tomllib.loads(text), SOURCE)


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(text)
    return info.value.problems


def test_everything_is_off_by_default():
    config = parse(WEB)
    observability = config.observability
    assert (observability.api, observability.ping_entry_point) == (None, None)
    assert (observability.metrics_entry_point, observability.access_log) == (None, None)
    assert list(config.entry_points) == ["web"]


def test_services_without_an_entry_point_get_traefiks_on_loopback_8080():
    config = parse(WEB + "[api]\ninsecure = true\n[ping]\n[metrics.prometheus]\n")
    admin = config.entry_points["traefik"]
    assert (admin.host, admin.port) == ("127.0.0.1", 8080)
    assert config.observability.implicit_entry_point == "traefik"
    assert config.observability.api == ApiConfig("traefik", dashboard=True)
    assert config.observability.services_on("traefik") == dict.fromkeys(
        ("api", "dashboard", "ping", "metrics"), True
    )
    assert config.router_entry_points == ["web"]  # routers stay off the implicit one


def test_a_configured_entry_point_is_used_as_is():
    config = parse(
        WEB + '[entryPoints.admin]\naddress = "127.0.0.1:9000"\n'
        '[api]\nentryPoint = "admin"\ndashboard = false\n[ping]\nentryPoint = "admin"\n'
    )
    assert list(config.entry_points) == ["web", "admin"]
    assert config.observability.implicit_entry_point is None
    assert config.observability.services_on("admin") == {
        "api": True,
        "dashboard": False,
        "ping": True,
        "metrics": False,
    }
    assert config.router_entry_points == ["web", "admin"]


def test_problems_are_reported_with_their_keys():
    assert set(
        problems_of(
            WEB
            + '[api]\nentryPoint = "nope"\nbasicAuth.users = ["a:plaintext", "nocolon"]\n'
            + '[accessLog]\nformat = "xml"\n[metrics.prometheus]\nentryPoint = "web2"\n'
            + "[metrics.datadog]\n"
        )
    ) == {
        f"{SOURCE}: metrics.datadog: unknown key",
        f"{SOURCE}: api.basicAuth.users[0]: unsupported password hash: "
        "use bcrypt (htpasswd -B) or SHA (htpasswd -s)",
        f"{SOURCE}: api.basicAuth.users[1]: expected USER:HASH, as htpasswd writes it",
        f"{SOURCE}: accessLog.format: expected one of common, json, got 'xml'",
        f"{SOURCE}: api.entryPoint: unknown entry point 'nope'",
        f"{SOURCE}: metrics.prometheus.entryPoint: unknown entry point 'web2'",
    }


def test_the_implicit_entry_point_must_not_clash():
    (problem,) = problems_of('[entryPoints.web]\naddress = "127.0.0.1:8080"\n[ping]\n')
    assert "127.0.0.1:8080 conflicts with entryPoints.web" in problem


def test_access_log_paths_and_formats():
    stdout = parse(WEB + "[accessLog]\n").observability.access_log
    assert stdout == AccessLogConfig(None, "common")
    relative = parse(WEB + '[accessLog]\nfilePath = "a.log"\nformat = "json"\n')
    assert relative.observability.access_log == AccessLogConfig(os.path.abspath("a.log"), "json")
