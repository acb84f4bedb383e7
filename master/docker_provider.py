"""The Docker provider: follow the engine's events and keep routes in step.

It runs in a thread of the discovery process (the Docker SDK blocks, and
discovery never forks). At connect it lists the running containers once,
then applies each container event on its own: one `inspect` at most, never a
full re-list, and no throttle, so a route is live milliseconds after
`docker start` returns (Traefik waits 2 s by default).

Lifecycle (DESIGN §5):
- `start`: the container's servers join, once healthy if it has a healthcheck;
- `kill` with TERM, INT, QUIT or KILL: its servers drain at once. Docker sends
  this when `docker stop` begins, while `die` follows only after the grace
  period (Traefik waits for `die`: its issue #11252). A `kill` with any other
  signal changes nothing;
- `die`: the container is removed;
- `health_status`: it moves in or out of rotation.

When the daemon goes away the events stream simply ends (or raises). The
last routes stay in force; the provider reconnects with backoff, lists
again and reconciles, so changes made meanwhile are picked up.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import docker
from docker.errors import DockerException, NotFound
from requests.exceptions import RequestException

from portside.master.docker_labels import ContainerInfo, LabelError, Routing, container_routing
from portside.master.static_config import DockerProvider

log = logging.getLogger("portside.docker")

#: Signals with which `docker stop`/`docker kill` end a container.
DRAIN_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGKILL})
_BACKOFF_FIRST = 0.1
_BACKOFF_MAX = 5.0
# Not "oom": the OOM killer may end a process other than PID 1, and the
# container then keeps running; if it does exit, `die` follows.
_REMOVING = frozenset({"die", "stop", "pause", "destroy"})
_INSPECTING = frozenset({"start", "unpause", "restart", "rename", "update"})

Report = Callable[[dict[str, Any]], None]
#: Receives the (service, server url) pairs of the containers being drained.
ReportDraining = Callable[[list[tuple[str, str]]], None]


@dataclass
class Tracked:
    """A running container as the provider sees it."""

    info: ContainerInfo
    routing: Routing | None  # None: not exposed, or its labels are invalid
    draining: bool = False

    @property
    def in_rotation(self) -> bool:
        """Whether new requests may go to it."""
        if self.draining:
            return False
        return not self.info.has_healthcheck or self.info.health == "healthy"


class DockerWatcher:
    """Keeps a model of the running containers and reports the routes they define."""

    def __init__(
        self,
        settings: DockerProvider,
        entry_points: Collection[str],
        report: Report,
        report_draining: ReportDraining | None = None,
    ) -> None:
        self.settings = settings
        self.entry_points = entry_points
        self._report = report
        self._report_draining = report_draining
        self._containers: dict[str, Tracked] = {}
        self._last: dict[str, Any] | None = None
        # None: the first report always goes out, so a restarted discovery process
        # clears what its predecessor reported.
        self._last_draining: list[tuple[str, str]] | None = None
        self._reported: set[str] = set()

    # -- the model ------------------------------------------------------------

    def configuration(self) -> dict[str, Any]:
        """The merged routers, services and middlewares, in Traefik's schema.

        Where containers define the same router, service options or
        middleware, the first container by name wins.
        """
        routers: dict[str, dict[str, Any]] = {}
        servers: dict[str, list[dict[str, Any]]] = {}
        options: dict[str, dict[str, Any]] = {}
        middlewares: dict[str, dict[str, Any]] = {}
        for tracked in sorted(self._containers.values(), key=lambda t: t.info.name):
            routing = tracked.routing
            if routing is None:
                continue
            for name, router in routing.routers.items():
                routers.setdefault(name, router)
            for name, server in routing.servers.items():
                members = servers.setdefault(name, [])
                # Routers stay while a service drains, so clients get 503 (no
                # server available), not 404, until the last container is gone.
                if tracked.in_rotation:
                    members.append(server)
            for name, service_options in routing.service_options.items():
                options.setdefault(name, service_options)
            for name, middleware in routing.middlewares.items():
                middlewares.setdefault(name, middleware)
        for name, router in list(routers.items()):
            # One container naming something nobody defines must not make
            # the master reject every container's routes.
            service = router["service"]
            missing = [m for m in router.get("middlewares", ()) if "@" not in m]
            missing = [m for m in missing if m not in middlewares]
            if "@" not in service and service not in servers:
                self._problem(f"router {name}: unknown service {service!r}; router skipped")
                del routers[name]
            elif missing:
                self._problem(f"router {name}: unknown middleware {missing[0]!r}; router skipped")
                del routers[name]
        services = {
            name: {"loadBalancer": {**options.get(name, {}), "servers": members}}
            for name, members in servers.items()
        }
        config: dict[str, Any] = {"routers": routers, "services": services}
        if middlewares:
            config["middlewares"] = middlewares
        return {"http": config}

    def _problem(self, text: str) -> None:
        """Log a configuration problem once, not on every event."""
        if text not in self._reported:
            self._reported.add(text)
            log.error("docker: %s", text)

    def draining(self) -> list[tuple[str, str]]:
        """(service, server url) of every container being drained: out of the configuration
        already, but still finishing requests until it dies (shown by the API)."""
        return sorted(
            (service, server["url"])
            for tracked in self._containers.values()
            if tracked.draining and tracked.routing is not None
            for service, server in tracked.routing.servers.items()
        )

    def publish(self) -> None:
        """Report the configuration, and the draining servers, if they changed since the
        last report. Draining first, so that a server never looks gone before it drains."""
        draining = self.draining()
        if draining != self._last_draining and self._report_draining is not None:
            self._report_draining(draining)
        self._last_draining = draining
        config = self.configuration()
        if config != self._last:
            self._last = config
            self._report(config)

    def track(self, attrs: dict[str, Any]) -> None:
        """Add or refresh a container from its inspect document."""
        info = ContainerInfo.from_inspect(attrs)
        state = attrs.get("State") or {}
        if not state.get("Running") or state.get("Paused"):
            self._containers.pop(info.id, None)
            return
        try:
            routing = container_routing(info, self.settings, self.entry_points)
        except LabelError as exc:
            log.error("container %s skipped: %s", info.name, exc)
            routing = None
        self._containers[info.id] = Tracked(info, routing)

    def reconcile(self, running: list[dict[str, Any]]) -> None:
        """Replace the model with a fresh listing (after a (re)connect)."""
        self._containers.clear()
        self._reported.clear()
        for attrs in running:
            self.track(attrs)

    def apply_event(self, event: dict[str, Any], inspect: Callable[[str], dict[str, Any]]) -> None:
        """Update the model for one container event."""
        action = str(event.get("Action") or event.get("status") or "")
        cid = event.get("id") or (event.get("Actor") or {}).get("ID")
        if not cid:
            return
        tracked = self._containers.get(cid)
        if action == "kill":
            signum = _signal_number((event.get("Actor") or {}).get("Attributes", {}).get("signal"))
            if tracked is not None and signum in DRAIN_SIGNALS and not tracked.draining:
                log.info("container %s stopping (signal %s): draining", tracked.info.name, signum)
                tracked.draining = True
        elif action.startswith("health_status"):
            status = action.partition(":")[2].strip()
            if tracked is not None and status:
                tracked.info = dataclasses.replace(tracked.info, health=status)
        elif action in _REMOVING:
            self._containers.pop(cid, None)
        elif action in _INSPECTING:
            try:
                attrs = inspect(cid)
            except NotFound:
                self._containers.pop(cid, None)
            else:
                self.track(attrs)
        else:
            return  # exec_*, attach, create, ...: nothing routing cares about
        self.publish()

    # -- the connection ---------------------------------------------------------

    def run_forever(self, stop: threading.Event) -> None:
        """Connect, list, follow events; on any failure reconnect with backoff."""
        backoff = _BACKOFF_FIRST
        failures = 0
        while not stop.is_set():
            try:
                client = docker.DockerClient(base_url=self.settings.endpoint)
                client.ping()
                # Subscribe before listing, so no event between the two is lost;
                # applying one twice is harmless.
                events = client.api.events(decode=True, filters={"type": "container"})
                running = _inspect_running(client)
            except (DockerException, RequestException, OSError) as exc:
                failures += 1
                if failures == 1:
                    log.warning(
                        "docker: cannot reach %s (%s); keeping the last routes and retrying",
                        self.settings.endpoint,
                        exc,
                    )
                    if self._last is None:
                        self.publish()  # an empty config, so the other providers' routes serve
                else:
                    log.debug("docker: attempt %d failed: %s", failures, exc)
                stop.wait(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)
                continue
            log.info(
                "docker: connected to %s%s, %d running containers",
                self.settings.endpoint,
                f" after {failures + 1} attempts" if failures else "",
                len(running),
            )
            failures, backoff = 0, _BACKOFF_FIRST
            try:
                self.reconcile(running)
                self.publish()
                if not self.settings.watch:
                    return
                self._follow(client, events)
                log.warning("docker: the events stream ended (daemon restarting?); reconnecting")
            except Exception:
                # Whatever the stream or a container's data throws (urllib3's
                # ProtocolError when the daemon dies mid-chunk, a bad frame):
                # reconnect and re-list rather than let discovery go quiet.
                log.exception("docker: provider error; reconnecting")
                stop.wait(backoff)
            finally:
                client.close()

    def _follow(self, client: docker.DockerClient, events: Any) -> None:
        try:
            for event in events:
                try:
                    self.apply_event(event, client.api.inspect_container)
                except (DockerException, RequestException, OSError):
                    raise
                except Exception:
                    # One unexpected event must not end discovery for good:
                    # log it and keep following the stream.
                    log.exception("docker: cannot apply event %r", event)
        except (DockerException, RequestException, OSError) as exc:
            log.debug("docker: events stream failed: %s", exc)


def _inspect_running(client: docker.DockerClient) -> list[dict[str, Any]]:
    running = []
    for summary in client.api.containers(filters={"status": "running"}):
        try:
            running.append(client.api.inspect_container(summary["Id"]))
        except NotFound:
            # It went away between the listing and its inspect (the SDK's
            # ignore_removed case): it is simply not there.
            continue
    return running


def _signal_number(value: object) -> int | None:
    try:
        return int(str(value))
    except ValueError:
        try:
            return int(signal.Signals["SIG" + str(value).upper().removeprefix("SIG")])
        except KeyError:
            return None


def start_watcher(
    settings: DockerProvider,
    entry_points: Collection[str],
    report: Report,
    report_draining: ReportDraining | None = None,
) -> threading.Event:
    """Run the Docker provider in a daemon thread; set the returned event to stop it."""
    stop = threading.Event()
    watcher = DockerWatcher(settings, entry_points, report, report_draining)
    thread = threading.Thread(
        target=watcher.run_forever, args=(stop,), name="docker-provider", daemon=True
    )
    thread.start()
    return stop
