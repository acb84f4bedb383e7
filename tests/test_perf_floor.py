"""The floor relay of the benchmark (perf/floor.py) does the work it is measured for.

Its figures are only a floor under portside's if it really routes, forwards,
reuses backend connections and relays bodies, so it is run here for real, in
front of two whoami backends, as perf/run starts it.
"""

from __future__ import annotations

import socketserver
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import Whoami, connect, read_response, request

from perf import procs, proxies


@pytest.fixture
def floor(tmp_path: Path, whoami: Callable[[str], Whoami]) -> Iterator[proxies.Running]:
    backends = [whoami("one").port, whoami("two").port]
    running = proxies.start("floor", tmp_path, backends, ["a.bench", "b.bench"], 1)
    yield running
    procs.stop(running.proc)


def test_routes_by_host_round_robin_with_the_forwarded_headers(floor: proxies.Running) -> None:
    sock, reader = connect(floor.port)
    with sock:
        names = []
        for _ in range(4):
            sock.sendall(b"GET /x?y=1 HTTP/1.1\r\nHost: b.bench\r\nAccept: */*\r\n\r\n")
            response = read_response(reader)
            assert response.status == 200
            names.append(response.field("Name"))
            assert response.field("Accept") == "*/*"
            assert "GET /x?y=1 HTTP/1.1" in response.text
            for field, value in (
                ("X-Forwarded-For", "127.0.0.1"),
                ("X-Real-Ip", "127.0.0.1"),
                ("X-Forwarded-Host", "b.bench"),
                ("X-Forwarded-Proto", "http"),
                ("X-Forwarded-Port", str(floor.port)),
            ):
                assert response.field(field) == value, field
            assert response.field("X-Forwarded-Server")
    assert sorted(names) == ["one", "one", "two", "two"]


def test_reuses_its_backend_connections(floor: proxies.Running) -> None:
    # whoami reports the peer: the floor's port towards it, the same for every
    # request once each backend has one idle connection.
    peers = {request(floor.port, "a.bench").field("RemoteAddr") for _ in range(6)}
    assert len(peers) == 2


def test_an_unknown_host_gets_404(floor: proxies.Running) -> None:
    assert request(floor.port, "nowhere.bench").status == 404


def test_relays_a_request_body_and_a_chunked_response(floor: proxies.Running) -> None:
    body = b"x" * 300_000
    response = request(floor.port, "a.bench", method="POST", body=body)
    assert response.status == 200
    assert response.body.endswith(body)


_KEEP_ALIVE_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\nok\n"


class _KeepAliveBackend(socketserver.StreamRequestHandler):
    """Answers every request with an explicit `Connection: keep-alive`, as nginx does."""

    def handle(self) -> None:
        while True:
            line = self.rfile.readline()
            if not line:
                return
            if line == b"\r\n":  # the end of a head: GETs only, no body
                self.wfile.write(_KEEP_ALIVE_RESPONSE)


def test_a_request_that_asks_to_close_is_told_and_closed(tmp_path: Path) -> None:
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), _KeepAliveBackend) as backend:
        backend.daemon_threads = True
        threading.Thread(target=backend.serve_forever, daemon=True).start()
        running = proxies.start("floor", tmp_path, [backend.server_address[1]], ["a.bench"], 1)
        try:
            sock, reader = connect(running.port)
            with sock:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: a.bench\r\nConnection: close\r\n\r\n")
                response = read_response(reader)
                assert response.status == 200
                assert response.headers["Connection"] == "close"
                assert reader.read() == b""  # closed after the response
        finally:
            procs.stop(running.proc)
            backend.shutdown()
