"""A finished connection is freed by reference counting, not by the cyclic collector.

A parser holds its callbacks, bound methods of its connection: a reference
cycle. Left in place, every closed connection (and all it holds) waits for
a collection, which a worker paid for on every new connection. The
connection objects are driven here through perf/hotpath.py's in-memory
transports, as uvloop drives them; the real request path is tested end to end
elsewhere.
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
from portside.worker.headers import RenderedFields
from portside.worker.runtime import WorkerRuntime
from portside.worker.upstream import UpstreamConnection

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
CONNECTION_PARTS = (
    ClientConnection,
    UpstreamConnection,
    Exchange,
    RenderedFields,
    httptools.HttpRequestParser,
    httptools.HttpResponseParser,
)


class Acceptor:
    def pause(self) -> None:
        pass

    def resume(self) -> None:
        pass


async def _serve_and_close(connections: int) -> None:
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
    entry_point = runtime.entry_points["web"]
    entry_point.acceptor = Acceptor()  # type: ignore[assignment]
    for i in range(connections):
        client = ClientConnection(runtime, entry_point)
        client_transport = MemoryTransport(client, ("127.0.0.1", 40000 + i))
        client.connection_made(client_transport)
        # Backend connections are opened by the pool; this one is handed to it
        # as if it had just connected, and closes after the response.
        pool = runtime._pools[("127.0.0.1", 1)]
        upstream = UpstreamConnection(pool)
        upstream.connection_made(MemoryTransport(upstream, ("127.0.0.1", 1)))
        pool.release(upstream)
        client.data_received(b"GET / HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n")
        assert client.current is not None and client.current.upstream is upstream
        upstream.data_received(RESPONSE)
        upstream.transport.close()  # type: ignore[union-attr]
        for _ in range(3):  # the losses are reported on later loop turns
            await asyncio.sleep(0)
        assert client._closed and upstream._closed
        assert client_transport.written > len(RESPONSE)  # the response reached the client
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
