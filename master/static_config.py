"""The static configuration (`portside --config FILE`), using Traefik's key names.

Example::

    [entryPoints.web]
    address = ":8000"
    [entryPoints.web.forwardedHeaders]
    trustedIPs = ["10.0.0.0/8"]
    [entryPoints.web.transport.respondingTimeouts]
    idleTimeout = "180s"

    [serversTransport]
    maxIdleConnsPerHost = 200
    [serversTransport.forwardingTimeouts]
    dialTimeout = "5s"

    [providers.file]
    directory = "dynamic/"

    [lifeCycle]                 # defaults for every entry point's transport.lifeCycle
    requestAcceptGraceTimeout = "0s"
    graceTimeOut = "10s"

    [log]
    level = "INFO"
    filePath = "/var/log/portside.log"   # reopened on SIGUSR1; default: stderr

    [workers]
    count = 4
    gracefulTimeout = "30s"     # how long an old generation may drain after a reload
    maxMemory = "512MiB"        # a worker above this is replaced gracefully
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from dataclasses import dataclass
from typing import Any

from portside.master.errors import Problems
from portside.master.observability_config import (
    Observability,
    check_entry_points,
    parse_observability,
    with_implicit_entry_point,
)
from portside.master.schema import Table, is_host, read_toml

LOG_LEVELS = ("DEBUG", "INFO", "WARN", "ERROR")
_PORT = re.compile(r"[0-9]{1,5}")


@dataclass(frozen=True, slots=True)
class Limits:
    """What one request or connection may use ([entryPoints.<ep>.limits]); nginx-like defaults."""

    max_uri_bytes: int = 8 * 1024  # longer -> 414 (nginx: large_client_header_buffers 8k)
    max_header_bytes: int = 32 * 1024  # the whole head; more -> 431 (nginx: 4 x 8k)
    max_header_fields: int = 100  # more -> 431
    max_body_bytes: int | None = 1 << 20  # more -> 413 (nginx: client_max_body_size 1m)
    #: Per worker; past it the worker stops accepting and the kernel queues.
    max_connections: int = 4096
    read_header_timeout: float = 60.0  # a head still incomplete after this -> 408
    tunnel_idle_timeout: float = 300.0  # an Upgrade tunnel quiet this long is closed


@dataclass(frozen=True, slots=True)
class EntryPoint:
    """A listening address and its client-side settings."""

    name: str
    host: str  # "0.0.0.0" for all interfaces; IPv6 without brackets
    port: int  # 1..65535
    trusted_ips: tuple[str, ...]  # networks whose X-Forwarded-* headers are trusted
    idle_timeout: float  # seconds a keep-alive client connection may sit idle
    #: On a graceful stop, keep accepting this long (while /ping says 503) ...
    accept_grace: float = 0.0
    #: ... then stop accepting and give requests in flight this long to finish.
    grace_timeout: float = 10.0
    limits: Limits = Limits()


@dataclass(frozen=True, slots=True)
class LifeCycle:
    """Traefik's entry point `transport.lifeCycle`: the phases of a graceful stop."""

    request_accept_grace_timeout: float = 0.0
    grace_timeout: float = 10.0


@dataclass(frozen=True, slots=True)
class ServersTransport:
    """How the proxy talks to upstream servers (Traefik's top-level serversTransport)."""

    dial_timeout: float = 5.0
    response_header_timeout: float | None = None  # None: wait forever
    idle_conn_timeout: float = 90.0
    max_idle_conns_per_host: int = 200
    #: Request body bytes held so an idempotent request can be resent (retries).
    replay_buffer_size: int = 64 * 1024


@dataclass(frozen=True, slots=True)
class FileProvider:
    """Where the dynamic configuration lives; exactly one of filename/directory is set."""

    filename: str | None  # absolute
    directory: str | None  # absolute
    watch: bool = True


@dataclass(frozen=True, slots=True)
class DockerProvider:
    """Discovery from Docker container labels ([providers.docker])."""

    endpoint: str = "unix:///var/run/docker.sock"
    #: Opt-in by default: only containers labelled traefik.enable=true are exposed.
    exposed_by_default: bool = False
    network: str | None = None  # which network's IP to use; None: the first one
    default_rule: str | None = None  # e.g. "Host(`{{ normalize .Name }}`)"
    watch: bool = True  # follow Docker events; False: list the containers once at start


@dataclass(frozen=True, slots=True)
class StaticConfig:
    """Everything fixed for the lifetime of the process."""

    source: str  # the config file path as given
    entry_points: dict[str, EntryPoint]
    worker_count: int
    servers_transport: ServersTransport
    file_provider: FileProvider | None
    log_level: str  # one of LOG_LEVELS
    docker_provider: DockerProvider | None = None
    #: A worker whose event loop sends no heartbeat for this long is killed and replaced.
    worker_timeout: float = 30.0
    #: Pin worker i to CPU i (modulo the CPU count), for bare-metal hosts.
    cpu_affinity: bool = False
    #: After a reload, the old generation of workers drains for at most this long.
    graceful_timeout: float = 30.0
    #: A worker whose RSS exceeds this many bytes is replaced gracefully; None: no limit.
    max_memory: int | None = None
    #: Where the log goes; None for stderr. Reopened on SIGUSR1 (logrotate).
    log_file: str | None = None
    #: The API, ping, metrics and the access log.
    observability: Observability = Observability()

    @property
    def router_entry_points(self) -> list[str]:
        """The entry points routers may use: all but one added for the internal services."""
        implicit = self.observability.implicit_entry_point
        return [name for name in self.entry_points if name != implicit]

    @property
    def stop_timeout(self) -> float:
        """The longest a graceful stop (QUIT) can take, over every entry point."""
        return max(
            (ep.accept_grace + ep.grace_timeout for ep in self.entry_points.values()), default=0.0
        )


def load_static(path: str) -> StaticConfig:
    """Read and validate the static config file; ConfigError lists every problem."""
    return parse_static(read_toml(path), path)


def parse_static(data: dict[str, Any], source: str) -> StaticConfig:
    """Validate already-parsed TOML; ConfigError lists every problem, each naming `source`."""
    problems = Problems(source)
    root = Table(data, "", problems)
    root.check_keys(
        ("entryPoints", "serversTransport", "providers", "log", "workers", "lifeCycle")
        + ("api", "ping", "metrics", "accessLog")
    )
    if data.get("entryPoints", {}) == {}:
        problems.add("entryPoints", "at least one entry point is required")
    observability, data = _observability(root)
    root = Table(data, "", problems)
    life_cycle = _life_cycle(root.table("lifeCycle"), LifeCycle())
    entry_points = _entry_points(root.table("entryPoints"), life_cycle)
    check_entry_points(root, observability, set(entry_points))
    servers_transport = _servers_transport(root.table("serversTransport"))
    file_provider, docker_provider = _providers(root.table("providers"))
    log_level, log_file = _log(root.table("log"))
    workers = root.table("workers")
    workers.check_keys(("count", "timeout", "cpuAffinity", "gracefulTimeout", "maxMemory"))
    worker_count = workers.integer("count", os.cpu_count() or 1, minimum=1)
    worker_timeout = workers.duration("timeout", 30.0)
    if worker_timeout < 2:
        # Workers send a heartbeat once a second; less would kill healthy ones.
        workers.problem("timeout", "must be at least 2s (workers send a heartbeat every second)")
    cpu_affinity = workers.boolean("cpuAffinity", False)
    graceful_timeout = workers.duration("gracefulTimeout", 30.0)
    max_memory = workers.size("maxMemory")
    problems.raise_if_any()
    assert worker_count is not None  # any invalid value was reported and raised above
    return StaticConfig(
        source=source,
        entry_points=entry_points,
        worker_count=worker_count,
        servers_transport=servers_transport,
        file_provider=file_provider,
        log_level=log_level,
        docker_provider=docker_provider,
        worker_timeout=worker_timeout,
        cpu_affinity=cpu_affinity,
        graceful_timeout=graceful_timeout,
        max_memory=max_memory or None,
        log_file=log_file,
        observability=observability,
    )


def _observability(root: Table) -> tuple[Observability, dict[str, Any]]:
    """The internal services and access log, and the data with the entry point they may add."""
    observability = parse_observability(root)
    data, implicit = with_implicit_entry_point(dict(root.data), observability)
    return dataclasses.replace(observability, implicit_entry_point=implicit), data


def parse_address(text: str) -> tuple[str, int]:
    """Split a Traefik entry point address ("HOST:PORT", ":PORT", "[V6]:PORT") into host, port.

    An empty host means all interfaces ("0.0.0.0"). Raises ValueError with the reason.
    """
    address = text.removesuffix("/tcp")
    if "/" in address:
        raise ValueError(f"only TCP entry points are supported, got {text!r}")
    host, sep, port_text = address.rpartition(":")
    if not sep or not _PORT.fullmatch(port_text):
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(f"port must be between 1 and 65535, got {port}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if ":" not in host:
            raise ValueError(f"brackets are only for IPv6 addresses, got {text!r}")
    elif ":" in host or "[" in host or "]" in host:
        raise ValueError(f"write IPv6 addresses in brackets, e.g. '[::1]:{port}', got {text!r}")
    if not host:
        return "0.0.0.0", port
    if not is_host(host):
        raise ValueError(f"invalid host {host!r} in {text!r}")
    try:
        # Canonical form, so "::0001" and "::1" are recognised as the same address.
        return str(ipaddress.ip_address(host)), port
    except ValueError:
        return host, port


def _entry_points(table: Table, life_cycle: LifeCycle) -> dict[str, EntryPoint]:
    result: dict[str, EntryPoint] = {}
    bound: dict[tuple[str, int], str] = {}  # every valid address so far -> its entry point
    for name, ep in table.tables():
        entry_point = _entry_point(name, ep, life_cycle)
        if entry_point is not None:
            result[name] = entry_point
        # Checked even when the entry point has other problems: they are independent.
        address = _valid_address(ep.data.get("address"))
        if address is None:
            continue
        clash = next((other for other in bound if _overlaps(other, address)), None)
        if clash is not None:
            ep.problem(
                "address",
                f"{address[0]}:{address[1]} conflicts with "
                f"{table.child(bound[clash])} ({clash[0]}:{clash[1]})",
            )
        bound.setdefault(address, name)
    return result


def _valid_address(value: object) -> tuple[str, int] | None:
    try:
        return parse_address(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _entry_point(name: str, ep: Table, defaults: LifeCycle) -> EntryPoint | None:
    before = len(ep.problems)
    ep.check_keys(("address", "forwardedHeaders", "transport", "limits"))
    host, port = "", 0
    address = ep.string("address", required=True)
    if address is not None:
        try:
            host, port = parse_address(address)
        except ValueError as exc:
            ep.problem("address", str(exc))

    forwarded = ep.table("forwardedHeaders")
    forwarded.check_keys(("trustedIPs",))
    trusted: list[str] = []
    for key, text in forwarded.strings("trustedIPs") or ():
        try:
            trusted.append(str(ipaddress.ip_network(text.strip(), strict=False)))
        except ValueError:
            ep.problems.add(key, f"expected an IP address or CIDR network, got {text!r}")

    transport = ep.table("transport")
    transport.check_keys(("respondingTimeouts", "lifeCycle"))
    responding = transport.table("respondingTimeouts")
    responding.check_keys(("idleTimeout", "readHeaderTimeout", "tunnelIdleTimeout"))
    idle_timeout = responding.duration("idleTimeout", 180.0)
    life_cycle = _life_cycle(transport.table("lifeCycle"), defaults)
    limits = _limits(ep.table("limits"), responding)

    if len(ep.problems) > before:
        return None
    return EntryPoint(
        name,
        host,
        port,
        tuple(trusted),
        idle_timeout,
        life_cycle.request_accept_grace_timeout,
        life_cycle.grace_timeout,
        limits,
    )


def _limits(table: Table, responding: Table) -> Limits:
    table.check_keys(
        ("maxUriBytes", "maxHeaderBytes", "maxHeaderFields", "maxBodyBytes", "maxConnections")
    )
    defaults = Limits()

    def positive(name: str, default: int) -> int:
        value = table.size(name) if name.endswith("Bytes") else table.integer(name, default)
        if value == 0:
            table.problem(name, "must be greater than 0")
        return default if value is None else value

    body = table.size("maxBodyBytes")
    header_timeout = responding.duration("readHeaderTimeout", defaults.read_header_timeout)
    tunnel_timeout = responding.duration("tunnelIdleTimeout", defaults.tunnel_idle_timeout)
    for name, value in (
        ("readHeaderTimeout", header_timeout),
        ("tunnelIdleTimeout", tunnel_timeout),
    ):
        if value == 0:
            responding.problem(name, "must be greater than 0")
    return Limits(
        max_uri_bytes=positive("maxUriBytes", defaults.max_uri_bytes),
        max_header_bytes=positive("maxHeaderBytes", defaults.max_header_bytes),
        max_header_fields=positive("maxHeaderFields", defaults.max_header_fields),
        # 0 turns the body limit off, as nginx's client_max_body_size 0 does.
        max_body_bytes=defaults.max_body_bytes if body is None else (body or None),
        max_connections=positive("maxConnections", defaults.max_connections),
        read_header_timeout=header_timeout,
        tunnel_idle_timeout=tunnel_timeout,
    )


def _life_cycle(table: Table, defaults: LifeCycle) -> LifeCycle:
    # Traefik sets these per entry point; a top-level [lifeCycle] gives the
    # defaults, so one stanza covers every entry point.
    table.check_keys(("requestAcceptGraceTimeout", "graceTimeOut"))
    return LifeCycle(
        table.duration("requestAcceptGraceTimeout", defaults.request_accept_grace_timeout),
        table.duration("graceTimeOut", defaults.grace_timeout),
    )


def _overlaps(a: tuple[str, int], b: tuple[str, int]) -> bool:
    # A wildcard bind covers every address of its family: binding 0.0.0.0:80
    # and 127.0.0.1:80 together fails (or, with SO_REUSEPORT, splits traffic).
    (host_a, port_a), (host_b, port_b) = a, b
    if port_a != port_b:
        return False
    return host_a == host_b or _is_wildcard_for(host_a, host_b) or _is_wildcard_for(host_b, host_a)


def _is_wildcard_for(wildcard: str, host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False  # a host name may resolve anywhere; only the bind can tell
    return wildcard == ("0.0.0.0" if address.version == 4 else "::")


def _servers_transport(table: Table) -> ServersTransport:
    table.check_keys(("maxIdleConnsPerHost", "replayBufferSize", "forwardingTimeouts"))
    defaults = ServersTransport()
    max_idle = table.integer("maxIdleConnsPerHost", defaults.max_idle_conns_per_host)
    replay = table.integer("replayBufferSize", defaults.replay_buffer_size)
    timeouts = table.table("forwardingTimeouts")
    timeouts.check_keys(("dialTimeout", "responseHeaderTimeout", "idleConnTimeout"))
    dial = timeouts.duration("dialTimeout", defaults.dial_timeout)
    idle_conn = timeouts.duration("idleConnTimeout", defaults.idle_conn_timeout)
    # Unlike Go, asyncio has no "0 = no limit" convention for these two; a zero
    # would make every dial fail or every pooled connection die at once.
    for name, value in (("dialTimeout", dial), ("idleConnTimeout", idle_conn)):
        if value == 0:
            timeouts.problem(name, "must be greater than 0")
    header = timeouts.duration("responseHeaderTimeout", 0.0)
    return ServersTransport(
        dial_timeout=dial,
        response_header_timeout=header or None,
        idle_conn_timeout=idle_conn,
        max_idle_conns_per_host=defaults.max_idle_conns_per_host if max_idle is None else max_idle,
        replay_buffer_size=defaults.replay_buffer_size if replay is None else replay,
    )


def _providers(table: Table) -> tuple[FileProvider | None, DockerProvider | None]:
    table.check_keys(("file", "docker"))
    return _file_provider(table), _docker_provider(table)


def _docker_provider(providers: Table) -> DockerProvider | None:
    docker = providers.table("docker")
    if not isinstance(providers.data.get("docker"), dict):
        return None
    docker.check_keys(("endpoint", "exposedByDefault", "network", "defaultRule", "watch"))
    defaults = DockerProvider()
    endpoint = docker.string("endpoint") or defaults.endpoint
    if not endpoint.startswith(("unix://", "tcp://", "http://", "https://")):
        docker.problem("endpoint", f"expected unix://PATH or tcp://HOST:PORT, got {endpoint!r}")
    default_rule = docker.string("defaultRule")
    if default_rule is not None:
        from portside.master.docker_labels import DEFAULT_RULE_EXAMPLE, check_default_rule

        reason = check_default_rule(default_rule)
        if reason is not None:
            docker.problem("defaultRule", f"{reason} (e.g. {DEFAULT_RULE_EXAMPLE})")
    return DockerProvider(
        endpoint=endpoint,
        exposed_by_default=bool(docker.boolean("exposedByDefault", False)),
        network=docker.string("network"),
        default_rule=default_rule,
        watch=docker.boolean("watch", True),
    )


def _file_provider(providers: Table) -> FileProvider | None:
    file = providers.table("file")
    if not isinstance(providers.data.get("file"), dict):
        return None  # absent, or reported as not a table
    file.check_keys(("filename", "directory", "watch"))
    filename = file.string("filename")
    directory = file.string("directory")
    watch = file.boolean("watch", True)
    if "filename" in file and "directory" in file:
        file.problem(None, "set either filename or directory, not both")
    elif "filename" not in file and "directory" not in file:
        file.problem(None, "one of filename or directory is required")
    # Relative paths resolve against the working directory, as in Traefik.
    return FileProvider(
        filename=os.path.abspath(filename) if filename else None,
        directory=os.path.abspath(directory) if directory else None,
        watch=watch,
    )


def _log(table: Table) -> tuple[str, str | None]:
    """The log level and file ([log] level, filePath)."""
    table.check_keys(("level", "filePath"))
    path = table.string("filePath")
    log_file = None if path in (None, "-") else os.path.abspath(path)
    level = table.string("level")
    if level is None:
        return "INFO", log_file
    normalized = level.strip().upper()
    if normalized == "WARNING":
        normalized = "WARN"
    if normalized not in LOG_LEVELS:
        table.problem("level", f"expected one of {', '.join(LOG_LEVELS)}, got {level!r}")
    return normalized, log_file
