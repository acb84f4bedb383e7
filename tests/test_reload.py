"""HUP reloads: a new worker generation on the same sockets, the old one drained, nothing lost.

Every test here runs real portside processes under real load and counts each
request's outcome.
"""

from __future__ import annotations

import signal
import socket
import threading
import time

import psutil
import pytest
from conftest import Load, Portside, free_port, lb_config, request, wait_until
from test_workers import listening_socket_inodes, socket_inodes_of


def reload(proxy: Portside, generation: int, slots: int) -> None:
    """Send HUP and wait until worker generation `generation` serves in `slots` slots."""
    proxy.proc.send_signal(signal.SIGHUP)
    line = f"worker generation {generation} serving in {slots} slots"
    wait_until(lambda: line in proxy.logs(), timeout=10)


@pytest.mark.parametrize("migrate_req", [0, 1], indirect=True)
def test_reloads_under_load_fail_nothing(portside, whoami, migrate_req):
    """20 s of load, a HUP every 0.5 s, every other one with a changed configuration."""
    a, b = whoami("a"), whoami("b")
    proxy = portside(lb_config(a), workers=2)
    loads = [
        Load(proxy.port, "whoami.localhost", threads=3, max_seconds=60, keep_alive=True),
        Load(proxy.port, "whoami.localhost", threads=2, max_seconds=60),
    ]
    hups = 40
    try:
        wait_until(lambda: all(len(load.results) > 20 for load in loads))
        for i in range(hups):
            due = time.monotonic() + 0.5
            changed = i % 2 == 0
            if changed:
                # Static and dynamic both change: the worker count and the backend.
                proxy.workers = 3 if proxy.workers == 2 else 2
                proxy.write_static()
                backend = b if i % 4 == 0 else a
                proxy.write_dynamic(lb_config(backend))
            reload(proxy, generation=i + 2, slots=proxy.workers)
            if changed:
                since = time.monotonic()
                wait_until(lambda: loads[0].seen(backend.name, since), timeout=5)  # noqa: B023
            time.sleep(max(0.0, due - time.monotonic()))  # pace: one HUP per 0.5 s
        wait_until(lambda: len(proxy.worker_pids()) == proxy.workers, timeout=40)
    finally:
        for load in loads:
            load.stop()
    logs = proxy.logs()
    for load in loads:
        assert not load.errors, load.errors[:3]
        assert {status for _, status, _ in load.results} == {200}
    assert logs.count("reload: configuration valid") == hups
    assert "Traceback" not in logs
    total = sum(len(load.results) for load in loads)
    print(f"{hups} reloads, {total} requests, 0 failed")


def test_invalid_configuration_on_hup_changes_nothing(portside, whoami):
    proxy = portside(lb_config(whoami("a")), workers=2)
    pids = proxy.worker_pids()
    good_static = proxy.static_path.read_text()
    proxy.static_path.write_text(good_static.replace("count = 2", "count = 0\nbogus = 1"))
    proxy.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "reload failed" in proxy.logs())
    logs = proxy.logs()
    assert f"{proxy.static_path}: workers.count: must be >= 1" in logs
    assert f"{proxy.static_path}: workers.bogus: unknown key" in logs
    assert proxy.worker_pids() == pids
    assert proxy.get("whoami.localhost").field("Name") == "a"

    # A dynamic file the static configuration does not accept fails the reload too.
    # (The file watcher applies it on its own, without the router it cannot place.)
    proxy.static_path.write_text(good_static)
    proxy.dynamic_path.write_text(
        lb_config(whoami("b")).replace(
            'service = "whoami"', 'service = "whoami"\nentryPoints = ["nope"]'
        )
    )
    proxy.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: proxy.logs().count("reload failed") == 2)
    assert f"{proxy.dynamic_path}: http.routers.whoami.entryPoints: unknown entry point 'nope'" in (
        proxy.logs()
    )
    assert proxy.worker_pids() == pids
    assert "starting worker generation" not in proxy.logs()


def test_reload_that_cannot_bind_changes_nothing(portside, whoami):
    proxy = portside(lb_config(whoami("a")))
    pids = proxy.worker_pids()
    with socket.socket() as taken:  # a plain socket: SO_REUSEPORT cannot join it
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proxy.extra_static = f'[entryPoints.other]\naddress = "127.0.0.1:{port}"\n'
        proxy.write_static()
        proxy.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "reload failed: cannot listen" in proxy.logs())
    assert proxy.worker_pids() == pids
    assert proxy.get("whoami.localhost").status == 200


def test_long_request_survives_a_reload(portside, whoami):
    proxy = portside(lb_config(whoami("a")))
    (old,) = proxy.worker_pids()
    result = {}

    def slow() -> None:
        result["resp"] = request(proxy.port, "whoami.localhost", "/?sleep=5", timeout=20)

    thread = threading.Thread(target=slow)
    thread.start()
    wait_until(lambda: len(psutil.Process(old).net_connections("tcp")) >= 3)  # client+backend
    started = time.monotonic()
    reload(proxy, generation=2, slots=1)
    assert psutil.pid_exists(old)  # draining: its request is still in flight
    assert proxy.get("whoami.localhost").status == 200  # served by the new generation
    thread.join(20)
    assert result["resp"].status == 200
    assert time.monotonic() - started < 10  # finished when the request did, not at the grace
    wait_until(lambda: not psutil.pid_exists(old) or psutil.Process(old).status() == "zombie")


@pytest.mark.parametrize("migrate_req", [0, 1], indirect=True)
def test_reload_adds_and_removes_entry_points_on_kept_sockets(portside, whoami, migrate_req):
    proxy = portside(lb_config(whoami("a")), workers=1)
    web_sockets = listening_socket_inodes(proxy.port)
    other = free_port()
    proxy.workers = 2
    proxy.extra_static = f'[entryPoints.other]\naddress = "127.0.0.1:{other}"\n'
    proxy.write_static()
    reload(proxy, generation=2, slots=2)
    assert request(other, "whoami.localhost").status == 200
    assert proxy.get("whoami.localhost").status == 200
    after = listening_socket_inodes(proxy.port)
    assert len(after) == 2 and web_sockets < after  # slot 0's socket was kept, not re-created

    proxy.workers = 1
    proxy.extra_static = ""
    proxy.write_static()
    reload(proxy, generation=3, slots=1)
    wait_until(lambda: not listening_socket_inodes(other))
    if migrate_req:
        assert listening_socket_inodes(proxy.port) == web_sockets
    else:  # the removed slot's socket is kept, and worker 0 serves both
        assert listening_socket_inodes(proxy.port) == after
        (worker,) = wait_until(lambda: len(proxy.worker_pids()) == 1 and proxy.worker_pids())
        assert socket_inodes_of(worker) >= after
    assert proxy.get("whoami.localhost").status == 200


def test_reload_restarts_discovery_with_new_provider_settings(portside, whoami):
    proxy = portside(lb_config(whoami("a")))
    other = proxy.tmp / "other.toml"
    other.write_text(lb_config(whoami("b")))
    static = proxy.static_path.read_text()
    proxy.static_path.write_text(static.replace(str(proxy.dynamic_path), str(other)))
    reload(proxy, generation=2, slots=1)
    assert proxy.get("whoami.localhost").field("Name") == "b"  # applied with the reload
    # The new discovery process watches the new file.
    other.write_text(lb_config(whoami("c")))
    wait_until(lambda: proxy.get("whoami.localhost").field("Name") == "c")
    assert "started discovery" in proxy.logs().split("reload: configuration valid")[1]
