"""The whoami test backend, run as a real subprocess and spoken to over real sockets."""

from __future__ import annotations

import fcntl
import http.client
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import psutil
import pytest
from conftest import wait_until

PATTERN = b"0123456789abcdef"
STARTUP_TIMEOUT = 15.0
IO_TIMEOUT = 10.0


@dataclass
class Backend:
    proc: subprocess.Popen[str]
    port: int


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(name: str | None = "w1") -> Backend:
    port = _free_port()
    cmd = [sys.executable, "-m", "portside.master.cli", "whoami", "--listen", f"127.0.0.1:{port}"]
    if name is not None:
        cmd += ["--name", name]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            _stop(proc)
            pytest.fail("whoami did not report that it is listening")
        ready, _, _ = select.select([proc.stdout], [], [], remaining)
        if not ready:
            continue
        line = proc.stdout.readline()
        if not line:
            _, err = _stop(proc)
            pytest.fail(f"whoami exited before listening: {err}")
        if "listening on" in line:
            shown = name or socket.gethostname()
            assert line.strip() == f"whoami {shown} listening on 127.0.0.1:{port}"
            return Backend(proc, port)


def _stop(proc: subprocess.Popen[str]) -> tuple[str, str]:
    if proc.poll() is None:
        proc.terminate()
    try:
        return proc.communicate(timeout=IO_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()


@pytest.fixture(scope="module")
def backend() -> Iterator[Backend]:
    started = _start()
    yield started
    _stop(started.proc)


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT)
    return sock


def _read_response(stream: BinaryIO, head: bool = False) -> Response:
    """Read one response from a buffered socket file; `head`: the request was HEAD."""
    status_line = stream.readline()
    assert status_line.startswith(b"HTTP/1.1 "), status_line
    status = int(status_line.split()[1])
    headers = []
    while True:
        line = stream.readline()
        assert line.endswith(b"\r\n"), line
        if line == b"\r\n":
            break
        key, _, value = line.decode("latin-1").partition(":")
        headers.append((key, value.strip()))
    response = Response(status, headers, b"")
    length = response.header("Content-Length")
    if head or status < 200 or status in (204, 304):
        return response
    if response.header("Transfer-Encoding") == "chunked":
        parts = []
        while True:
            size = int(stream.readline().strip(), 16)
            if size == 0:
                assert stream.readline() == b"\r\n"
                break
            parts.append(stream.read(size))
            assert stream.readline() == b"\r\n"
        response.body = b"".join(parts)
    elif length is not None:
        response.body = stream.read(int(length))
        assert len(response.body) == int(length)
    else:
        response.body = stream.read()
    return response


def _lines(body: bytes) -> list[str]:
    return body.decode().split("\n")


def test_get_describes_the_request(backend: Backend) -> None:
    with _connect(backend.port) as sock:
        sock.sendall(
            b"GET /some/path?x=1&y=%20 HTTP/1.1\r\n"
            b"Host: example.test\r\n"
            b"x-lower-case: a\r\n"
            b"X-Mixed-CASE: b, c\r\n"
            b"\r\n"
        )
        local_port = sock.getsockname()[1]
        response = _read_response(sock.makefile("rb"))
    assert response.status == 200
    assert response.header("Content-Type") == "text/plain; charset=utf-8"
    assert int(response.header("Content-Length") or -1) == len(response.body)
    assert _lines(response.body) == [
        "Name: w1",
        f"Hostname: {socket.gethostname()}",
        f"RemoteAddr: 127.0.0.1:{local_port}",
        "GET /some/path?x=1&y=%20 HTTP/1.1",
        "Host: example.test",
        "x-lower-case: a",
        "X-Mixed-CASE: b, c",
        "",
    ]


def test_http_client_round_trip(backend: Backend) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", backend.port, timeout=IO_TIMEOUT)
    try:
        conn.request("GET", "/hello", headers={"X-Test": "yes"})
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    assert response.status == 200
    assert "GET /hello HTTP/1.1" in _lines(body)
    assert "X-Test: yes" in _lines(body)


def test_keep_alive_serves_two_requests_on_one_connection(backend: Backend) -> None:
    with _connect(backend.port) as sock:
        stream = sock.makefile("rb")
        sock.sendall(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n")
        first = _read_response(stream)
        sock.sendall(b"GET /two HTTP/1.1\r\nHost: x\r\n\r\n")
        second = _read_response(stream)
    assert "GET /one HTTP/1.1" in _lines(first.body)
    assert "GET /two HTTP/1.1" in _lines(second.body)
    assert first.header("Connection") is None
    # The same client port proves that it was the same connection.
    assert _lines(first.body)[2] == _lines(second.body)[2]


def test_pipelined_requests_are_answered_in_order(backend: Backend) -> None:
    with _connect(backend.port) as sock:
        stream = sock.makefile("rb")
        started = time.monotonic()
        sock.sendall(
            b"GET /first?sleep=0.2 HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /second HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        first = _read_response(stream)
        second = _read_response(stream)
        elapsed = time.monotonic() - started
    assert "GET /first?sleep=0.2 HTTP/1.1" in _lines(first.body)
    assert "GET /second HTTP/1.1" in _lines(second.body)
    assert elapsed >= 0.2


def test_http10_without_keep_alive_closes(backend: Backend) -> None:
    with _connect(backend.port) as sock:
        sock.sendall(b"GET /old HTTP/1.0\r\n\r\n")
        stream = sock.makefile("rb")
        response = _read_response(stream)
        assert stream.read() == b""  # closed by the server
    assert response.header("Content-Length") == str(len(response.body))
    assert response.header("Connection") == "close"
    assert "GET /old HTTP/1.0" in _lines(response.body)


def test_http10_with_keep_alive_stays_open(backend: Backend) -> None:
    with _connect(backend.port) as sock:
        stream = sock.makefile("rb")
        request = b"GET /old HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
        sock.sendall(request)
        first = _read_response(stream)
        sock.sendall(request)
        second = _read_response(stream)
    for response in (first, second):
        assert response.header("Connection") == "keep-alive"
        assert response.header("Content-Length") == str(len(response.body))
        assert "GET /old HTTP/1.0" in _lines(response.body)


def test_head_then_get_on_one_connection(backend: Backend) -> None:
    with _connect(backend.port) as sock:
        stream = sock.makefile("rb")
        sock.sendall(b"HEAD /h HTTP/1.1\r\nHost: x\r\n\r\n")
        head = _read_response(stream, head=True)
        sock.sendall(b"GET /h HTTP/1.1\r\nHost: x\r\n\r\n")
        get = _read_response(stream)
    assert head.status == get.status == 200
    assert head.header("Content-Type") == get.header("Content-Type")
    # The HEAD body would describe "HEAD /h", one letter longer than "GET /h"; no
    # byte of it was sent, or the GET response would not have parsed.
    assert int(head.header("Content-Length") or -1) == len(get.body) + 1
    assert "GET /h HTTP/1.1" in _lines(get.body)


def test_status_204_has_no_body(backend: Backend) -> None:
    with _connect(backend.port) as sock:
        stream = sock.makefile("rb")
        sock.sendall(b"GET /?status=204 HTTP/1.1\r\nHost: x\r\n\r\n")
        no_content = _read_response(stream)
        sock.sendall(b"GET /?status=418 HTTP/1.1\r\nHost: x\r\n\r\n")
        teapot = _read_response(stream)
    assert no_content.status == 204
    assert no_content.header("Content-Length") is None
    assert no_content.header("Transfer-Encoding") is None
    assert teapot.status == 418
    assert "GET /?status=418 HTTP/1.1" in _lines(teapot.body)


@pytest.mark.parametrize("query", ["sleep=abc", "sleep=-1", "sleep=nan", "status=99", "status=x"])
def test_invalid_parameters_are_rejected(backend: Backend, query: str) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", backend.port, timeout=IO_TIMEOUT)
    try:
        conn.request("GET", f"/?{query}")
        response = conn.getresponse()
        response.read()
    finally:
        conn.close()
    assert response.status == 400


def _echoed(body: bytes) -> tuple[list[str], bytes]:
    text, _, echoed = body.partition(b"\n\n")
    return _lines(text), echoed


def test_post_echoes_a_content_length_body(backend: Backend) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", backend.port, timeout=IO_TIMEOUT)
    try:
        conn.request("POST", "/echo", body=b"hello\nworld")
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    assert response.status == 200
    assert response.getheader("Transfer-Encoding") == "chunked"
    lines, echoed = _echoed(body)
    assert "POST /echo HTTP/1.1" in lines
    assert "Content-Length: 11" in lines
    assert echoed == b"hello\nworld"


def test_put_echoes_a_chunked_body(backend: Backend) -> None:
    parts = [b"first ", b"second ", b"third"]
    conn = http.client.HTTPConnection("127.0.0.1", backend.port, timeout=IO_TIMEOUT)
    try:
        conn.request("PUT", "/echo", body=iter(parts), encode_chunked=True)
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    lines, echoed = _echoed(body)
    assert "PUT /echo HTTP/1.1" in lines
    assert "Transfer-Encoding: chunked" in lines
    assert echoed == b"".join(parts)


def test_sleeping_post_echoes_the_body_it_held_back(backend: Backend) -> None:
    with _connect(backend.port) as sock:
        sock.sendall(b"POST /?sleep=0.1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
        response = _read_response(sock.makefile("rb"))
    assert _echoed(response.body)[1] == b"abc"


def test_expect_100_continue_gets_100_before_the_body(backend: Backend) -> None:
    with _connect(backend.port) as sock:
        stream = sock.makefile("rb")
        sock.sendall(
            b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        )
        assert stream.readline() == b"HTTP/1.1 100 Continue\r\n"
        assert stream.readline() == b"\r\n"
        sock.sendall(b"abcde")
        response = _read_response(stream)
    lines, echoed = _echoed(response.body)
    assert "Expect: 100-continue" in lines
    assert echoed == b"abcde"


def test_large_upload_is_streamed_back(backend: Backend) -> None:
    size = 64 * 1024 * 1024
    block = b"x" * 65536
    with _connect(backend.port) as sock:
        sock.sendall(b"POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size)

        def upload() -> None:
            for _ in range(size // len(block)):
                sock.sendall(block)

        # The echo comes back while the upload goes on, so both directions must flow.
        uploader = threading.Thread(target=upload)
        uploader.start()
        response = _read_response(sock.makefile("rb"))
        uploader.join()
    _, echoed = _echoed(response.body)
    assert len(echoed) == size
    assert echoed.count(b"x") == size


@pytest.mark.parametrize("chunked", [False, True])
def test_data_streams_exactly_size_bytes(backend: Backend, chunked: bool) -> None:
    size = 1_000_000
    conn = http.client.HTTPConnection("127.0.0.1", backend.port, timeout=IO_TIMEOUT)
    try:
        conn.request("GET", f"/data?size={size}" + ("&chunked=1" if chunked else ""))
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    assert response.status == 200
    if chunked:
        assert response.getheader("Transfer-Encoding") == "chunked"
        assert response.getheader("Content-Length") is None
    else:
        assert response.getheader("Content-Length") == str(size)
    assert len(body) == size
    assert body == (PATTERN * (size // len(PATTERN) + 1))[:size]


def test_memory_stays_bounded_for_big_transfers(backend: Backend) -> None:
    size = 256 * 1024 * 1024
    process = psutil.Process(backend.proc.pid)
    before = process.memory_info().rss
    with _connect(backend.port) as sock:
        # The client reads nothing for a while, so the server must hold back.
        sock.sendall(b"GET /data?size=%d HTTP/1.1\r\nHost: x\r\n\r\n" % size)
        # Wait until the socket buffers are full: the bytes queued for us stop
        # growing, so from here on the server must be holding back.
        queued: list[int] = []

        def buffers_full() -> bool:
            queued.append(_unread(sock))
            return len(queued) >= 3 and queued[-1] == queued[-3] > 0

        wait_until(buffers_full, timeout=10, interval=0.05)
        stalled = process.memory_info().rss
        stream = sock.makefile("rb")
        response = _read_response(stream, head=True)
        assert response.header("Content-Length") == str(size)
        received = 0
        while received < size:
            chunk = stream.read1(1 << 20)
            assert chunk
            received += len(chunk)
    assert received == size
    limit = 32 * 1024 * 1024
    assert stalled - before < limit
    assert process.memory_info().rss - before < limit


def test_malformed_request_gets_400_and_close(backend: Backend) -> None:
    with _connect(backend.port) as sock:
        sock.sendall(b"THIS IS NOT HTTP\r\n\r\n")
        stream = sock.makefile("rb")
        response = _read_response(stream)
        assert stream.read() == b""
    assert response.status == 400
    assert response.header("Connection") == "close"
    # The server survived it.
    with _connect(backend.port) as sock:
        sock.sendall(b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _read_response(sock.makefile("rb")).status == 200


def test_malformed_request_is_answered_after_pipelined_ones(backend: Backend) -> None:
    with _connect(backend.port) as sock:
        sock.sendall(b"GET /ok?sleep=0.1 HTTP/1.1\r\nHost: x\r\n\r\nGARBAGE\r\n\r\n")
        stream = sock.makefile("rb")
        first = _read_response(stream)
        second = _read_response(stream)
        assert stream.read() == b""
    assert first.status == 200
    assert second.status == 400


def test_name_defaults_to_hostname() -> None:
    started = _start(name=None)
    try:
        with _connect(started.port) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            response = _read_response(sock.makefile("rb"))
    finally:
        _stop(started.proc)
    assert _lines(response.body)[0] == f"Name: {socket.gethostname()}"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_exits_cleanly(signum: int) -> None:
    started = _start()
    try:
        # An idle keep-alive connection and a sleeping request must not hold up the exit.
        with _connect(started.port) as idle, _connect(started.port) as sleeping:
            idle.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            _read_response(idle.makefile("rb"))
            sleeping.sendall(b"GET /?sleep=30 HTTP/1.1\r\nHost: x\r\n\r\n")
            os.kill(started.proc.pid, signum)
            code = started.proc.wait(timeout=IO_TIMEOUT)
    finally:
        _, err = _stop(started.proc)
    assert code == 0
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"\x00\xff\xfe binary \x01\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        # The echo has started when the bad chunk size arrives: the answer is a close.
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        # whoami does not switch protocols: it answers, then closes.
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: ws\r\n\r\n\x81\x00",
    ],
)
def test_bad_input_never_breaks_the_server(backend: Backend, data: bytes) -> None:
    with _connect(backend.port) as sock:
        sock.sendall(data)
        stream = sock.makefile("rb")
        assert stream.read().startswith(b"HTTP/1.1 ")  # an answer, then a close
    with _connect(backend.port) as sock:
        sock.sendall(b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _read_response(sock.makefile("rb")).status == 200


def _unread(sock: socket.socket) -> int:
    """Bytes received by the kernel that the client has not read yet (FIONREAD)."""
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0" * 4))[0]
