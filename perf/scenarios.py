"""The workloads: what wrk sends, over how many connections, to which hosts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

UPLOAD_BYTES = 1024 * 1024
SINGLE_HOST = "bench.localhost"


@dataclass(frozen=True)
class Scenario:
    """One workload, identical for every proxy."""

    name: str  # short id: CLI, CSV, file names
    title: str  # what the report calls it
    connections: int = 50
    path: str = "/"
    routes: int = 1  # Host routers configured in the proxy
    headers: tuple[str, ...] = ()  # extra wrk -H headers
    lua: str | None = None  # wrk script source
    # Scenarios of one group are compared with each other: the harness starts them
    # together and measures them back to back (see harness.py).
    group: str | None = None
    # Measured this many times as long as the others. nginx spends 4% of an upload
    # in user mode, a few clock ticks per slice: with twice the time, four runs of
    # the upload alone agreed on 42 instead of 35 of 48 ratios, pair by pair.
    length: int = 1

    def hosts(self) -> list[str]:
        """The hostnames the proxy routes (requests spread over all of them)."""
        if self.routes == 1:
            return [SINGLE_HOST]
        return [f"host{i}.bench" for i in range(self.routes)]

    def script(self, workdir: Path) -> Path | None:
        """Write the wrk Lua script, if any, and return its path."""
        if self.lua is None:
            return None
        path = workdir / f"{self.name}.lua"
        path.write_text(self.lua)
        return path


# wrk builds the request once (method, body, headers) and resends it: no Lua per request.
_UPLOAD_LUA = f"""
wrk.method = "POST"
wrk.body = string.rep("x", {UPLOAD_BYTES})
wrk.headers["Content-Type"] = "application/octet-stream"
"""

# 1,000 requests are formatted once per thread; each request then picks one at random.
# With one route they all carry the same Host: the same work for wrk, so `routes1`
# is the baseline that `routes1000` is compared with (wrk's Lua `request()` path
# changes how requests reach the proxy, so the plain `keepalive` run is not).
_SPREAD_LUA = """
local requests = {}
init = function(args)
  for i = 0, 999 do
    local host = %(routes)d == 1 and "%(single)s" or ("host" .. (i %% %(routes)d) .. ".bench")
    requests[i + 1] = wrk.format("GET", "/", { ["Host"] = host })
  end
  math.randomseed(12345)
end
request = function()
  return requests[math.random(1000)]
end
"""

ALL: tuple[Scenario, ...] = (
    Scenario("keepalive", "small GET, keep-alive, 50 connections"),
    Scenario("close", "small GET, new connection per request", headers=("Connection: close",)),
    Scenario("64k", "64 KiB response, keep-alive", path="/64k"),
    Scenario("upload", "1 MiB POST upload, keep-alive", path="/upload", lua=_UPLOAD_LUA, length=2),
    Scenario("c1000", "small GET, keep-alive, 1,000 connections", connections=1000),
    Scenario(
        "routes1",
        "small GET, 1 Host router, through the routes1000 wrk script",
        lua=_SPREAD_LUA % {"routes": 1, "single": SINGLE_HOST},
        group="routes",
    ),
    Scenario(
        "routes1000",
        "small GET, 1,000 Host routers, requests spread over them",
        routes=1000,
        lua=_SPREAD_LUA % {"routes": 1000, "single": SINGLE_HOST},
        group="routes",
    ),
)
BY_NAME = {s.name: s for s in ALL}


def blocks(scenarios: list[Scenario]) -> list[list[Scenario]]:
    """Scenarios in run order, those of one group together, each other one alone."""
    out: list[list[Scenario]] = []
    for scenario in scenarios:
        if scenario.group and out and out[-1][0].group == scenario.group:
            out[-1].append(scenario)
        else:
            out.append([scenario])
    return out
