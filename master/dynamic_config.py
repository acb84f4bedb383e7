"""The file provider's dynamic configuration: Traefik's file-provider schema, in TOML.

Example::

    [http.routers.whoami]
    rule = "Host(`whoami.localhost`)"
    service = "whoami"          # "name" (this provider) or "name@provider"
    entryPoints = ["web"]       # optional; absent -> all entry points
    priority = 10               # optional; absent -> the rule's length

    [http.services.whoami.loadBalancer]
    servers = [{ url = "http://127.0.0.1:9001" }, { url = "http://127.0.0.1:9002", weight = 3 }]

Traefik sections portside does not implement yet (middlewares, TLS, health
checks, sticky sessions, tcp/udp...) are accepted with a warning on the
"portside.config" logger, so an existing Traefik file can be loaded as is.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

from portside.master.errors import ConfigError, Problems, problem_text
from portside.master.schema import Table, describe, is_host, read_toml

if TYPE_CHECKING:
    from portside.master.static_config import FileProvider

_UNSUPPORTED_SERVICE_KINDS = ("weighted", "mirroring", "failover")


@dataclass(frozen=True, slots=True)
class RouterConf:
    """One HTTP router: requests matching `rule` go to `service`."""

    name: str
    rule: str
    service: str  # "name" (same provider) or "name@provider"
    entry_points: tuple[str, ...] | None  # None: every entry point
    priority: int | None  # None: Traefik's default, the rule's length


@dataclass(frozen=True, slots=True)
class ServerConf:
    """One upstream server of a load-balanced service."""

    url: str  # as written in the config
    scheme: str  # always "http" for now
    host: str  # IP or host name; IPv6 without brackets
    port: int
    weight: int  # 0 = takes no traffic


@dataclass(frozen=True, slots=True)
class ServiceConf:
    """A load-balanced service; no servers is valid (requests get 503)."""

    name: str
    servers: tuple[ServerConf, ...]


@dataclass(frozen=True, slots=True)
class DynamicConfig:
    """Routers and services by name. `DynamicConfig.EMPTY` is the shared empty config
    (do not mutate its dicts)."""

    routers: dict[str, RouterConf]
    services: dict[str, ServiceConf]

    EMPTY: ClassVar[DynamicConfig]


DynamicConfig.EMPTY = DynamicConfig(routers={}, services={})


def parse_dynamic(data: dict[str, Any], source: str) -> DynamicConfig:
    """Validate one parsed TOML document; ConfigError lists every problem."""
    collector = _Collector()
    collector.add(data, source)
    return collector.finish()


def load_dynamic_file(path: str) -> DynamicConfig:
    """Read and validate one dynamic config file."""
    return parse_dynamic(read_toml(path), path)


def load_dynamic_dir(path: str) -> DynamicConfig:
    """Merge every *.toml file of `path` (sorted by name; not recursive).

    As in Traefik, the files form one configuration: a router may use a service
    defined in another file, but a name defined twice is a problem.
    """
    try:
        # Dotfiles are skipped: editors leave lock and backup files next to the real ones.
        files = sorted(
            entry.path
            for entry in os.scandir(path)
            if entry.name.endswith(".toml") and not entry.name.startswith(".") and entry.is_file()
        )
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError([problem_text(path, None, f"cannot read directory: {reason}")]) from exc
    collector = _Collector()
    for file in files:
        try:
            data = read_toml(file)
        except ConfigError as exc:
            collector.failed(file, exc)
            continue
        collector.add(data, file)
    return collector.finish()


def load_file_provider(provider: FileProvider) -> DynamicConfig:
    """Load the dynamic config the static [providers.file] section points at."""
    if provider.filename is not None:
        return load_dynamic_file(provider.filename)
    assert provider.directory is not None  # static validation guarantees one of the two
    return load_dynamic_dir(provider.directory)


def parse_server_url(url: str) -> tuple[str, str, int]:
    """Split an upstream URL ("http://HOST[:PORT]") into scheme, host, port.

    Raises ValueError with the reason if it is not a plain http origin.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"invalid URL {url!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme == "https":
        raise ValueError("https upstreams are not supported yet")
    if scheme != "http" or not parts.netloc:
        raise ValueError(f"expected a URL like 'http://HOST:PORT', got {url!r}")
    if "@" in parts.netloc:
        raise ValueError(f"credentials in server URLs are not supported, got {url!r}")
    # A lone "/" is the same origin; anything more would have to be rewritten per request.
    if parts.path not in ("", "/") or parts.query or parts.fragment or url.endswith(("?", "#")):
        raise ValueError(f"a server URL must not have a path, query or fragment, got {url!r}")
    host = parts.hostname
    if not host or not is_host(host):
        raise ValueError(f"invalid host in {url!r}")
    if port == 0:
        raise ValueError(f"port must be between 1 and 65535, got {url!r}")
    return scheme, host, 80 if port is None else port


class _Collector:
    """Accumulates routers and services from one or more files, then cross-checks them."""

    def __init__(self) -> None:
        self.files: list[Problems] = []
        self.routers: dict[str, RouterConf] = {}
        self.services: dict[str, ServiceConf] = {}
        self.defined: dict[str, str] = {}  # dotted key of each router/service -> its file
        self.service_names: list[str] = []  # every declared service, valid or not
        self.references: list[tuple[Table, str]] = []  # (router table, service reference)

    def failed(self, source: str, error: ConfigError) -> None:
        """Record a file that could not be read at all."""
        problems = Problems(source)
        problems.extend(error)
        self.files.append(problems)

    def add(self, data: dict[str, Any], source: str) -> None:
        """Validate one parsed file and merge its routers and services."""
        problems = Problems(source)
        self.files.append(problems)
        root = Table(data, "", problems)
        root.check_keys(("http",), ignored=("tcp", "udp", "tls"))
        http = root.table("http")
        http.check_keys(("routers", "services"), ignored=("middlewares",))
        for name, table in http.table("routers").tables():
            if self._declare(name, table):
                router = _router(name, table)
                if router is not None:
                    self.routers[name] = router
                service = table.data.get("service")
                if isinstance(service, str) and service and "@" not in service:
                    self.references.append((table, service))
        for name, table in http.table("services").tables():
            if self._declare(name, table):
                self.service_names.append(name)
                service = _service(name, table)
                if service is not None:
                    self.services[name] = service

    def finish(self) -> DynamicConfig:
        """Check service references across all files; return the config or raise."""
        # Done last because, in a directory, a router may use a service from a later file.
        for table, service in self.references:
            if service not in self.service_names:
                hint = difflib.get_close_matches(service, self.service_names, n=1)
                suffix = f" (did you mean {hint[0]!r}?)" if hint else ""
                table.problem("service", f"unknown service {service!r}{suffix}")
        messages = [message for problems in self.files for message in problems.messages]
        if messages:
            raise ConfigError(messages)
        return DynamicConfig(routers=self.routers, services=self.services)

    def _declare(self, name: str, table: Table) -> bool:
        if "@" in name:
            table.problem(None, "name must not contain '@' (it separates a name from its provider)")
            return False
        other = self.defined.setdefault(table.key, table.problems.source)
        if other != table.problems.source:
            table.problem(None, f"already defined in {other}")
            return False
        return True


def _router(name: str, table: Table) -> RouterConf | None:
    before = len(table.problems)
    table.check_keys(("rule", "service", "entryPoints", "priority"), ignored=("middlewares", "tls"))
    rule = table.string("rule", required=True)
    if rule is not None:
        _check_rule(table, rule)
    service = table.string("service", required=True)
    if service is not None and "@" in service:
        service_name, _, provider = service.partition("@")
        if not service_name or not provider or "@" in provider:
            table.problem("service", f"expected 'name' or 'name@provider', got {service!r}")
    entry_points = table.strings("entryPoints")
    if entry_points == []:
        table.problem("entryPoints", "must not be empty (omit it to use every entry point)")
    priority = table.integer("priority")
    if len(table.problems) > before or rule is None or service is None:
        return None
    return RouterConf(
        name=name,
        rule=rule,
        service=service,
        entry_points=None if entry_points is None else tuple(ep for _, ep in entry_points),
        priority=priority,
    )


def _check_rule(table: Table, rule: str) -> None:
    # Imported here, not at the top: the master only needs the rule parser to
    # validate, and importing the worker's request-path package eagerly would
    # couple every master import to it.
    from portside.worker.rules import RuleError, parse_rule

    try:
        parse_rule(rule)
    except RuleError as exc:
        table.problem("rule", f"invalid rule {rule!r}: {exc}")


def _service(name: str, table: Table) -> ServiceConf | None:
    before = len(table.problems)
    table.check_keys(("loadBalancer", *_UNSUPPORTED_SERVICE_KINDS))
    unsupported = [kind for kind in _UNSUPPORTED_SERVICE_KINDS if kind in table]
    for kind in unsupported:
        table.problem(kind, f"{kind} services are not supported yet (use loadBalancer)")
    if not unsupported:
        table.required("loadBalancer")
    balancer = table.table("loadBalancer")
    balancer.check_keys(
        ("servers",), ignored=("healthCheck", "sticky", "passHostHeader", "serversTransport")
    )
    servers: list[ServerConf] = []
    first_index: dict[tuple[str, int], int] = {}  # (host, port) -> index of its first server
    key = balancer.child("servers")
    for index, item in enumerate(balancer.get("servers", list, "an array of tables") or ()):
        server_key = f"{key}[{index}]"
        if not isinstance(item, dict):
            table.problems.add(server_key, f"expected a table with a url, got {describe(item)}")
            continue
        server = _server(Table(item, server_key, table.problems))
        if server is None:
            continue
        origin = (server.host, server.port)
        if origin in first_index:
            table.problems.add(
                f"{server_key}.url",
                f"duplicate of {key}[{first_index[origin]}] ({server.host}:{server.port})",
            )
            continue
        first_index[origin] = index
        servers.append(server)
    if len(table.problems) > before:
        return None
    return ServiceConf(name=name, servers=tuple(servers))


def _server(table: Table) -> ServerConf | None:
    before = len(table.problems)
    table.check_keys(("url", "weight"))
    url = table.string("url", required=True)
    weight = table.integer("weight", 1)
    origin = None
    if url is not None:
        try:
            origin = parse_server_url(url)
        except ValueError as exc:
            table.problem("url", str(exc))
    if len(table.problems) > before or origin is None or url is None or weight is None:
        return None
    scheme, host, port = origin
    return ServerConf(url=url, scheme=scheme, host=host, port=port, weight=weight)
