"""Fixtures that start real processes: whoami backends and portside itself.

Everything talks over real loopback sockets. Waiting is always on a
condition with a deadline (`wait_until`), never a bare sleep.
"""

from __future__ import annotations

import http.client
import io
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

PORTSIDE = [sys.executable, "-m", "portside.master.cli"]

# The Docker fixtures (`client`, `containers`) live with the Docker helpers.
pytest_plugins = ["docker_support"]

#: Set on a test item whose body failed, so that fixtures can say more at teardown.
CALL_FAILED = pytest.StashKey[bool]()
#: How much of portside's log a failed test prints (pytest shows it with the failure).
LOG_TAIL_LINES = 80


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Mark the item whose test body failed (CALL_FAILED)."""
    report = yield
    if report.when == "call" and report.failed:
        item.stash[CALL_FAILED] = True
    return report


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(condition: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll `condition` until it returns a truthy value; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = condition()
        except (OSError, http.client.HTTPException) as exc:
            last_error = exc
        else:
            if result:
                return result
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last error: {last_error!r})")


@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()

    def field(self, name: str) -> str | None:
        """A 'Name: value' line from a whoami body."""
        prefix = name.lower() + ":"
        for line in self.text.splitlines():
            if line.lower().startswith(prefix):
                return line.split(":", 1)[1].strip()
        return None


def request(
    port: int,
    host: str,
    path: str = "/",
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    timeout: float = 10.0,
) -> Response:
    """One request on a fresh connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers={"Host": host, **(headers or {})})
        resp = conn.getresponse()
        return Response(resp.status, resp.headers, resp.read())
    finally:
        conn.close()


class Whoami:
    """A `portside whoami` backend in a subprocess."""

    def __init__(self, name: str, port: int | None = None) -> None:
        self.name = name
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [*PORTSIDE, "whoami", "--listen", f"127.0.0.1:{self.port}", "--name", name],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        line = self.proc.stdout.readline()  # printed once listening
        assert "listening" in line, f"whoami {name} did not start: {line!r}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@dataclass
class Portside:
    """A running `portside --config` with its config files in a temp dir."""

    tmp: Path
    workers: int = 1
    extra_static: str = ""
    worker_settings: str = ""  # more keys for the [workers] table
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def static_path(self) -> Path:
        return self.tmp / "static.toml"

    @property
    def dynamic_path(self) -> Path:
        return self.tmp / "dynamic.toml"

    def write_dynamic(self, text: str) -> None:
        """Replace the dynamic file atomically, as an editor or config tool would."""
        staging = self.tmp / "dynamic.toml.new"
        staging.write_text(textwrap.dedent(text))
        os.replace(staging, self.dynamic_path)

    def write_static(self) -> None:
        """(Re)write the static file from `port`, `workers` and the extra settings."""
        self.static_path.write_text(
            textwrap.dedent(
                f"""
                [entryPoints.web]
                address = "127.0.0.1:{self.port}"

                [workers]
                count = {self.workers}
                {self.worker_settings}

                [providers.file]
                filename = "{self.dynamic_path}"
                watch = true
                """
            )
            + textwrap.dedent(self.extra_static)
        )

    def start(self, dynamic: str) -> Portside:
        self.write_dynamic(dynamic)
        self.write_static()
        self.log = open(self.tmp / "portside.log", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [*PORTSIDE, "--config", str(self.static_path)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_until(lambda: len(self.worker_pids()) == self.workers)
        return self

    def logs(self) -> str:
        return (self.tmp / "portside.log").read_text()

    def worker_pids(self) -> list[int]:
        """Pids of the workers that accept on the port, draining ones excluded.

        A child takes its worker name only once it has closed the sockets it
        inherited but does not serve; a draining worker has closed its own.
        """
        pids = []
        for child in psutil.Process(self.proc.pid).children():
            try:
                if not child.name().startswith("portside-w"):
                    continue
                listening = [
                    c
                    for c in child.net_connections("tcp")
                    if c.status == psutil.CONN_LISTEN and c.laddr.port == self.port
                ]
            except psutil.NoSuchProcess:
                continue
            if listening:
                pids.append(child.pid)
        return sorted(pids)

    def get(self, host: str, path: str = "/", **kwargs: Any) -> Response:
        return request(self.port, host, path, **kwargs)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(20)
        finally:
            self.log.close()


@pytest.fixture
def whoami() -> Iterator[Callable[[str], Whoami]]:
    """Factory for whoami backends, all stopped at teardown."""
    started: list[Whoami] = []

    def start(name: str) -> Whoami:
        backend = Whoami(name)
        started.append(backend)
        return backend

    yield start
    for backend in started:
        backend.stop()


@pytest.fixture
def portside(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., Portside]]:
    """Factory for a running portside; stopped (and its children checked gone) at teardown.

    If the test failed, the end of portside's log is printed: in CI it is the
    only trace of what the proxy saw.
    """
    started: list[Portside] = []

    def start(
        dynamic: str, workers: int = 1, extra_static: str = "", worker_settings: str = ""
    ) -> Portside:
        proxy = Portside(
            tmp_path, workers=workers, extra_static=extra_static, worker_settings=worker_settings
        )
        started.append(proxy)
        return proxy.start(dynamic)

    yield start
    left: list[psutil.Process] = []
    for proxy in started:
        children = psutil.Process(proxy.proc.pid).children() if proxy.proc.poll() is None else []
        proxy.stop()
        gone, alive = psutil.wait_procs(children, timeout=10)
        for p in alive:
            p.kill()
        left += alive
    if started and request.node.stash.get(CALL_FAILED, False):
        # Each proxy of a test starts this file afresh: it holds the last one's log.
        log_path = started[-1].tmp / "portside.log"
        tail = log_path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
        print(f"--- the last {len(tail)} lines of {log_path}:", *tail, sep="\n")
    assert not left, f"portside left children running: {left}"


@pytest.fixture
def migrate_req(request: pytest.FixtureRequest) -> Iterator[int]:
    """net.ipv4.tcp_migrate_req for the test (this network namespace), restored after.

    1 unless parametrized indirectly with another value.
    """
    value = getattr(request, "param", 1)
    path = "/proc/sys/net/ipv4/tcp_migrate_req"
    try:
        with open(path) as f:
            before = f.read().strip()
        with open(path, "w") as f:
            f.write(str(value))
    except OSError as exc:
        pytest.skip(f"cannot set tcp_migrate_req: {exc}")
    yield value
    with open(path, "w") as f:
        f.write(before)


class Load:
    """Sends requests back to back from a few threads, recording every outcome.

    With `keep_alive`, each thread reuses its connection as wrk does, and
    opens a new one only after a response that says `Connection: close`;
    otherwise every request has a connection of its own. Bounded: it stops
    when told to, or after `max_seconds`.
    """

    def __init__(
        self,
        port: int,
        host: str,
        threads: int = 4,
        max_seconds: float = 30.0,
        keep_alive: bool = False,
    ) -> None:
        self.port, self.host = port, host
        self.keep_alive = keep_alive
        self.results: list[tuple[float, int, str | None]] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._deadline = time.monotonic() + max_seconds
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]
        self._lock = threading.Lock()
        for t in self._threads:
            t.start()

    def _run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            while not self._stop.is_set() and time.monotonic() < self._deadline:
                try:
                    resp = self._send(conn)
                    outcome = (time.monotonic(), resp.status, resp.field("Name"))
                except (OSError, http.client.HTTPException) as exc:
                    conn.close()  # the next request opens a new connection
                    with self._lock:
                        self.errors.append(exc)
                    continue
                with self._lock:
                    self.results.append(outcome)
        finally:
            conn.close()

    def _send(self, conn: http.client.HTTPConnection) -> Response:
        if not self.keep_alive:
            return request(self.port, self.host, timeout=5)
        # http.client closes the connection itself after `Connection: close`
        # and reconnects on the next request.
        conn.request("GET", "/", headers={"Host": self.host})
        resp = conn.getresponse()
        return Response(resp.status, resp.headers, resp.read())

    def seen(self, name: str, since: float) -> bool:
        with self._lock:
            return any(n == name and t >= since for t, _, n in self.results)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)


def lb_config(
    *backends: Whoami | str,
    host: str = "whoami.localhost",
    weights: list[int] | None = None,
    name: str = "whoami",
    rule: str | None = None,
) -> str:
    """A dynamic config routing `host` (or `rule`) to the given backends (Whoami or URL).

    The router and its service are both called `name`; configs with
    different names can be concatenated.
    """
    urls = [b if isinstance(b, str) else b.url for b in backends]
    servers = ", ".join(
        f'{{ url = "{url}", weight = {w} }}'
        for url, w in zip(urls, weights or [1] * len(urls), strict=True)
    )
    return f"""
    [http.routers.{name}]
    rule = "{rule or f"Host(`{host}`)"}"
    service = "{name}"

    [http.services.{name}.loadBalancer]
    servers = [ {servers} ]
    """


def connect(port: int) -> tuple[socket.socket, Any]:
    """A raw client connection to 127.0.0.1:port and a buffered reader on it."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    return sock, sock.makefile("rb")


def read_response(f: Any, head_request: bool = False) -> Response:
    """Read one HTTP/1.x response from a buffered socket file; handles pipelined reads."""
    status_line = f.readline()
    if not status_line:
        raise ConnectionError("connection closed before a response")
    status = int(status_line.split()[1])
    raw_headers = []
    while True:
        line = f.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        raw_headers.append(line)
    headers = http.client.parse_headers(io.BytesIO(b"".join(raw_headers) + b"\r\n"))
    if head_request or status in (204, 304) or 100 <= status < 200:
        body = b""
    elif headers.get("Transfer-Encoding", "").lower() == "chunked":
        parts = []
        while True:
            size = int(f.readline().split(b";")[0], 16)
            if size == 0:
                while f.readline() not in (b"\r\n", b""):
                    pass
                break
            parts.append(f.read(size))
            f.readline()
        body = b"".join(parts)
    elif headers.get("Content-Length") is not None:
        body = f.read(int(headers["Content-Length"]))
    else:
        body = f.read()
    return Response(status, headers, body)
