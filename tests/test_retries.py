"""Safe resends (RFC 9110 §9.2.2) and passive health, with real backends that die.

A request is resent to a different server when its connection fails or is
reset before any response byte reached the client, and only if it is
idempotent or provably never left.
"""

from __future__ import annotations

import os
import signal
import threading

import psutil
from conftest import Whoami, free_port, lb_config, request, wait_until


def test_refused_connection_is_resent_even_for_post(portside, whoami):
    live = whoami("live")
    dead = f"http://127.0.0.1:{free_port()}"
    proxy = portside(lb_config(dead, live))
    for method, body in (("GET", None), ("POST", b"payload")):
        for _ in range(4):  # both servers come up in the rotation
            resp = proxy.get("whoami.localhost", method=method, body=body)
            assert resp.status == 200, (method, resp.status)
            assert resp.field("Name") == "live"
    assert "resending to " + live.url in proxy.logs()


def _kill_mid_request(proxy, victim: Whoami, method: str, body: bytes | None) -> int:
    """Send a slow request that lands on `victim`, kill it mid-request, return the status."""
    result: dict[str, int] = {}

    def slow() -> None:
        resp = request(proxy.port, "whoami.localhost", "/?sleep=2", method=method, body=body)
        result["status"] = resp.status
        result["name"] = resp.field("Name")  # type: ignore[assignment]

    thread = threading.Thread(target=slow)
    thread.start()
    # the victim's process holds the proxied connection once the request arrived
    wait_until(lambda: _has_client(victim), timeout=5)
    os.kill(victim.proc.pid, signal.SIGKILL)
    thread.join(15)
    return result["status"]


def _has_client(backend: Whoami) -> bool:
    conns = psutil.Process(backend.proc.pid).net_connections("tcp")
    return any(c.status == psutil.CONN_ESTABLISHED for c in conns)


def test_get_resent_when_backend_dies_mid_request(portside, whoami):
    victim = whoami("victim")
    survivor = whoami("survivor")
    proxy = portside(lb_config(victim), workers=1)
    # Route only to the victim first, so the slow request surely lands there,
    # then add the survivor as a second server (generation 2).
    assert proxy.get("whoami.localhost").field("Name") == "victim"
    proxy.write_dynamic(lb_config(victim, survivor))
    # after the survivor answered, the round robin's next pick is the victim
    wait_until(lambda: proxy.get("whoami.localhost").field("Name") == "survivor")
    assert _kill_mid_request(proxy, victim, "GET", None) == 200
    assert "resending to " + survivor.url in proxy.logs()


def test_post_that_left_is_not_resent(portside, whoami):
    victim = whoami("victim")
    survivor = whoami("survivor")
    proxy = portside(lb_config(victim, survivor), workers=1)
    wait_until(lambda: proxy.get("whoami.localhost").field("Name") == "survivor")
    # the next pick is the victim
    assert _kill_mid_request(proxy, victim, "POST", b"not idempotent") == 502
    assert "resending" not in proxy.logs()


def test_passive_health_ejects_a_dead_server_and_takes_it_back(portside, whoami):
    steady = whoami("steady")
    flaky = whoami("flaky")
    servers = f'[ {{ url = "{steady.url}" }}, {{ url = "{flaky.url}" }} ]'
    proxy = portside(
        f"""
        [http.routers.whoami]
        rule = "Host(`whoami.localhost`)"
        service = "whoami"
        [http.services.whoami.loadBalancer]
        servers = {servers}
        [http.services.whoami.loadBalancer.passiveHealthCheck]
        maxFailedAttempts = 2
        failureWindow = "2s"
        """,
        workers=1,
    )
    assert {proxy.get("whoami.localhost").field("Name") for _ in range(4)} == {"steady", "flaky"}
    flaky.stop()  # no event tells the proxy: only failed connections do
    for _ in range(6):
        assert proxy.get("whoami.localhost").field("Name") == "steady"
    wait_until(lambda: "ejected for 2s after 2 consecutive failures" in proxy.logs())
    attempts = proxy.logs().count(f"cannot connect to 127.0.0.1:{flaky.port}")
    for _ in range(6):  # ejected: not even tried
        assert proxy.get("whoami.localhost").field("Name") == "steady"
    assert proxy.logs().count(f"cannot connect to 127.0.0.1:{flaky.port}") == attempts

    back = Whoami("flaky", port=flaky.port)
    try:
        # after the window, one probe request finds it alive and it rejoins
        wait_until(lambda: proxy.get("whoami.localhost").field("Name") == "flaky", timeout=10)
        assert "answers again; back in rotation" in proxy.logs()
    finally:
        back.stop()


def _dead_and_live(live: Whoami, extra: str) -> str:
    return f"""
    [http.routers.whoami]
    rule = "Host(`whoami.localhost`)"
    service = "whoami"
    {extra}
    [http.services.whoami.loadBalancer]
    servers = [ {{ url = "http://127.0.0.1:{free_port()}" }}, {{ url = "{live.url}" }} ]
    """


def test_retry_disabled_for_a_service(portside, whoami):
    config = _dead_and_live(whoami("live"), "")
    config += """
    [http.services.whoami.loadBalancer.retry]
    disabled = true
    """
    proxy = portside(config, workers=1)
    statuses = [proxy.get("whoami.localhost").status for _ in range(4)]
    assert sorted(statuses) == [200, 200, 502, 502]


def test_retry_middleware_referenced_by_the_router(portside, whoami):
    config = _dead_and_live(whoami("live"), 'middlewares = ["once"]')
    config += """
    [http.services.whoami.loadBalancer.retry]
    disabled = true
    [http.middlewares.once.retry]
    attempts = 2
    """
    proxy = portside(config, workers=1)
    # the router's middleware wins over the service's setting
    assert [proxy.get("whoami.localhost").status for _ in range(4)] == [200] * 4
