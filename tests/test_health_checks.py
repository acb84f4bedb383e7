"""Active health checks (portside.master.health_checks) against real local HTTP servers.

Each backend is a tiny threaded HTTP server on a free loopback port whose
health status can be switched at any time; it records every request it
answers, so a test can tell exactly how many probes a transition took.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import Portside, free_port, wait_until

from portside.master.dynamic_config import (
    DynamicConfig,
    HealthCheckConf,
    ServerConf,
    ServiceConf,
    parse_server_url,
)
from portside.master.health_checks import HealthChecker, Key

CHECK = HealthCheckConf(path="/health", interval=0.05, timeout=1.0)


@dataclass(frozen=True)
class Seen:
    """One request a backend answered."""

    path: str
    host: str | None
    status: int


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    backend: Backend

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a probe that timed out has closed its end: writing fails, as expected


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        status, body = self.server.backend.answer(self.path, self.headers.get("Host"))
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class Backend:
    """`/health` answers `health_status` after `delay` seconds; any other path, its name."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.health_status = 200
        self.delay = 0.0
        self._seen: list[Seen] = []
        self._lock = threading.Lock()
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.backend = self
        self.port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True).start()

    def answer(self, path: str, host: str | None) -> tuple[int, bytes]:
        if path != "/health":
            status, body = 200, self.name.encode()
        else:
            time.sleep(self.delay)
            status, body = self.health_status, b""
        with self._lock:
            self._seen.append(Seen(path, host, status))
        return status, body

    def seen(self) -> list[Seen]:
        with self._lock:
            return list(self._seen)

    def statuses(self) -> list[int]:
        return [s.status for s in self.seen()]

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


class Reports:
    """The checker's report callback: each set, with what `watched` had answered by then."""

    def __init__(self, *watched: Backend) -> None:
        self.watched = watched
        self.items: list[tuple[set[Key], dict[str, list[int]]]] = []

    def __call__(self, unhealthy: set[Key]) -> None:
        self.items.append((set(unhealthy), {b.name: b.statuses() for b in self.watched}))

    @property
    def sets(self) -> list[set[Key]]:
        return [unhealthy for unhealthy, _ in self.items]

    def when(self, unhealthy: set[Key]) -> dict[str, list[int]]:
        """What the watched backends had answered when `unhealthy` was first reported."""
        wait_until(lambda: unhealthy in self.sets, 5)
        return next(seen for u, seen in self.items if u == unhealthy)


def dynamic(check: HealthCheckConf | None = CHECK, **services: list[str]) -> DynamicConfig:
    """A provider configuration: each service's server urls, all with `check`."""

    def server(url: str) -> ServerConf:
        scheme, host, port = parse_server_url(url)
        return ServerConf(url=url, scheme=scheme, host=host, port=port, weight=1)

    return DynamicConfig(
        routers={},
        services={
            name: ServiceConf(name, tuple(map(server, urls)), health_check=check)
            for name, urls in services.items()
        },
    )


@pytest.fixture
def backend() -> Iterator[Callable[[str], Backend]]:
    """Factory for backends, all stopped at teardown."""
    started: list[Backend] = []

    def start(name: str) -> Backend:
        started.append(Backend(name))
        return started[-1]

    yield start
    for b in started:
        b.stop()


@pytest.fixture
def checker_for() -> Iterator[Callable[[Reports], HealthChecker]]:
    """Factory for health checkers, all stopped at teardown."""
    started: list[HealthChecker] = []

    def start(reports: Reports) -> HealthChecker:
        started.append(HealthChecker(reports))
        return started[-1]

    yield start
    for checker in started:
        checker.stop()


@pytest.fixture(autouse=True)
def health_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """caplog, with the checker's INFO transitions (servers coming back) captured too."""
    caplog.set_level(logging.INFO, logger="portside.health")
    return caplog


def transitions(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "portside.health"]


def test_down_after_exactly_two_failures_and_up_after_two_successes(
    backend: Callable[[str], Backend],
    checker_for: Callable[[Reports], HealthChecker],
    health_logs: pytest.LogCaptureFixture,
) -> None:
    a = backend("a")
    reports = Reports(a)
    checker_for(reports).update("file", dynamic(whoami=[a.url]))
    # Servers start up; the first report comes once the server has been probed twice.
    assert reports.when(set())["a"] == [200, 200]

    a.health_status = 500
    down = {("whoami@file", a.url)}
    assert reports.when(down)["a"][-3:] == [200, 500, 500]
    a.health_status = 200
    wait_until(lambda: reports.sets == [set(), down, set()], 5)
    assert reports.items[-1][1]["a"][-3:] == [500, 200, 200]

    server = f"server {a.url} of service whoami@file"
    assert transitions(health_logs) == [
        (logging.WARNING, f"{server} is down: status 500, expected 2xx or 3xx"),
        (logging.INFO, f"{server} is up again: status 200"),
    ]


@pytest.mark.parametrize(
    ("delay", "check", "reason"),
    [
        pytest.param(None, CHECK, "connection refused", id="refused"),
        pytest.param(0.5, replace(CHECK, timeout=0.1), "timed out after 0.1s", id="timeout"),
    ],
)
def test_refused_connection_and_timeout_are_failures(
    backend: Callable[[str], Backend],
    checker_for: Callable[[Reports], HealthChecker],
    health_logs: pytest.LogCaptureFixture,
    delay: float | None,
    check: HealthCheckConf,
    reason: str,
) -> None:
    if delay is None:
        url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    else:
        slow = backend("slow")
        slow.delay = delay
        url = slow.url
    reports = Reports()
    checker_for(reports).update("file", dynamic(check, whoami=[url]))
    reports.when({("whoami@file", url)})
    assert transitions(health_logs) == [
        (logging.WARNING, f"server {url} of service whoami@file is down: {reason}")
    ]


def test_an_expected_status_must_match_exactly(
    backend: Callable[[str], Backend],
    checker_for: Callable[[Reports], HealthChecker],
    health_logs: pytest.LogCaptureFixture,
) -> None:
    a = backend("a")
    reports = Reports(a)
    checker_for(reports).update("file", dynamic(replace(CHECK, status=204), whoami=[a.url]))
    assert reports.when({("whoami@file", a.url)})["a"] == [200, 200]
    a.health_status = 204
    wait_until(lambda: reports.sets[-1] == set(), 5)
    assert "status 200, expected 204" in transitions(health_logs)[0][1]


def test_host_header_is_the_hostname_or_the_server_address(
    backend: Callable[[str], Backend], checker_for: Callable[[Reports], HealthChecker]
) -> None:
    named, plain = backend("named"), backend("plain")
    checker = checker_for(Reports())
    checker.update("file", dynamic(replace(CHECK, hostname="health.example"), named=[named.url]))
    checker.update("docker", dynamic(plain=[plain.url]))
    wait_until(lambda: named.seen() and plain.seen(), 5)
    assert named.seen()[0] == Seen("/health", "health.example", 200)
    assert plain.seen()[0] == Seen("/health", f"127.0.0.1:{plain.port}", 200)


def test_removed_service_stops_being_probed_and_leaves_the_unhealthy_set(
    backend: Callable[[str], Backend], checker_for: Callable[[Reports], HealthChecker]
) -> None:
    gone, kept = backend("gone"), backend("kept")
    gone.health_status = 500
    reports = Reports()
    checker = checker_for(reports)
    checker.update("file", dynamic(gone=[gone.url], kept=[kept.url]))
    reports.when({("gone@file", gone.url)})

    checker.update("docker", DynamicConfig.EMPTY)  # another provider's update changes nothing
    assert reports.sets[-1] == {("gone@file", gone.url)}
    checker.update("file", dynamic(kept=[kept.url]))
    assert reports.sets[-1] == set()

    probes_of_gone, probes_of_kept = len(gone.seen()), len(kept.seen())
    wait_until(lambda: len(kept.seen()) >= probes_of_kept + 3, 5)
    assert len(gone.seen()) <= probes_of_gone + 1  # one may have been in flight


def test_new_check_settings_keep_a_down_server_down_until_it_passes_them(
    backend: Callable[[str], Backend], checker_for: Callable[[Reports], HealthChecker]
) -> None:
    a = backend("a")
    a.health_status = 500
    reports = Reports(a)
    checker = checker_for(reports)
    checker.update("file", dynamic(whoami=[a.url]))
    down = {("whoami@file", a.url)}
    reports.when(down)

    checker.update("file", dynamic(replace(CHECK, path="/"), whoami=[a.url]))  # "/" answers 200
    assert reports.sets[-1] == down
    wait_until(lambda: reports.sets[-1] == set(), 5)
    assert [s.path for s in a.seen()[-2:]] == ["/", "/"]


def test_first_report_waits_until_every_server_was_probed_twice(
    backend: Callable[[str], Backend], checker_for: Callable[[Reports], HealthChecker]
) -> None:
    a, b = backend("a"), backend("b")
    b.delay = 0.2  # b's probes take longer, so a settles first
    reports = Reports(a, b)
    checker_for(reports).update("file", dynamic(whoami=[a.url, b.url]))
    assert len(reports.when(set())["b"]) == 2
    assert reports.sets == [set()]


# -- end to end --------------------------------------------------------------


def test_failing_server_leaves_rotation_and_comes_back(
    portside: Callable[..., Portside], backend: Callable[[str], Backend]
) -> None:
    a, b = backend("a"), backend("b")
    proxy = portside(
        f"""
        [http.routers.r]
        rule = "Host(`app.localhost`)"
        service = "s"

        [http.services.s.loadBalancer]
        servers = [ {{ url = "{a.url}" }}, {{ url = "{b.url}" }} ]

        [http.services.s.loadBalancer.healthCheck]
        path = "/health"
        interval = "100ms"
        """
    )

    def served_by() -> set[str]:
        return {proxy.get("app.localhost").text for _ in range(6)}

    wait_until(lambda: served_by() == {"a", "b"})
    a.health_status = 500
    wait_until(lambda: served_by() == {"b"})
    assert served_by() == {"b"}
    a.health_status = 200
    wait_until(lambda: served_by() == {"a", "b"})
    logs = proxy.logs()
    assert f"server {a.url} of service s@file is down: status 500" in logs
    assert f"server {a.url} of service s@file is up again" in logs
