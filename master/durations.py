"""Durations as Traefik writes them: Go-style strings ("1m30s") or plain seconds."""

from __future__ import annotations

import math
import re
from collections.abc import Callable

from portside.master.errors import ConfigError, problem_text

_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,  # U+00B5 MICRO SIGN, which Go accepts
    "μs": 1e-6,  # U+03BC GREEK SMALL LETTER MU, which Go accepts too
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
# Two-letter units come first so that "ms" is never read as "m" followed by junk.
_UNIT = "|".join(sorted(_UNIT_SECONDS, key=len, reverse=True))
_PART = re.compile(rf"({_NUMBER})({_UNIT})")
_GO_DURATION = re.compile(rf"(?:{_NUMBER}(?:{_UNIT}))+")
# Traefik reads a unit-less integer string as seconds; a decimal is harmless to accept too.
_BARE_SECONDS = re.compile(r"\d+(?:\.\d+)?")

_EXPECTED = "expected a duration like '5s', '500ms' or '1m30s', or a number of seconds"


def parse_duration(value: object, *, key: str, source: str) -> float:
    """Return `value` in seconds.

    Accepts a number of seconds (int or float, as Traefik does), a bare number
    string ("10") or a Go duration string ("5s", "500ms", "1m30s", "2h", "0s").
    Raises ConfigError naming `source` and `key` for negative or malformed values.
    """

    def fail(message: str) -> ConfigError:
        return ConfigError([problem_text(source, key, message)])

    # bool is an int subclass: `idleTimeout = true` is a mistake, not 1 second.
    if isinstance(value, bool):
        raise fail(f"{_EXPECTED}, got boolean {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = _parse_text(value, fail)
    else:
        raise fail(f"{_EXPECTED}, got {type(value).__name__} {value!r}")
    if not math.isfinite(seconds):
        raise fail(f"{_EXPECTED}, got {value!r}")
    if seconds < 0:
        raise fail(f"must not be negative, got {value!r}")
    return seconds


def _parse_text(text: str, fail: Callable[[str], ConfigError]) -> float:
    if _BARE_SECONDS.fullmatch(text):
        return float(text)
    body = text[1:] if text.startswith(("+", "-")) else text
    if not _GO_DURATION.fullmatch(body):
        raise fail(f"{_EXPECTED}, got {text!r}")
    seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _PART.findall(body))
    if text.startswith("-") and seconds > 0:
        raise fail(f"must not be negative, got {text!r}")
    return seconds
