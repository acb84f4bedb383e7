"""Benchmark portside against nginx and HAProxy (and Caddy, if asked) in one run.

Every scenario goes through every proxy, in front of the same two nginx
backends, all on 127.0.0.1. Writes perf/results/results.md, results.csv,
raw.csv and results.png, and prints the Markdown table.

    perf/run                         # everything: 7 scenarios x 3 proxies x 3 rounds
    perf/run --quick                 # one short round, to check that everything works
    perf/run --scenarios keepalive,close --repeat 5 --workers 2

Each proxy is measured for --duration seconds per scenario and round, in
--slices turns that alternate with the other proxies' (see perf/harness.py).
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import time
from pathlib import Path

from perf import _venv, harness, procs, proxies, report
from perf.scenarios import ALL, BY_NAME

DEFAULT_PROXIES = "portside,nginx,haproxy"


def _names(text: str, known: tuple[str, ...] | dict, what: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown {what} {', '.join(unknown)} (choose from {', '.join(known)})"
        )
    return names


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--scenarios",
        type=lambda t: _names(t, BY_NAME, "scenario"),
        default=[s.name for s in ALL],
        help=f"comma-separated, default all: {','.join(BY_NAME)}",
    )
    parser.add_argument(
        "--proxies",
        type=lambda t: _names(t, proxies.NAMES, "proxy"),
        default=DEFAULT_PROXIES.split(","),
        help=f"comma-separated, default {DEFAULT_PROXIES} (caddy and floor too if you want"
        " them: floor is perf/floor.py, the least a uvloop+httptools relay does)",
    )
    # None: the default, or --quick's when that is given.
    parser.add_argument("--repeat", type=int, help="rounds (default 3; --quick: 1)")
    parser.add_argument(
        "--duration", type=float, help="measured seconds per proxy and round (8; --quick: 4)"
    )
    parser.add_argument("--slices", type=int, help="turns the duration is taken in (4; --quick: 2)")
    parser.add_argument(
        "--warmup", type=float, help="warm-up seconds per proxy and round (1; --quick: 1)"
    )
    parser.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help="let the scheduler place the proxy, instead of giving it CPUs of its own",
    )
    parser.add_argument("--workers", type=int, default=1, help="proxy processes each (1)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (1)")
    parser.add_argument(
        "--results", type=Path, default=_venv.ROOT / "perf" / "results", help="perf/results"
    )
    parser.add_argument(
        "--quick", action="store_true", help="one round of short runs: a smoke test, not figures"
    )
    return parser


def main() -> int:
    """perf/run: run the benchmark, write and print the report; 1 if nothing was measured."""
    args = _parser().parse_args()
    defaults = (1, 4.0, 2, 1.0) if args.quick else (3, 8.0, 4, 1.0)
    given = (args.repeat, args.duration, args.slices, args.warmup)
    args.repeat, args.duration, args.slices, args.warmup = (
        d if g is None else g for g, d in zip(given, defaults, strict=True)
    )
    if min(args.repeat, args.workers, args.threads, args.slices) < 1 or args.duration < 1:
        print(
            "--repeat, --slices, --workers, --threads and --duration must be at least 1",
            file=sys.stderr,
        )
        return 2
    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None:
            print(f"{tool} is missing: apt-get install wrk nginx-light (make perf does, as root)")
            return 2
    names = []
    for name in args.proxies:
        if proxies.available(name):
            names.append(name)
        else:
            print(f"skipping {name}: not installed")
    if not names:
        return 2

    # SIGTERM unwinds like Ctrl-C, through the finally blocks that stop every process.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    limit = procs.raise_nofile_limit()
    opts = harness.Options(
        scenarios=[BY_NAME[n] for n in args.scenarios],
        proxies=names,
        repeat=args.repeat,
        duration=args.duration,
        slices=args.slices,
        warmup=args.warmup,
        pin=args.pin,
        workers=args.workers,
        threads=args.threads,
        results=args.results,
    )
    versions = {name: proxies.version(name) for name in names}
    estimate = harness.estimate_seconds(opts)
    print(
        f"{len(opts.scenarios)} scenarios x {len(names)} proxies x {opts.repeat} rounds, "
        f"{opts.warmup:g} s warm-up + {opts.slices} x {opts.slice_seconds} s each: "
        f"about {estimate / 60:.1f} min (open files limit {limit})"
    )
    started = time.monotonic()
    try:
        outcome = harness.run(opts)
    except KeyboardInterrupt:
        print("\ninterrupted; every process was stopped", file=sys.stderr)
        return 130
    elapsed = time.monotonic() - started

    rows = report.summarise(outcome, opts)
    args.results.mkdir(parents=True, exist_ok=True)
    text = report.markdown(rows, outcome, opts, versions)
    text += f"\nTotal run time {elapsed / 60:.1f} min (estimated {estimate / 60:.1f}).\n"
    (args.results / "results.md").write_text(text)
    report.write_csv(rows, args.results / "results.csv")
    report.write_raw_csv(outcome.samples, args.results / "raw.csv")
    report.chart(rows, opts, args.results / "results.png")
    print("\n" + text)
    print(f"Written: {', '.join(str(args.results / f) for f in report.FILES)}")
    return 1 if not outcome.samples else 0
