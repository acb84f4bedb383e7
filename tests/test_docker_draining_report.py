"""The Docker provider reports draining servers apart from the configuration, for the API."""

from __future__ import annotations

from typing import Any

from test_docker_watcher import URL_A, URL_B, A, B, Model

from portside.master.docker_provider import DockerWatcher
from portside.master.static_config import DockerProvider


class DrainingModel(Model):
    def __init__(self) -> None:
        super().__init__()
        self.draining: list[list[tuple[str, str]]] = []
        self.order: list[str] = []

        def report(config: dict[str, Any]) -> None:
            self.reports.append(config)
            self.order.append("config")

        def report_draining(servers: list[tuple[str, str]]) -> None:
            self.draining.append(servers)
            self.order.append("draining")

        self.watcher = DockerWatcher(DockerProvider(), ["web"], report, report_draining)


def test_draining_is_reported_before_the_config_then_cleared_on_die() -> None:
    model = DrainingModel()
    model.track(A, B)
    assert model.draining == [[]]  # the first report clears a predecessor's
    model.order.clear()
    model.event("kill", B, signal="15")
    assert model.draining[-1] == [("whoami", URL_B)]
    assert model.order == ["draining", "config"]  # never gone before it drains
    assert model.services == {"whoami": [URL_A]}
    # `die` leaves the routes as they were, but the draining server is gone.
    model.order.clear()
    model.event("die", B)
    assert model.draining[-1] == []
    assert model.order == ["draining"]
