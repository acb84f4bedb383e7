"""Static configuration of the internal services and the access log.

Traefik's sections, with Traefik's names::

    [api]                      # /api/... and /dashboard/
    entryPoint = "admin"       # default: "traefik"
    dashboard = true           # default: true
    basicAuth.users = ["admin:$2y$05$..."]   # htpasswd lines: bcrypt or {SHA}

    [ping]
    entryPoint = "admin"       # GET /ping

    [metrics.prometheus]
    entryPoint = "admin"       # GET /metrics

    [accessLog]
    filePath = "/var/log/portside/access.log"   # default "-": stdout
    format = "json"            # or "common" (the default, as in Traefik)

As in Traefik, a service whose entry point is not set uses one named
`traefik`. When no entry point has that name, portside adds it on
127.0.0.1:8080: Traefik's port, but loopback only, so the API is never
exposed by accident. Routers do not serve on that implicit entry point.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from portside.master.schema import Table

#: The entry point internal services use when theirs is not set (Traefik's name).
DEFAULT_ENTRY_POINT = "traefik"
#: Where that entry point listens when the configuration does not define it.
IMPLICIT_ADDRESS = "127.0.0.1:8080"
ACCESS_LOG_FORMATS = ("common", "json")
_BCRYPT_PREFIXES = ("$2a$", "$2b$", "$2y$")
_SHA_PREFIX = "{SHA}"


@dataclass(frozen=True, slots=True)
class ApiConfig:
    """The API (and the dashboard) on one entry point."""

    entry_point: str
    dashboard: bool = True
    #: (user, htpasswd hash) pairs; empty: no authentication.
    users: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class AccessLogConfig:
    """Where and how each request is logged."""

    file_path: str | None  # None: stdout
    format: str = "common"  # one of ACCESS_LOG_FORMATS


@dataclass(frozen=True, slots=True)
class Observability:
    """The internal services (each None when off) and the access log."""

    api: ApiConfig | None = None
    ping_entry_point: str | None = None
    metrics_entry_point: str | None = None
    access_log: AccessLogConfig | None = None
    #: The entry point portside added for the internal services, if it added one.
    implicit_entry_point: str | None = None

    def services_on(self, entry_point: str) -> dict[str, bool]:
        """Which internal services an entry point serves: api, dashboard, ping, metrics."""
        api = self.api is not None and self.api.entry_point == entry_point
        return {
            "api": api,
            "dashboard": api and self.api is not None and self.api.dashboard,
            "ping": self.ping_entry_point == entry_point,
            "metrics": self.metrics_entry_point == entry_point,
        }

    def entry_points(self) -> set[str]:
        """Every entry point that serves an internal service."""
        names = {self.ping_entry_point, self.metrics_entry_point}
        names.add(self.api.entry_point if self.api is not None else None)
        return {name for name in names if name is not None}


def parse_observability(root: Table) -> Observability:
    """Read [api], [ping], [metrics.prometheus] and [accessLog]; problems go to root's list."""
    api = _api(root)
    ping = _entry_point_of(root, "ping")
    metrics_table = root.table("metrics")
    metrics_table.check_keys(("prometheus",))
    metrics = _entry_point_of(metrics_table, "prometheus")
    return Observability(api, ping, metrics, _access_log(root))


def with_implicit_entry_point(data: dict, observability: Observability) -> tuple[dict, str | None]:
    """The entryPoints table, plus Traefik's default one if a service needs it and it is absent."""
    entry_points = data.get("entryPoints")
    if not isinstance(entry_points, dict) or DEFAULT_ENTRY_POINT in entry_points:
        return data, None
    if DEFAULT_ENTRY_POINT not in observability.entry_points():
        return data, None
    added = {**entry_points, DEFAULT_ENTRY_POINT: {"address": IMPLICIT_ADDRESS}}
    return {**data, "entryPoints": added}, DEFAULT_ENTRY_POINT


def check_entry_points(root: Table, observability: Observability, known: set[str]) -> None:
    """Report internal services whose entry point does not exist."""
    uses = (
        ("api", observability.api.entry_point if observability.api else None),
        ("ping", observability.ping_entry_point),
        ("metrics.prometheus", observability.metrics_entry_point),
    )
    for key, name in uses:
        if name is not None and name not in known:
            root.problems.add(f"{key}.entryPoint", f"unknown entry point {name!r}")


def _entry_point_of(parent: Table, name: str) -> str | None:
    if not isinstance(parent.data.get(name), dict):
        parent.table(name)  # reports a value that is not a table
        return None
    table = parent.table(name)
    # Traefik's other keys for these sections have no meaning here yet.
    table.check_keys(("entryPoint",), ignored=("manualRouting", "terminatingStatusCode", "buckets"))
    return table.string("entryPoint") or DEFAULT_ENTRY_POINT


def _api(root: Table) -> ApiConfig | None:
    if not isinstance(root.data.get("api"), dict):
        root.table("api")
        return None
    table = root.table("api")
    # `insecure` is how Traefik publishes the API on its own entry point,
    # which is what portside always does: accepted so Traefik files load.
    table.check_keys(("entryPoint", "dashboard", "basicAuth", "insecure"), ignored=("debug",))
    auth = table.table("basicAuth")
    auth.check_keys(("users",))
    users = []
    for key, line in auth.strings("users") or ():
        user, sep, hashed = line.partition(":")
        reason = None if sep and user else "expected USER:HASH, as htpasswd writes it"
        reason = reason or unsupported_hash(hashed)
        if reason is not None:
            auth.problems.add(key, reason)
        else:
            users.append((user, hashed))
    return ApiConfig(
        entry_point=table.string("entryPoint") or DEFAULT_ENTRY_POINT,
        dashboard=table.boolean("dashboard", True),
        users=tuple(users),
    )


def unsupported_hash(hashed: str) -> str | None:
    """Why an htpasswd hash cannot be checked, or None if it can (bcrypt or {SHA})."""
    if hashed.startswith(_BCRYPT_PREFIXES) or hashed.startswith(_SHA_PREFIX):
        return None
    return "unsupported password hash: use bcrypt (htpasswd -B) or SHA (htpasswd -s)"


def _access_log(root: Table) -> AccessLogConfig | None:
    if not isinstance(root.data.get("accessLog"), dict):
        root.table("accessLog")
        return None
    table = root.table("accessLog")
    table.check_keys(("filePath", "format"), ignored=("bufferingSize", "filters", "fields"))
    path = table.string("filePath")
    log_format = table.string("format") or "common"
    if log_format not in ACCESS_LOG_FORMATS:
        table.problem(
            "format", f"expected one of {', '.join(ACCESS_LOG_FORMATS)}, got {log_format!r}"
        )
    return AccessLogConfig(None if path in (None, "-") else os.path.abspath(path), log_format)
