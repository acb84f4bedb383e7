"""The one exception configuration loading raises, and a collector for its messages."""

from __future__ import annotations

from collections.abc import Iterable


def problem_text(source: str, key: str | None, message: str) -> str:
    """Format one problem as "SOURCE: KEY: message" (or "SOURCE: message" without a key)."""
    return f"{source}: {key}: {message}" if key else f"{source}: {message}"


class ConfigError(Exception):
    """One or more configuration problems.

    `problems` is a list of strings, each "FILE: KEY: what is wrong", e.g.
    "configs/demo.toml: entryPoints.web.address: expected HOST:PORT, got 'localhost'".
    str() joins them with newlines.
    """

    problems: list[str]

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = list(problems)
        super().__init__(*self.problems)

    def __str__(self) -> str:
        return "\n".join(self.problems)


class Problems:
    """Collects the problems found in one source file.

    Validation keeps going after the first problem so that a user fixes a
    config in one round trip instead of one error per run.
    """

    __slots__ = ("source", "messages")

    def __init__(self, source: str) -> None:
        self.source = source
        self.messages: list[str] = []

    def __len__(self) -> int:
        return len(self.messages)

    def add(self, key: str | None, message: str) -> None:
        """Record a problem about `key` (a dotted key; None for the file as a whole)."""
        self.messages.append(problem_text(self.source, key, message))

    def extend(self, error: ConfigError) -> None:
        """Record the problems of an already-formatted ConfigError."""
        self.messages.extend(error.problems)

    def raise_if_any(self) -> None:
        """Raise ConfigError with everything collected, if anything was."""
        if self.messages:
            raise ConfigError(self.messages)
