"""Turning samples into the Markdown table, the CSV files and the chart."""

from __future__ import annotations

import csv
import os
import platform
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from perf.harness import OTHER_LOAD_WARNING, Options, Outcome, Sample

BASELINE = "nginx"
FILES = ("results.md", "results.csv", "raw.csv", "results.png")


@dataclass(frozen=True)
class Metric:
    """One column of the tables: its CSV key, its title and how a sample gives it.

    `seconds`, for CPU time per request, gives a sample's CPU seconds: those
    figures are pooled over the slices (all their seconds over all their
    requests) rather than taken as the median of the slices. /proc splits user
    from system time by sampling the mode at each timer tick (250 Hz here, and
    in 10 ms units), so a 2 s slice of nginx relaying uploads holds 4 to 12
    units of user time: a median of such slices, or of their ratios, jumped
    between runs (2.50 and 4.12 times nginx's, for the same code). Pooled, the
    whole run's ticks count.
    """

    key: str
    title: str
    fmt: str
    get: Callable[[Sample], float]
    seconds: Callable[[Sample], float] | None = None


METRICS: tuple[Metric, ...] = (
    Metric("rps", "req/s", "{:,.0f}", lambda s: s.rps),
    Metric("p50_ms", "p50 ms", "{:.2f}", lambda s: s.p50_ms),
    Metric("p99_ms", "p99 ms", "{:.2f}", lambda s: s.p99_ms),
    Metric("user_us", "user µs/req", "{:.1f}", lambda s: s.user_us, lambda s: s.user_s),
    Metric("sys_us", "sys µs/req", "{:.1f}", lambda s: s.sys_us, lambda s: s.sys_s),
    Metric(
        "total_us", "total µs/req", "{:.1f}", lambda s: s.total_us, lambda s: s.user_s + s.sys_s
    ),
    Metric("idle_rss_mb", "idle RSS MB", "{:.1f}", lambda s: s.idle_rss / 1e6),
    Metric("peak_rss_mb", "peak RSS MB", "{:.1f}", lambda s: s.peak_rss / 1e6),
)


@dataclass
class Stat:
    """One figure over the slices: its value (the median, or pooled: see Metric),
    and the lowest and highest slice."""

    value: float
    low: float
    high: float


@dataclass
class Row:
    """The runs of one proxy in one scenario, summarised.

    `samples` are the runs without errors, the only ones the figures come from:
    wrk counts a 502 as a request like any other, so a proxy failing fast would
    look fast and cheap. Runs with errors are kept apart in `failed`, counted in
    the errors column and listed under the run's problems.
    """

    scenario: str
    proxy: str
    samples: list[Sample]
    failed: list[Sample]

    def stat(self, metric: Metric) -> Stat:
        """The metric over the runs without errors (at least one: see _find)."""
        values = [metric.get(s) for s in self.samples]
        pooled = None if metric.seconds is None else _pooled(metric, self.samples)
        return _stat(values, pooled)

    @property
    def errors(self) -> int:
        """Errors wrk counted over every run of the row (all in the failed ones)."""
        return sum(s.errors for s in self.failed)


def _stat(values: list[float], pooled: float | None) -> Stat:
    """The values' range, with the pooled figure if there is one, else their median."""
    value = statistics.median(values) if pooled is None else pooled
    return Stat(value, min(values), max(values))


def _pooled(metric: Metric, samples: list[Sample]) -> float:
    """CPU µs per request over all these samples together (metric.seconds is set)."""
    seconds = sum(map(metric.seconds, samples))  # type: ignore[arg-type]
    return seconds * 1e6 / max(sum(s.requests for s in samples), 1)


def summarise(outcome: Outcome, opts: Options) -> list[Row]:
    """One row per (scenario, proxy), in run order."""
    rows = []
    for scenario in opts.scenarios:
        for proxy in opts.proxies:
            samples = [
                s for s in outcome.samples if s.scenario == scenario.name and s.proxy == proxy
            ]
            if samples:
                clean = [s for s in samples if not s.errors]
                failed = [s for s in samples if s.errors]
                rows.append(Row(scenario.name, proxy, clean, failed))
    return rows


def paired(row: Row, base: Row, metric: Metric) -> Stat | None:
    """row ÷ base over the slices both have (None if none): the median of the
    slice-by-slice ratios, or for a pooled metric the ratio of the pooled
    figures; low and high are the extreme slice-by-slice ratios.

    The slices of one turn are taken seconds apart, so the ratio of each pair
    cancels the drift of this shared machine better than a ratio of medians
    taken over the whole run.
    """
    base_by_slice = {s.slice_no: s for s in base.samples if metric.get(s)}
    pairs = [(s, base_by_slice[s.slice_no]) for s in row.samples if s.slice_no in base_by_slice]
    if not pairs:
        return None
    values = [metric.get(s) / metric.get(b) for s, b in pairs]
    pooled = None
    if metric.seconds is not None:
        pooled = _pooled(metric, [s for s, _ in pairs]) / _pooled(metric, [b for _, b in pairs])
    return _stat(values, pooled)


def ratio(rows: list[Row], row: Row, metric: Metric) -> Stat | None:
    """This row against nginx in the same scenario, slice by slice (None without nginx)."""
    base = _find(rows, row.scenario, BASELINE)
    return paired(row, base, metric) if base else None


def _ratio_cell(stat: Stat | None) -> str:
    return "" if stat is None else _cell("{:.2f}", stat, "×")


def _cell(fmt: str, stat: Stat, unit: str = "") -> str:
    """'median [min–max]', the range left out when it rounds to one value."""
    text = fmt.format(stat.value) + unit
    low, high = fmt.format(stat.low), fmt.format(stat.high)
    if low != high:
        text += f" [{low}–{high}]"
    return text


def _longer(opts: Options) -> str:
    """The scenarios measured for longer, as ' (upload: 4 s)'."""
    longer = [f"{s.name}: {opts.slice_for(s)} s" for s in opts.scenarios if s.length > 1]
    return f" ({', '.join(longer)})" if longer else ""


def _placement(outcome: Outcome) -> str:
    """Where the processes ran, for the report's header."""
    if outcome.cpu_split is None:
        return "No process was pinned to a CPU."
    proxy, load = (", ".join(map(str, sorted(c))) for c in outcome.cpu_split)
    return f"The proxy ran alone on CPU {proxy}; wrk, the backends and the harness on CPU {load}."


def markdown(rows: list[Row], outcome: Outcome, opts: Options, versions: dict[str, str]) -> str:
    """The whole report as Markdown."""
    runs = max((len(r.samples) for r in rows), default=0)
    process = "process" if opts.workers == 1 else "processes"
    lines = [
        f"# portside benchmark, {datetime.now():%Y-%m-%d %H:%M}",
        "",
        f"{os.cpu_count()} CPUs, Linux {platform.release()}. "
        f"{', '.join(versions[p] for p in opts.proxies if p in versions)}; "
        f"{opts.workers} proxy {process} each (HAProxy: threads). "
        f"Two nginx backends. wrk -t{opts.threads}. Rounds: {opts.repeat}; in each, every "
        f"proxy is started afresh for each scenario, warmed up for {opts.warmup:g} s, and "
        f"measured in {opts.slices} slices of {opts.slice_seconds} s{_longer(opts)} that take "
        "turns with "
        f"the other proxies' slices. {_placement(outcome)}",
        "",
        f"Cells: median [min–max] over the slices ({runs}). **÷ nginx**: the proxy's "
        "figure over nginx's in the slice of the same turn, median [min–max] over the "
        "slices (for req/s higher is better, for everything else lower). CPU per request: "
        "user and system time of all the proxy's processes, from /proc/<pid>/task/*/stat. "
        "RSS: the largest worker process, idle after start, and its peak sampled every "
        "100 ms during the slice. A slice in which wrk counted errors is left out of the "
        "figures (its errors are in the errors column, and listed at the end).",
    ]
    if outcome.samples:
        other = [s.other_cores for s in outcome.samples]
        steal = [s.steal_cores for s in outcome.samples]
        lines += [
            "",
            f"Other load: processes other than the proxy, the backends and wrk kept "
            f"{statistics.median(other):.2f} CPU cores busy during a slice in the median "
            f"(max {max(other):.2f}); hypervisor steal {statistics.median(steal):.2f} cores "
            f"(max {max(steal):.2f}). Both should be near 0 for trustworthy figures.",
        ]
        busy = [s for s in outcome.samples if s.other_cores > OTHER_LOAD_WARNING]
        if busy:
            lines[-1] += (
                f" **{len(busy)} of {len(other)} runs had more than {OTHER_LOAD_WARNING} "
                "cores of other load** (column other_cores in raw.csv): their figures "
                "are suspect."
            )
    for scenario in opts.scenarios:
        scenario_rows = [r for r in rows if r.scenario == scenario.name]
        if not scenario_rows:
            continue
        lines += [
            "",
            f"## {scenario.title} (`{scenario.name}`)",
            "",
            "| proxy | " + " | ".join(m.title for m in METRICS) + " | errors |",
            "|---" * (len(METRICS) + 2) + "|",
        ]
        for row in scenario_rows:
            if not row.samples:
                lines.append(f"| {row.proxy} |" + " failed |" * len(METRICS) + f" {row.errors} |")
                continue
            cells = [_cell(m.fmt, row.stat(m)) for m in METRICS]
            lines.append(f"| {row.proxy} | " + " | ".join(cells) + f" | {row.errors} |")
            if row.proxy != BASELINE and any(r.proxy == BASELINE for r in scenario_rows):
                ratios = [_ratio_cell(ratio(rows, row, m)) for m in METRICS]
                lines.append("| ÷ nginx | " + " | ".join(ratios) + " | |")
    lines += _targets(rows)
    if outcome.problems:
        lines += ["", "## Problems during the run", ""]
        lines += [f"- {p}" for p in outcome.problems]
    return "\n".join(lines) + "\n"


def _find(rows: list[Row], scenario: str, proxy: str) -> Row | None:
    """The row of a proxy in a scenario, if it has figures (a run without errors)."""
    return next(
        (r for r in rows if r.scenario == scenario and r.proxy == proxy and r.samples), None
    )


def _targets(rows: list[Row]) -> list[str]:
    """portside against issue 3's targets, from this run's figures."""
    by_key = {m.key: m for m in METRICS}
    out: list[tuple[str, str, str, bool]] = []
    keepalive = _find(rows, "keepalive", "portside")
    if keepalive and _find(rows, "keepalive", BASELINE):
        for key, limit, label in (
            ("total_us", 1.0, "total CPU per request, small GET keep-alive"),
            ("user_us", 2.0, "user CPU per request, small GET keep-alive"),
            ("p99_ms", 1.2, "p99 latency at 50 connections"),
        ):
            value = ratio(rows, keepalive, by_key[key])
            if value is not None:
                ok = value.value <= limit
                out.append((label, f"≤ {limit:.1f}× nginx", _ratio_cell(value), ok))
    one, many = _find(rows, "routes1", "portside"), _find(rows, "routes1000", "portside")
    growth = paired(many, one, by_key["total_us"]) if one and many else None
    if growth is not None:
        others = []
        for proxy in ("nginx", "haproxy"):
            one_other, many_other = _find(rows, "routes1", proxy), _find(rows, "routes1000", proxy)
            other = (
                paired(many_other, one_other, by_key["total_us"])
                if one_other and many_other
                else None
            )
            if other is not None:
                others.append(f"{proxy} {other.value - 1:+.1%}")
        measured = f"{growth.value - 1:+.1%}"
        if growth.low != growth.high:
            measured += f" [{growth.low - 1:+.1%}…{growth.high - 1:+.1%}]"
        measured += f" ({', '.join(others)})" if others else ""
        label = "1,000 routers instead of 1 (routes1000 vs routes1), CPU per request"
        out.append((label, "≤ +5%", measured, growth.value <= 1.05))
    portside_rows = [r for r in rows if r.proxy == "portside" and r.samples]
    if portside_rows:
        idle = max(s.idle_rss for r in portside_rows for s in r.samples) / 1e6
        out.append(
            ("worker RSS idle (largest, any scenario)", "≤ 30 MB", f"{idle:.1f} MB", idle <= 30)
        )
    c1000 = _find(rows, "c1000", "portside")
    if c1000:
        peak = max(s.peak_rss for s in c1000.samples) / 1e6
        out.append(
            ("worker RSS at 1,000 connections (peak)", "≤ 30 MB", f"{peak:.1f} MB", peak <= 30)
        )
    if not out:
        return []
    lines = [
        "",
        "## portside against the targets of issue 3",
        "",
        "| measure | target | this run | |",
    ]
    lines.append("|---|---|---|---|")
    lines += [
        f"| {label} | {target} | {value} | {'✓' if ok else '✗'} |"
        for label, target, value, ok in out
    ]
    return lines


def write_csv(rows: list[Row], path: Path) -> None:
    """Summary CSV: per scenario and proxy, each metric's median, min and max, and the
    same for its per-slice ratio against nginx."""
    header = ["scenario", "proxy", "runs", "errors"]
    for m in METRICS:
        header += [m.key, f"{m.key}_min", f"{m.key}_max"]
        header += [f"{m.key}_vs_nginx", f"{m.key}_vs_nginx_min", f"{m.key}_vs_nginx_max"]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for row in rows:
            line: list[object] = [row.scenario, row.proxy, len(row.samples), row.errors]
            for m in METRICS:
                if not row.samples:
                    line += [""] * 6
                    continue
                stat = row.stat(m)
                line += [f"{stat.value:.6g}", f"{stat.low:.6g}", f"{stat.high:.6g}"]
                versus = ratio(rows, row, m)
                line += (
                    [f"{v:.3f}" for v in (versus.value, versus.low, versus.high)]
                    if versus
                    else ["", "", ""]
                )
            writer.writerow(line)


def write_raw_csv(samples: list[Sample], path: Path) -> None:
    """Every measured run, one line each."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["scenario", "proxy", "slice", "rps", "p50_ms", "p99_ms", "requests", "errors"]
            + ["user_s", "sys_s", "user_us_per_req", "sys_us_per_req", "idle_rss", "peak_rss"]
            + ["other_cores", "steal_cores"]
        )
        for s in samples:
            writer.writerow(
                [s.scenario, s.proxy, s.slice_no, f"{s.rps:.1f}", s.p50_ms, s.p99_ms, s.requests]
                + [s.errors, f"{s.user_s:.2f}", f"{s.sys_s:.2f}", f"{s.user_us:.2f}"]
                + [f"{s.sys_us:.2f}", s.idle_rss, s.peak_rss]
                + [f"{s.other_cores:.3f}", f"{s.steal_cores:.3f}"]
            )


def chart(rows: list[Row], opts: Options, path: Path) -> None:
    """Small multiples: one column per scenario, one row per measure, one bar per proxy.

    Each panel has its own scale, since a 1 MiB upload costs 20 times a small GET.
    Bars are medians, whiskers min-max; CPU bars stack user (solid) on system (light).
    """
    import matplotlib

    matplotlib.use("Agg")  # no display: write a PNG
    import matplotlib.pyplot as plt

    scenarios = [s for s in opts.scenarios if any(r.scenario == s.name for r in rows)]
    proxies = [p for p in opts.proxies if any(r.proxy == p for r in rows)]
    if not scenarios or not proxies:
        return
    by_key = {m.key: m for m in METRICS}
    measures = (
        ("total_us", "CPU µs/request\n(solid: user)"),
        ("rps", "requests/s"),
        ("p99_ms", "p99 latency, ms"),
        ("peak_rss_mb", "peak worker RSS, MB"),
    )
    fig, axes = plt.subplots(
        len(measures), len(scenarios), figsize=(2.6 * len(scenarios) + 1, 10), squeeze=False
    )
    colours = [plt.get_cmap("tab10")(i) for i in range(len(proxies))]
    for col, scenario in enumerate(scenarios):
        for line, (key, label) in enumerate(measures):
            ax = axes[line][col]
            for i, proxy in enumerate(proxies):
                row = _find(rows, scenario.name, proxy)
                if row is None:
                    continue
                stat = row.stat(by_key[key])
                err = [[stat.value - stat.low], [stat.high - stat.value]]
                if key == "total_us":
                    # User time (the part the proxy's own code controls) below system time.
                    user = row.stat(by_key["user_us"]).value
                    ax.bar(i, user, color=colours[i])
                    ax.bar(i, stat.value - user, bottom=user, color=colours[i], alpha=0.4)
                else:
                    ax.bar(i, stat.value, color=colours[i])
                ax.errorbar(i, stat.value, yerr=err, fmt="none", ecolor="black", capsize=3)
            ax.set_xticks(range(len(proxies)), proxies, rotation=30, fontsize=8)
            ax.tick_params(axis="y", labelsize=8)
            ax.grid(axis="y", alpha=0.3)
            if line == 0:
                ax.set_title(scenario.name, fontsize=10)
            if col == 0:
                ax.set_ylabel(label, fontsize=9)
    fig.suptitle(
        f"median of {opts.repeat} rounds x {opts.slices} interleaved slices of "
        f"{opts.slice_seconds} s, whiskers min–max; {opts.workers} proxy process(es) each; "
        f"wrk -t{opts.threads}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
