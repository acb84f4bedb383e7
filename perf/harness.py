"""One benchmark run: every scenario through every proxy, repeated and interleaved.

The run is made of rounds. Each round goes through every scenario; for each one
it starts every proxy fresh, warms each up, and then measures them in turns of
short slices: portside, nginx, HAProxy, portside, nginx, HAProxy... A slice of
one proxy and the slice of another next to it run seconds apart, so the ratio
of the two (the report pairs them) hardly sees this shared machine change
speed, which it does for tens of seconds at a time by 10-20%. The order is
rotated from slice to slice and round to round, so that no proxy always goes
first. A fresh process per scenario keeps one scenario's memory out of the next
one's peak. Scenarios that are compared with each other (routes1 and
routes1000) form one block: both configurations of a proxy are started together
and their slices taken back to back.

The proxy under test runs on CPUs of its own, wrk and the backends on the others
(procs.cpu_split says why).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from perf import backends as backends_mod
from perf import procs, proxies, wrk
from perf.measure import (
    CLK_TCK,
    RssSampler,
    cpu_seconds,
    cpu_snapshot,
    machine_ticks,
    max_rss,
    own_ticks,
    settle,
)
from perf.scenarios import Scenario, blocks

# Seconds a proxy takes to start and answer, as budgeted in the duration estimate.
_START_SECONDS = {"portside": 2.0, "nginx": 0.5, "haproxy": 0.5, "caddy": 1.0, "floor": 0.5}
_RUN_OVERHEAD = 0.2  # wrk start-up, /proc reads, connection set-up at 1,000 connections


# Other processes busier than this (in cores) during a run make its figures suspect.
OTHER_LOAD_WARNING = 0.25


@dataclass
class Options:
    """What to run, how often and for how long (perf/run's options)."""

    scenarios: list[Scenario]
    proxies: list[str]
    repeat: int = 3
    duration: float = 8.0  # measured seconds per proxy, scenario and round
    slices: int = 4  # ...taken in this many turns (whole seconds each)
    warmup: float = 1.0  # once per proxy, scenario and round, before its first slice
    workers: int = 1
    pin: bool = True  # the proxy on CPUs of its own (procs.cpu_split)
    threads: int = 1  # wrk threads: one leaves the other core to the proxy and backends
    results: Path = Path("perf/results")

    @property
    def slice_seconds(self) -> int:
        """wrk takes whole seconds."""
        return max(1, round(self.duration / self.slices))

    def slice_for(self, scenario: Scenario) -> int:
        """The seconds of one slice of this scenario (see Scenario.length)."""
        return self.slice_seconds * scenario.length


@dataclass
class Sample:
    """One measured wrk run (a slice) of one proxy in one scenario."""

    scenario: str
    proxy: str
    slice_no: int  # the slice of the whole run, from 1: proxies are compared slice by slice
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    user_s: float
    sys_s: float
    idle_rss: int  # bytes, largest worker, after start-up and before any load (this round)
    peak_rss: int  # bytes, largest worker, sampled during the run
    # CPU cores busy with something else than the proxy, the backends, wrk and this
    # harness (another benchmark on the same machine...), and stolen by the hypervisor.
    other_cores: float = 0.0
    steal_cores: float = 0.0

    @property
    def user_us(self) -> float:
        return self.user_s * 1e6 / max(self.requests, 1)

    @property
    def sys_us(self) -> float:
        return self.sys_s * 1e6 / max(self.requests, 1)

    @property
    def total_us(self) -> float:
        return self.user_us + self.sys_us


@dataclass
class Outcome:
    samples: list[Sample] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # failures and errors, for the report
    # (proxy CPUs, CPUs of wrk, the backends and the harness), or None: nothing pinned.
    cpu_split: tuple[set[int], set[int]] | None = None


def estimate_seconds(opts: Options) -> float:
    """How long `run` should take, from the options alone."""
    starts = sum(_START_SECONDS.get(p, 1.0) for p in opts.proxies)
    per_round = 0.0
    for scenario in opts.scenarios:
        measured = opts.slices * opts.slice_for(scenario)
        per_proxy = opts.warmup + measured + (opts.slices + 1) * _RUN_OVERHEAD
        per_round += starts + len(opts.proxies) * per_proxy
    return 2.0 + opts.repeat * per_round


def run(opts: Options, say: Callable[[str], None] = print) -> Outcome:
    """Run the whole benchmark; every process started here is stopped before returning."""
    outcome = Outcome()
    wrk_logs = opts.results / "wrk"
    wrk_logs.mkdir(parents=True, exist_ok=True)
    outcome.cpu_split = split = procs.cpu_split(opts.workers) if opts.pin else None
    proxy_cpus = None
    mask = os.sched_getaffinity(0)
    if split is not None:
        proxy_cpus, load_cpus = split
        say(f"proxy on CPU {sorted(proxy_cpus)}; wrk and backends on CPU {sorted(load_cpus)}")
        os.sched_setaffinity(0, load_cpus)  # inherited by wrk and the backends
    try:
        with tempfile.TemporaryDirectory(prefix="portside-perf-") as tmp:
            workdir = Path(tmp)
            os.chmod(workdir, 0o755)  # nginx workers run as nobody and read the 64 KiB file
            backends = backends_mod.start(workdir)
            try:
                for rep in range(opts.repeat):
                    say(f"\n== round {rep + 1} of {opts.repeat}")
                    for block in blocks(opts.scenarios):
                        _run_block(
                            opts, block, rep, workdir, backends, proxy_cpus, wrk_logs, outcome, say
                        )
            finally:
                procs.stop(backends.proc)
    finally:
        os.sched_setaffinity(0, mask)
    return outcome


def _run_block(
    opts: Options,
    block: list[Scenario],
    rep: int,
    workdir: Path,
    backends: backends_mod.Backends,
    proxy_cpus: set[int] | None,
    wrk_logs: Path,
    outcome: Outcome,
    say: Callable[[str], None],
) -> None:
    """One round of a block of scenarios: start every proxy for each, warm each up,
    then measure them in turns of slices."""
    scripts = {s.name: s.script(workdir) for s in block}
    running: dict[tuple[str, str], proxies.Running] = {}
    idle_rss: dict[tuple[str, str], int] = {}
    say("-- " + "; ".join(f"{s.name}: {s.title}" for s in block))
    try:
        for scenario in block:
            for name in opts.proxies:
                key = (scenario.name, name)
                folder = workdir / f"{scenario.name}-{name}"
                try:
                    running[key] = proxies.start(
                        name, folder, backends.ports, scenario.hosts(), opts.workers, proxy_cpus
                    )
                except RuntimeError as exc:
                    where = f"{scenario.name}/{name} round {rep + 1}"
                    outcome.problems.append(f"{where}: did not start: {_oneline(exc)}")
                    say(f"   {name}: did not start: {exc}")
                    continue
                idle_rss[key] = max_rss(running[key].worker_pids())
        by_name = {s.name: s for s in block}
        for key, proxy in list(running.items()):
            if not _warm_up(opts, by_name[key[0]], proxy, scripts[key[0]], rep, outcome):
                del running[key]
        for turn in range(opts.slices):
            # Rotated every slice and every round: no proxy, and no scenario of a
            # block, always runs first or last.
            shift = rep * opts.slices + turn
            for name in _rotate(opts.proxies, shift):
                for scenario in _rotate(block, shift):
                    key = (scenario.name, name)
                    if key not in running:
                        continue
                    sample = _measure(
                        opts,
                        scenario,
                        running[key],
                        idle_rss[key],
                        backends.proc.pid,
                        scripts[scenario.name],
                        shift + 1,
                        wrk_logs,
                        outcome,
                    )
                    if sample is None:
                        continue
                    outcome.samples.append(sample)
                    say(
                        f"   {name:9}{'' if len(block) == 1 else f' {scenario.name:11}'}"
                        f"{sample.rps:9,.0f} req/s  p99 {sample.p99_ms:7.2f} ms  "
                        f"user {sample.user_us:6.1f}  sys {sample.sys_us:6.1f} µs/req  "
                        f"peak RSS {sample.peak_rss / 1e6:5.1f} MB"
                        + (f"  ERRORS {sample.errors}" if sample.errors else "")
                    )
    finally:
        for proxy in running.values():
            procs.stop(proxy.proc)


def _warm_up(
    opts: Options,
    scenario: Scenario,
    proxy: proxies.Running,
    script: Path | None,
    rep: int,
    outcome: Outcome,
) -> bool:
    """Fill the proxy's upstream pools before its first slice; False (noted) if it failed."""
    if opts.warmup <= 0:
        return True
    try:
        wrk.run(wrk.command(scenario, proxy.port, opts.warmup, opts.threads, script), 1)
    except (RuntimeError, OSError) as exc:
        where = f"{scenario.name}/{proxy.name} round {rep + 1}"
        outcome.problems.append(f"{where}: warm-up failed: {_oneline(exc)}")
        return False
    return True


def _rotate(items: list, by: int) -> list:
    shift = by % len(items) if items else 0
    return items[shift:] + items[:shift]


def _measure(
    opts: Options,
    scenario: Scenario,
    proxy: proxies.Running,
    idle_rss: int,
    backend_pid: int,
    script: Path | None,
    slice_no: int,
    wrk_logs: Path,
    outcome: Outcome,
) -> Sample | None:
    """One measured wrk run, the run's slice `slice_no`; None (and a problem noted) if it failed."""
    where = f"{scenario.name}/{proxy.name} slice {slice_no}"
    if proxy.proc.poll() is not None:
        outcome.problems.append(f"{where}: proxy exited with {proxy.proc.returncode}")
        return None
    try:
        seconds = opts.slice_for(scenario)
        argv = wrk.command(scenario, proxy.port, seconds, opts.threads, script)
        pids = proxy.pids()
        # The proxy may still be closing the connections of the run before it (1,000
        # in c1000) when wrk exits: that work belongs to that run, not to this one.
        settle(pids)
        backend_pids = [p.pid for p in procs.tree(backend_pid)]
        sampler = RssSampler(proxy.worker_pids).start()
        before = cpu_snapshot(pids)
        backend_before = cpu_snapshot(backend_pids)
        machine_before, own_before, started = machine_ticks(), own_ticks(), time.monotonic()
        try:
            result = wrk.run(argv, seconds)
        finally:
            # Re-list the processes: a worker restarted during the run counts too.
            after = cpu_snapshot(proxy.pids())
            backend_after = cpu_snapshot(backend_pids)
            machine_after, own_after, wall = (
                machine_ticks(),
                own_ticks(),
                time.monotonic() - started,
            )
            peak = sampler.stop()
    except (RuntimeError, OSError) as exc:
        outcome.problems.append(f"{where}: {_oneline(exc)}")
        return None
    (wrk_logs / f"{scenario.name}-{proxy.name}-{slice_no}.txt").write_text(
        " ".join(argv) + "\n\n" + result.output
    )
    if result.errors:
        outcome.problems.append(
            f"{where}: {result.errors} errors out of {result.requests} requests "
            f"(see {wrk_logs}/{scenario.name}-{proxy.name}-{slice_no}.txt)"
        )
    user, system = cpu_seconds(before, after)
    busy = (machine_after[0] - machine_before[0]) / CLK_TCK
    ours = user + system + sum(cpu_seconds(backend_before, backend_after))
    ours += (own_after - own_before) / CLK_TCK
    other = max(0.0, busy - ours) / wall
    steal = (machine_after[1] - machine_before[1]) / CLK_TCK / wall
    return Sample(
        scenario.name,
        proxy.name,
        slice_no,
        result.rps,
        result.p50_ms,
        result.p99_ms,
        result.requests,
        result.errors,
        user,
        system,
        idle_rss,
        peak,
        other,
        steal,
    )


def _oneline(exc: BaseException) -> str:
    """An error (with a log tail, maybe) as one line for the report's list."""
    return " / ".join(line.strip() for line in str(exc).splitlines() if line.strip())
