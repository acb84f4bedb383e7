"""Tests for portside.master.snapshot.SnapshotBuilder: provider configs to the workers' snapshot.

Configs are built with parse_dynamic from Traefik-schema dicts, as the master
builds them from what the discovery process sends.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from portside.master.dynamic_config import DynamicConfig, parse_dynamic
from portside.master.shared_counters import SharedCounters, SlotAllocator
from portside.master.snapshot import SnapshotBuilder
from portside.worker.rules import default_priority

RULE = "Host(`a.localhost`)"
URL_1 = "http://127.0.0.1:9001"
URL_2 = "http://127.0.0.1:9002"


def config(
    routers: dict[str, dict[str, Any]] | None = None,
    services: dict[str, dict[str, Any]] | None = None,
    middlewares: dict[str, dict[str, Any]] | None = None,
) -> DynamicConfig:
    """A validated config from Traefik-schema sections; a service given as a list of URLs
    gets a plain load balancer over them."""
    services = {
        name: {"loadBalancer": {"servers": [{"url": url} for url in spec]}}
        if isinstance(spec, list)
        else spec
        for name, spec in (services or {}).items()
    }
    http = {"routers": routers or {}, "services": services, "middlewares": middlewares or {}}
    return parse_dynamic({"http": http}, "test")


def router(service: str = "whoami", **options: Any) -> dict[str, Any]:
    return {"rule": RULE, "service": service, **options}


def retry(attempts: int, interval: str = "0s") -> dict[str, Any]:
    return {"retry": {"attempts": attempts, "initialInterval": interval}}


def builder(entry_points: tuple[str, ...] = ("web", "admin")) -> SnapshotBuilder:
    return SnapshotBuilder(list(entry_points), SlotAllocator(SharedCounters(16)))


def routers_by_name(snapshot: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in snapshot["routers"]}


FILE = config({"whoami": router()}, {"whoami": [URL_1, URL_2]})


def test_snapshot_shape() -> None:
    snapshot = builder().build({"file": FILE})
    assert snapshot == {
        "generation": 1,
        "routers": [
            {
                "name": "whoami@file",
                "rule": RULE,
                "service": "whoami@file",
                "entryPoints": ["web", "admin"],
                "priority": default_priority(RULE),
                "retry": None,
            }
        ],
        "services": {
            "whoami@file": {
                "slot": 0,
                "servers": [
                    {"url": URL_1, "host": "127.0.0.1", "port": 9001, "weight": 1, "healthy": True},
                    {"url": URL_2, "host": "127.0.0.1", "port": 9002, "weight": 1, "healthy": True},
                ],
                "retry": None,
                "passiveHealthCheck": {"maxFailedAttempts": 3, "failureWindow": 10.0},
            }
        },
    }


def test_generations_count_up_and_slots_stay() -> None:
    build = builder()
    first = build.build({"file": FILE})
    second = build.build({"file": FILE, "docker": config(services={"api": [URL_1]})})
    third = build.build({})
    assert [s["generation"] for s in (first, second, third)] == [1, 2, 3]
    assert build.generation == 3
    # A service keeps its counter slot from one snapshot to the next.
    assert second["services"]["whoami@file"]["slot"] == first["services"]["whoami@file"]["slot"]
    assert second["services"]["api@docker"]["slot"] != second["services"]["whoami@file"]["slot"]
    assert third == {"generation": 3, "routers": [], "services": {}}


def test_names_are_qualified_across_providers() -> None:
    docker = config({"whoami": router(), "to-file": router("whoami@file")}, {"whoami": [URL_2]})
    file = config({"to-docker": router("whoami@docker")}, {"whoami": [URL_1]})
    snapshot = builder().build({"file": file, "docker": docker})
    assert set(snapshot["services"]) == {"whoami@file", "whoami@docker"}
    assert {name: r["service"] for name, r in routers_by_name(snapshot).items()} == {
        "whoami@docker": "whoami@docker",
        "to-file@docker": "whoami@file",
        "to-docker@file": "whoami@docker",
    }


@pytest.mark.parametrize(
    ("routers", "problem"),
    [
        (
            {"r": router("nope@docker")},
            "router r@file: unknown service 'nope@docker'",
        ),
        (
            {"r": router(middlewares=["auth@docker"])},
            "router r@file: unknown middleware 'auth@docker'",
        ),
        (
            {"r": router(entryPoints=["websecure"])},
            "router r@file: unknown entry point 'websecure'",
        ),
    ],
    ids=["service", "middleware", "entry-point"],
)
def test_unknown_references_drop_only_that_router(
    routers: dict[str, Any], problem: str, caplog: pytest.LogCaptureFixture
) -> None:
    file = config({"good": router(), **routers}, {"whoami": [URL_1]})
    build = builder()
    with caplog.at_level(logging.ERROR, logger="portside.master"):
        snapshot = build.build({"file": file})
    assert list(routers_by_name(snapshot)) == ["good@file"]
    assert build.problems == [problem]
    assert [r.getMessage() for r in caplog.records] == [f"{problem}; the router is not served"]
    # Problems are those of the latest build only.
    build.build({"file": FILE})
    assert build.problems == []


def test_router_keeps_its_known_entry_points() -> None:
    file = config({"r": router(entryPoints=["admin", "websecure"])}, {"whoami": [URL_1]})
    build = builder()
    snapshot = build.build({"file": file})
    assert snapshot["routers"][0]["entryPoints"] == ["admin"]
    assert build.problems == ["router r@file: unknown entry point 'websecure'"]


def test_router_retry_comes_from_its_first_retry_middleware() -> None:
    file = config(
        {
            "none": router(),
            "ignored-only": router(middlewares=["strip"]),
            "first-wins": router(middlewares=["strip", "retry-2", "retry-5"]),
            "other-provider": router(middlewares=["retry-9@docker", "retry-2"]),
            "off": router(middlewares=["no-retry"]),
        },
        {"whoami": [URL_1]},
        {
            "strip": {"stripPrefix": {"prefixes": ["/a"]}},
            "retry-2": retry(2, "100ms"),
            "retry-5": retry(5),
            "no-retry": retry(0),
        },
    )
    docker = config(middlewares={"retry-9": retry(9, "1s")})
    routers = routers_by_name(builder().build({"file": file, "docker": docker}))
    assert {name: r["retry"] for name, r in routers.items()} == {
        "none@file": None,
        "ignored-only@file": None,
        "first-wins@file": {"attempts": 2, "initialInterval": 0.1},
        "other-provider@file": {"attempts": 9, "initialInterval": 1.0},
        "off@file": {"attempts": 0, "initialInterval": 0.0},
    }


def test_unqualified_middleware_is_the_routers_providers() -> None:
    # The same name in two providers: each router gets its own provider's.
    file = config({"r": router(middlewares=["retry"])}, {"whoami": [URL_1]}, {"retry": retry(2)})
    docker = config({"r": router(middlewares=["retry"])}, {"whoami": [URL_1]}, {"retry": retry(7)})
    routers = routers_by_name(builder().build({"file": file, "docker": docker}))
    assert routers["r@file"]["retry"]["attempts"] == 2
    assert routers["r@docker"]["retry"]["attempts"] == 7


def test_a_later_unknown_middleware_still_drops_the_router() -> None:
    file = config(
        {"r": router(middlewares=["retry", "auth@docker"])},
        {"whoami": [URL_1]},
        {"retry": retry(2)},
    )
    build = builder()
    assert build.build({"file": file})["routers"] == []
    assert build.problems == ["router r@file: unknown middleware 'auth@docker'"]


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({}, None),
        ({"attempts": 2}, {"attempts": 2, "initialInterval": 0.0}),
        ({"initialInterval": "50ms"}, {"attempts": None, "initialInterval": 0.05}),
        ({"attempts": 0}, {"attempts": 0, "initialInterval": 0.0}),
        # disabled is folded into attempts, whatever attempts says.
        ({"attempts": 3, "disabled": True}, {"attempts": 0, "initialInterval": 0.0}),
        ({"disabled": False}, {"attempts": None, "initialInterval": 0.0}),
    ],
)
def test_service_retry(settings: dict[str, Any], expected: dict[str, Any] | None) -> None:
    balancer: dict[str, Any] = {"servers": [{"url": URL_1}]}
    if settings:
        balancer["retry"] = settings
    file = config(services={"whoami": {"loadBalancer": balancer}})
    assert builder().build({"file": file})["services"]["whoami@file"]["retry"] == expected


def test_service_passive_health_check() -> None:
    balancer = {
        "servers": [{"url": URL_1}],
        "passiveHealthCheck": {"maxFailedAttempts": 5, "failureWindow": "1m"},
    }
    file = config(services={"whoami": {"loadBalancer": balancer}})
    service = builder().build({"file": file})["services"]["whoami@file"]
    assert service["passiveHealthCheck"] == {"maxFailedAttempts": 5, "failureWindow": 60.0}


def test_unhealthy_servers_are_flagged() -> None:
    docker = config(services={"whoami": [URL_1, URL_2]})
    unhealthy = {
        ("whoami@file", URL_2),
        ("whoami@docker", URL_1),
        ("gone@file", URL_1),  # a service no longer configured: nothing to flag
    }
    services = builder().build({"file": FILE, "docker": docker}, unhealthy=unhealthy)["services"]
    assert {
        name: [(s["url"], s["healthy"]) for s in service["servers"]]
        for name, service in services.items()
    } == {
        "whoami@file": [(URL_1, True), (URL_2, False)],
        "whoami@docker": [(URL_1, False), (URL_2, True)],
    }


def test_unhealthy_accepts_any_collection_of_pairs() -> None:
    # The arbiter keeps a set of pairs; a list of them does as well.
    build = builder()
    as_list = build.build({"file": FILE}, [("whoami@file", URL_1)])
    as_set = build.build({"file": FILE}, {("whoami@file", URL_1)})
    assert as_list["services"] == as_set["services"]
    assert [s["healthy"] for s in as_set["services"]["whoami@file"]["servers"]] == [False, True]
