"""Small helpers shared by the static and dynamic config validators.

`Table` wraps one TOML table and reads typed values out of it, recording a
problem (with the full dotted key) instead of raising, so one pass reports
everything that is wrong.
"""

from __future__ import annotations

import difflib
import ipaddress
import logging
import re
import tomllib
from collections.abc import Collection, Iterator, Mapping
from typing import Any

from portside.master.durations import parse_duration
from portside.master.errors import ConfigError, Problems, problem_text
from portside.master.sizes import parse_size

log = logging.getLogger("portside.config")

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
# DNS labels; underscores are allowed because Docker and compose names use them.
_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")
_TYPE_NAMES = {
    str: "string",
    int: "integer",
    float: "float",
    bool: "boolean",
    dict: "table",
    list: "array",
}


def read_toml(path: str) -> dict[str, Any]:
    """Read and parse a TOML file; ConfigError names the file (and line/column for syntax)."""
    try:
        with open(path, "rb") as fp:
            return tomllib.load(fp)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError([problem_text(path, None, f"cannot read file: {reason}")]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([problem_text(path, None, "not valid UTF-8 text")]) from exc
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message already carries "(at line L, column C)".
        raise ConfigError([problem_text(path, None, f"invalid TOML: {exc}")]) from exc


def join_key(prefix: str, name: str) -> str:
    """The dotted key of `name` under `prefix`, quoting names TOML would need quoted."""
    part = name if _BARE_KEY.fullmatch(name) else '"' + name.replace('"', '\\"') + '"'
    return f"{prefix}.{part}" if prefix else part


def type_name(value: object) -> str:
    """The TOML name of a value's type, for "expected X, got Y" messages."""
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def describe(value: object) -> str:
    """`value` as "<type> <repr>", shortened so a stray table does not flood the output."""
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type_name(value)} {text}"


def is_host(text: str) -> bool:
    """True for an IP address or a syntactically valid host name."""
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        pass
    labels = text[:-1].split(".") if text.endswith(".") else text.split(".")
    # An all-numeric last label is a mistyped IPv4 address ("10.0.0.300"), not a name.
    return (
        len(text) <= 253
        and all(_HOST_LABEL.fullmatch(label) for label in labels)
        and not labels[-1].isdigit()
    )


class Table:
    """A TOML table under validation, located at dotted key `key` (empty for the root)."""

    __slots__ = ("data", "key", "problems")

    def __init__(self, data: Mapping[str, Any], key: str, problems: Problems) -> None:
        self.data = data
        self.key = key
        self.problems = problems

    def __contains__(self, name: str) -> bool:
        return name in self.data

    def child(self, name: str) -> str:
        """The dotted key of entry `name`."""
        return join_key(self.key, name)

    def problem(self, name: str | None, message: str) -> None:
        """Record a problem about entry `name` (None: about this table itself)."""
        self.problems.add(self.child(name) if name is not None else self.key or None, message)

    def check_keys(self, known: Collection[str], *, ignored: Collection[str] = ()) -> None:
        """Report keys not in `known`; warn about (and skip) keys in `ignored`."""
        for name in self.data:
            if name in known:
                continue
            if name in ignored:
                log.warning(
                    "%s: %s: not supported yet, ignored", self.problems.source, self.child(name)
                )
                continue
            hint = difflib.get_close_matches(name, list(known), n=1)
            suffix = f" (did you mean {hint[0]!r}?)" if hint else ""
            self.problem(name, f"unknown key{suffix}")

    def get(self, name: str, kind: type | tuple[type, ...], expected: str) -> Any:
        """The value of `name` if of type `kind`; else None (recording a problem if wrong)."""
        value = self.data.get(name)
        if value is None:
            return None
        # bool is an int subclass, but `priority = true` is a mistake, not 1.
        wrong_bool = isinstance(value, bool) and bool not in _as_tuple(kind)
        if wrong_bool or not isinstance(value, kind):
            self.problem(name, f"expected {expected}, got {describe(value)}")
            return None
        return value

    def required(self, name: str) -> bool:
        """Report `name` as missing unless present; return whether it is."""
        if name in self.data:
            return True
        self.problem(name, "required key is missing")
        return False

    def string(self, name: str, *, required: bool = False) -> str | None:
        """A non-empty string, or None if absent or invalid."""
        if required and not self.required(name):
            return None
        value = self.get(name, str, "a string")
        if value is not None and not value.strip():
            self.problem(name, "must not be empty")
            return None
        return value

    def integer(self, name: str, default: int | None = None, *, minimum: int = 0) -> int | None:
        """An integer >= `minimum`, or `default` if absent (None if invalid)."""
        if name not in self.data:
            return default
        value = self.get(name, int, "an integer")
        if value is not None and value < minimum:
            self.problem(name, f"must be >= {minimum}, got {value}")
            return None
        return value

    def boolean(self, name: str, default: bool) -> bool:
        """A boolean, or `default` if absent or invalid."""
        value = self.get(name, bool, "a boolean (true or false)")
        return default if value is None else value

    def duration(self, name: str, default: float) -> float:
        """A duration in seconds (see parse_duration), or `default` if absent or invalid."""
        if name not in self.data:
            return default
        try:
            return parse_duration(
                self.data[name], key=self.child(name), source=self.problems.source
            )
        except ConfigError as exc:
            self.problems.extend(exc)
            return default

    def size(self, name: str) -> int | None:
        """A size in bytes (see parse_size), or None if absent or invalid."""
        if name not in self.data:
            return None
        try:
            return parse_size(self.data[name])
        except ValueError as exc:
            self.problem(name, str(exc))
            return None

    def strings(self, name: str) -> list[tuple[str, str]] | None:
        """An array of non-empty strings as (dotted key, value) pairs, or None if absent/invalid."""
        items = self.get(name, list, "an array of strings")
        if items is None:
            return None
        result = []
        for index, item in enumerate(items):
            key = f"{self.child(name)}[{index}]"
            if not isinstance(item, str) or not item.strip():
                self.problems.add(key, f"expected a non-empty string, got {describe(item)}")
            else:
                result.append((key, item))
        return result if len(result) == len(items) else None

    def table(self, name: str) -> Table:
        """Sub-table `name`; an empty Table if absent or not a table (the latter reported)."""
        value = self.get(name, dict, "a table")
        return Table(value or {}, self.child(name), self.problems)

    def tables(self) -> Iterator[tuple[str, Table]]:
        """Each entry of this table that is itself a table (e.g. each router), by name."""
        for name in self.data:
            value = self.get(name, dict, "a table")
            if value is not None:
                yield name, Table(value, self.child(name), self.problems)


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)
