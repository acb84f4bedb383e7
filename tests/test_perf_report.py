"""The benchmark report (perf/report.py): which runs its figures come from."""

from __future__ import annotations

import csv
from pathlib import Path

from perf.harness import Options, Outcome, Sample
from perf.report import METRICS, markdown, ratio, summarise, write_csv
from perf.scenarios import BY_NAME

OPTS = Options(scenarios=[BY_NAME["keepalive"]], proxies=["portside", "nginx"])
TOTAL_US = next(m for m in METRICS if m.key == "total_us")


def sample(
    proxy: str, slice_no: int, cpu_s: float, errors: int = 0, requests: int = 1_000_000
) -> Sample:
    """A run of `requests` requests that cost `cpu_s` seconds of system time."""
    return Sample(
        "keepalive", proxy, slice_no, 50_000.0, 0.8, 3.0, requests, errors, 0.0, cpu_s, 1, 1
    )


def test_runs_with_errors_are_left_out_of_the_figures_and_counted() -> None:
    # Round 2 of portside failed fast (502s count as requests in wrk): its cheap
    # CPU per request must not pull the median or the ratio to nginx down.
    outcome = Outcome(
        [
            sample("portside", 1, 16.0),
            sample("portside", 2, 1.0, errors=900_000),
            sample("portside", 3, 18.0),
            *(sample("nginx", n, 15.0) for n in (1, 2, 3)),
        ]
    )
    rows = summarise(outcome, OPTS)
    portside = next(r for r in rows if r.proxy == "portside")
    assert [s.slice_no for s in portside.samples] == [1, 3]
    assert portside.errors == 900_000
    assert portside.stat(TOTAL_US).value == 17.0
    text = markdown(rows, outcome, OPTS, {})
    assert "| 17.0 [16.0–18.0] |" in text  # total µs/req over rounds 1 and 3
    assert "1.13× [1.07–1.20]" in text  # ÷ nginx, rounds 1 and 3 only
    assert "| 900000 |" in text


def test_a_proxy_whose_every_run_failed_has_no_figures(tmp_path: Path) -> None:
    outcome = Outcome(
        [sample("portside", 1, 1.0, errors=5), *(sample("nginx", n, 15.0) for n in (1, 2))]
    )
    rows = summarise(outcome, OPTS)
    text = markdown(rows, outcome, OPTS, {})
    assert "| portside | failed | failed |" in text
    assert "| ÷ nginx |" not in text  # no ratio from a row without figures
    write_csv(rows, tmp_path / "results.csv")
    with open(tmp_path / "results.csv") as f:
        line = next(r for r in csv.DictReader(f) if r["proxy"] == "portside")
    assert (line["runs"], line["errors"], line["total_us"]) == ("0", "5", "")


def test_cpu_per_request_is_pooled_over_the_slices_and_so_is_its_ratio() -> None:
    # /proc's user/system split comes in ticks: a slice with few of them is a
    # coarse figure, so the slices' seconds are added up, not their figures' median.
    outcome = Outcome(
        [
            sample("portside", 1, 10.0),  # 10 µs/req
            sample("portside", 2, 20.0, requests=3_000_000),  # 6.7 µs/req
            *(sample("nginx", n, 5.0) for n in (1, 2)),  # 5 µs/req
        ]
    )
    rows = summarise(outcome, OPTS)
    portside = next(r for r in rows if r.proxy == "portside")
    total = portside.stat(TOTAL_US)
    assert (total.value, total.low, total.high) == (7.5, 20.0 / 3, 10.0)  # 30 s / 4M requests
    versus = ratio(rows, portside, TOTAL_US)
    assert versus is not None
    assert versus.value == 1.5  # 7.5 over 5, not the median of 2.0 and 1.33
    assert (round(versus.low, 2), versus.high) == (1.33, 2.0)


def test_the_header_says_where_the_run_placed_the_processes() -> None:
    samples = [sample(proxy, 1, 5.0) for proxy in ("portside", "nginx")]
    pinned = Outcome(list(samples), cpu_split=({1}, {0}))
    text = markdown(summarise(pinned, OPTS), pinned, OPTS, {})
    assert "The proxy ran alone on CPU 1; wrk, the backends and the harness on CPU 0." in text
    unpinned = Outcome(list(samples))
    assert "No process was pinned to a CPU." in markdown(
        summarise(unpinned, OPTS), unpinned, OPTS, {}
    )
