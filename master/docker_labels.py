"""Container labels to routers and services, in Traefik's label syntax.

Both prefixes are read, `traefik.` and `portside.`, so existing compose files
work; when both set the same key, `portside.` wins. Keys are
case-insensitive, as in Traefik. Two syntaxes are understood:

- v2/v3: `traefik.http.routers.<r>.rule|service|entrypoints|priority` and
  `traefik.http.services.<s>.loadbalancer.server.port|scheme|weight`;
- v1, as in the write-up: `traefik.backend`, `traefik.frontend.rule`
  (`Host:a,b` means OR, `;` means AND), `traefik.port`, `traefik.weight`.

This module is pure: it turns one container's inspect data into that
container's share of the configuration, or a LabelError naming the label at
fault. The Docker provider merges the shares of all containers.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from portside.master.static_config import DockerProvider
from portside.worker.rules import RuleError, parse_rule

log = logging.getLogger("portside.docker")

PREFIXES = ("traefik.", "portside.")  # in increasing precedence
DEFAULT_RULE_EXAMPLE = "Host(`{{ normalize .Name }}`)"

_TEMPLATE = re.compile(r"\{\{\s*(normalize\s+)?\.Name\s*\}\}")
_NOT_NAME = re.compile(r"[^a-zA-Z0-9]+")
_V1_KEYS = ("backend", "port", "weight")
_V1_MATCHERS = {
    "host": "Host",
    "hostregexp": "HostRegexp",
    "path": "Path",
    "pathprefix": "PathPrefix",
    "method": "Method",
}
_ROUTER_OPTIONS = ("rule", "service", "entrypoints", "priority")
_SERVER_OPTIONS = ("port", "scheme", "weight")
# Traefik options portside does not implement yet: accepted with a warning,
# so a compose file written for Traefik still routes.
_IGNORED_ROUTER_OPTIONS = ("middlewares", "tls", "observability")
_IGNORED_SERVICE_OPTIONS = (
    "healthcheck",
    "passhostheader",
    "sticky",
    "serverstransport",
    "responseforwarding",
)
_IGNORED_SECTIONS = ("http.middlewares.", "http.serverstransports.", "tcp.", "udp.", "tls.")


class LabelError(Exception):
    """A label that makes the container unroutable."""

    def __init__(self, label: str, reason: str) -> None:
        super().__init__(f"label {label}: {reason}")
        self.label = label
        self.reason = reason


@dataclass(frozen=True)
class ContainerInfo:
    """What routing needs from `docker inspect`."""

    id: str
    name: str
    labels: Mapping[str, str]
    networks: tuple[tuple[str, str], ...]  # (network, IP) in the engine's order
    exposed_ports: tuple[int, ...]  # TCP ports, ascending
    has_healthcheck: bool
    health: str | None  # "starting", "healthy", "unhealthy" or None

    @classmethod
    def from_inspect(cls, attrs: Mapping[str, Any]) -> ContainerInfo:
        """Build from the engine's inspect document."""
        config = attrs.get("Config") or {}
        state = attrs.get("State") or {}
        settings = attrs.get("NetworkSettings") or {}
        networks = tuple(
            (name, (net or {}).get("IPAddress") or "")
            for name, net in (settings.get("Networks") or {}).items()
        )
        ports = sorted(
            int(spec.split("/")[0])
            for spec in (config.get("ExposedPorts") or {})
            if spec.endswith("/tcp") and spec.split("/")[0].isdigit()
        )
        healthcheck = config.get("Healthcheck") or {}
        has_healthcheck = bool(healthcheck.get("Test")) and healthcheck["Test"][0] != "NONE"
        return cls(
            id=attrs["Id"],
            name=str(attrs.get("Name", "")).lstrip("/"),
            labels=config.get("Labels") or {},
            networks=networks,
            exposed_ports=tuple(ports),
            has_healthcheck=has_healthcheck,
            health=(state.get("Health") or {}).get("Status"),
        )

    @property
    def service_name(self) -> str:
        """The default router and service name: the compose service, else the container name.

        Containers of one compose service share it, so they become servers
        of one service.
        """
        service = self.labels.get("com.docker.compose.service")
        project = self.labels.get("com.docker.compose.project")
        if service:
            return normalize(f"{service}-{project}" if project else service)
        return normalize(self.name)


@dataclass
class Routing:
    """One container's share of the dynamic configuration (Traefik's schema)."""

    routers: dict[str, dict[str, Any]] = field(default_factory=dict)
    servers: dict[str, dict[str, Any]] = field(default_factory=dict)  # service -> its server


def normalize(name: str) -> str:
    """Traefik's `normalize`: every run of non-alphanumerics becomes one '-'."""
    return _NOT_NAME.sub("-", name).strip("-")


def render_default_rule(template: str, name: str) -> str:
    """Expand `{{ .Name }}` and `{{ normalize .Name }}` in a defaultRule template."""
    return _TEMPLATE.sub(lambda m: normalize(name) if m.group(1) else name, template)


def check_default_rule(template: str) -> str | None:
    """Why a defaultRule template is invalid, or None if it is fine."""
    rendered = render_default_rule(template, "example")
    if "{{" in rendered:
        return "only {{ .Name }} and {{ normalize .Name }} are supported in the template"
    try:
        parse_rule(rendered)
    except RuleError as exc:
        return f"invalid rule: {exc}"
    return None


def convert_v1_rule(text: str) -> str:
    """A Traefik v1 frontend rule (`Host:a,b;PathPrefix:/x`) as a v2 rule."""
    clauses = []
    for clause in text.split(";"):
        clause = clause.strip()
        if not clause:
            continue
        matcher, sep, values = clause.partition(":")
        name = _V1_MATCHERS.get(matcher.strip().lower())
        if not sep or name is None:
            known = ", ".join(_V1_MATCHERS.values())
            raise ValueError(f"expected one of {known} followed by ':', got {clause!r}")
        alternatives = [v.strip() for v in values.split(",") if v.strip()]
        if not alternatives or any("`" in v for v in alternatives):
            raise ValueError(f"invalid values in {clause!r}")
        any_of = " || ".join(f"{name}(`{v}`)" for v in alternatives)
        clauses.append(f"({any_of})" if len(alternatives) > 1 else any_of)
    if not clauses:
        raise ValueError("empty rule")
    return " && ".join(clauses)


def container_routing(
    info: ContainerInfo, settings: DockerProvider, entry_points: Collection[str]
) -> Routing | None:
    """The container's routers and servers; None if it is not exposed.

    Raises LabelError for the first label that makes it unroutable.
    """
    labels = _effective_labels(info.labels)
    if not _enabled(labels, settings.exposed_by_default):
        return None
    ip = _address(info, labels, settings)
    if any(key in _V1_KEYS or key.startswith("frontend.") for key in labels):
        return _v1_routing(info, labels, ip, settings, entry_points)
    return _v2_routing(info, labels, ip, settings, entry_points)


Labels = dict[str, tuple[str, str]]  # lower-case key after the prefix -> (value, label as set)


def _ignored(info: ContainerInfo, label: str) -> None:
    log.warning("container %s: label %s: not supported yet, ignored", info.name, label)


def _effective_labels(raw: Mapping[str, str]) -> Labels:
    found: Labels = {}
    for prefix in PREFIXES:
        for name, value in raw.items():
            if name.lower().startswith(prefix):
                found[name[len(prefix) :].lower()] = (value, name)
    return found


def _enabled(labels: Labels, default: bool) -> bool:
    if "enable" not in labels:
        return default
    value, label = labels["enable"]
    if value.strip().lower() not in ("true", "false"):
        raise LabelError(label, f"expected true or false, got {value!r}")
    return value.strip().lower() == "true"


def _address(info: ContainerInfo, labels: Labels, settings: DockerProvider) -> str:
    networks = dict(info.networks)
    if "docker.network" in labels:
        wanted, source = labels["docker.network"]
    else:
        wanted, source = settings.network, "providers.docker.network"
    if "host" in networks:
        return "127.0.0.1"  # network_mode: host shares the host's loopback
    if wanted:
        ip = networks.get(wanted)
        if not ip:
            raise LabelError(source, f"the container has no address on network {wanted!r}")
        return ip
    for _, ip in info.networks:
        if ip:
            return ip
    raise LabelError("(none)", "the container has no IP address on any network")


_NUMBER = re.compile(r"\s*[0-9]+\s*")


def _port(value: str, label: str) -> int:
    if not _NUMBER.fullmatch(value) or not 1 <= int(value) <= 65535:
        raise LabelError(label, f"expected a port number between 1 and 65535, got {value!r}")
    return int(value)


def _weight(value: str, label: str) -> int:
    if not _NUMBER.fullmatch(value):
        raise LabelError(label, f"expected a whole number >= 0, got {value!r}")
    return int(value)


def _server(
    info: ContainerInfo,
    ip: str,
    port: tuple[str, str] | None,
    weight: tuple[str, str] | None,
    scheme: tuple[str, str] | None = None,
) -> dict[str, Any]:
    if port is not None:
        number = _port(*port)
    elif info.exposed_ports:
        # Traefik's choice: the only exposed port, else the lowest one.
        number = info.exposed_ports[0]
    else:
        raise LabelError(
            "(none)",
            "no port: the container exposes none; set "
            "traefik.http.services.<name>.loadbalancer.server.port",
        )
    if scheme is not None and scheme[0].strip().lower() != "http":
        raise LabelError(scheme[1], f"only http is supported, got {scheme[0]!r}")
    host = f"[{ip}]" if ":" in ip else ip
    server: dict[str, Any] = {"url": f"http://{host}:{number}"}
    if weight is not None:
        server["weight"] = _weight(*weight)
    return server


def _router(
    rule: str,
    rule_label: str,
    service: str,
    entry_points_value: tuple[str, str] | None,
    priority: tuple[str, str] | None,
    known_entry_points: Collection[str],
) -> dict[str, Any]:
    try:
        parse_rule(rule)
    except RuleError as exc:
        raise LabelError(rule_label, f"invalid rule {rule!r}: {exc}") from None
    router: dict[str, Any] = {"rule": rule, "service": service}
    if entry_points_value is not None:
        value, label = entry_points_value
        names = [n.strip() for n in value.split(",") if n.strip()]
        unknown = [n for n in names if n not in known_entry_points]
        if not names or unknown:
            raise LabelError(
                label,
                f"unknown entry point {', '.join(unknown) or value!r}; "
                f"known: {', '.join(sorted(known_entry_points))}",
            )
        router["entryPoints"] = names
    if priority is not None:
        router["priority"] = _weight(*priority)
    return router


def _v2_routing(
    info: ContainerInfo,
    labels: Labels,
    ip: str,
    settings: DockerProvider,
    entry_points: Collection[str],
) -> Routing:
    routers: dict[str, dict[str, tuple[str, str]]] = {}
    services: dict[str, dict[str, tuple[str, str]]] = {}
    for key, entry in labels.items():
        if key in ("enable", "docker.network"):
            continue
        if key.startswith(_IGNORED_SECTIONS):
            _ignored(info, entry[1])
            continue
        parts = key.split(".")
        if len(parts) >= 4 and parts[0] == "http" and parts[1] == "routers":
            option = ".".join(parts[3:])
            if option in _ROUTER_OPTIONS:
                routers.setdefault(parts[2], {})[option] = entry
                continue
            if parts[3] in _IGNORED_ROUTER_OPTIONS:
                _ignored(info, entry[1])
                continue
        elif len(parts) >= 5 and parts[:2] == ["http", "services"] and parts[3] == "loadbalancer":
            option = ".".join(parts[4:])
            if parts[4] == "server" and len(parts) == 6 and parts[5] in _SERVER_OPTIONS:
                services.setdefault(parts[2], {})[parts[5]] = entry
                continue
            if parts[4] in _IGNORED_SERVICE_OPTIONS:
                _ignored(info, entry[1])
                continue
        raise LabelError(entry[1], "unknown label")

    if not services:
        services[info.service_name] = {}
    routing = Routing()
    for name, options in services.items():
        routing.servers[name] = _server(
            info, ip, options.get("port"), options.get("weight"), options.get("scheme")
        )
    if not routers and settings.default_rule and len(services) == 1:
        routers[info.service_name] = {}
    for name, options in routers.items():
        if "service" in options:
            service = options["service"][0].strip()
            if "@" not in service:
                service = service.lower()  # label keys, hence service names, are lower-cased
        elif len(services) == 1:
            service = next(iter(services))
        else:
            raise LabelError(
                f"traefik.http.routers.{name}.service",
                "required: the container defines several services",
            )
        rule, rule_label = _rule_or_default(
            options.get("rule"), settings, info, f"traefik.http.routers.{name}.rule"
        )
        routing.routers[name] = _router(
            rule,
            rule_label,
            service,
            options.get("entrypoints"),
            options.get("priority"),
            entry_points,
        )
    return routing


def _v1_routing(
    info: ContainerInfo,
    labels: Labels,
    ip: str,
    settings: DockerProvider,
    entry_points: Collection[str],
) -> Routing:
    for key, (_, label) in labels.items():
        known = key in _V1_KEYS or key in ("enable", "docker.network")
        known = known or key in ("frontend.rule", "frontend.entrypoints", "frontend.priority")
        if not known:
            _ignored(info, label)
    backend = normalize(labels["backend"][0]) if "backend" in labels else info.service_name
    if not backend:
        raise LabelError(labels["backend"][1], "empty backend name")
    routing = Routing()
    routing.servers[backend] = _server(info, ip, labels.get("port"), labels.get("weight"))
    if "frontend.rule" in labels:
        value, label = labels["frontend.rule"]
        try:
            rule = convert_v1_rule(value)
        except ValueError as exc:
            raise LabelError(label, str(exc)) from None
    elif settings.default_rule:
        rule, label = _rule_or_default(None, settings, info, "traefik.frontend.rule")
    else:
        return routing  # a service only, for routers defined elsewhere
    routing.routers[backend] = _router(
        rule,
        label,
        backend,
        labels.get("frontend.entrypoints"),
        labels.get("frontend.priority"),
        entry_points,
    )
    return routing


def _rule_or_default(
    rule: tuple[str, str] | None, settings: DockerProvider, info: ContainerInfo, label: str
) -> tuple[str, str]:
    if rule is not None:
        return rule
    if settings.default_rule:
        return render_default_rule(settings.default_rule, info.service_name), (
            "providers.docker.defaultRule"
        )
    raise LabelError(label, "missing, and providers.docker.defaultRule is not set")
