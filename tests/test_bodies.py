"""Large bodies stream through one worker with bounded memory, both ways.

1 GiB goes through the proxy in each direction while a sampler records the
worker's RSS; back-pressure must keep its growth under 20 MB. 1 MiB uploads
reuse the worker's buffers rather than have the kernel fault them in for every
request, and keep their connections when the backend answers as it reads.
"""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest
from conftest import lb_config, read_response, wait_until

GIB = 1 << 30
RSS_BUDGET = 20 * 1024 * 1024
_CHUNK = bytes(range(256)) * 256  # 64 KiB


class RssSampler:
    """Records the peak RSS of one process every 20 ms until stopped."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.baseline = self.process.memory_info().rss
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(5)
        return self.peak - self.baseline


@pytest.fixture
def one_worker(portside, whoami):
    proxy = portside(
        lb_config(whoami("big")),
        workers=1,
        extra_static="[entryPoints.web.limits]\nmaxBodyBytes = 0\n",  # no body limit
    )
    # warm the worker up so the baseline includes its steady-state allocations
    for _ in range(20):
        assert proxy.get("whoami.localhost").status == 200
    (pid,) = proxy.worker_pids()
    return proxy, pid


def _read_exactly(f, n: int) -> int:
    got = 0
    while got < n:
        block = f.read(min(1 << 20, n - got))
        if not block:
            break
        got += len(block)
    return got


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_1gib_response(one_worker, chunked):
    proxy, pid = one_worker
    sampler = RssSampler(pid)
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=30) as sock:
        query = f"size={GIB}" + ("&chunked=1" if chunked else "")
        sock.sendall(f"GET /data?{query} HTTP/1.1\r\nHost: whoami.localhost\r\n\r\n".encode())
        f = sock.makefile("rb")
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            head += f.readline()
        if chunked:
            assert b"transfer-encoding: chunked" in head.lower()
            got = 0
            while True:
                size = int(f.readline(), 16)
                if size == 0:
                    break
                got += _read_exactly(f, size)
                f.readline()
        else:
            assert b"content-length: %d" % GIB in head.lower()
            got = _read_exactly(f, GIB)
    growth = sampler.stop()
    print(f"1 GiB response in {time.monotonic() - started:.1f}s, RSS +{growth / 1e6:.1f} MB")
    assert got == GIB
    assert growth < RSS_BUDGET


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_1gib_upload(one_worker, chunked):
    """A 1 GiB PUT echoed back by the backend: both directions stream at once."""
    proxy, pid = one_worker
    sampler = RssSampler(pid)
    started = time.monotonic()
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=30)
    framing = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % GIB
    sock.sendall(b"PUT /upload HTTP/1.1\r\nHost: whoami.localhost\r\n" + framing + b"\r\n\r\n")
    send_error: list[BaseException] = []

    def send_body() -> None:
        try:
            frame = b"%x\r\n" % len(_CHUNK) + _CHUNK + b"\r\n" if chunked else _CHUNK
            for _ in range(GIB // len(_CHUNK)):
                sock.sendall(frame)
            if chunked:
                sock.sendall(b"0\r\n\r\n")
        except OSError as exc:
            send_error.append(exc)

    sender = threading.Thread(target=send_body)
    sender.start()
    f = sock.makefile("rb")
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        line = f.readline()
        assert line, "connection closed before the response head"
        head += line
    assert head.startswith(b"HTTP/1.1 200")
    # the echo is chunked: the whoami preamble, then the body as it arrives
    echoed = 0
    while True:
        size = int(f.readline(), 16)
        if size == 0:
            break
        echoed += _read_exactly(f, size)
        f.readline()
    sender.join(60)
    sock.close()
    growth = sampler.stop()
    print(f"1 GiB upload+echo in {time.monotonic() - started:.1f}s, RSS +{growth / 1e6:.1f} MB")
    assert not send_error
    assert echoed > GIB  # the preamble plus every byte sent
    assert growth < RSS_BUDGET
    wait_until(lambda: proxy.get("whoami.localhost").status == 200, timeout=5)


def _minor_faults(pid: int) -> int:
    """Minor page faults of a process so far (/proc/<pid>/stat, field 10)."""
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[7])


def test_upload_buffers_are_reused_not_faulted_in_again(one_worker):
    # glibc's moving mmap threshold used to leave about half of all workers
    # mapping or trimming every body buffer anew: ~375 page faults per 1 MiB
    # upload and twice the CPU (worker/allocator.py).
    proxy, pid = one_worker
    body = _CHUNK * 16  # 1 MiB
    head = b"POST /up HTTP/1.1\r\nHost: whoami.localhost\r\nContent-Length: %d\r\n\r\n"
    request = head % len(body)

    # One connection: the first uploads fault the heap in once, then a worker
    # in the bad state faults ~375 times for every one.
    before = _minor_faults(pid)
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=30) as sock:
        reader = sock.makefile("rb")
        for _ in range(30):
            sock.sendall(request + body)
            response = read_response(reader)
            # whoami echoes a description of the request, then its body.
            assert response.status == 200 and response.body.endswith(body)
    per_request = (_minor_faults(pid) - before) / 30
    assert per_request < 50, f"{per_request:.0f} page faults per 1 MiB upload"


def test_concurrent_uploads_to_an_echoing_backend_keep_their_connections(one_worker):
    # whoami echoes as it reads, so its answer often starts before the upload has
    # all arrived. The client sends the rest all the same, so the connection goes
    # on: it used to be closed (Connection: close) after such an answer.
    proxy, _ = one_worker
    body = _CHUNK * 16  # 1 MiB
    head = b"POST /up HTTP/1.1\r\nHost: whoami.localhost\r\nContent-Length: %d\r\n\r\n"
    request = head % len(body) + body

    def upload(times: int) -> None:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=30) as sock:
            reader = sock.makefile("rb")
            for _ in range(times):
                sock.sendall(request)
                response = read_response(reader)
                assert response.status == 200 and response.body.endswith(body)
                assert "Connection" not in response.headers

    for times in (5, 10):  # the second batch reuses the backend connections of the first
        with ThreadPoolExecutor(4) as pool:
            for future in [pool.submit(upload, times) for _ in range(4)]:
                future.result()  # a failed upload fails the test
