"""The internal services: ping, the API, Prometheus metrics and the dashboard.

Workers serve them on the entry points the static configuration names, as
Traefik's `api@internal`, `ping@internal` and `prometheus@internal`, ahead of
the routers of that entry point. Everything they show comes from the
master's `status` message (see portside.master.status), pushed once a second
and on every change, so every worker answers the same and the request path
stays the one HTTP implementation.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from portside.worker.basic_auth import BasicAuth
from portside.worker.responses import local_response

if TYPE_CHECKING:
    from portside.worker.exchange import Exchange
    from portside.worker.runtime import WorkerRuntime

_JSON = b"application/json"
_PROMETHEUS = b"text/plain; version=0.0.4; charset=utf-8"
_HTML = b"text/html; charset=utf-8"
_NO_STORE = b"Cache-Control: no-store\r\n"
_DASHBOARD = (Path(__file__).parent / "dashboard.html").read_bytes()
#: API lists whose items can also be fetched by name: path -> key in the status.
_COLLECTIONS = {
    "/api/entrypoints": "entrypoints",
    "/api/http/routers": "routers",
    "/api/http/services": "services",
}
_DOCUMENTS = {
    "/api/overview": "overview",
    "/api/version": "version",
    "/api/workers": "workers",
}


class InternalRoute:
    """What the metrics and the access log name an internal request after."""

    __slots__ = ("name", "service")

    def __init__(self, name: str) -> None:
        self.name = name
        self.service = self  # an internal service is its own router: name and service.name


_API, _PING, _METRICS = (
    InternalRoute("api@internal"),
    InternalRoute("ping@internal"),
    InternalRoute("prometheus@internal"),
)


class StatusPages:
    """The master's latest status, and the API pages made from it (each encoded once)."""

    def __init__(self) -> None:
        self._api: dict[str, Any] = {}
        self.metrics = b""
        self._pages: dict[str, bytes] = {}

    def update(self, message: dict[str, Any]) -> None:
        self._api = message.get("api") or {}
        self.metrics = str(message.get("metrics", "")).encode()
        self._pages = {}

    def page(self, path: str) -> bytes | None:
        """The JSON body for an API path, or None if there is no such page."""
        page = self._pages.get(path)
        if page is None:
            page = self._render(path)
            if page is not None:  # misses are not kept: any client can make up paths
                self._pages[path] = page
        return page

    def _render(self, path: str) -> bytes | None:
        if path in _DOCUMENTS:
            return _encode(self._api.get(_DOCUMENTS[path], {}))
        if path in _COLLECTIONS:
            return _encode(self._api.get(_COLLECTIONS[path], []))
        parent, _, name = path.rpartition("/")
        if parent in _COLLECTIONS and name:
            wanted = unquote(name)
            for item in self._api.get(_COLLECTIONS[parent], []):
                if item.get("name") == wanted:
                    return _encode(item)
        return None


class InternalServices:
    """The internal services one entry point serves."""

    __slots__ = ("_runtime", "_api", "_dashboard", "_ping", "_metrics", "_auth")

    def __init__(
        self, runtime: WorkerRuntime, services: dict[str, bool], auth: BasicAuth | None
    ) -> None:
        self._runtime = runtime
        self._api = services["api"]
        self._dashboard = services["dashboard"]
        self._ping = services["ping"]
        self._metrics = services["metrics"]
        self._auth = auth

    @classmethod
    def for_entry_point(cls, runtime: WorkerRuntime, name: str) -> InternalServices | None:
        """The services for entry point `name`, or None when it serves none."""
        observability = runtime.config.observability
        services = observability.services_on(name)
        if not any(services.values()):
            return None
        users = observability.api.users if observability.api is not None else ()
        return cls(runtime, services, BasicAuth(users) if users else None)

    def serve(self, exchange: Exchange) -> bool:
        """Answer the request if it is for an internal service; False to route it as usual."""
        path = exchange.path
        if self._ping and path == "/ping":
            # 503 from the start of a graceful stop, so load balancers move away in time.
            exchange.route = _PING
            if self._runtime.shutting_down:
                self._answer(exchange, 503, b"text/plain", b"Service Unavailable")
            else:
                self._answer(exchange, 200, b"text/plain", b"OK")
        elif self._metrics and path == "/metrics":
            exchange.route = _METRICS
            self._answer(exchange, 200, _PROMETHEUS, self._runtime.status.metrics)
        elif self._api and (path == "/api" or path.startswith("/api/")):
            exchange.route = _API
            if self._authorized(exchange):
                page = self._runtime.status.page(path)
                if page is None:
                    self._answer(exchange, 404, b"text/plain", b"404 page not found\n")
                else:
                    self._answer(exchange, 200, _JSON, page)
        elif self._dashboard and (path == "/dashboard" or path.startswith("/dashboard/")):
            exchange.route = _API
            if path == "/dashboard":
                self._answer(exchange, 301, b"text/plain", b"", b"Location: /dashboard/\r\n")
            elif self._authorized(exchange):
                self._answer(exchange, 200, _HTML, _DASHBOARD)
        else:
            return False
        return True

    def _authorized(self, exchange: Exchange) -> bool:
        """True if the request may see the API; otherwise it is answered 401."""
        if self._auth is None or self._auth.check(exchange.header_values("authorization")):
            return True
        self._answer(exchange, 401, b"text/plain", b"401 Unauthorized\n", self._auth.challenge)
        return False

    def _answer(
        self, exchange: Exchange, status: int, content_type: bytes, body: bytes, extra: bytes = b""
    ) -> None:
        if exchange.raw_method not in (b"GET", b"HEAD"):
            status, body, extra = 405, b"405 Method Not Allowed\n", b"Allow: GET, HEAD\r\n"
            content_type = b"text/plain"
        head = exchange.raw_method == b"HEAD"
        exchange.respond(status, _renderer(status, body, content_type, extra + _NO_STORE, head))


def _renderer(
    status: int, body: bytes, content_type: bytes, extra: bytes, head: bool
) -> Callable[[bool, bool], bytes]:
    def render(keep_alive: bool, http10: bool) -> bytes:
        return local_response(
            status,
            body,
            keep_alive=keep_alive,
            http10=http10,
            content_type=content_type,
            extra=extra,
            head=head,
        )

    return render


def _encode(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()
