"""The real-Docker test infrastructure itself: daemon, image, containers (DESIGN §8).

These need a Docker daemon: they skip without one, and fail instead when
PORTSIDE_REQUIRE_DOCKER=1 (set by .ci/run). Traffic goes only to the test
containers' own bridge addresses.
"""

from __future__ import annotations

import http.client
import re
import threading
import time

import docker
import pytest
import requests
from conftest import Response, wait_until
from docker_support import (
    IMAGE_CMD,
    Containers,
    backend_image,
    container_ip,
    health_status,
    http_get,
    restart_dockerd,
    start_dockerd,
    stop_dockerd,
)


def test_image_is_built_locally_and_cached_by_content(client: docker.DockerClient) -> None:
    tag = backend_image(client)
    assert re.fullmatch(r"portside-test-whoami:[0-9a-f]{12}", tag)
    assert backend_image(client) == tag
    config = client.images.get(tag).attrs["Config"]
    assert config["Cmd"] == IMAGE_CMD
    assert "80/tcp" in config["ExposedPorts"]


def test_container_answers_with_hostname_request_line_and_headers(
    containers: Containers,
) -> None:
    container = containers.run("portside-test-answer", labels={"traefik.backend": "whoami"})
    ip = container_ip(container)
    assert ip.startswith("172.17.")
    assert container.labels["portside-test"] == "1"
    assert container.labels["traefik.backend"] == "whoami"

    answer = http_get(
        ip, "/?a=1", headers={"Host": "whoami.localhost", "X-Forwarded-For": "1.2.3.4"}
    )
    assert answer.status == 200
    assert answer.field("Name") == "portside-test-answer"
    assert answer.field("Hostname") == container.id[:12]
    assert answer.field("RemoteAddr").startswith("172.17.0.1:")
    assert "GET /?a=1" in answer.text.splitlines()
    assert answer.field("Host") == "whoami.localhost"
    assert answer.field("X-Forwarded-For") == "1.2.3.4"


def test_sleep_delays_the_answer(containers: Containers) -> None:
    ip = container_ip(containers.run())
    started = time.monotonic()
    answer = http_get(ip, "/?sleep=1")
    assert answer.status == 200
    assert time.monotonic() - started >= 1.0
    assert "GET /?sleep=1" in answer.text.splitlines()


def test_healthcheck_reports_healthy(containers: Containers) -> None:
    healthcheck = {
        "test": ["CMD", "/bin/busybox", "wget", "-q", "-O", "-", "http://127.0.0.1/"],
        "interval": 200_000_000,  # nanoseconds
        "timeout": 2_000_000_000,
        "retries": 3,
    }
    container = containers.run(healthcheck=healthcheck)
    wait_until(lambda: health_status(container) == "healthy", timeout=20)


def test_stop_cuts_a_request_in_flight(containers: Containers) -> None:
    """busybox httpd as PID 1 ignores SIGTERM: the request dies with the SIGKILL."""
    container = containers.run()
    ip = container_ip(container)
    outcome: dict[str, Response | Exception] = {}

    def slow_request() -> None:
        try:
            outcome["answer"] = http_get(ip, "/?sleep=20", timeout=30)
        except (OSError, http.client.HTTPException) as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=slow_request)
    thread.start()
    # In flight once the CGI's sleep runs inside the container.
    wait_until(lambda: any("sleep" in p[-1] for p in container.top()["Processes"]))

    started = time.monotonic()
    container.stop(timeout=2)
    stopped_after = time.monotonic() - started
    thread.join(10)

    assert not thread.is_alive()
    assert "error" in outcome, f"request was not cut: {outcome}"
    assert 1.5 <= stopped_after < 10, f"stop took {stopped_after:.1f}s: SIGTERM not ignored?"
    container.reload()
    assert container.attrs["State"]["ExitCode"] == 137  # SIGKILL


def test_containers_keep_serving_across_a_dockerd_restart(
    client: docker.DockerClient, containers: Containers
) -> None:
    """dockerd runs with --live-restore: its containers outlive it."""
    container = containers.run()
    ip = container_ip(container)
    started_at = container.attrs["State"]["StartedAt"]

    stop_dockerd()
    try:
        with pytest.raises(requests.ConnectionError):
            client.ping()
        assert http_get(ip).field("Hostname") == container.id[:12]
    finally:
        start_dockerd()
    assert client.ping()

    restart_dockerd()
    assert client.ping()
    container.reload()
    assert container.status == "running"
    assert container.attrs["State"]["StartedAt"] == started_at  # the same run, not restarted
    assert http_get(ip).field("Hostname") == container.id[:12]
    # The daemon is fully back: it starts new containers too.
    assert http_get(container_ip(containers.run())).status == 200
