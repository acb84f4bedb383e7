"""Helpers for tests against a real Docker engine (DESIGN §8).

- `docker_client()`: a client, or a skip (a failure when PORTSIDE_REQUIRE_DOCKER=1).
- `backend_image(client)`: the whoami test image, built locally with no registry.
- `Containers`: starts labelled test containers and removes them all at cleanup.
- `container_ip`, `http_get`, `health_status`: reach and inspect a container.
- `stop_dockerd`, `start_dockerd`, `restart_dockerd`: bounce the daemon that
  `.ci/start-dockerd` started; it runs with --live-restore, so containers
  keep serving while it is down.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import os
import secrets
import signal
import socket
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import docker
import psutil
import pytest
import requests
from conftest import Response, wait_until
from docker.models.containers import Container

REPO = Path(__file__).resolve().parent.parent
IMAGE_FILES = Path(__file__).resolve().parent / "backend-image"
START_DOCKERD = REPO / ".ci" / "start-dockerd"
DOCKERD_PIDFILE = Path("/run/portside-ci-docker.pid")
DOCKER_SOCKET = "unix:///var/run/docker.sock"
BUSYBOX = Path("/bin/busybox")  # Debian's busybox-static: no shared libraries needed
REQUIRE_ENV = "PORTSIDE_REQUIRE_DOCKER"

IMAGE_REPO = "portside-test-whoami"
IMAGE_CMD = ["/bin/busybox", "httpd", "-f", "-p", "80", "-h", "/www"]
# EXPOSE matters: like Traefik, the provider falls back to the only exposed
# port when no label names one, as in the write-up's whoami containers.
IMAGE_CHANGES = [f"CMD {json.dumps(IMAGE_CMD)}", "EXPOSE 80/tcp", "ENV PATH=/bin"]
TEST_LABEL = "portside-test"  # on every test container, so leftovers can be swept

_swept = False
_image: str | None = None


def docker_unavailable(reason: str) -> NoReturn:
    """Skip the test; fail it instead in CI, where Docker must be there."""
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1, so this is a failure)", pytrace=False)
    pytest.skip(reason)


def docker_client() -> docker.DockerClient:
    """A client for the daemon on /var/run/docker.sock, or skip/fail if none answers.

    The first call of a session also removes test containers left over by a
    crashed run.
    """
    global _swept
    try:
        client = docker.DockerClient(base_url=DOCKER_SOCKET)
        client.ping()
    except (docker.errors.DockerException, requests.RequestException) as exc:
        docker_unavailable(
            f"no Docker daemon answers on {DOCKER_SOCKET} ({exc}); "
            "start one with `make docker-up` (as root)"
        )
    if not _swept:
        remove_leftovers(client)
        _swept = True
    return client


def remove_leftovers(client: docker.DockerClient) -> None:
    """Force-remove every container labelled as a test container."""
    for container in client.containers.list(all=True, filters={"label": f"{TEST_LABEL}=1"}):
        _remove(container)


# --- the backend image ---------------------------------------------------------------


def _image_tarball() -> bytes:
    """The image's root filesystem as a reproducible tar (same input, same bytes).

    /bin holds busybox and a symlink per applet (sh for the CGI's #!, wget for
    healthchecks, and the rest for `docker exec` debugging).
    """
    applets = subprocess.run(
        [str(BUSYBOX), "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:

        def add(name: str, kind: bytes, mode: int, data: bytes = b"", target: str = "") -> None:
            # Fixed owner and mtime keep the bytes, and so the tag, reproducible.
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime, info.linkname = kind, mode, 0, target
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)

        for directory in ("bin", "etc", "tmp", "www", "www/cgi-bin"):
            add(directory, tarfile.DIRTYPE, 0o1777 if directory == "tmp" else 0o755)
        add("bin/busybox", tarfile.REGTYPE, 0o755, BUSYBOX.read_bytes())
        for applet in sorted(set(applets) - {"busybox"}):
            add(f"bin/{applet}", tarfile.SYMTYPE, 0o777, target="busybox")
        cgi = (IMAGE_FILES / "index.cgi").read_bytes()
        add("www/cgi-bin/index.cgi", tarfile.REGTYPE, 0o755, cgi)
    return buf.getvalue()


def backend_image(client: docker.DockerClient) -> str:
    """The tag of the whoami test image, imported once per content hash.

    The tag is `portside-test-whoami:<12 hex digits>`, a hash of the root
    filesystem and the image config, so an unchanged image is never rebuilt
    (not even across sessions, while the daemon's data root survives).
    """
    global _image
    if _image is not None:
        return _image
    if not BUSYBOX.is_file():
        docker_unavailable(f"{BUSYBOX} is missing: apt-get install busybox-static")
    tarball = _image_tarball()
    digest = hashlib.sha256(tarball + json.dumps(IMAGE_CHANGES).encode()).hexdigest()[:12]
    tag = f"{IMAGE_REPO}:{digest}"
    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        client.api.import_image_from_data(
            tarball, repository=IMAGE_REPO, tag=digest, changes=IMAGE_CHANGES
        )
        client.images.get(tag)  # raises if the import silently failed
        _remove_old_images(client, keep=tag)
    _image = tag
    return tag


def _remove_old_images(client: docker.DockerClient, keep: str) -> None:
    """Untag earlier builds of the test image, so edits don't pile up images."""
    for image in client.images.list(name=IMAGE_REPO):
        for tag in set(image.tags) - {keep}:
            try:
                client.images.remove(tag)
            except docker.errors.APIError:
                pass  # still used by a container; a later build removes it


# --- containers ----------------------------------------------------------------------


def run_backend(
    client: docker.DockerClient,
    image: str,
    name: str | None = None,
    labels: dict[str, str] | None = None,
    *,
    wait: bool = True,
    **kwargs: Any,
) -> Container:
    """Start a detached whoami container on the default bridge.

    `name` defaults to a random `portside-test-…`; it is also reported on the
    answer's "Name:" line. The container gets `labels` plus `portside-test=1`.
    Other keyword arguments go to `client.containers.run` (`healthcheck`,
    `environment` as a dict, `network`, …). With `wait`, return only once
    port 80 accepts connections on that network.
    """
    name = name or f"portside-test-{secrets.token_hex(4)}"
    environment = {"WHOAMI_NAME": name, **kwargs.pop("environment", {})}
    container = client.containers.run(
        image,
        name=name,
        labels={**(labels or {}), TEST_LABEL: "1"},
        environment=environment,
        detach=True,
        **kwargs,
    )
    if wait:
        network = kwargs.get("network") or "bridge"
        try:
            wait_until(lambda: _accepts(container, network), timeout=15)
        except AssertionError:
            logs = container.logs().decode(errors="replace")
            _remove(container)
            raise AssertionError(f"container {name} never listened on :80; logs:\n{logs}") from None
    return container


def _accepts(container: Container, network: str) -> bool:
    """True once the container's port 80 accepts a TCP connection."""
    container.reload()
    if container.status != "running":
        raise AssertionError(f"container {container.name} is {container.status}")
    with socket.create_connection((container_ip(container, network), 80), timeout=1):
        return True


def _remove(container: Container) -> None:
    try:
        container.remove(force=True)
    except docker.errors.NotFound:
        pass


class Containers:
    """A factory of test containers; `cleanup()` force-removes all it started.

    Fixture use:
        containers = Containers(client)
        yield containers
        containers.cleanup()
    """

    def __init__(self, client: docker.DockerClient, image: str | None = None) -> None:
        self.client = client
        self.image = image or backend_image(client)
        self.started: list[Container] = []

    def run(
        self, name: str | None = None, labels: dict[str, str] | None = None, **kwargs: Any
    ) -> Container:
        """`run_backend` with this factory's client and image."""
        container = run_backend(self.client, self.image, name, labels, **kwargs)
        self.started.append(container)
        return container

    def cleanup(self) -> None:
        for container in self.started:
            _remove(container)
        self.started.clear()


def container_ip(container: Container, network: str = "bridge") -> str:
    """The container's address on `network` (172.17.x.x on the default bridge)."""
    container.reload()
    ip = container.attrs["NetworkSettings"]["Networks"].get(network, {}).get("IPAddress")
    if not ip:
        raise AssertionError(f"container {container.name} has no address on {network}")
    return ip


def health_status(container: Container) -> str | None:
    """'starting', 'healthy' or 'unhealthy'; None without a healthcheck."""
    container.reload()
    return container.attrs["State"].get("Health", {}).get("Status")


def http_get(
    ip: str,
    path: str = "/",
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> Response:
    """One GET to port 80 of a container's address (never anything off this host)."""
    conn = http.client.HTTPConnection(ip, 80, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return Response(resp.status, resp.headers, resp.read())
    finally:
        conn.close()


# --- the daemon ----------------------------------------------------------------------


def dockerd_pid() -> int:
    """The pid of the dockerd that .ci/start-dockerd started, or skip/fail."""
    try:
        pid = int(DOCKERD_PIDFILE.read_text().strip())
    except (OSError, ValueError):
        docker_unavailable(f"no dockerd started by .ci/start-dockerd ({DOCKERD_PIDFILE})")
    if not _alive(pid):
        docker_unavailable(f"dockerd pid {pid} from {DOCKERD_PIDFILE} is not running")
    return pid


def _alive(pid: int) -> bool:
    """Whether `pid` is a running dockerd.

    dockerd is not our child, so a zombie left for init to reap counts as
    gone; the name check keeps a stale pidfile from aiming at a recycled pid.
    """
    try:
        proc = psutil.Process(pid)
        return proc.name() == "dockerd" and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def stop_dockerd(timeout: float = 30.0) -> None:
    """SIGTERM our dockerd and wait until it has exited; containers keep running."""
    pid = dockerd_pid()
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            raise AssertionError(f"dockerd (pid {pid}) still running {timeout}s after SIGTERM")
        time.sleep(0.05)


def start_dockerd(timeout: float = 90.0) -> None:
    """Start dockerd the CI way (.ci/start-dockerd) and wait until it answers."""
    result = subprocess.run(
        ["bash", str(START_DOCKERD)], capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        raise AssertionError(f"start-dockerd failed:\n{result.stdout}{result.stderr}")


def restart_dockerd() -> None:
    """Stop and start dockerd; with --live-restore its containers survive."""
    stop_dockerd()
    start_dockerd()


# --- fixtures (registered for every test module by conftest.py) --------------------------


@pytest.fixture(scope="module")
def client() -> docker.DockerClient:
    """A client of the test daemon (skips, or fails in CI, without one)."""
    return docker_client()


@pytest.fixture
def containers(client: docker.DockerClient) -> Iterator[Containers]:
    """A container factory; everything it started is removed at teardown."""
    factory = Containers(client)
    yield factory
    factory.cleanup()
