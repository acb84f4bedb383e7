"""The internal services end to end: metrics totals, the API, ping, basic auth."""

from __future__ import annotations

import base64
import hashlib
import signal

import bcrypt
from conftest import connect, lb_config, wait_until
from observability import start_with_admin

from portside.master.status import VERSION


def test_requests_total_is_exact_over_all_workers(portside, whoami):
    admin = start_with_admin(portside, lb_config(whoami("a")), workers=2)
    proxy = admin.proxy
    # New connections each: the kernel spreads them over both workers' sockets.
    for _ in range(150):
        assert proxy.get("whoami.localhost").status == 200
    for _ in range(20):
        assert proxy.get("nothing.localhost").status == 404
    for _ in range(30):
        assert proxy.get("whoami.localhost", method="POST", body=b"x").status == 200
    wait_until(lambda: admin.total("portside_requests_total", entrypoint="web") == 200)
    # A few more status pushes later, nothing was counted twice.
    scrapes = admin.total("portside_requests_total", entrypoint="admin")
    wait_until(lambda: admin.total("portside_requests_total", entrypoint="admin") >= scrapes + 3)
    by_labels = {
        (labels["router"], labels["service"], labels["code"], labels["method"]): value
        for labels, value in admin.samples("portside_requests_total")
        if labels["entrypoint"] == "web"
    }
    assert by_labels == {
        ("whoami@file", "whoami@file", "200", "GET"): 150,
        ("", "", "404", "GET"): 20,
        ("whoami@file", "whoami@file", "200", "POST"): 30,
    }
    assert admin.total("portside_request_duration_seconds_count", service="whoami@file") == 180
    assert admin.total("portside_server_up", service="whoami@file") == 1
    assert {
        labels["slot"] for labels, _ in admin.samples("portside_worker_resident_memory_bytes")
    } == {
        "0",
        "1",
    }
    logs = proxy.logs()
    assert f"portside {VERSION} starting: 2 workers; providers: file (" in logs
    assert f"admin entry point admin: http://127.0.0.1:{admin.port}/api/" in logs
    assert "provider file found 1 routers, 1 services, 1 servers" in logs
    workers = admin.api("workers")
    assert sorted(w["pid"] for w in workers) == proxy.worker_pids()
    assert all(
        w["state"] == "serving" and w["rss"] > 0 and w["snapshotAcked"] == 1 for w in workers
    )


def test_api_routers_services_and_ejected_servers(portside, whoami):
    backend = whoami("a")
    gone = whoami("b")
    dead = gone.url
    admin = start_with_admin(
        portside,
        lb_config(backend, dead)
        + """
        [http.services.whoami.loadBalancer.passiveHealthCheck]
        maxFailedAttempts = 1
        failureWindow = "60s"
        """,
    )
    (router,) = admin.api("http/routers")
    assert router == {
        "name": "whoami@file",
        "rule": "Host(`whoami.localhost`)",
        "service": "whoami@file",
        # As in Traefik, a router without entryPoints is on every configured entry point;
        # on the admin one the internal services' paths come first.
        "entryPoints": ["web", "admin"],
        "priority": len("Host(`whoami.localhost`)"),
        "provider": "file",
        "status": "enabled",
    }
    assert admin.api("http/routers/whoami@file") == router
    assert admin.get("/api/http/routers/nope@file").status == 404
    assert admin.server_states("whoami@file") == {backend.url: "up", dead: "up"}
    # Once it has answered, a failing server is ejected for the whole window.
    wait_until(lambda: admin.proxy.get("whoami.localhost").field("Name") == "b")
    gone.stop()
    for _ in range(4):  # the dead server's turn fails to connect and is resent
        assert admin.proxy.get("whoami.localhost").status == 200
    wait_until(lambda: admin.server_states("whoami@file") == {backend.url: "up", dead: "ejected"})
    assert admin.total("portside_upstream_errors_total", kind="connect") >= 1
    assert admin.total("portside_retries_total", service="whoami@file") >= 1
    assert admin.total("portside_server_up", url=dead) == 0
    overview = admin.api("overview")
    assert overview["http"]["services"] == {"total": 1, "warnings": 1, "errors": 0}
    assert admin.api("version")["Version"]


def test_ping_answers_503_once_a_graceful_stop_begins(portside, whoami):
    admin = start_with_admin(
        portside,
        lb_config(whoami("a")),
        extra='[lifeCycle]\nrequestAcceptGraceTimeout = "3s"\ngraceTimeOut = "1s"\n',
    )
    ping = admin.get("/ping")
    assert (ping.status, ping.text) == (200, "OK")
    admin.proxy.proc.send_signal(signal.SIGQUIT)
    # Still accepting during requestAcceptGraceTimeout, so a load balancer sees the 503.
    wait_until(lambda: admin.get("/ping").status == 503, timeout=3)
    assert admin.proxy.get("whoami.localhost").status == 200
    assert admin.proxy.proc.wait(15) == 0


def _htpasswd_bcrypt(password: str) -> str:
    # htpasswd -B writes the $2y$ prefix.
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(5)).decode().replace("$2b$", "$2y$", 1)


def _htpasswd_sha(password: str) -> str:
    return "{SHA}" + base64.b64encode(hashlib.sha1(password.encode()).digest()).decode()


def _basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def test_basic_auth_with_bcrypt_and_sha_hashes(portside, whoami):
    users = [f"alice:{_htpasswd_bcrypt('wonderland')}", f"bob:{_htpasswd_sha('builder')}"]
    admin = start_with_admin(
        portside, lb_config(whoami("a")), api=f"basicAuth.users = {users!r}".replace("'", '"')
    )
    refused = admin.get("/api/overview")
    assert refused.status == 401
    assert refused.headers["WWW-Authenticate"] == 'Basic realm="portside"'
    assert admin.get("/dashboard/").status == 401
    assert admin.get("/api/overview", headers=_basic("alice", "wrong")).status == 401
    assert admin.get("/api/overview", headers=_basic("bob", "wonderland")).status == 401
    assert admin.get("/api/overview", headers=_basic("alice", "wonderland")).status == 200
    assert admin.get("/api/overview", headers=_basic("bob", "builder")).status == 200
    assert admin.get("/dashboard/", headers=_basic("bob", "builder")).status == 200
    # ping and metrics are for load balancers and scrapers: no credentials.
    assert admin.get("/ping").status == 200
    assert admin.get("/metrics").status == 200


def test_open_connections_and_reloads_in_the_metrics(portside, whoami):
    admin = start_with_admin(portside, lb_config(whoami("a")), workers=2)
    proxy = admin.proxy
    held = [connect(proxy.port) for _ in range(3)]
    try:
        wait_until(lambda: admin.total("portside_open_connections", entrypoint="web") == 3)
    finally:
        for sock, reader in held:
            reader.close()
            sock.close()
    wait_until(lambda: admin.total("portside_open_connections", entrypoint="web") == 0)
    assert admin.total("portside_config_reloads_total") == 0
    loaded = admin.total("portside_config_last_reload_success")
    proxy.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: admin.total("portside_config_reloads_total") == 1)
    assert admin.total("portside_config_last_reload_success") > loaded
    wait_until(lambda: {w["generation"] for w in admin.api("workers")} == {2})
    assert len(admin.samples("portside_worker_resident_memory_bytes")) == 2
