"""The `portside` command line: run the proxy, check a config, or run a test backend."""

from __future__ import annotations

import argparse
import os
import sys


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def _formatter(prog: str) -> argparse.HelpFormatter:
    """argparse's help formatter, told the terminal's width.

    Left to find it, argparse imports shutil, which imports bz2 and lzma: 0.24 MB
    of modules that would stay in the master, and so in every worker it forks.
    """
    try:
        columns = os.get_terminal_size(sys.__stdout__.fileno()).columns
    except (AttributeError, ValueError, OSError):  # no stdout, or not a terminal
        columns = 80
    return argparse.HelpFormatter(prog, width=columns - 2)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="portside",
        description="Reverse proxy and load balancer with Docker discovery.",
        formatter_class=_formatter,
    )
    parser.add_argument("--config", help="static configuration file (TOML)")
    sub = parser.add_subparsers(dest="command")

    check = sub.add_parser(
        "check",
        help="validate the static and dynamic configuration, then exit",
        formatter_class=_formatter,
    )
    check.add_argument("--config", dest="check_config", required=True, help="static config file")

    whoami = sub.add_parser(
        "whoami", help="run a small test backend that echoes requests", formatter_class=_formatter
    )
    whoami.add_argument("--listen", type=_address, required=True, help="HOST:PORT to listen on")
    whoami.add_argument("--name", help="name to report (default: the hostname)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `portside` console script."""
    args = _parser().parse_args(argv)
    if args.command == "check":
        from portside.master.check import run_check

        return run_check(args.check_config)
    if args.command == "whoami":
        from portside.worker.whoami import serve

        host, port = args.listen
        serve(host, port, args.name)
        return 0
    if not args.config:
        _parser().error("--config FILE is required")
    from portside.master.arbiter import run

    return run(args.config)


if __name__ == "__main__":
    sys.exit(main())
