"""Tests for the in-memory model of portside.master.docker_provider.DockerWatcher.

No Docker daemon: inspect documents and events are plain dicts, and the
`inspect` callback is a stub. The reconnect loop (run_forever) is covered by
the tests that run a real engine.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from docker.errors import NotFound
from test_docker_labels import inspect_doc

from portside.master.docker_provider import DockerWatcher
from portside.master.static_config import DockerProvider

V1 = {
    "traefik.enable": "true",
    "traefik.backend": "whoami",
    "traefik.frontend.rule": "Host:whoami.docker.localhost",
}
RULE = "Host(`whoami.docker.localhost`)"
ROUTER = {"rule": RULE, "service": "whoami"}
A = inspect_doc("whoami-a", V1, ip="172.17.0.2")
B = inspect_doc("whoami-b", V1, ip="172.17.0.3")
URL_A = "http://172.17.0.2:80"
URL_B = "http://172.17.0.3:80"


class Model:
    """A DockerWatcher with its reports and the inspect calls it made."""

    def __init__(self) -> None:
        self.reports: list[dict[str, Any]] = []
        self.inspected: list[str] = []
        self.docs: dict[str, dict[str, Any]] = {}
        self.watcher = DockerWatcher(DockerProvider(), ["web"], self.reports.append)

    def track(self, *docs: dict[str, Any]) -> None:
        """Track running containers, publish, and forget that report."""
        for doc in docs:
            self.watcher.track(doc)
        self.watcher.publish()
        self.reports.clear()

    def inspect(self, cid: str) -> dict[str, Any]:
        """The engine's inspect: the document registered in `docs`, else NotFound."""
        self.inspected.append(cid)
        if cid not in self.docs:
            raise NotFound(f"No such container: {cid}")
        return self.docs[cid]

    def event(self, action: str, doc: dict[str, Any], **attributes: str) -> None:
        """Apply one container event as the engine sends it."""
        cid = doc["Id"]
        name = doc["Name"].lstrip("/")
        event = {
            "status": action,
            "id": cid,
            "Type": "container",
            "Action": action,
            "Actor": {"ID": cid, "Attributes": {"name": name, **attributes}},
            "time": 0,
        }
        self.watcher.apply_event(event, self.inspect)

    @property
    def routers(self) -> dict[str, Any]:
        return self.watcher.configuration()["http"]["routers"]

    @property
    def services(self) -> dict[str, list[str]]:
        """Service name -> the URLs of its servers in rotation."""
        services = self.watcher.configuration()["http"]["services"]
        return {
            name: [server["url"] for server in service["loadBalancer"]["servers"]]
            for name, service in services.items()
        }


@pytest.fixture
def model() -> Model:
    return Model()


def test_containers_with_one_backend_share_a_service(model: Model) -> None:
    model.track(A, B)
    assert model.routers == {"whoami": ROUTER}
    assert model.services == {"whoami": [URL_A, URL_B]}


def test_first_publish_reports_the_configuration(model: Model) -> None:
    model.watcher.track(A)
    model.watcher.publish()
    assert model.reports == [
        {
            "http": {
                "routers": {"whoami": ROUTER},
                "services": {"whoami": {"loadBalancer": {"servers": [{"url": URL_A}]}}},
            }
        }
    ]


def test_publish_reports_only_changes(model: Model) -> None:
    model.track(A)
    model.watcher.publish()
    assert model.reports == []
    model.watcher.track(B)
    model.watcher.publish()
    model.watcher.publish()
    assert len(model.reports) == 1
    assert model.reports[0]["http"]["services"]["whoami"]["loadBalancer"]["servers"] == [
        {"url": URL_A},
        {"url": URL_B},
    ]


# Docker numbers: TERM 15, INT 2, QUIT 3, KILL 9.
@pytest.mark.parametrize("signal", ["15", "2", "3", "9"])
def test_kill_drains(model: Model, signal: str) -> None:
    model.track(A, B)
    model.event("kill", A, signal=signal)
    assert model.services == {"whoami": [URL_B]}
    assert model.routers == {"whoami": ROUTER}
    assert len(model.reports) == 1


def test_router_stays_while_the_last_server_drains(model: Model) -> None:
    # Clients then get 503 (no server available), not 404, until `die`.
    model.track(A)
    model.event("kill", A, signal="15")
    assert model.routers == {"whoami": ROUTER}
    assert model.services == {"whoami": []}


def test_second_kill_reports_nothing(model: Model) -> None:
    # `docker stop` sends TERM, then KILL when the grace period ends.
    model.track(A, B)
    model.event("kill", A, signal="15")
    model.event("kill", A, signal="9")
    assert len(model.reports) == 1


@pytest.mark.parametrize("signal", ["1", "10"], ids=["HUP", "USR1"])
def test_kill_with_other_signals_changes_nothing(model: Model, signal: str) -> None:
    model.track(A, B)
    model.event("kill", A, signal=signal)
    assert model.services == {"whoami": [URL_A, URL_B]}
    assert model.reports == []


def test_kill_of_an_untracked_container_changes_nothing(model: Model) -> None:
    model.track(A)
    model.event("kill", B, signal="15")
    assert model.services == {"whoami": [URL_A]}
    assert model.reports == []


def test_die_removes_the_container(model: Model) -> None:
    model.track(A, B)
    model.event("kill", A, signal="15")
    model.event("die", A, exitCode="0")
    assert model.services == {"whoami": [URL_B]}
    model.event("die", B, exitCode="137")
    assert model.routers == {}
    assert model.services == {}
    assert model.reports[-1] == {"http": {"routers": {}, "services": {}}}


def test_start_inspects_once_and_adds(model: Model) -> None:
    model.track(A)
    model.docs[B["Id"]] = B
    model.event("start", B)
    assert model.inspected == [B["Id"]]
    assert model.services == {"whoami": [URL_A, URL_B]}
    assert len(model.reports) == 1


def test_start_of_a_container_already_gone(model: Model) -> None:
    model.track(A)
    model.event("start", B)  # removed before portside could inspect it
    assert model.inspected == [B["Id"]]
    assert model.services == {"whoami": [URL_A]}
    assert model.reports == []


def test_start_after_drain_puts_it_back(model: Model) -> None:
    # The write-up: `docker stop` then `docker start` of the same container.
    model.track(A, B)
    for action in ("kill", "die", "stop"):
        model.event(action, A, signal="15")
    model.docs[A["Id"]] = A
    model.event("start", A)
    assert model.services == {"whoami": [URL_A, URL_B]}


def test_healthcheck_starting_is_not_in_rotation(model: Model) -> None:
    model.track(A, inspect_doc("whoami-b", V1, ip="172.17.0.3", health="starting"))
    assert model.services == {"whoami": [URL_A]}


def test_health_status_events_gate_the_container(model: Model) -> None:
    model.docs[B["Id"]] = inspect_doc("whoami-b", V1, ip="172.17.0.3", health="starting")
    model.event("start", B)
    assert model.routers == {"whoami": ROUTER}
    assert model.services == {"whoami": []}
    model.event("health_status: healthy", B)
    assert model.services == {"whoami": [URL_B]}
    model.event("health_status: unhealthy", B)
    assert model.services == {"whoami": []}
    model.event("health_status: healthy", B)
    assert model.services == {"whoami": [URL_B]}
    assert len(model.reports) == 4


def test_healthy_does_not_undo_draining(model: Model) -> None:
    # Health checks keep running during the stop grace period.
    model.track(A, inspect_doc("whoami-b", V1, ip="172.17.0.3", health="healthy"))
    model.event("kill", B, signal="15")
    model.event("health_status: healthy", B)
    assert model.services == {"whoami": [URL_A]}


@pytest.mark.parametrize(
    "action",
    ["exec_create: sh -c true", "exec_start: sh -c true", "exec_die", "attach", "create", "top"],
)
def test_uninteresting_events_change_nothing(model: Model, action: str) -> None:
    model.track(A)
    model.event(action, A)
    model.event(action, B)
    assert model.inspected == []
    assert model.services == {"whoami": [URL_A]}
    assert model.reports == []


def test_oom_of_a_running_container_keeps_it(model: Model) -> None:
    model.track(A, B)
    model.event("oom", A)
    assert model.services == {"whoami": [URL_A, URL_B]}


@pytest.mark.parametrize(
    ("label", "value"),
    [
        ("traefik.frontend.rule", "Hots:bad.localhost"),
        ("traefik.port", "http"),
        ("traefik.frontend.entryPoints", "websecure"),
        ("traefik.port", "²"),
    ],
)
def test_bad_label_skips_only_that_container(
    model: Model, caplog: pytest.LogCaptureFixture, label: str, value: str
) -> None:
    bad = inspect_doc("broken", {**V1, label: value}, ip="172.17.0.9")
    with caplog.at_level(logging.ERROR, logger="portside.docker"):
        model.track(A, bad)
    assert model.routers == {"whoami": ROUTER}
    assert model.services == {"whoami": [URL_A]}
    [record] = caplog.records
    assert record.levelno == logging.ERROR
    assert "broken" in record.getMessage() and label in record.getMessage()


def test_router_with_an_undefined_service_is_dropped_and_logged_once(
    model: Model, caplog: pytest.LogCaptureFixture
) -> None:
    orphan = inspect_doc(
        "orphan",
        {
            "traefik.enable": "true",
            "traefik.http.routers.lost.rule": "Host(`lost`)",
            "traefik.http.routers.lost.service": "nowhere",
        },
        ip="172.17.0.9",
    )
    with caplog.at_level(logging.ERROR, logger="portside.docker"):
        model.track(A, orphan)
        model.event("kill", A, signal="1")
        model.docs[B["Id"]] = B
        model.event("start", B)
        model.watcher.publish()
    assert model.routers == {"whoami": ROUTER}
    assert model.services == {"whoami": [URL_A, URL_B], "orphan": ["http://172.17.0.9:80"]}
    [record] = caplog.records
    assert "lost" in record.getMessage() and "nowhere" in record.getMessage()


def test_shared_router_is_defined_by_the_first_container_by_name(model: Model) -> None:
    other_rule = {**V1, "traefik.frontend.rule": "Host:other.localhost"}
    model.track(inspect_doc("whoami-z", other_rule, ip="172.17.0.3"), A)
    assert model.routers == {"whoami": ROUTER}
    assert model.services == {"whoami": [URL_A, URL_B]}


def test_unexposed_container_is_ignored(model: Model) -> None:
    model.track(A, inspect_doc("db", {}, ip="172.17.0.9"))
    assert model.services == {"whoami": [URL_A]}


def test_reconcile_replaces_the_model(model: Model) -> None:
    c = inspect_doc("whoami-c", V1, ip="172.17.0.4")
    model.track(A, B)
    model.event("kill", B, signal="15")
    # After a reconnect: A stopped meanwhile, C started, B is listed as running.
    model.watcher.reconcile([B, c])
    model.watcher.publish()
    assert model.services == {"whoami": [URL_B, "http://172.17.0.4:80"]}
    assert len(model.reports) == 2


def test_reconcile_with_nothing_running(model: Model) -> None:
    model.track(A, B)
    model.watcher.reconcile([])
    assert model.watcher.configuration() == {"http": {"routers": {}, "services": {}}}


def paused(doc: dict[str, Any]) -> dict[str, Any]:
    """The same inspect document, for the container paused."""
    return {**doc, "State": {**doc["State"], "Paused": True}}


@pytest.mark.parametrize(
    "doc",
    [inspect_doc("whoami-b", V1, ip="172.17.0.3", running=False), paused(B)],
    ids=["not-running", "paused"],
)
def test_stopped_or_paused_containers_are_not_tracked(model: Model, doc: dict[str, Any]) -> None:
    model.track(A, doc)
    assert model.services == {"whoami": [URL_A]}
    # A fresh inspect in that state also drops a container already tracked.
    model.track(B, doc)
    assert model.services == {"whoami": [URL_A]}


@pytest.mark.parametrize(("remove", "restore"), [("pause", "unpause"), ("stop", "restart")])
def test_remove_then_inspect_again(model: Model, remove: str, restore: str) -> None:
    model.track(A, B)
    model.event(remove, B)
    assert model.services == {"whoami": [URL_A]}
    model.docs[B["Id"]] = B
    model.event(restore, B)
    assert model.services == {"whoami": [URL_A, URL_B]}


def test_event_without_container_id_is_ignored(model: Model) -> None:
    model.track(A)
    model.watcher.apply_event({"Type": "container", "Action": "die", "Actor": {}}, model.inspect)
    assert model.services == {"whoami": [URL_A]}
    assert model.reports == []
