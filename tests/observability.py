"""Helpers for the tests of the internal services: an admin entry point, metrics, the API."""

from __future__ import annotations

import json
from typing import Any

from conftest import Portside, free_port, request
from prometheus_client.parser import text_string_to_metric_families


def admin_static(port: int, *, api: str = "", extra: str = "") -> str:
    """Static settings: an `admin` entry point on `port` serving api, ping and metrics."""
    return f"""
    [entryPoints.admin]
    address = "127.0.0.1:{port}"

    [api]
    entryPoint = "admin"
    {api}

    [ping]
    entryPoint = "admin"

    [metrics.prometheus]
    entryPoint = "admin"
    {extra}
    """


class Admin:
    """The admin entry point of a running portside."""

    def __init__(self, proxy: Portside, port: int) -> None:
        self.proxy = proxy
        self.port = port

    def get(self, path: str, **kwargs: Any):
        return request(self.port, "admin.localhost", path, **kwargs)

    def api(self, path: str) -> Any:
        response = self.get("/api/" + path)
        assert response.status == 200, (path, response.status, response.text)
        return json.loads(response.body)

    def samples(self, name: str) -> list[tuple[dict[str, str], float]]:
        """Every sample of a metric in /metrics, as (labels, value)."""
        response = self.get("/metrics")
        assert response.status == 200
        return [
            (sample.labels, sample.value)
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples
            if sample.name == name
        ]

    def total(self, name: str, **labels: str) -> float:
        """The sum of a metric's samples whose labels include `labels`."""
        return sum(
            value
            for sample_labels, value in self.samples(name)
            if all(sample_labels.get(k) == v for k, v in labels.items())
        )

    def server_states(self, service: str) -> dict[str, str] | None:
        """url -> state of a service's servers, or None while the service does not exist."""
        response = self.get("/api/http/services/" + service)
        if response.status == 404:
            return None
        return json.loads(response.body)["serverStatus"]


def start_with_admin(portside, dynamic: str, workers: int = 1, **settings: str) -> Admin:
    """Start portside with an admin entry point; settings go to admin_static."""
    port = free_port()
    proxy = portside(dynamic, workers=workers, extra_static=admin_static(port, **settings))
    return Admin(proxy, port)
