"""The file provider's dynamic configuration: Traefik's file-provider schema, in TOML.

Example::

    [http.routers.whoami]
    rule = "Host(`whoami.localhost`)"
    service = "whoami"          # "name" (this provider) or "name@provider"
    entryPoints = ["web"]       # optional; absent -> all entry points
    priority = 10               # optional; absent -> the rule's length
    middlewares = ["retry-3"]   # optional; "name" (this provider) or "name@provider"

    [http.middlewares.retry-3.retry]
    attempts = 3                # in all, the first one included (as Traefik)
    initialInterval = "100ms"   # optional; backoff before the first resend, then doubling

    [http.services.whoami.loadBalancer]
    servers = [{ url = "http://127.0.0.1:9001" }, { url = "http://127.0.0.1:9002", weight = 3 }]

    [http.services.whoami.loadBalancer.healthCheck]     # optional; active checks
    path = "/health"
    interval = "10s"            # default 30s
    timeout = "2s"              # default 5s

    [http.services.whoami.loadBalancer.passiveHealthCheck]  # optional
    maxFailedAttempts = 3       # consecutive connect failures or resets that eject a server
    failureWindow = "10s"       # for how long

    [http.services.whoami.loadBalancer.retry]   # optional; portside's extension
    attempts = 2                # 0, or disabled = true, turns resending off

Traefik sections portside does not implement yet (middleware types other
than retry, TLS, sticky sessions, tcp/udp...) are accepted with a warning on
the "portside.config" logger, so an existing Traefik file can be loaded as
is; a router may reference such a middleware, which then does nothing.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

from portside.master.errors import ConfigError, Problems, problem_text
from portside.master.schema import Table, describe, is_host, read_toml

if TYPE_CHECKING:
    from portside.master.static_config import FileProvider

_UNSUPPORTED_SERVICE_KINDS = ("weighted", "mirroring", "failover")

# Traefik's option names, section by section. The Docker label reader uses
# them too, so that labels and files accept exactly the same options.
RETRY_OPTIONS = ("attempts", "initialInterval")
SERVICE_RETRY_OPTIONS = (*RETRY_OPTIONS, "disabled")
PASSIVE_HEALTH_OPTIONS = ("maxFailedAttempts", "failureWindow")
# Known but rejected: probing another port, or without the headers the server
# expects, would take healthy servers out of rotation, so skipping them is unsafe.
_UNSUPPORTED_HEALTH_CHECK = {
    "port": "probes go to each server's own port",
    "headers": "probes send no custom headers",
}
HEALTH_CHECK_OPTIONS = (
    *("path", "interval", "timeout", "scheme", "hostname", "status", "mode"),
    *_UNSUPPORTED_HEALTH_CHECK,
)
# Harmless to skip (the probe is a GET that follows no redirect, every `interval`).
HEALTH_CHECK_IGNORED = ("method", "followRedirects", "unhealthyInterval")
#: Traefik's middleware types other than retry: accepted with a warning, no effect.
IGNORED_MIDDLEWARES = (
    "addPrefix",
    "basicAuth",
    "buffering",
    "chain",
    "circuitBreaker",
    "compress",
    "contentType",
    "digestAuth",
    "errors",
    "forwardAuth",
    "grpcWeb",
    "headers",
    "inFlightReq",
    "ipAllowList",
    "ipWhiteList",
    "passTLSClientCert",
    "plugin",
    "rateLimit",
    "redirectRegex",
    "redirectScheme",
    "replacePath",
    "replacePathRegex",
    "stripPrefix",
    "stripPrefixRegex",
)


@dataclass(frozen=True, slots=True)
class RouterConf:
    """One HTTP router: requests matching `rule` go to `service`."""

    name: str
    rule: str
    service: str  # "name" (same provider) or "name@provider"
    entry_points: tuple[str, ...] | None  # None: every entry point
    priority: int | None  # None: Traefik's default, the rule's length
    middlewares: tuple[str, ...] = ()  # "name" (same provider) or "name@provider", in order

    def schema(self) -> dict[str, Any]:
        """This router in Traefik's schema (its name is the key it goes under)."""
        router: dict[str, Any] = {"rule": self.rule, "service": self.service}
        if self.entry_points is not None:
            router["entryPoints"] = list(self.entry_points)
        if self.priority is not None:
            router["priority"] = self.priority
        if self.middlewares:
            router["middlewares"] = list(self.middlewares)
        return router


@dataclass(frozen=True, slots=True)
class ServerConf:
    """One upstream server of a load-balanced service."""

    url: str  # as written in the config
    scheme: str  # always "http" for now
    host: str  # IP or host name; IPv6 without brackets
    port: int
    weight: int  # 0 = takes no traffic


@dataclass(frozen=True, slots=True)
class RetryConf:
    """When a failed request is resent: a retry middleware, or a service's own settings."""

    attempts: int | None = None  # in all, the first included; 0 = off; None = the default
    initial_interval: float = 0.0  # seconds before the first resend, doubling each time
    disabled: bool = False  # services only: resending off whatever `attempts` says

    def schema(self) -> dict[str, Any]:
        """These settings in Traefik's schema."""
        retry: dict[str, Any] = {"initialInterval": self.initial_interval}
        if self.attempts is not None:
            retry["attempts"] = self.attempts
        if self.disabled:  # only then: a retry middleware has no such key
            retry["disabled"] = True
        return retry


@dataclass(frozen=True, slots=True)
class PassiveHealthConf:
    """How many consecutive connect failures or resets eject a server, and for how long."""

    max_failed_attempts: int = 3
    failure_window: float = 10.0  # seconds

    def schema(self) -> dict[str, Any]:
        """These settings in Traefik's schema."""
        return {"maxFailedAttempts": self.max_failed_attempts, "failureWindow": self.failure_window}


@dataclass(frozen=True, slots=True)
class HealthCheckConf:
    """A service's active health check: GET `path` on each server every `interval`."""

    path: str  # starts with '/'; may carry a query
    interval: float = 30.0  # seconds, as Traefik
    timeout: float = 5.0
    scheme: str = "http"  # the only one for now
    hostname: str | None = None  # the Host header to send; None: the server's address
    status: int | None = None  # the healthy status; None: any 2xx or 3xx, as Traefik

    def schema(self) -> dict[str, Any]:
        """These settings in Traefik's schema."""
        check: dict[str, Any] = {
            "path": self.path,
            "interval": self.interval,
            "timeout": self.timeout,
            "scheme": self.scheme,
        }
        if self.hostname is not None:
            check["hostname"] = self.hostname
        if self.status is not None:
            check["status"] = self.status
        return check


@dataclass(frozen=True, slots=True)
class MiddlewareConf:
    """A named middleware. Only `retry` has an effect; other Traefik types are kept
    by name (`kind`) so that routers may reference them and the config round-trips."""

    name: str
    retry: RetryConf | None  # None for an ignored type
    kind: str = "retry"  # Traefik's type name, e.g. "retry" or "stripPrefix"

    def schema(self) -> dict[str, Any]:
        """This middleware in Traefik's schema; an ignored type's options are not kept."""
        return {self.kind: self.retry.schema() if self.retry is not None else {}}


@dataclass(frozen=True, slots=True)
class ServiceConf:
    """A load-balanced service; no servers is valid (requests get 503)."""

    name: str
    servers: tuple[ServerConf, ...]
    retry: RetryConf | None = None  # None: the default (one resend per other server, <= 3)
    passive: PassiveHealthConf = PassiveHealthConf()
    health_check: HealthCheckConf | None = None  # None: no active checks

    def schema(self) -> dict[str, Any]:
        """This service in Traefik's schema."""
        balancer: dict[str, Any] = {
            "servers": [{"url": s.url, "weight": s.weight} for s in self.servers],
            "passiveHealthCheck": self.passive.schema(),
        }
        if self.retry is not None:
            balancer["retry"] = self.retry.schema()
        if self.health_check is not None:
            balancer["healthCheck"] = self.health_check.schema()
        return {"loadBalancer": balancer}


@dataclass(frozen=True, slots=True)
class DynamicConfig:
    """Routers, services and middlewares by name. `DynamicConfig.EMPTY` is the shared
    empty config (do not mutate its dicts)."""

    routers: dict[str, RouterConf]
    services: dict[str, ServiceConf]
    middlewares: dict[str, MiddlewareConf] = field(default_factory=dict)

    EMPTY: ClassVar[DynamicConfig]

    def schema(self) -> dict[str, Any]:
        """The configuration as a dict in Traefik's schema: parse_dynamic reads it back
        as an equal DynamicConfig (the discovery process sends configs to the master so)."""
        sections = (
            ("routers", self.routers),
            ("services", self.services),
            ("middlewares", self.middlewares),
        )
        return {"http": {key: {n: c.schema() for n, c in confs.items()} for key, confs in sections}}


DynamicConfig.EMPTY = DynamicConfig(routers={}, services={}, middlewares={})


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


def reference_problem(reference: str) -> str | None:
    """Why `reference` (to a service or middleware) is malformed, or None if it is fine."""
    if "@" not in reference:
        return None
    name, _, provider = reference.partition("@")
    if not name or not provider or "@" in provider:
        return f"expected 'name' or 'name@provider', got {reference!r}"
    return None


class _Collector:
    """Accumulates routers, services and middlewares from one or more files, then
    cross-checks the references between them."""

    def __init__(self) -> None:
        self.files: list[Problems] = []
        self.routers: dict[str, RouterConf] = {}
        self.services: dict[str, ServiceConf] = {}
        self.middlewares: dict[str, MiddlewareConf] = {}
        self.defined: dict[str, str] = {}  # dotted key of each declared name -> its file
        # Every declared name, valid or not: a reference to a broken service is
        # reported once (where it is broken), not a second time as unknown.
        self.declared: dict[str, list[str]] = {"service": [], "middleware": []}
        # (router table, key in it, "service" or "middleware", the name referenced)
        self.references: list[tuple[Table, str, str, str]] = []

    def failed(self, source: str, error: ConfigError) -> None:
        """Record a file that could not be read at all."""
        problems = Problems(source)
        problems.extend(error)
        self.files.append(problems)

    def add(self, data: dict[str, Any], source: str) -> None:
        """Validate one parsed file and merge its routers, services and middlewares."""
        problems = Problems(source)
        self.files.append(problems)
        root = Table(data, "", problems)
        root.check_keys(("http",), ignored=("tcp", "udp", "tls"))
        http = root.table("http")
        http.check_keys(("routers", "services", "middlewares"))
        for name, table in http.table("routers").tables():
            if self._declare(name, table):
                router = _router(name, table)
                if router is not None:
                    self.routers[name] = router
                self._local_references(table)
        for name, table in http.table("services").tables():
            if self._declare(name, table):
                self.declared["service"].append(name)
                service = _service(name, table)
                if service is not None:
                    self.services[name] = service
        for name, table in http.table("middlewares").tables():
            if self._declare(name, table):
                self.declared["middleware"].append(name)
                middleware = _middleware(name, table)
                if middleware is not None:
                    self.middlewares[name] = middleware

    def finish(self) -> DynamicConfig:
        """Check references across all files; return the config or raise."""
        # Done last because, in a directory, a router may use a service from a later file.
        for table, key, kind, name in self.references:
            known = self.declared[kind]
            if name not in known:
                hint = difflib.get_close_matches(name, known, n=1)
                suffix = f" (did you mean {hint[0]!r}?)" if hint else ""
                table.problem(key, f"unknown {kind} {name!r}{suffix}")
        messages = [message for problems in self.files for message in problems.messages]
        if messages:
            raise ConfigError(messages)
        return DynamicConfig(
            routers=self.routers, services=self.services, middlewares=self.middlewares
        )

    def _declare(self, name: str, table: Table) -> bool:
        if "@" in name:
            table.problem(None, "name must not contain '@' (it separates a name from its provider)")
            return False
        other = self.defined.setdefault(table.key, table.problems.source)
        if other != table.problems.source:
            table.problem(None, f"already defined in {other}")
            return False
        return True

    def _local_references(self, router: Table) -> None:
        """Note the router's references to this provider's names, checked in finish()."""
        service = router.data.get("service")
        if isinstance(service, str) and service and "@" not in service:
            self.references.append((router, "service", "service", service))
        middlewares = router.data.get("middlewares")
        for name in middlewares if isinstance(middlewares, list) else ():
            if isinstance(name, str) and name.strip() and "@" not in name:
                self.references.append((router, "middlewares", "middleware", name))


def _router(name: str, table: Table) -> RouterConf | None:
    before = len(table.problems)
    table.check_keys(
        ("rule", "service", "entryPoints", "priority", "middlewares"), ignored=("tls",)
    )
    rule = table.string("rule", required=True)
    if rule is not None:
        _check_rule(table, rule)
    service = table.string("service", required=True)
    if service is not None and (problem := reference_problem(service)) is not None:
        table.problem("service", problem)
    entry_points = table.strings("entryPoints")
    if entry_points == []:
        table.problem("entryPoints", "must not be empty (omit it to use every entry point)")
    middlewares = table.strings("middlewares") or []
    for key, reference in middlewares:
        if (problem := reference_problem(reference)) is not None:
            table.problems.add(key, problem)
    priority = table.integer("priority")
    if len(table.problems) > before or rule is None or service is None:
        return None
    return RouterConf(
        name=name,
        rule=rule,
        service=service,
        entry_points=None if entry_points is None else tuple(ep for _, ep in entry_points),
        priority=priority,
        middlewares=tuple(reference for _, reference in middlewares),
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


def _middleware(name: str, table: Table) -> MiddlewareConf | None:
    before = len(table.problems)
    table.check_keys(("retry",), ignored=IGNORED_MIDDLEWARES)
    kinds = [kind for kind in table.data if kind == "retry" or kind in IGNORED_MIDDLEWARES]
    if len(kinds) > 1:
        # As Traefik: one middleware, one type (a chain is its own type).
        table.problem(None, f"one type per middleware, got {', '.join(kinds)}")
    elif not table.data:
        table.problem(None, "empty middleware: expected a type, e.g. [...retry]")
    retry = parse_retry(table.table("retry"), service=False) if "retry" in table else None
    if len(table.problems) > before or not kinds:
        return None
    return MiddlewareConf(name=name, retry=retry, kind=kinds[0])


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
        ("servers", "retry", "passiveHealthCheck", "healthCheck"),
        ignored=("sticky", "passHostHeader", "serversTransport"),
    )
    servers = _servers(balancer)
    retry = parse_retry(balancer.table("retry"), service=True) if "retry" in balancer else None
    passive = parse_passive_health(balancer.table("passiveHealthCheck"))
    health_check = (
        parse_health_check(balancer.table("healthCheck")) if "healthCheck" in balancer else None
    )
    if len(table.problems) > before or passive is None:
        return None
    return ServiceConf(
        name=name, servers=servers, retry=retry, passive=passive, health_check=health_check
    )


def _servers(balancer: Table) -> tuple[ServerConf, ...]:
    servers: list[ServerConf] = []
    first_index: dict[tuple[str, int], int] = {}  # (host, port) -> index of its first server
    key = balancer.child("servers")
    for index, item in enumerate(balancer.get("servers", list, "an array of tables") or ()):
        server_key = f"{key}[{index}]"
        if not isinstance(item, dict):
            balancer.problems.add(server_key, f"expected a table with a url, got {describe(item)}")
            continue
        server = _server(Table(item, server_key, balancer.problems))
        if server is None:
            continue
        origin = (server.host, server.port)
        if origin in first_index:
            balancer.problems.add(
                f"{server_key}.url",
                f"duplicate of {key}[{first_index[origin]}] ({server.host}:{server.port})",
            )
            continue
        first_index[origin] = index
        servers.append(server)
    return tuple(servers)


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


# -- sections shared with the Docker labels ------------------------------------------------
#
# Each takes the section's Table and returns its settings, or None after
# recording problems in the table. docker_labels builds the same tables from
# labels and runs them through these, so both providers validate alike.


def parse_retry(table: Table, *, service: bool) -> RetryConf | None:
    """A retry middleware's settings (service=False: `attempts` is required, as in
    Traefik) or a service's `loadBalancer.retry` (which may also say `disabled`)."""
    before = len(table.problems)
    table.check_keys(SERVICE_RETRY_OPTIONS if service else RETRY_OPTIONS)
    if not service:
        table.required("attempts")
    attempts = table.integer("attempts")
    initial_interval = table.duration("initialInterval", 0.0)
    disabled = table.boolean("disabled", False)
    if len(table.problems) > before:
        return None
    return RetryConf(attempts=attempts, initial_interval=initial_interval, disabled=disabled)


def parse_passive_health(table: Table) -> PassiveHealthConf | None:
    """`loadBalancer.passiveHealthCheck`; an empty table gives the defaults."""
    before = len(table.problems)
    table.check_keys(PASSIVE_HEALTH_OPTIONS)
    defaults = PassiveHealthConf()
    max_failed = table.integer("maxFailedAttempts", defaults.max_failed_attempts, minimum=1)
    window = _positive_duration(table, "failureWindow", defaults.failure_window)
    if len(table.problems) > before or max_failed is None:
        return None
    return PassiveHealthConf(max_failed_attempts=max_failed, failure_window=window)


def parse_health_check(table: Table) -> HealthCheckConf | None:
    """`loadBalancer.healthCheck`: `path` is required, the rest has Traefik's defaults."""
    before = len(table.problems)
    table.check_keys(HEALTH_CHECK_OPTIONS, ignored=HEALTH_CHECK_IGNORED)
    for name, reason in _UNSUPPORTED_HEALTH_CHECK.items():
        if name in table:
            table.problem(name, f"not supported yet: {reason}")
    path = table.string("path", required=True)
    # The path goes into the probe's request line as is.
    if path is not None and (not path.startswith("/") or any(c.isspace() for c in path)):
        table.problem("path", f"expected a path starting with '/' without spaces, got {path!r}")
    defaults = HealthCheckConf(path="/")
    interval = _positive_duration(table, "interval", defaults.interval)
    timeout = _positive_duration(table, "timeout", defaults.timeout)
    for name in ("scheme", "mode"):
        value = table.string(name)
        if value is not None and value.lower() != "http":
            table.problem(name, f"only http is supported, got {value!r}")
    hostname = table.string("hostname")
    if hostname is not None and not is_host(hostname):
        table.problem("hostname", f"expected a host name, got {hostname!r}")
    status = table.get("status", int, "an integer")
    if status is not None and not 100 <= status <= 599:
        table.problem("status", f"expected an HTTP status between 100 and 599, got {status}")
    if len(table.problems) > before or path is None:
        return None
    return HealthCheckConf(
        path=path,
        interval=interval,
        timeout=timeout,
        scheme="http",
        hostname=hostname,
        status=status,
    )


def _positive_duration(table: Table, name: str, default: float) -> float:
    value = table.duration(name, default)
    # Zero would mean "probe (or eject) continuously": surely a mistake.
    if name in table and value <= 0:
        table.problem(name, f"must be greater than 0, got {table.data[name]!r}")
    return value
