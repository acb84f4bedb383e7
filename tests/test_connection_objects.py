"""Connection objects driven in memory, through perf/hotpath.py's transports, as
uvloop drives them (the real request path is tested end to end elsewhere).

- A finished connection is freed by reference counting. A reference cycle
  through it (its parser once held bound methods of it) would leave every
  closed connection, and all it holds, for the cyclic collector, which a
  worker paid for on every new connection.
- Parsers share one callback object, which passes each call to the
  connection being fed: interleaved reads never mix two requests.
"""

from __future__ import annotations

import asyncio
import gc

import httptools
import uvloop

from perf.hotpath import MemoryTransport
from portside.master.static_config import parse_static
from portside.worker.client import ClientConnection
from portside.worker.exchange import Exchange
from portside.worker.runtime import WorkerRuntime
from portside.worker.upstream import UpstreamConnection

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
CONNECTION_PARTS = (
    ClientConnection,
    UpstreamConnection,
    Exchange,
    httptools.HttpRequestParser,
    httptools.HttpResponseParser,
)


class Acceptor:
    def pause(self) -> None:
        pass

    def resume(self) -> None:
        pass


def _runtime() -> WorkerRuntime:
    """A worker runtime routing app.test to a backend that is never dialled."""
    config = parse_static({"entryPoints": {"web": {"address": "127.0.0.1:8000"}}}, "test")
    runtime = WorkerRuntime(config, memoryview(bytearray(8 * 16)).cast("Q"))
    runtime.apply_snapshot(
        {
            "generation": 1,
            "services": {
                "app@file": {
                    "slot": 0,
                    "servers": [
                        {"url": "http://127.0.0.1:1", "host": "127.0.0.1", "port": 1, "weight": 1}
                    ],
                }
            },
            "routers": [
                {
                    "name": "app@file",
                    "rule": "Host(`app.test`)",
                    "service": "app@file",
                    "entryPoints": ["web"],
                    "priority": 1,
                }
            ],
        }
    )
    runtime.entry_points["web"].acceptor = Acceptor()  # type: ignore[assignment]
    return runtime


def _client(runtime: WorkerRuntime, port: int) -> tuple[ClientConnection, UpstreamConnection]:
    """A client connection, and a backend connection pooled for its request."""
    client = ClientConnection(runtime, runtime.entry_points["web"])
    client.connection_made(MemoryTransport(client, ("127.0.0.1", port)))
    # Backend connections are opened by the pool; this one is handed to it
    # as if it had just connected.
    pool = runtime._pools[("127.0.0.1", 1)]
    upstream = UpstreamConnection(pool)
    upstream.connection_made(MemoryTransport(upstream, ("127.0.0.1", 1)))
    pool.release(upstream)
    return client, upstream


async def _serve_and_close(connections: int) -> None:
    runtime = _runtime()
    for i in range(connections):
        client, upstream = _client(runtime, 40000 + i)
        client_transport = client.transport
        client.data_received(b"GET / HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n")
        assert client.current is not None and client.current.upstream is upstream
        upstream.data_received(RESPONSE)
        upstream.transport.close()  # type: ignore[union-attr]
        for _ in range(3):  # the losses are reported on later loop turns
            await asyncio.sleep(0)
        assert client._closed and upstream._closed
        # The response reached the client.
        assert client_transport.written > len(RESPONSE)  # type: ignore[union-attr]
    del client, client_transport, upstream


def test_closed_connections_leave_nothing_for_the_cyclic_collector():
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        uvloop.run(_serve_and_close(20))
        gc.collect()
        # Only what a connection is made of: the event loop's own cycles are not ours.
        leftovers = [o for o in gc.garbage if isinstance(o, CONNECTION_PARTS)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert leftovers == []


async def _interleave() -> list[tuple[bytes, list[str]]]:
    runtime = _runtime()
    (a, _), (b, _) = _client(runtime, 40000), _client(runtime, 40001)
    a.data_received(b"GET /a HTTP/1.1\r\nHost: app.te")
    b.data_received(b"GET /bb HTTP/1.1\r\nHo")
    a.data_received(b"st\r\nX-Who: a")
    b.data_received(b"st: app.test\r\nX-Who: b\r\n\r\n")
    a.data_received(b"\r\n\r\n")
    return [(c.current.target, c.current.header_values("x-who")) for c in (a, b)]


def test_interleaved_reads_reach_their_own_connection():
    assert uvloop.run(_interleave()) == [(b"/a", ["a"]), (b"/bb", ["b"])]
