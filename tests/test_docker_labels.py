"""Tests for portside.master.docker_labels: container inspect data to routers and servers."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import pytest

from portside.master.docker_labels import (
    ContainerInfo,
    LabelError,
    Routing,
    check_default_rule,
    container_routing,
    convert_v1_rule,
    normalize,
    render_default_rule,
)
from portside.master.dynamic_config import (
    HealthCheckConf,
    MiddlewareConf,
    PassiveHealthConf,
    RetryConf,
    parse_dynamic,
)
from portside.master.static_config import DockerProvider

ENTRY_POINTS = ("web", "admin")
ENABLED = {"traefik.enable": "true"}
WRITE_UP = {
    "traefik.backend": "whoami",
    "traefik.frontend.rule": "Host:whoami.docker.localhost",
}


def inspect_doc(
    name: str,
    labels: Mapping[str, str],
    ip: str = "172.17.0.5",
    networks: Mapping[str, str] | None = None,
    exposed: Iterable[str] = ("80/tcp",),
    health: str | None = None,
    running: bool = True,
    compose_service: str | None = None,
    compose_project: str | None = None,
) -> dict[str, Any]:
    """A `docker inspect` document with only the fields portside reads.

    `networks` maps network name to IP and replaces the default `bridge: ip`;
    `health` ("starting", "healthy", ...) also gives the container a healthcheck.
    """
    all_labels = dict(labels)
    if compose_service is not None:
        all_labels["com.docker.compose.service"] = compose_service
    if compose_project is not None:
        all_labels["com.docker.compose.project"] = compose_project
    config: dict[str, Any] = {
        "Labels": all_labels,
        "ExposedPorts": {spec: {} for spec in exposed},
    }
    state: dict[str, Any] = {"Running": running, "Paused": False}
    if health is not None:
        config["Healthcheck"] = {"Test": ["CMD-SHELL", "wget -q -O- http://localhost/"]}
        state["Health"] = {"Status": health}
    if networks is None:
        networks = {"bridge": ip}
    return {
        "Id": f"id-{name}",
        "Name": f"/{name}",
        "Config": config,
        "State": state,
        "NetworkSettings": {
            "Networks": {net: {"IPAddress": addr} for net, addr in networks.items()}
        },
    }


def routing(
    labels: Mapping[str, str],
    settings: DockerProvider | None = None,
    name: str = "whoami-1",
    **doc: Any,
) -> Routing | None:
    """container_routing for one container built by inspect_doc."""
    info = ContainerInfo.from_inspect(inspect_doc(name, labels, **doc))
    return container_routing(info, settings or DockerProvider(), ENTRY_POINTS)


def label_error(
    labels: Mapping[str, str], settings: DockerProvider | None = None, **doc: Any
) -> LabelError:
    """The LabelError that container_routing must raise for these labels."""
    with pytest.raises(LabelError) as caught:
        routing(labels, settings, **doc)
    return caught.value


def exposed_routing(labels: Mapping[str, str], **kwargs: Any) -> Routing:
    """container_routing for a container that must be exposed."""
    result = routing(labels, **kwargs)
    assert result is not None
    return result


# -- v1 labels (the write-up) -----------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "labels"),
    [
        # The write-up ran Traefik v1, which exposes every container by default.
        (DockerProvider(exposed_by_default=True), WRITE_UP),
        (DockerProvider(), {**ENABLED, **WRITE_UP}),
    ],
    ids=["exposed-by-default", "enable-label"],
)
def test_write_up_labels(settings: DockerProvider, labels: dict[str, str]) -> None:
    result = exposed_routing(labels, settings=settings)
    assert result.routers == {
        "whoami": {"rule": "Host(`whoami.docker.localhost`)", "service": "whoami"}
    }
    assert result.servers == {"whoami": {"url": "http://172.17.0.5:80"}}


@pytest.mark.parametrize(
    ("v1", "v2"),
    [
        ("Host:a.com", "Host(`a.com`)"),
        ("Host:a.com,b.com", "(Host(`a.com`) || Host(`b.com`))"),
        ("Host:a.com;PathPrefix:/api", "Host(`a.com`) && PathPrefix(`/api`)"),
        ("Host:a,b;Path:/x", "(Host(`a`) || Host(`b`)) && Path(`/x`)"),
        ("PathPrefix:/api", "PathPrefix(`/api`)"),
        ("Path:/x", "Path(`/x`)"),
        ("Method:GET", "Method(`GET`)"),
        ("Method:GET,HEAD", "(Method(`GET`) || Method(`HEAD`))"),
        ("HostRegexp:{sub:[a-z]+}.a.com", "HostRegexp(`{sub:[a-z]+}.a.com`)"),
        # Matcher names are case-insensitive and spaces around parts do not matter.
        (
            " host: a.com , b.com ; pathprefix: /api ",
            "(Host(`a.com`) || Host(`b.com`)) && PathPrefix(`/api`)",
        ),
        ("Host:a.com;", "Host(`a.com`)"),
    ],
)
def test_convert_v1_rule(v1: str, v2: str) -> None:
    assert convert_v1_rule(v1) == v2


@pytest.mark.parametrize(
    "v1",
    ["Bogus:x", "Host", "Host:", "Host:,", "", ";", "Host:a`b", "PathPrefixStrip:/api"],
)
def test_bad_v1_rule_names_the_label(v1: str) -> None:
    error = label_error({**ENABLED, "traefik.backend": "api", "traefik.frontend.rule": v1})
    assert error.label == "traefik.frontend.rule"
    assert "traefik.frontend.rule" in str(error)


def test_v1_port_and_weight() -> None:
    labels = {**ENABLED, "traefik.backend": "api", "traefik.port": "8080", "traefik.weight": "3"}
    result = exposed_routing(labels, exposed=("80/tcp", "8080/tcp"))
    assert result.servers == {"api": {"url": "http://172.17.0.5:8080", "weight": 3}}


def test_v1_entry_points_and_priority() -> None:
    labels = {
        **ENABLED,
        **WRITE_UP,
        "traefik.frontend.entryPoints": "admin",
        "traefik.frontend.priority": "7",
    }
    router = exposed_routing(labels).routers["whoami"]
    assert router["entryPoints"] == ["admin"]
    assert router["priority"] == 7


def test_v1_backend_is_normalized() -> None:
    result = exposed_routing({**ENABLED, "traefik.backend": "my_app.v2"})
    assert list(result.servers) == ["my-app-v2"]


def test_v1_without_rule_defines_only_a_service() -> None:
    # Routers defined elsewhere (the file provider) may point at it.
    result = exposed_routing({**ENABLED, "traefik.backend": "api"})
    assert result.routers == {}
    assert list(result.servers) == ["api"]


def test_v1_unsupported_labels_are_ignored_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    label = "traefik.frontend.headers.SSLRedirect"
    with caplog.at_level(logging.WARNING, logger="portside.docker"):
        result = exposed_routing({**ENABLED, **WRITE_UP, label: "true"})
    assert "whoami" in result.routers
    assert label in caplog.text


# -- v2 labels ------------------------------------------------------------------------------


def test_v2_labels() -> None:
    labels = {
        **ENABLED,
        "traefik.http.routers.api.rule": "Host(`api.localhost`) && PathPrefix(`/v1`)",
        "traefik.http.routers.api.service": "api-svc",
        "traefik.http.routers.api.entrypoints": "web,admin",
        "traefik.http.routers.api.priority": "10",
        "traefik.http.services.api-svc.loadbalancer.server.port": "8080",
        "traefik.http.services.api-svc.loadbalancer.server.scheme": "http",
        "traefik.http.services.api-svc.loadbalancer.server.weight": "2",
    }
    result = exposed_routing(labels)
    assert result.routers == {
        "api": {
            "rule": "Host(`api.localhost`) && PathPrefix(`/v1`)",
            "service": "api-svc",
            "entryPoints": ["web", "admin"],
            "priority": 10,
        }
    }
    assert result.servers == {"api-svc": {"url": "http://172.17.0.5:8080", "weight": 2}}


def test_v2_router_without_service_uses_the_container_service() -> None:
    result = exposed_routing({**ENABLED, "traefik.http.routers.r.rule": "Host(`a`)"})
    assert result.routers == {"r": {"rule": "Host(`a`)", "service": "whoami-1"}}
    assert result.servers == {"whoami-1": {"url": "http://172.17.0.5:80"}}


def test_v2_router_must_name_its_service_when_there_are_several() -> None:
    labels = {
        **ENABLED,
        "traefik.http.routers.r.rule": "Host(`a`)",
        "traefik.http.services.s1.loadbalancer.server.port": "8080",
        "traefik.http.services.s2.loadbalancer.server.port": "9090",
    }
    assert label_error(labels).label == "traefik.http.routers.r.service"


def test_portside_prefix_wins_over_traefik() -> None:
    labels = {
        # Listed first, so winning cannot be an accident of dict order.
        "portside.http.routers.r.rule": "Host(`portside`)",
        "traefik.http.routers.r.rule": "Host(`traefik`)",
        **ENABLED,
    }
    assert exposed_routing(labels).routers["r"]["rule"] == "Host(`portside`)"


def test_portside_prefix_replaces_an_invalid_traefik_value() -> None:
    labels = {
        **ENABLED,
        "traefik.http.routers.r.rule": "Host(`a`",
        "portside.http.routers.r.rule": "Host(`a`)",
    }
    assert exposed_routing(labels).routers["r"]["rule"] == "Host(`a`)"


def test_portside_enable_wins_over_traefik_enable() -> None:
    assert routing({"traefik.enable": "true", "portside.enable": "false"}) is None


def test_keys_are_case_insensitive() -> None:
    labels = {
        "Traefik.Enable": "TRUE",
        "Traefik.HTTP.Routers.R.Rule": "Host(`a`)",
        "TRAEFIK.http.services.s.LoadBalancer.Server.Port": "8080",
    }
    result = exposed_routing(labels)
    assert result.routers == {"r": {"rule": "Host(`a`)", "service": "s"}}
    assert result.servers == {"s": {"url": "http://172.17.0.5:8080"}}


def test_router_finds_a_mixed_case_service() -> None:
    labels = {
        **ENABLED,
        "traefik.http.routers.r.rule": "Host(`a`)",
        "traefik.http.routers.r.service": "WhoAmI",
        "traefik.http.services.WhoAmI.loadbalancer.server.port": "80",
    }
    result = exposed_routing(labels)
    assert result.routers["r"]["service"] in result.servers


# -- exposure ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exposed_by_default", "labels", "exposed"),
    [
        (False, {}, False),
        (False, {"traefik.enable": "true"}, True),
        (False, {"traefik.enable": "false"}, False),
        (True, {}, True),
        (True, {"traefik.enable": "false"}, False),
        (True, {"traefik.enable": " True "}, True),
        (False, {"portside.enable": "TRUE"}, True),
    ],
)
def test_exposed_by_default(
    exposed_by_default: bool, labels: dict[str, str], exposed: bool
) -> None:
    settings = DockerProvider(exposed_by_default=exposed_by_default)
    assert (routing(labels, settings) is not None) == exposed


@pytest.mark.parametrize("value", ["yes", "1", "", "on"])
def test_invalid_enable_value(value: str) -> None:
    error = label_error({"Traefik.Enable": value})
    assert error.label == "Traefik.Enable"  # the label as the user spelled it


# -- port ----------------------------------------------------------------------------------


PORT_LABEL = "traefik.http.services.s.loadbalancer.server.port"


@pytest.mark.parametrize(
    ("exposed", "label", "port"),
    [
        ((), "8080", 8080),
        (("80/tcp",), "9000", 9000),
        (("80/tcp",), None, 80),
        (("8080/tcp", "443/tcp", "9000/tcp"), None, 443),
        (("53/udp", "8080/tcp"), None, 8080),
    ],
    ids=["label", "label-over-exposed", "only-exposed", "lowest-exposed", "tcp-only"],
)
def test_port_choice(exposed: tuple[str, ...], label: str | None, port: int) -> None:
    labels = dict(ENABLED)
    if label is not None:
        labels[PORT_LABEL] = label
    servers = exposed_routing(labels, exposed=exposed).servers
    assert [server["url"] for server in servers.values()] == [f"http://172.17.0.5:{port}"]


@pytest.mark.parametrize("exposed", [(), ("53/udp",)])
def test_no_port_is_an_error(exposed: tuple[str, ...]) -> None:
    error = label_error(ENABLED, exposed=exposed)
    assert "port" in error.reason


@pytest.mark.parametrize(
    "value",
    [
        "http",
        "",
        "0",
        "65536",
        "-1",
        "80.0",
        "²",
    ],
)
@pytest.mark.parametrize("label", [PORT_LABEL, "traefik.port"])
def test_port_not_a_number(label: str, value: str) -> None:
    assert label_error({**ENABLED, label: value}).label == label


@pytest.mark.parametrize(
    "label",
    ["traefik.weight", "traefik.http.services.s.loadbalancer.server.weight"],
)
def test_weight_not_a_number(label: str) -> None:
    assert label_error({**ENABLED, label: "heavy"}).label == label


# -- network -------------------------------------------------------------------------------


TWO_NETWORKS = {"front": "10.0.1.2", "back": "10.0.2.3"}


@pytest.mark.parametrize(
    ("networks", "network_setting", "labels", "ip"),
    [
        (TWO_NETWORKS, None, {}, "10.0.1.2"),
        (TWO_NETWORKS, "back", {}, "10.0.2.3"),
        (TWO_NETWORKS, None, {"traefik.docker.network": "back"}, "10.0.2.3"),
        # The container's own label is more specific than the provider's setting.
        (TWO_NETWORKS, "front", {"traefik.docker.network": "back"}, "10.0.2.3"),
        # A network the container is attached to without an address is no use.
        ({"none": "", "back": "10.0.2.3"}, None, {}, "10.0.2.3"),
        ({"host": ""}, None, {}, "127.0.0.1"),
    ],
    ids=["first", "setting", "label", "label-over-setting", "first-with-ip", "host-mode"],
)
def test_network_choice(
    networks: dict[str, str], network_setting: str | None, labels: dict[str, str], ip: str
) -> None:
    settings = DockerProvider(network=network_setting)
    result = exposed_routing({**ENABLED, **labels}, settings=settings, networks=networks)
    assert [server["url"] for server in result.servers.values()] == [f"http://{ip}:80"]


def test_ipv6_address_is_bracketed() -> None:
    result = exposed_routing(ENABLED, networks={"v6": "fd00::5"})
    assert result.servers["whoami-1"]["url"] == "http://[fd00::5]:80"


@pytest.mark.parametrize(
    ("network_setting", "labels", "label"),
    [
        ("missing", {}, "providers.docker.network"),
        (None, {"traefik.docker.network": "missing"}, "traefik.docker.network"),
    ],
)
def test_missing_network(network_setting: str | None, labels: dict[str, str], label: str) -> None:
    settings = DockerProvider(network=network_setting)
    error = label_error({**ENABLED, **labels}, settings, networks=TWO_NETWORKS)
    assert error.label == label
    assert "missing" in error.reason


def test_no_address_at_all() -> None:
    assert "no IP address" in label_error(ENABLED, networks={}).reason


# -- invalid labels ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("label", "rule"),
    [
        ("traefik.http.routers.r.rule", "Host(`a`"),
        ("Traefik.HTTP.Routers.R.Rule", "Nope(`a`)"),
        ("traefik.http.routers.r.rule", ""),
        ("portside.http.routers.r.rule", "Host(`a`) &&"),
    ],
)
def test_bad_rule_names_the_rule_label(label: str, rule: str) -> None:
    error = label_error({**ENABLED, label: rule})
    assert error.label == label
    assert str(error).startswith(f"label {label}: ")


@pytest.mark.parametrize("value", ["websecure", "web,websecure", "", " , "])
def test_unknown_entry_point(value: str) -> None:
    label = "traefik.http.routers.r.entrypoints"
    error = label_error({**ENABLED, "traefik.http.routers.r.rule": "Host(`a`)", label: value})
    assert error.label == label
    assert "unknown entry point" in error.reason


@pytest.mark.parametrize(
    ("scheme", "accepted"), [("http", True), ("HTTP", True), ("https", False), ("h2c", False)]
)
def test_scheme(scheme: str, accepted: bool) -> None:
    label = "traefik.http.services.s.loadbalancer.server.scheme"
    labels = {**ENABLED, label: scheme}
    if accepted:
        assert exposed_routing(labels).servers == {"s": {"url": "http://172.17.0.5:80"}}
    else:
        assert label_error(labels).label == label


@pytest.mark.parametrize(
    "label",
    [
        "traefik.foo",
        "traefik.http.routers.r",
        "traefik.http.routers.r.rulez",
        "traefik.http.services.s.loadbalancer.server.url",
        "traefik.http.services.s.loadbalancer.servers.port",
        "Traefik.Docker.LBSwarm",
    ],
)
def test_unknown_label(label: str) -> None:
    assert label_error({**ENABLED, label: "x"}).label == label


@pytest.mark.parametrize(
    "label",
    [
        "traefik.http.routers.r.tls",
        "traefik.http.routers.r.tls.certresolver",
        "traefik.http.services.s.loadbalancer.passhostheader",
        "traefik.http.middlewares.auth.basicauth.users",
        "traefik.tcp.routers.db.rule",
    ],
)
def test_not_yet_supported_labels_are_ignored_with_a_warning(
    label: str, caplog: pytest.LogCaptureFixture
) -> None:
    labels = {**ENABLED, "traefik.http.routers.r.rule": "Host(`a`)", label: "x"}
    with caplog.at_level(logging.WARNING, logger="portside.docker"):
        result = exposed_routing(labels)
    assert result.routers == {"r": {"rule": "Host(`a`)", "service": "whoami-1"}}
    assert result.servers == {"whoami-1": {"url": "http://172.17.0.5:80"}}
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert "whoami-1" in record.getMessage() and label in record.getMessage()


# -- middlewares, retries and health checks -------------------------------------------------


SVC = "traefik.http.services.s.loadbalancer"
OPTIONS = {
    **ENABLED,
    "traefik.http.routers.r.rule": "Host(`a`)",
    "traefik.http.routers.r.middlewares": "Retry-3, auth, other@File",
    "traefik.http.middlewares.Retry-3.retry.attempts": "4",
    "traefik.http.middlewares.retry-3.retry.initialInterval": "100ms",
    "traefik.http.middlewares.auth.basicauth.users": "u:hash",
    f"{SVC}.healthcheck.path": "/health",
    f"{SVC}.healthcheck.interval": "5s",
    f"{SVC}.healthcheck.timeout": "2",
    f"{SVC}.healthcheck.scheme": "http",
    f"{SVC}.healthcheck.hostname": "s.internal",
    f"{SVC}.healthcheck.status": "204",
    f"{SVC}.passivehealthcheck.maxFailedAttempts": "2",
    f"{SVC}.PassiveHealthCheck.failurewindow": "30s",
    f"{SVC}.retry.attempts": "0",
    f"{SVC}.retry.disabled": " True ",
}


def test_v2_middlewares_and_service_options() -> None:
    result = exposed_routing(OPTIONS)
    # Names defined by labels are lower-cased with their keys, so references are too.
    assert result.routers["r"] == {
        "rule": "Host(`a`)",
        "service": "s",
        "middlewares": ["retry-3", "auth", "other@File"],
    }
    assert result.middlewares == {
        "retry-3": {"retry": {"attempts": 4, "initialInterval": "100ms"}},
        "auth": {"basicAuth": {}},  # kept, without options, so that "auth" resolves
    }
    assert result.servers == {"s": {"url": "http://172.17.0.5:80"}}
    assert result.service_options == {
        "s": {
            "healthCheck": {
                "path": "/health",
                "interval": "5s",
                "timeout": 2,
                "scheme": "http",
                "hostname": "s.internal",
                "status": 204,
            },
            "passiveHealthCheck": {"maxFailedAttempts": 2, "failureWindow": "30s"},
            "retry": {"attempts": 0, "disabled": True},
        }
    }


def test_label_options_parse_as_the_file_provider_parses_them() -> None:
    """The provider's merged config (Traefik's schema) is what the master parses."""
    result = exposed_routing(OPTIONS)
    # What DockerWatcher.configuration makes of one container.
    balancer = {**result.service_options["s"], "servers": [result.servers["s"]]}
    config = parse_dynamic(
        {
            "http": {
                "routers": result.routers,
                "services": {"s": {"loadBalancer": balancer}},
                "middlewares": result.middlewares,
            }
        },
        "provider docker",
    )
    assert config.routers["r"].middlewares == ("retry-3", "auth", "other@File")
    assert config.middlewares == {
        "retry-3": MiddlewareConf("retry-3", RetryConf(4, 0.1, False)),
        "auth": MiddlewareConf("auth", None, "basicAuth"),
    }
    service = config.services["s"]
    assert service.health_check == HealthCheckConf("/health", 5.0, 2.0, "http", "s.internal", 204)
    assert service.passive == PassiveHealthConf(2, 30.0)
    assert service.retry == RetryConf(0, 0.0, True)


def test_service_options_alone_define_the_service() -> None:
    labels = {**ENABLED, f"{SVC}.healthcheck.path": "/h"}
    result = exposed_routing(labels, settings=DEFAULT_RULE)
    assert result.servers == {"s": {"url": "http://172.17.0.5:80"}}
    assert result.service_options == {"s": {"healthCheck": {"path": "/h"}}}
    assert result.routers["whoami-1"]["service"] == "s"


def test_no_options_no_entries() -> None:
    result = exposed_routing({**ENABLED, "traefik.http.routers.r.rule": "Host(`a`)"})
    assert (result.service_options, result.middlewares) == ({}, {})
    assert "middlewares" not in result.routers["r"]


@pytest.mark.parametrize(
    ("labels", "label", "fragment"),
    [
        ({f"{SVC}.healthcheck.path": "health"}, f"{SVC}.healthcheck.path", "starting with '/'"),
        # A missing option is named by the label that would set it.
        ({f"{SVC}.healthcheck.interval": "5s"}, f"{SVC}.healthcheck.path", "required"),
        (
            {f"{SVC}.healthcheck.path": "/h", f"{SVC}.healthcheck.interval": "5 s"},
            f"{SVC}.healthcheck.interval",
            "expected a duration",
        ),
        (
            {f"{SVC}.healthcheck.path": "/h", f"{SVC}.healthcheck.timeout": "0s"},
            f"{SVC}.healthcheck.timeout",
            "must be greater than 0",
        ),
        (
            {f"{SVC}.healthcheck.path": "/h", f"{SVC}.healthcheck.scheme": "https"},
            f"{SVC}.healthcheck.scheme",
            "only http is supported",
        ),
        (
            {f"{SVC}.healthcheck.path": "/h", f"{SVC}.healthcheck.status": "600"},
            f"{SVC}.healthcheck.status",
            "between 100 and 599",
        ),
        (
            {f"{SVC}.healthcheck.path": "/h", f"{SVC}.healthcheck.status": "ok"},
            f"{SVC}.healthcheck.status",
            "expected an integer",
        ),
        (
            {f"{SVC}.healthcheck.path": "/h", f"{SVC}.HealthCheck.Port": "8080"},
            f"{SVC}.HealthCheck.Port",
            "not supported yet",
        ),
        (
            {f"{SVC}.healthcheck.path": "/h", f"{SVC}.healthcheck.headers.X-Probe": "1"},
            f"{SVC}.healthcheck.headers.X-Probe",
            "not supported yet",
        ),
        (
            {f"{SVC}.healthcheck.path": "/h", f"{SVC}.healthcheck.intervall": "1s"},
            f"{SVC}.healthcheck.intervall",
            "unknown key (did you mean 'interval'?)",
        ),
        (
            {f"{SVC}.passivehealthcheck.maxfailedattempts": "0"},
            f"{SVC}.passivehealthcheck.maxfailedattempts",
            "must be >= 1, got 0",
        ),
        (
            {f"{SVC}.passivehealthcheck.failurewindow": "soon"},
            f"{SVC}.passivehealthcheck.failurewindow",
            "expected a duration",
        ),
        ({f"{SVC}.retry.attempts": "-1"}, f"{SVC}.retry.attempts", "must be >= 0, got -1"),
        ({f"{SVC}.retry.attempts": "two"}, f"{SVC}.retry.attempts", "expected an integer"),
        ({f"{SVC}.retry.disabled": "yes"}, f"{SVC}.retry.disabled", "expected a boolean"),
        (
            {f"{SVC}.retry.attempts.x": "1"},
            f"{SVC}.retry.attempts.x",
            "expected an integer, got table",
        ),
        (
            {"traefik.http.middlewares.m.retry.initialinterval": "1s"},
            "traefik.http.middlewares.m.retry.attempts",
            "required",
        ),
        (
            {
                "traefik.http.middlewares.m.retry.attempts": "3",
                "traefik.http.middlewares.m.retry.disabled": "true",
            },
            "traefik.http.middlewares.m.retry.disabled",
            "unknown key",
        ),
        (
            {"traefik.http.middlewares.m.retry": "true"},
            "traefik.http.middlewares.m.retry",
            "unknown label",
        ),
        (
            {"traefik.http.middlewares.m.bogus.x": "1"},
            "traefik.http.middlewares.m.bogus.x",
            "unknown middleware type 'bogus'",
        ),
        (
            {
                "traefik.http.middlewares.m.retry.attempts": "3",
                "traefik.http.middlewares.m.headers.customrequestheaders.x": "1",
            },
            "traefik.http.middlewares.m.retry.attempts",
            "one type per middleware",
        ),
        (
            {"traefik.http.middlewares.m@file.retry.attempts": "3"},
            "traefik.http.middlewares.m@file.retry.attempts",
            "must not contain '@'",
        ),
        (
            {"traefik.http.routers.r.middlewares": " , "},
            "traefik.http.routers.r.middlewares",
            "expected middleware names separated by commas",
        ),
        (
            {"traefik.http.routers.r.middlewares": "a, b@"},
            "traefik.http.routers.r.middlewares",
            "expected 'name' or 'name@provider', got 'b@'",
        ),
        (
            {"traefik.http.routers.r.service": "s@"},
            "traefik.http.routers.r.service",
            "expected 'name' or 'name@provider'",
        ),
        ({"traefik.http.routers.r.service": " "}, "traefik.http.routers.r.service", "empty"),
    ],
)
def test_invalid_option_names_the_label(labels: dict[str, str], label: str, fragment: str) -> None:
    error = label_error({**ENABLED, "traefik.http.routers.r.rule": "Host(`a`)", **labels})
    assert error.label == label
    assert fragment in error.reason, error.reason


def test_ignored_options_warn(caplog: pytest.LogCaptureFixture) -> None:
    labels = {
        **ENABLED,
        f"{SVC}.healthcheck.path": "/h",
        f"{SVC}.healthcheck.method": "HEAD",
        f"{SVC}.healthcheck.followredirects": "false",
        "traefik.http.middlewares.strip.stripprefix.prefixes": "/a,/b",
    }
    with caplog.at_level(logging.WARNING, logger="portside.docker"):
        result = exposed_routing(labels)
    assert result.service_options == {"s": {"healthCheck": {"path": "/h"}}}
    assert result.middlewares == {"strip": {"stripPrefix": {}}}
    assert sorted(r.getMessage() for r in caplog.records) == [
        f"container whoami-1: label {label}: not supported yet, ignored"
        for label in sorted(labels)
        if label.endswith(("prefixes", "method", "followredirects"))
    ]


def test_portside_prefix_wins_for_options() -> None:
    labels = {
        **ENABLED,
        f"{SVC}.retry.attempts": "-5",
        "portside.http.services.s.loadbalancer.retry.attempts": "2",
    }
    assert exposed_routing(labels).service_options == {"s": {"retry": {"attempts": 2}}}


# -- defaultRule and naming ----------------------------------------------------------------


DEFAULT_RULE = DockerProvider(default_rule="Host(`{{ normalize .Name }}`)")


def test_default_rule_when_no_router_label() -> None:
    result = exposed_routing(ENABLED, settings=DEFAULT_RULE, name="my_app.1")
    assert result.routers == {"my-app-1": {"rule": "Host(`my-app-1`)", "service": "my-app-1"}}
    assert list(result.servers) == ["my-app-1"]


def test_default_rule_fills_a_router_without_rule() -> None:
    labels = {**ENABLED, "traefik.http.routers.r.entrypoints": "web"}
    result = exposed_routing(labels, settings=DEFAULT_RULE)
    assert result.routers == {
        "r": {"rule": "Host(`whoami-1`)", "service": "whoami-1", "entryPoints": ["web"]}
    }


def test_default_rule_for_v1_labels() -> None:
    result = exposed_routing({**ENABLED, "traefik.backend": "api"}, settings=DEFAULT_RULE)
    assert result.routers == {"api": {"rule": "Host(`whoami-1`)", "service": "api"}}


def test_no_default_rule_and_no_router_defines_only_a_service() -> None:
    result = exposed_routing(ENABLED)
    assert result.routers == {}
    assert list(result.servers) == ["whoami-1"]


def test_router_without_rule_needs_a_default_rule() -> None:
    labels = {**ENABLED, "traefik.http.routers.r.entrypoints": "web"}
    assert label_error(labels).label == "traefik.http.routers.r.rule"


@pytest.mark.parametrize(("project", "service"), [("demo", "whoami-demo"), (None, "whoami")])
def test_compose_containers_share_one_service(project: str | None, service: str) -> None:
    labels = {**ENABLED, "traefik.http.routers.whoami.rule": "Host(`w`)"}
    results = [
        exposed_routing(
            labels,
            name=f"demo-whoami-{n}",
            ip=f"172.18.0.{n}",
            compose_service="whoami",
            compose_project=project,
        )
        for n in (1, 2)
    ]
    assert [list(r.servers) for r in results] == [[service], [service]]
    assert [r.routers["whoami"]["service"] for r in results] == [service, service]
    assert [r.servers[service]["url"] for r in results] == [
        "http://172.18.0.1:80",
        "http://172.18.0.2:80",
    ]


def test_compose_service_names_the_v1_backend() -> None:
    labels = {**ENABLED, "traefik.frontend.rule": "Host:w"}
    result = exposed_routing(labels, compose_service="whoami", compose_project="demo")
    assert result.routers == {"whoami-demo": {"rule": "Host(`w`)", "service": "whoami-demo"}}


@pytest.mark.parametrize(
    ("template", "valid"),
    [
        ("Host(`{{ normalize .Name }}`)", True),
        ("Host(`{{ .Name }}.docker.localhost`)", True),
        ("Host(`{{normalize .Name}}`) && PathPrefix(`/`)", True),
        ("Host(`{{ .Labels.app }}`)", False),
        ("Host(`{{ normalize .Name }}`", False),
        ("", False),
    ],
)
def test_check_default_rule(template: str, valid: bool) -> None:
    assert (check_default_rule(template) is None) == valid


@pytest.mark.parametrize(
    ("template", "rendered"),
    [
        ("Host(`{{ normalize .Name }}`)", "Host(`my-app-1`)"),
        ("Host(`{{ .Name }}`)", "Host(`my_app.1`)"),
    ],
)
def test_render_default_rule(template: str, rendered: str) -> None:
    assert render_default_rule(template, "my_app.1") == rendered


@pytest.mark.parametrize(
    ("name", "normalized"),
    [
        ("whoami", "whoami"),
        ("my_app.v2", "my-app-v2"),
        ("a__b--c", "a-b-c"),
        ("_leading.trailing_", "leading-trailing"),
        ("Mixed.Case", "Mixed-Case"),
    ],
)
def test_normalize(name: str, normalized: str) -> None:
    assert normalize(name) == normalized


# -- inspect data --------------------------------------------------------------------------


def test_container_info_from_inspect() -> None:
    doc = inspect_doc(
        "web", {"a": "b"}, exposed=("8080/tcp", "53/udp", "443/tcp"), health="starting"
    )
    info = ContainerInfo.from_inspect(doc)
    assert (info.id, info.name, dict(info.labels)) == ("id-web", "web", {"a": "b"})
    assert info.networks == (("bridge", "172.17.0.5"),)
    assert info.exposed_ports == (443, 8080)
    assert (info.has_healthcheck, info.health) == (True, "starting")


def test_healthcheck_none_is_no_healthcheck() -> None:
    doc = inspect_doc("web", {})
    # What an image's HEALTHCHECK NONE (or `--no-healthcheck`) looks like.
    doc["Config"]["Healthcheck"] = {"Test": ["NONE"]}
    assert not ContainerInfo.from_inspect(doc).has_healthcheck
