"""Container labels to routers and services, in Traefik's label syntax.

Both prefixes are read, `traefik.` and `portside.`, so existing compose files
work; when both set the same key, `portside.` wins. Keys are
case-insensitive, as in Traefik. Two syntaxes are understood:

- v2/v3: `traefik.http.routers.<r>.rule|service|entrypoints|priority|middlewares`,
  `traefik.http.services.<s>.loadbalancer.server.port|scheme|weight`,
  `traefik.http.services.<s>.loadbalancer.healthcheck.path|interval|timeout|...`,
  `...loadbalancer.passivehealthcheck.maxfailedattempts|failurewindow`,
  `...loadbalancer.retry.attempts|disabled` (portside's extension) and
  `traefik.http.middlewares.<m>.retry.attempts|initialinterval` (other
  middleware types are accepted with a warning and do nothing);
- v1, as in the write-up: `traefik.backend`, `traefik.frontend.rule`
  (`Host:a,b` means OR, `;` means AND), `traefik.port`, `traefik.weight`.

This module is pure: it turns one container's inspect data into that
container's share of the configuration, or a LabelError naming the label at
fault. The Docker provider merges the shares of all containers.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from portside.master.dynamic_config import (
    HEALTH_CHECK_IGNORED,
    HEALTH_CHECK_OPTIONS,
    IGNORED_MIDDLEWARES,
    PASSIVE_HEALTH_OPTIONS,
    RETRY_OPTIONS,
    SERVICE_RETRY_OPTIONS,
    parse_health_check,
    parse_passive_health,
    parse_retry,
    reference_problem,
)
from portside.master.errors import ConfigError, Problems
from portside.master.schema import Table
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
_ROUTER_OPTIONS = ("rule", "service", "entrypoints", "priority", "middlewares")
_SERVER_OPTIONS = ("port", "scheme", "weight")
# Traefik options portside does not implement yet: accepted with a warning,
# so a compose file written for Traefik still routes.
_IGNORED_ROUTER_OPTIONS = ("tls", "observability")
_IGNORED_SERVICE_OPTIONS = (
    "passhostheader",
    "sticky",
    "serverstransport",
    "responseforwarding",
)
_IGNORED_SECTIONS = ("http.serverstransports.", "tcp.", "udp.", "tls.")


@dataclass(frozen=True)
class _Section:
    """A table of options that labels spell in lower case: Traefik's name for it, its
    option names, those accepted but ignored, and the file provider's validator."""

    name: str
    options: tuple[str, ...]
    ignored: tuple[str, ...]
    validate: Callable[[Table], object]


# The sections below a service's `loadbalancer`, by their label spelling.
_SERVICE_SECTIONS = {
    "retry": _Section("retry", SERVICE_RETRY_OPTIONS, (), partial(parse_retry, service=True)),
    "passivehealthcheck": _Section(
        "passiveHealthCheck", PASSIVE_HEALTH_OPTIONS, (), parse_passive_health
    ),
    "healthcheck": _Section(
        "healthCheck", HEALTH_CHECK_OPTIONS, HEALTH_CHECK_IGNORED, parse_health_check
    ),
}
_RETRY_MIDDLEWARE = _Section("retry", RETRY_OPTIONS, (), partial(parse_retry, service=False))
_MIDDLEWARE_TYPES = {kind.lower(): kind for kind in ("retry", *IGNORED_MIDDLEWARES)}
_INTEGER = re.compile(r"-?[0-9]+")


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
    # service -> its `loadBalancer` options other than servers ("healthCheck",
    # "passiveHealthCheck", "retry"); only for services with such labels.
    service_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    # middleware -> {type: options}, e.g. {"retry": {"attempts": 3}} or {"headers": {}}
    middlewares: dict[str, dict[str, Any]] = field(default_factory=dict)


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
    middlewares: tuple[str, str] | None = None,
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
    if middlewares is not None:
        router["middlewares"] = _middleware_references(*middlewares)
    return router


def _reference(value: str, label: str) -> str:
    """A service or middleware name as a router label gives it."""
    name = value.strip()
    problem = "must not be empty" if not name else reference_problem(name)
    if problem is not None:
        raise LabelError(label, problem)
    # Label keys, hence the names they define, are lower-cased; "name@provider"
    # points elsewhere, where names keep their case.
    return name if "@" in name else name.lower()


def _middleware_references(value: str, label: str) -> list[str]:
    names = [_reference(name, label) for name in value.split(",") if name.strip()]
    if not names:
        raise LabelError(label, f"expected middleware names separated by commas, got {value!r}")
    return names


def _typed(value: str) -> str | int | bool:
    """A label's value as Traefik's schema would type it: labels are all text."""
    text = value.strip()
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return int(text) if _INTEGER.fullmatch(text) else text


class _LabelProblems(Problems):
    """Problems kept as (dotted key, message) too, so each can name its label."""

    __slots__ = ("found",)

    def __init__(self) -> None:
        super().__init__("labels")
        self.found: list[tuple[str | None, str]] = []

    def add(self, key: str | None, message: str) -> None:
        super().add(key, message)
        self.found.append((key, message))

    def extend(self, error: ConfigError) -> None:
        # Durations arrive formatted, as "labels: KEY: message".
        super().extend(error)
        for text in error.problems:
            key, _, message = text.removeprefix(f"{self.source}: ").partition(": ")
            self.found.append((key, message))


def _section(
    info: ContainerInfo, section: _Section, options: dict[str, tuple[str, str]], prefix: str
) -> dict[str, Any]:
    """One section's labels (option -> (value, label)) as its table in Traefik's schema,
    validated as the file provider validates it. `prefix` names the section's labels."""
    names = {name.lower(): name for name in section.options}
    ignored = {name.lower() for name in section.ignored}
    data: dict[str, Any] = {}
    problems = _LabelProblems()
    table = Table(data, "", problems)
    labels: dict[str, str] = {}  # dotted key in `table` -> the label that set it
    for option, (value, label) in options.items():
        head, _, rest = option.partition(".")
        if head in ignored:
            _ignored(info, label)
            continue
        if not head:
            raise LabelError(label, "unknown label")
        # An unknown option goes in as spelled, for the validator's "did you mean".
        name = names.get(head, head)
        if rest:  # e.g. healthcheck.headers.X-Foo: a table, as in Traefik
            nested = data.get(name)
            data[name] = (nested if isinstance(nested, dict) else {}) | {rest: value}
        else:
            data[name] = _typed(value)
        labels[table.child(name)] = label
    section.validate(table)
    if problems.found:
        # The first problem about a label that is set, else the first at all: a
        # missing option has no label, so name the label that would set it.
        key, message = min(problems.found, key=lambda found: found[0] not in labels)
        raise LabelError(labels.get(key or "", f"{prefix}.{(key or '').lower()}"), message)
    return data


def _v2_routing(
    info: ContainerInfo,
    labels: Labels,
    ip: str,
    settings: DockerProvider,
    entry_points: Collection[str],
) -> Routing:
    routers: dict[str, dict[str, tuple[str, str]]] = {}
    services: dict[str, dict[str, tuple[str, str]]] = {}
    # service -> section (label spelling) -> option -> (value, label)
    sections: dict[str, dict[str, dict[str, tuple[str, str]]]] = {}
    middlewares: dict[str, dict[str, dict[str, tuple[str, str]]]] = {}  # name -> type -> ...
    for key, entry in labels.items():
        if key in ("enable", "docker.network"):
            continue
        if key.startswith(_IGNORED_SECTIONS):
            _ignored(info, entry[1])
            continue
        parts = key.split(".")
        if len(parts) >= 4 and parts[0] == "http" and "@" in parts[2]:
            # The master would reject the whole provider's configuration.
            raise LabelError(entry[1], "a name must not contain '@'")
        if len(parts) >= 4 and parts[0] == "http" and parts[1] == "routers":
            option = ".".join(parts[3:])
            if option in _ROUTER_OPTIONS:
                routers.setdefault(parts[2], {})[option] = entry
                continue
            if parts[3] in _IGNORED_ROUTER_OPTIONS:
                _ignored(info, entry[1])
                continue
        elif len(parts) >= 4 and parts[:2] == ["http", "middlewares"]:
            kinds = middlewares.setdefault(parts[2], {})
            kinds.setdefault(parts[3], {})[".".join(parts[4:])] = entry
            continue
        elif len(parts) >= 5 and parts[:2] == ["http", "services"] and parts[3] == "loadbalancer":
            if parts[4] == "server" and len(parts) == 6 and parts[5] in _SERVER_OPTIONS:
                services.setdefault(parts[2], {})[parts[5]] = entry
                continue
            if parts[4] in _SERVICE_SECTIONS and len(parts) >= 6:
                services.setdefault(parts[2], {})  # options alone define the service too
                by_section = sections.setdefault(parts[2], {}).setdefault(parts[4], {})
                by_section[".".join(parts[5:])] = entry
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
        balancer = {
            _SERVICE_SECTIONS[section].name: _section(
                info,
                _SERVICE_SECTIONS[section],
                section_options,
                f"traefik.http.services.{name}.loadbalancer.{section}",
            )
            for section, section_options in sections.get(name, {}).items()
        }
        if balancer:
            routing.service_options[name] = balancer
    for name, kinds in middlewares.items():
        routing.middlewares[name] = _middleware(info, name, kinds)
    if not routers and settings.default_rule and len(services) == 1:
        routers[info.service_name] = {}
    for name, options in routers.items():
        if "service" in options:
            service = _reference(*options["service"])
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
            options.get("middlewares"),
        )
    return routing


def _middleware(
    info: ContainerInfo, name: str, kinds: dict[str, dict[str, tuple[str, str]]]
) -> dict[str, Any]:
    """One middleware's labels (type -> option -> (value, label)) as Traefik's schema."""
    first_label = next(label for options in kinds.values() for _, label in options.values())
    if len(kinds) > 1:
        # As Traefik, and as the file provider: one middleware, one type.
        raise LabelError(first_label, f"one type per middleware, got {', '.join(kinds)}")
    [(kind, options)] = kinds.items()
    if kind not in _MIDDLEWARE_TYPES:
        raise LabelError(first_label, f"unknown middleware type {kind!r}")
    if kind != "retry":
        # Kept, without its options, so that routers naming it still route.
        for _, label in options.values():
            _ignored(info, label)
        return {_MIDDLEWARE_TYPES[kind]: {}}
    prefix = f"traefik.http.middlewares.{name}.retry"
    return {"retry": _section(info, _RETRY_MIDDLEWARE, options, prefix)}


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
