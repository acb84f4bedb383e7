"""The write-up's failure, automated: a container stopped mid-request (DESIGN §1).

With Traefik, a 3-second request to a container that `docker stop -t 1`
kills mid-request got 502. portside drains the container on `kill` and
resends the idempotent request to the other container, so the client gets
200. Real dockerd, real containers; traffic to 127.0.0.1 and the bridge only.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from conftest import Load, request, wait_until

HOST = "whoami.docker.localhost"
LABELS = {"traefik.backend": "whoami", "traefik.frontend.rule": f"Host:{HOST}"}
STATIC = """
[providers.docker]
exposedByDefault = true
"""


def _sleeping(container) -> int:
    """How many requests the container is serving (CGI processes sleeping)."""
    return sum(1 for p in container.top()["Processes"] if "sleep" in " ".join(p))


def test_get_killed_mid_request_is_answered_by_the_other_container(portside, containers):
    proxy, (first, second) = _fleet(portside, containers, 2)
    result = {}

    def slow() -> None:
        result["resp"] = request(proxy.port, HOST, "/?sleep=3", timeout=20)

    thread = threading.Thread(target=slow)
    thread.start()
    serving = wait_until(lambda: next((c for c in (first, second) if _sleeping(c)), None))
    other = second if serving is first else first
    serving.stop(timeout=1)  # SIGTERM is ignored; SIGKILL after 1 s cuts the request
    thread.join(20)
    assert result["resp"].status == 200
    assert result["resp"].field("Name") == other.name


def test_fifty_requests_in_flight_none_fails(portside, containers):
    proxy, (first, _) = _fleet(portside, containers, 2)
    with ThreadPoolExecutor(max_workers=50) as pool:
        futures = [
            pool.submit(request, proxy.port, HOST, "/?sleep=3", timeout=30) for _ in range(50)
        ]
        wait_until(lambda: _sleeping(first) >= 10)  # its share of the 50 is in flight
        first.stop(timeout=1)
        statuses = [f.result().status for f in futures]
    assert statuses == [200] * 50


def test_drain_lets_requests_in_flight_finish(portside, containers):
    proxy, (leaving, _) = _fleet(portside, containers, 2)
    with ThreadPoolExecutor(max_workers=10) as pool:
        futures = [
            pool.submit(request, proxy.port, HOST, "/?sleep=1", timeout=30) for _ in range(10)
        ]
        wait_until(lambda: _sleeping(leaving) >= 3)
        # A 5 s grace period: the 1 s requests it holds finish on it.
        stopper = threading.Thread(target=leaving.stop, kwargs={"timeout": 5})
        stopper.start()
        wait_until(lambda: "container whoami-a stopping (signal 15): draining" in proxy.logs())
        after_kill = [request(proxy.port, HOST, timeout=10) for _ in range(10)]
        answers = [f.result() for f in futures]
        stopper.join(15)
    assert [a.status for a in answers] == [200] * 10
    assert "whoami-a" in {a.field("Name") for a in answers}  # finished where they started
    assert "resending" not in proxy.logs()
    assert {r.field("Name") for r in after_kill} == {"whoami-b"}


def test_churn_without_a_failed_request(portside, containers):
    proxy, fleet = _fleet(portside, containers, 3)
    load = Load(proxy.port, HOST, threads=4, max_seconds=60)
    started = time.monotonic()
    cycles = 0
    try:
        while time.monotonic() - started < 30:
            container = fleet[cycles % 3]
            container.stop(timeout=1)
            container.start()
            wait_until(lambda c=container: load.seen(c.name, time.monotonic() - 0.5))
            cycles += 1
    finally:
        load.stop()
    print(f"{cycles} stop/start cycles, {len(load.results)} requests")
    assert cycles >= 5
    assert not load.errors, load.errors[:3]
    assert {status for _, status, _ in load.results} == {200}


def _fleet(portside, containers, size: int):
    """`size` containers of one backend (whoami-a, -b...) and a portside routing to all of
    them; returns once every one of them has answered through the proxy."""
    fleet = [containers.run(f"whoami-{chr(ord('a') + i)}", LABELS) for i in range(size)]
    proxy = portside("", workers=2, extra_static=STATIC)
    seen: set[str | None] = set()

    def all_answered() -> bool:
        seen.add(proxy.get(HOST).field("Name"))
        return {c.name for c in fleet} <= seen

    wait_until(all_answered)
    return proxy, fleet
