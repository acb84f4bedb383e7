"""The `portside` command line: run the proxy, check a config, or run a test backend."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse


def _address(text: str) -> tuple[str, int]:
    import argparse  # only where argparse runs: see main()

    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def _parser() -> argparse.ArgumentParser:
    import argparse  # only here: see main()

    parser = argparse.ArgumentParser(
        prog="portside", description="Reverse proxy and load balancer with Docker discovery."
    )
    parser.add_argument("--config", help="static configuration file (TOML)")
    sub = parser.add_subparsers(dest="command")

    check = sub.add_parser("check", help="validate the static and dynamic configuration, then exit")
    check.add_argument("--config", dest="check_config", required=True, help="static config file")

    whoami = sub.add_parser("whoami", help="run a small test backend that echoes requests")
    whoami.add_argument("--listen", type=_address, required=True, help="HOST:PORT to listen on")
    whoami.add_argument("--name", help="name to report (default: the hostname)")
    return parser


def run_config(argv: list[str]) -> str | None:
    """The config file of `portside --config FILE` (or `--config=FILE`), else None."""
    if len(argv) == 2 and argv[0] == "--config":
        return argv[1]
    if len(argv) == 1 and argv[0].startswith("--config="):
        return argv[0].removeprefix("--config=")
    return None


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `portside` console script."""
    argv = sys.argv[1:] if argv is None else argv
    # The command that forks the workers is read without argparse: workers are
    # forks of the master, so what it imports is in every worker (argparse, with
    # gettext and the shutil it imports to ask the terminal's width: 0.6 MB each).
    config = run_config(argv)
    if config is not None:
        from portside.master.arbiter import run

        return run(config)
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
