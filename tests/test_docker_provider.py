"""Docker discovery end to end: real dockerd, real containers, real portside.

The write-up's experiment (DESIGN §1) with portside in place of Traefik:
same labels, round robin, `docker stop` takes a container out of rotation
the moment Docker reports its `kill`, `docker start` puts it back. Traffic
goes to 127.0.0.1 and to the test containers on the Docker bridge only.
"""

from __future__ import annotations

import threading
import time

import pytest
from conftest import Load, lb_config, wait_until
from docker_support import IMAGE_CMD, restart_dockerd, start_dockerd, stop_dockerd

WRITEUP_HOST = "whoami.docker.localhost"
WRITEUP_LABELS = {
    "traefik.backend": "whoami",
    "traefik.frontend.rule": f"Host:{WRITEUP_HOST}",
}


def docker_static(exposed_by_default: bool = False) -> str:
    return f"""
    [providers.docker]
    exposedByDefault = {str(exposed_by_default).lower()}
    """


def names(proxy, host: str, count: int) -> list[str | None]:
    return [proxy.get(host).field("Name") for _ in range(count)]


def alternates(sequence: list[str | None], members: set[str]) -> bool:
    return set(sequence) == members and all(
        a != b for a, b in zip(sequence, sequence[1:], strict=False)
    )


def test_writeup_v1_labels_stop_and_start(portside, containers):
    first = containers.run("whoami-a", WRITEUP_LABELS)
    containers.run("whoami-b", WRITEUP_LABELS)
    # Traefik v1 exposed every container by default; the write-up relied on it.
    proxy = portside("", workers=2, extra_static=docker_static(exposed_by_default=True))
    wait_until(lambda: proxy.get(WRITEUP_HOST).status == 200)
    assert alternates(names(proxy, WRITEUP_HOST, 10), {"whoami-a", "whoami-b"})

    # busybox httpd ignores SIGTERM, so the container lives on for the whole
    # grace period after `kill 15`: that window is what draining is for.
    stopper = threading.Thread(target=first.stop, kwargs={"timeout": 3})
    stopper.start()
    wait_until(lambda: "container whoami-a stopping (signal 15): draining" in proxy.logs())
    first.reload()
    assert first.status == "running"  # still in its grace period
    assert set(names(proxy, WRITEUP_HOST, 10)) == {"whoami-b"}
    stopper.join(15)
    assert set(names(proxy, WRITEUP_HOST, 10)) == {"whoami-b"}

    first.start()
    wait_until(lambda: "whoami-a" in names(proxy, WRITEUP_HOST, 4))
    assert alternates(names(proxy, WRITEUP_HOST, 10), {"whoami-a", "whoami-b"})


def test_v2_labels_route_and_balance(portside, containers):
    labels = {
        "traefik.enable": "true",
        "traefik.http.routers.app.rule": "Host(`app.docker.localhost`) && PathPrefix(`/`)",
        "traefik.http.routers.app.entrypoints": "web",
        "traefik.http.services.app.loadbalancer.server.port": "80",
    }
    containers.run("app-1", labels)
    containers.run("app-2", labels)
    containers.run("not-exposed", {"traefik.http.routers.hidden.rule": "Host(`hidden.localhost`)"})
    proxy = portside("", extra_static=docker_static())
    wait_until(lambda: proxy.get("app.docker.localhost").status == 200)
    assert alternates(names(proxy, "app.docker.localhost", 6), {"app-1", "app-2"})
    response = proxy.get("app.docker.localhost")
    assert response.field("X-Forwarded-Host") == "app.docker.localhost"
    # exposedByDefault = false: a container without traefik.enable=true is not routed
    assert proxy.get("hidden.localhost").status == 404


def test_portside_prefix_wins_over_traefik(portside, containers):
    containers.run(
        "prefixed",
        {
            "traefik.enable": "true",
            "traefik.http.routers.p.rule": "Host(`traefik.localhost`)",
            "portside.http.routers.p.rule": "Host(`portside.localhost`)",
        },
    )
    proxy = portside("", extra_static=docker_static())
    wait_until(lambda: proxy.get("portside.localhost").status == 200)
    assert proxy.get("traefik.localhost").status == 404


def test_container_with_healthcheck_joins_only_when_healthy(portside, containers):
    healthcheck = {
        "test": ["CMD", "/bin/busybox", "test", "-f", "/tmp/ready"],
        "interval": 200_000_000,
        "timeout": 1_000_000_000,
        "retries": 1,
    }
    labels = {"traefik.enable": "true", "traefik.http.routers.h.rule": "Host(`health.localhost`)"}
    container = containers.run("checked", labels, healthcheck=healthcheck)
    proxy = portside("", extra_static=docker_static())
    # known but not healthy: the router exists and has no server yet
    wait_until(lambda: proxy.get("health.localhost").status == 503)
    container.exec_run(["/bin/busybox", "touch", "/tmp/ready"])
    wait_until(lambda: proxy.get("health.localhost").status == 200)
    container.exec_run(["/bin/busybox", "rm", "/tmp/ready"])
    wait_until(lambda: proxy.get("health.localhost").status == 503)


def test_bad_label_skips_only_that_container(portside, containers):
    containers.run(
        "good", {"traefik.enable": "true", "traefik.http.routers.g.rule": "Host(`good.localhost`)"}
    )
    containers.run(
        "bad-rule",
        {"traefik.enable": "true", "traefik.http.routers.b.rule": "Hots(`bad.localhost`)"},
    )
    containers.run(
        "bad-port",
        {
            "traefik.enable": "true",
            "traefik.http.routers.c.rule": "Host(`port.localhost`)",
            "traefik.http.services.c.loadbalancer.server.port": "eighty",
        },
    )
    proxy = portside("", extra_static=docker_static())
    wait_until(lambda: proxy.get("good.localhost").status == 200)
    logs = proxy.logs()
    assert "container bad-rule skipped: label traefik.http.routers.b.rule: invalid rule" in logs
    assert (
        "container bad-port skipped: label traefik.http.services.c.loadbalancer.server.port: "
        "expected a port number" in logs
    )
    assert proxy.get("bad.localhost").status == 404


@pytest.mark.timeout(240)
def test_dockerd_restart_keeps_routes_and_picks_up_later_changes(portside, containers):
    labels = {"traefik.enable": "true", "traefik.http.routers.s.rule": "Host(`steady.localhost`)"}
    containers.run("steady", labels)
    proxy = portside("", workers=2, extra_static=docker_static())
    wait_until(lambda: proxy.get("steady.localhost").status == 200)
    load = Load(proxy.port, "steady.localhost", threads=2, max_seconds=120)
    try:
        wait_until(lambda: len(load.results) > 20)
        restart_dockerd()  # containers survive it (dockerd runs with --live-restore)
        # the provider noticed the restart, reconnected and listed again
        wait_until(lambda: proxy.logs().count("docker: connected to") == 2, timeout=60)
        assert "docker: the events stream ended" in proxy.logs()
        served_during_restart = len(load.results)
    finally:
        load.stop()
    assert not load.errors, load.errors[:3]
    assert {status for _, status, _ in load.results} == {200}
    assert served_during_restart > 20

    later = {"traefik.enable": "true", "traefik.http.routers.l.rule": "Host(`later.localhost`)"}
    started = time.monotonic()
    containers.run("later", later)
    wait_until(lambda: proxy.get("later.localhost").status == 200, timeout=10)
    print(f"new route live {1000 * (time.monotonic() - started):.0f} ms after start")


@pytest.mark.timeout(240)
def test_daemon_down_at_start(portside, containers, whoami):
    file_backend = whoami("file-backend")
    stop_dockerd()
    try:
        proxy = portside(
            lb_config(file_backend, host="file.localhost"), extra_static=docker_static()
        )
        # the file provider's routes serve while Docker is unreachable
        wait_until(lambda: proxy.get("file.localhost").status == 200)
        assert "docker: cannot reach unix:///var/run/docker.sock" in proxy.logs()
    finally:
        start_dockerd()
    labels = {"traefik.enable": "true", "traefik.http.routers.up.rule": "Host(`up.localhost`)"}
    containers.run("arrived", labels)
    wait_until(lambda: proxy.get("up.localhost").status == 200, timeout=30)
    logs = proxy.logs()
    assert logs.count("docker: cannot reach") == 1  # each outage is logged once, not per attempt
    assert "attempts, " in logs
    assert proxy.get("file.localhost").status == 200


def test_stop_under_load_fails_nothing_and_drains_on_kill(portside, containers):
    containers.run("steady-a", WRITEUP_LABELS)
    leaving = containers.run("leaving-b", WRITEUP_LABELS)
    proxy = portside("", workers=2, extra_static=docker_static(exposed_by_default=True))
    wait_until(lambda: set(names(proxy, WRITEUP_HOST, 4)) == {"steady-a", "leaving-b"})
    load = Load(proxy.port, WRITEUP_HOST, threads=4, max_seconds=60)
    try:
        wait_until(lambda: load.seen("leaving-b", 0))
        stopping_at = time.monotonic()
        leaving.stop(timeout=3)  # the container keeps serving for its 3 s grace period
        stopped_at = time.monotonic()
        wait_until(lambda: load.seen("steady-a", stopped_at + 0.5))  # load went on after it
    finally:
        load.stop()
    assert not load.errors, load.errors[:3]
    assert {status for _, status, _ in load.results} == {200}
    # Requests take milliseconds; an answer from the stopping container a
    # second after `docker stop` began would mean it was still being chosen.
    late = [t - stopping_at for t, _, name in load.results if name == "leaving-b"]
    assert max(late) < 1.0, f"routed to the stopping container {max(late):.2f}s after stop"


def test_container_slow_to_listen_joins_as_soon_as_it_answers(portside, containers):
    """Docker reports `start` before the application binds its port, so the first
    connections are refused. Passive health must not then hold the new container
    out for its whole failure window (60 s here): it joins once it answers."""
    labels = {
        "traefik.enable": "true",
        "traefik.http.routers.slow.rule": f"Host(`{WRITEUP_HOST}`)",
        "traefik.http.services.slow.loadbalancer.passivehealthcheck.failurewindow": "60s",
    }
    containers.run("ready-a", labels)
    proxy = portside("", workers=2, extra_static=docker_static())
    wait_until(lambda: proxy.get(WRITEUP_HOST).status == 200)
    load = Load(proxy.port, WRITEUP_HOST, threads=4, max_seconds=60)
    try:
        # Its server binds a second after the container starts.
        late_bind = ["/bin/busybox", "sh", "-c", "sleep 1; exec " + " ".join(IMAGE_CMD)]
        containers.run("slow-b", labels, command=late_bind, wait=False)
        wait_until(lambda: "(it has not answered yet)" in proxy.logs())  # refused, held out
        wait_until(lambda: load.seen("slow-b", 0))
    finally:
        load.stop()
    assert not load.errors, load.errors[:3]
    assert {status for _, status, _ in load.results} == {200}
