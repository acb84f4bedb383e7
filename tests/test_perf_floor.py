"""The floor relay of the benchmark (perf/floor.py) does the work it is measured for.

Its figures are only a floor under portside's if it really routes, forwards,
reuses backend connections and relays bodies, so it is run here for real, in
front of whoami and recording backends, as perf/run starts it.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from conftest import Whoami, connect, read_response, request, wait_until
from raw_backend import RawBackend

from perf import floor, procs, proxies

StartFloor = Callable[..., proxies.Running]


@pytest.fixture
def start_floor(tmp_path: Path) -> Iterator[StartFloor]:
    """Factory: the floor in front of these backend ports, stopped at teardown."""
    started: list[proxies.Running] = []

    def start(ports: list[int], hosts: tuple[str, ...] = ("a.bench",), processes: int = 1):
        folder = tmp_path / f"floor{len(started)}"
        running = proxies.start("floor", folder, ports, list(hosts), processes)
        started.append(running)
        return running

    yield start
    for running in started:
        procs.stop(running.proc)


@pytest.fixture
def raw_backend() -> Iterator[RawBackend]:
    backend = RawBackend()
    yield backend
    backend.stop()


def test_routes_by_host_round_robin_with_the_forwarded_headers(
    start_floor: StartFloor, whoami: Callable[[str], Whoami]
) -> None:
    floor = start_floor([whoami("one").port, whoami("two").port], ("a.bench", "b.bench"))
    sock, reader = connect(floor.port)
    with sock:
        names = []
        for _ in range(4):
            sock.sendall(b"GET /x?y=1 HTTP/1.1\r\nHost: b.bench\r\nAccept: */*\r\n\r\n")
            response = read_response(reader)
            assert response.status == 200
            names.append(response.field("Name"))
            assert "GET /x?y=1 HTTP/1.1" in response.text
            lines = response.text.splitlines()
            for field, value in (
                ("Accept", "*/*"),
                ("X-Forwarded-For", "127.0.0.1"),
                ("X-Real-Ip", "127.0.0.1"),
                ("X-Forwarded-Host", "b.bench"),
                ("X-Forwarded-Proto", "http"),
                ("X-Forwarded-Port", str(floor.port)),
                ("X-Forwarded-Server", socket.gethostname()),
            ):
                assert lines.count(f"{field}: {value}") == 1, field
    assert sorted(names) == ["one", "one", "two", "two"]


def test_reuses_its_backend_connections(
    start_floor: StartFloor, whoami: Callable[[str], Whoami]
) -> None:
    floor = start_floor([whoami("one").port, whoami("two").port])
    # whoami reports the peer: the floor's end of its connection, the same for
    # every request once each backend has one idle connection.
    peers = {request(floor.port, "a.bench").field("RemoteAddr") for _ in range(6)}
    assert len(peers) == 2


def test_an_unknown_host_gets_404_and_a_close_is_honoured(
    start_floor: StartFloor, whoami: Callable[[str], Whoami]
) -> None:
    floor = start_floor([whoami("one").port])
    sock, reader = connect(floor.port)
    with sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: nowhere.bench\r\n\r\n")
        assert read_response(reader).status == 404
        sock.sendall(b"GET / HTTP/1.1\r\nHost: nowhere.bench\r\nConnection: close\r\n\r\n")
        assert read_response(reader).status == 404
        assert reader.read() == b""


def test_relays_a_1_mib_body_both_ways(
    start_floor: StartFloor, whoami: Callable[[str], Whoami]
) -> None:
    floor = start_floor([whoami("one").port])
    body = bytes(range(256)) * 4096
    response = request(floor.port, "a.bench", method="POST", body=body)
    assert response.status == 200
    assert response.body.endswith(body)  # whoami echoes it after its description


@pytest.mark.parametrize("backend_kind", ["keep-alive field", "no Connection field"])
def test_a_request_that_asks_to_close_is_told_and_closed(
    start_floor: StartFloor,
    raw_backend: RawBackend,
    whoami: Callable[[str], Whoami],
    backend_kind: str,
) -> None:
    if backend_kind == "keep-alive field":
        port, target = raw_backend.port, b"/resp/keep-alive"
    else:
        port, target = whoami("one").port, b"/"
    floor = start_floor([port])
    sock, reader = connect(floor.port)
    with sock:
        sock.sendall(b"GET %s HTTP/1.1\r\nHost: a.bench\r\nConnection: close\r\n\r\n" % target)
        response = read_response(reader)
        assert response.status == 200
        assert response.headers.get_all("Connection") == ["close"]
        assert reader.read() == b""  # closed after the response
    if backend_kind == "keep-alive field":
        (received,) = raw_backend.requests_for(b"/resp/keep-alive")
        assert b"connection:" not in received.head.lower()  # hop-by-hop: not sent on


def test_a_backend_that_answers_before_the_body_ends_is_not_reused(
    start_floor: StartFloor, raw_backend: RawBackend
) -> None:
    floor = start_floor([raw_backend.port])
    sock, reader = connect(floor.port)
    with sock:
        body = b"x" * 300_000
        sock.sendall(
            b"POST /early HTTP/1.1\r\nHost: a.bench\r\nContent-Length: %d\r\n\r\n%s"
            % (len(body), body)
        )
        assert read_response(reader).status == 200
        sock.sendall(b"GET /next HTTP/1.1\r\nHost: a.bench\r\n\r\n")
        assert read_response(reader).status == 200
    (early,) = raw_backend.requests_for(b"/early")
    (after,) = raw_backend.requests_for(b"/next")
    assert after.connection != early.connection
    assert after.head.startswith(b"GET /next ")  # not the rest of the upload


def test_every_process_serves_from_a_socket_of_its_own(
    start_floor: StartFloor, whoami: Callable[[str], Whoami]
) -> None:
    floor = start_floor([whoami("one").port], processes=2)
    pids = floor.worker_pids()
    assert len(pids) == 2

    def listening(pid: int) -> int:
        return sum(
            1
            for c in psutil.Process(pid).net_connections("tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == floor.port
        )

    # Each closes the sockets it inherited for the others once forked.
    wait_until(lambda: all(listening(pid) == 1 for pid in pids))


class _Transport:
    """Records what the floor asks of a connection (no socket: a unit test)."""

    def __init__(self, on_write: Callable[[], None] = lambda: None) -> None:
        self.reading = True
        self.closed = False
        self.written = b""
        self._on_write = on_write

    def get_extra_info(self, name: str) -> tuple[str, int]:
        return ("127.0.0.1", 40000)

    def write(self, data: bytes) -> None:
        self.written += data
        self._on_write()

    def writelines(self, parts: list[bytes]) -> None:
        self.write(b"".join(parts))

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def close(self) -> None:
        self.closed = True


RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def _exchange(
    client_falls_behind: bool, backend_falls_behind: bool
) -> tuple[floor.Relay, floor.Client, floor.Upstream]:
    """One GET through a floor Relay whose one idle backend connection answers it.

    A connection "falls behind" when its write buffer passes the high-water
    mark: the client as the response is written to it, the backend as the
    request is. Returns the relay, the client and the backend connection.
    """
    relay = floor.Relay(8000, {b"a.bench"}, [9000])
    upstream = floor.Upstream(relay, 0, None, b"")  # type: ignore[arg-type]
    upstream.connection_made(_Transport())  # type: ignore[arg-type]
    upstream.client = None
    relay.idle[0].append(upstream)
    client = floor.Client(relay)
    on_write = client.pause_writing if client_falls_behind else (lambda: None)
    client.connection_made(_Transport(on_write))  # type: ignore[arg-type]
    client.data_received(b"GET / HTTP/1.1\r\nHost: a.bench\r\n\r\n")
    assert client.upstream is upstream
    if backend_falls_behind:
        upstream.pause_writing()
    upstream.data_received(RESPONSE)
    return relay, client, upstream


def test_a_client_that_falls_behind_on_the_last_read_leaves_no_paused_backend() -> None:
    relay, client, upstream = _exchange(client_falls_behind=True, backend_falls_behind=False)
    assert client.transport.written == RESPONSE
    assert relay.idle[0] == [upstream]
    assert upstream.transport.reading  # its next response must be read


def test_a_backend_that_answers_while_behind_is_closed_and_the_client_resumed() -> None:
    relay, client, upstream = _exchange(client_falls_behind=False, backend_falls_behind=True)
    assert client.transport.written == RESPONSE
    assert relay.idle[0] == [] and upstream.transport.closed
    assert client.transport.reading  # its next request must be read
