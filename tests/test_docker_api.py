"""The API follows real Docker containers: up, draining while `docker stop` runs, gone."""

from __future__ import annotations

import threading

from conftest import wait_until
from docker_support import container_ip
from observability import start_with_admin

LABELS = {
    "traefik.enable": "true",
    "traefik.http.routers.obs.rule": "Host(`obs.localhost`)",
    "traefik.http.services.obs.loadbalancer.server.port": "80",
}
DOCKER = "[providers.docker]\nexposedByDefault = false\n"


def test_services_api_shows_a_stopping_container_up_then_draining_then_gone(portside, containers):
    stays = containers.run(labels=LABELS)
    goes = containers.run(labels=LABELS)
    admin = start_with_admin(portside, "", workers=2, extra=DOCKER)
    stays_url, goes_url = (f"http://{container_ip(c)}:80" for c in (stays, goes))
    wait_until(lambda: admin.server_states("obs@docker") == {stays_url: "up", goes_url: "up"})

    # busybox httpd ignores SIGTERM: the container drains for the whole 3 s grace.
    stopper = threading.Thread(target=goes.stop, kwargs={"timeout": 3})
    seen: list[str | None] = []

    def gone() -> bool:
        state = (admin.server_states("obs@docker") or {}).get(goes_url)
        if not seen or seen[-1] != state:
            seen.append(state)
        return state is None

    stopper.start()
    wait_until(gone, timeout=15)
    stopper.join(15)
    # The first look may come after Docker's `kill` already made it draining.
    assert seen in (["up", "draining", None], ["draining", None]), seen
    assert admin.server_states("obs@docker") == {stays_url: "up"}
    assert admin.total("portside_server_up", service="obs@docker") == 1
