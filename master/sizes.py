"""Byte sizes in configuration: a number of bytes, or a string with a unit ("512MiB")."""

from __future__ import annotations

import re

# K/M/G alone are binary, as in nginx's `512m`; KB/MB/GB are SI, KiB/MiB/GiB binary.
_UNITS = {
    "": 1,
    "b": 1,
    "k": 1 << 10,
    "kib": 1 << 10,
    "kb": 10**3,
    "m": 1 << 20,
    "mib": 1 << 20,
    "mb": 10**6,
    "g": 1 << 30,
    "gib": 1 << 30,
    "gb": 10**9,
}
_SIZE = re.compile(r"\s*(\d+)\s*([a-z]*)\s*")
EXPECTED = "expected a size like '512MiB', '300M' or '1GB', or a number of bytes"


def parse_size(value: object) -> int:
    """Return `value` in bytes; raise ValueError with the reason if it is not a size."""
    if isinstance(value, bool):
        raise ValueError(f"{EXPECTED}, got boolean {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"must not be negative, got {value}")
        return value
    if isinstance(value, str):
        match = _SIZE.fullmatch(value.lower())
        if match and match[2] in _UNITS:
            return int(match[1]) * _UNITS[match[2]]
    raise ValueError(f"{EXPECTED}, got {value!r}")
