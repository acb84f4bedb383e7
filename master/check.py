"""`portside check --config FILE`: validate the static and dynamic configuration, then exit."""

from __future__ import annotations

import logging
import sys

from portside.master.dynamic_config import DynamicConfig, load_file_provider
from portside.master.errors import ConfigError, problem_text
from portside.master.schema import join_key
from portside.master.static_config import StaticConfig, load_static


def run_check(path: str) -> int:
    """Print "FILE: OK" per valid file (stdout) or "error: ..." per problem (stderr).

    Returns the process exit code: 0 if everything is valid, 1 otherwise.
    """
    # Warnings about ignored Traefik sections should read like the errors,
    # not like bare log records from the root logger's last-resort handler.
    logger = logging.getLogger("portside.config")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("warning: %(message)s"))
    logger.addHandler(handler)
    propagate, logger.propagate = logger.propagate, False
    try:
        return _check(path)
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def _check(path: str) -> int:
    try:
        static = load_static(path)
        print(f"{path}: OK")
        if static.file_provider is not None:
            load_file_config(static)
            print(f"{file_source(static)}: OK")
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return 1
    return 0


def file_source(static: StaticConfig) -> str:
    """The file or directory the file provider reads ("" without one)."""
    provider = static.file_provider
    return "" if provider is None else provider.filename or provider.directory or ""


def load_file_config(static: StaticConfig) -> DynamicConfig | None:
    """The file provider's dynamic configuration, validated against the static one.

    None without a file provider; ConfigError lists every problem.
    """
    if static.file_provider is None:
        return None
    dynamic = load_file_provider(static.file_provider)
    unknown = unknown_entry_points(dynamic, static, file_source(static))
    if unknown:
        raise ConfigError(unknown)
    return dynamic


def unknown_entry_points(dynamic: DynamicConfig, static: StaticConfig, source: str) -> list[str]:
    """Problems for routers naming entry points the static config does not define."""
    known = ", ".join(sorted(static.entry_points))
    return [
        problem_text(
            source,
            join_key(join_key("http.routers", router.name), "entryPoints"),
            f"unknown entry point {name!r} (defined: {known})",
        )
        for router in dynamic.routers.values()
        for name in router.entry_points or ()
        if name not in static.entry_points
    ]
